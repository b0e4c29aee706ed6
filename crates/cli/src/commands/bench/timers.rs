//! `refbus bench router` and `refbus bench clocks`: the router's throughput, and its timers at
//! scale against JetStream message schedules, each on a nats-server of its own.

use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use clap::Args;
use refbus_bench::clocks::{ClocksOptions, REPLICA};
use refbus_bench::router::RouterOptions;
use refbus_bench::schedules::ScheduleOptions;

use super::{Scratch, ServerArgs};
use crate::runtime;

#[derive(Debug, Args)]
pub(crate) struct RouterArgs {
    /// Referrals in the stream, each a whole life of five events.
    #[arg(long, default_value_t = 20_000)]
    referrals: usize,
    /// Referrals whose events are interleaved in the stream.
    #[arg(long, default_value_t = 1000)]
    group: usize,
    /// Publishes whose acknowledgements may be outstanding while filling the stream.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Worker threads of the router's runtime (default: one per CPU, as `refbus router`).
    #[arg(long)]
    router_threads: Option<usize>,
    /// CreateReferral calls timed for the ingest rate the router must keep up with (0: skip).
    #[arg(long, default_value_t = 10_000)]
    creates: usize,
    /// CreateReferral calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Passes of each consumer over the stream, taking turns (the median counts).
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    #[command(flatten)]
    server: ServerArgs,
}

#[derive(Debug, Args)]
pub(crate) struct ClocksArgs {
    /// Open referrals with pending clocks when the router restarts.
    #[arg(long, default_value_t = 1_000_000)]
    open: usize,
    /// Referrals whose clocks fall due within the spread (two items each).
    #[arg(long, default_value_t = 100_000)]
    due: usize,
    /// Seconds over which the due referrals (and the schedules) fall due.
    #[arg(long, default_value_t = 60)]
    spread: u64,
    /// Seconds at least between the router catching up and the first due time.
    #[arg(long, default_value_t = 20)]
    lead: u64,
    /// Publishes whose acknowledgements may be outstanding while filling.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// JetStream message schedules due within the spread, for comparison (0: skip).
    #[arg(long, default_value_t = 100_000)]
    schedules: usize,
    /// Then the same over this many partitioned routers (`refbus router --partitions`), one
    /// run each, with a router killed and taken over in each run of two or more (0: skip).
    #[arg(long, value_delimiter = ',', default_value = "1,2,3")]
    routers: Vec<usize>,
    /// Partitions the partitioned routers share (divisible by each count of --routers).
    #[arg(long, default_value_t = 6)]
    partitions: u32,
    #[command(flatten)]
    server: ServerArgs,
}

pub(crate) fn router(args: RouterArgs) -> anyhow::Result<ExitCode> {
    let registry = runtime::load_registry(&args.server.config)?;
    let defaults = RouterOptions::default();
    let options = RouterOptions {
        referrals: args.referrals,
        group: args.group,
        window: args.window,
        router_threads: args.router_threads.unwrap_or(defaults.router_threads),
        creates: args.creates,
        concurrency: args.concurrency,
        rounds: args.rounds,
        ..defaults
    };
    let scratch = Scratch::start(&args.server, "router")?;
    let measured =
        refbus_bench::router::router(&scratch.server, registry, &options, &mut |phase| {
            eprintln!("refbus bench: {phase}");
        });
    scratch.stop()?;
    println!("{}", measured?);
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn clocks(args: ClocksArgs) -> anyhow::Result<ExitCode> {
    // Checked as given first, so a mistake in it is reported against the deployment's file.
    runtime::load_registry(&args.server.config)?;
    let spread = Duration::from_secs(args.spread);
    let options = ClocksOptions {
        open: args.open,
        due: args.due,
        spread,
        lead: Duration::from_secs(args.lead),
        window: args.window,
        schedules: (args.schedules > 0).then(|| ScheduleOptions {
            count: args.schedules,
            spread,
            window: args.window,
            ..ScheduleOptions::default()
        }),
        routers: args.routers.iter().copied().filter(|&n| n > 0).collect(),
        partitions: args.partitions,
        ..ClocksOptions::default()
    };
    if let Some(n) = options
        .routers
        .iter()
        .find(|&&n| !(options.partitions as usize).is_multiple_of(n))
    {
        anyhow::bail!(
            "--partitions {} cannot be shared evenly among {n} routers",
            options.partitions
        );
    }
    let scratch = Scratch::start(&args.server, "clocks")?;
    // The deployment's registry plus the due minute's clock, for the writers and the router.
    let config = refbus_bench::clocks::bench_config(
        &args.server.config,
        &scratch.dir.path().join("config"),
    )?;
    let registry = runtime::load_registry(&config)?;
    refbus_bench::clocks::check_due_clock(&registry, runtime::system_now())?;
    let log = scratch.dir.path().join("router.log");
    // The router process verifies what the benchmark writes, and signs with its own key.
    let keys = scratch.dir.path().join("keys");
    std::fs::create_dir_all(&keys)?;
    refbus_bench::signing_keys(&registry).write_files(&keys)?;
    let state = scratch.dir.path().join("router-state");
    std::fs::create_dir_all(&state)?;
    let router = |url: &str, share: Option<refbus_bench::clocks::Share<'_>>| {
        router_command(&config, url, &log, &keys, &state, share)
    };
    let measured =
        refbus_bench::clocks::clocks(&scratch.server, registry, &router, &options, &mut |phase| {
            eprintln!("refbus bench: {phase}")
        });
    if measured.is_err() {
        // The scratch directory goes with the bench: what the routers said of a failure is
        // shown before it does.
        show_tail(&log, ROUTER_LOG_TAIL);
    }
    scratch.stop()?;
    println!("{}", measured?);
    Ok(ExitCode::SUCCESS)
}

/// Lines of the routers' log shown when `bench clocks` fails.
const ROUTER_LOG_TAIL: usize = 40;

/// The last `lines` lines of the log at `path` on standard error, if it can be read.
fn show_tail(path: &Path, lines: usize) {
    let Ok(text) = std::fs::read_to_string(path) else {
        return;
    };
    let all: Vec<&str> = text.lines().collect();
    eprintln!(
        "refbus bench: the routers' log ({}), its last {} lines:",
        path.display(),
        lines.min(all.len())
    );
    for line in &all[all.len().saturating_sub(lines)..] {
        eprintln!("  {line}");
    }
}

/// `refbus router` (this very binary) for the server at `url`, logging to `log`.
fn router_command(
    config: &Path,
    url: &str,
    log: &Path,
    keys: &Path,
    state: &Path,
    share: Option<refbus_bench::clocks::Share<'_>>,
) -> std::process::Command {
    let mut command = std::process::Command::new(
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("refbus")),
    );
    command
        .arg("router")
        .arg("--config")
        .arg(config)
        .arg("--nats")
        .arg(url)
        .arg("--replica")
        .arg(share.map_or(REPLICA, |share| share.replica))
        .arg("--signing-key")
        .arg(keys.join("router.sign.key"))
        .arg("--public-keys")
        .arg(keys)
        .arg("--state-dir")
        .arg(state)
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_or_else(|_| Stdio::null(), Stdio::from),
        );
    if let Some(share) = share {
        command
            .arg("--partitions")
            .arg(share.partitions.to_string());
    }
    command
}
