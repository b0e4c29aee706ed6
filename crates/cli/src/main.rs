//! `refbus`: the command line. Thin: it parses the flags and hands each subcommand to its
//! module in [`commands`], where the work is done by the library crates.

mod commands;
mod nats_security;
mod runtime;

use std::process::ExitCode;

use clap::Parser;

/// Every component reads the stream on several threads, allocating per message: mimalloc's
/// per-thread heaps free memory allocated on another thread without glibc's arena locks
/// (see docs/ARCHITECTURE.md, "The allocator").
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// refbus: the cross-agency referral bus.
#[derive(Debug, Parser)]
#[command(name = "refbus", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: commands::Command,
    /// Export traces to this OpenTelemetry collector (OTLP over gRPC, e.g.
    /// http://127.0.0.1:4317). Default: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT, else
    /// OTEL_EXPORTER_OTLP_ENDPOINT; without any, no trace leaves the process.
    #[arg(long, global = true, value_name = "URL")]
    otlp_endpoint: Option<String>,
}

fn main() -> ExitCode {
    use clap::{CommandFactory as _, FromArgMatches as _};
    let matches = Cli::command().get_matches();
    let cli = match Cli::from_arg_matches(&matches) {
        Ok(cli) => cli,
        Err(err) => err.exit(),
    };
    // Each component traces as its own service: refbus-adapter, refbus-router, refbus-up...
    let component = matches.subcommand_name().unwrap_or("cli");
    if let Err(err) = runtime::configure_traces(component, cli.otlp_endpoint.as_deref()) {
        eprintln!("refbus: {err}");
        return ExitCode::from(2);
    }
    let outcome = commands::run(cli.command);
    // Whatever the outcome, the spans still buffered go to the collector before exiting.
    runtime::shutdown_traces();
    match outcome {
        Ok(code) => code,
        Err(error) => {
            eprintln!("refbus: {error:#}");
            commands::exit_code(&error)
        }
    }
}
