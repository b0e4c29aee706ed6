//! `refbus chaos`: a Jepsen-style fault campaign against this very binary's components on a
//! local 3-node JetStream cluster (crates/chaos; docs/RELIABILITY.md). Thin: it parses the
//! flags, runs the campaign and prints the results table.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;

use crate::commands::UsageError;
use crate::runtime;

#[derive(Debug, Args)]
pub(crate) struct ChaosArgs {
    /// How long faults are injected while the workload runs: 30m, 90s, 2h.
    #[arg(long, default_value = "30m", value_parser = parse_duration)]
    duration: Duration,
    /// The seed of the fault schedule and the workload's choices (default: from the clock,
    /// printed so that a run can be repeated).
    #[arg(long)]
    seed: Option<u64>,
    /// The faults to inject, comma-separated: kill, pause, partition, clock. `partition`
    /// needs root (network namespaces).
    #[arg(long, default_value = "kill,pause,partition,clock")]
    faults: String,
    /// Where the campaign keeps its configuration, keys, stores, logs and results (default: a
    /// new directory under the system's temporary directory).
    #[arg(long, value_name = "DIR")]
    out: Option<PathBuf>,
    /// After healing, how long the system runs without faults before the check.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    quiet: Duration,
    /// How late a clock item may be recorded when no fault overlaps it.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    slack: Duration,
    /// Milliseconds between two referrals of one sending system.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    create_every_ms: u64,
    /// The two routers share the referrals in this many partitions (`refbus router
    /// --partitions`, a dead router's share taken over by the other); 0: both read every
    /// event and hold every timer.
    #[arg(long, value_name = "N", default_value_t = 4,
          value_parser = clap::value_parser!(u32).range(0..=i64::from(refbus_router::MAX_PARTITIONS)))]
    router_partitions: u32,
    /// The nats-server binary (default: $REFBUS_NATS_SERVER, .tools/bin/nats-server, PATH).
    #[arg(long, value_name = "FILE")]
    nats_server: Option<PathBuf>,
}

pub(crate) fn run(args: ChaosArgs) -> anyhow::Result<ExitCode> {
    let faults = refbus_chaos::FaultKind::parse_list(&args.faults)
        .map_err(|err| UsageError(format!("--faults: {err}")))?;
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|elapsed| elapsed.as_secs())
            .unwrap_or(1)
    });
    let out = match args.out {
        Some(out) => out,
        None => std::env::temp_dir().join(format!("refbus-chaos-{seed}")),
    };
    let settings = refbus_chaos::Settings {
        refbus: std::env::current_exe().context("finding the refbus binary")?,
        nats_server: runtime::nats_server_binary(args.nats_server.as_deref())?.canonicalize()?,
        duration: args.duration,
        seed,
        faults,
        out: out.clone(),
        quiet: args.quiet,
        slack: args.slack,
        create_every: Duration::from_millis(args.create_every_ms.max(10)),
        router_partitions: (args.router_partitions > 0).then_some(args.router_partitions),
    };
    println!(
        "chaos: seed {seed}, {} s of faults ({}), routers in {} partitions, output in {}",
        args.duration.as_secs(),
        args.faults,
        args.router_partitions,
        out.display()
    );
    let report = tokio::runtime::Runtime::new()?.block_on(refbus_chaos::run(settings))?;
    println!();
    print!("{}", report.table());
    let check = &report.check;
    for (name, list) in [
        ("lost", &check.lost),
        ("duplicated", &check.duplicated),
        ("wrong answers", &check.wrong_answers),
        ("stale answers", &check.stale_answers),
        ("audit problems", &check.audit_first_problems),
    ] {
        if !list.is_empty() {
            println!("{name}:");
            for item in list.iter().take(20) {
                println!("  {item}");
            }
        }
    }
    for late in check.late.iter().take(20) {
        println!(
            "late: {} {} {} ms after due (allowed {} ms)",
            late.referral, late.key, late.lateness_ms, late.allowed_ms
        );
    }
    for (name, exits) in &report.unexpected_exits {
        println!("note: {name} exited on its own {exits} time(s) and was restarted");
    }
    println!("results in {}", out.join("results.json").display());
    Ok(if report.passed() {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

/// `30m`, `90s`, `2h`, `500ms`, or plain seconds.
fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 30m, 90s)"))?;
    let seconds = match unit {
        "" | "s" => number,
        "m" => number * 60,
        "h" => number * 3600,
        "ms" => return Ok(Duration::from_millis(number)),
        _ => return Err(format!("{text:?}: unit s, m, h or ms")),
    };
    Ok(Duration::from_secs(seconds))
}
