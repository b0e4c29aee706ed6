//! `refbus`: the command line. Thin: it parses the flags and hands each subcommand to its
//! module in [`commands`], where the work is done by the library crates.

mod commands;
mod nats_security;
mod runtime;

use std::process::ExitCode;

use clap::Parser;

/// refbus: the cross-agency referral bus.
#[derive(Debug, Parser)]
#[command(name = "refbus", version, about, propagate_version = true)]
struct Cli {
    #[command(subcommand)]
    command: commands::Command,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match commands::run(cli.command) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("refbus: {error:#}");
            commands::exit_code(&error)
        }
    }
}
