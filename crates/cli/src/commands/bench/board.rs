//! `refbus bench dashboard`: the operators' board at scale (a `refbus dashboard` process behind
//! its login, on a nats-server of its own); the measuring is in refbus-bench's `dashboard`.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context as _;
use clap::Args;
use refbus_bench::dashboard::{DashboardCommand, DashboardOptions};

use super::{Scratch, ServerArgs};
use crate::runtime;

#[derive(Debug, Args)]
pub(crate) struct DashboardArgs {
    /// Open referrals the dashboard holds when it starts.
    #[arg(long, default_value_t = 1_000_000)]
    open: usize,
    /// Live feeds (boards) connected while the new referrals arrive.
    #[arg(long, default_value_t = 50)]
    boards: usize,
    /// New referrals stored per second while the boards are connected.
    #[arg(long, default_value_t = 500)]
    rate: u32,
    /// How long they arrive, in seconds.
    #[arg(long, default_value_t = 20)]
    seconds: u64,
    /// Filtered board pages requested, one after another.
    #[arg(long, default_value_t = 200)]
    pages: usize,
    /// Publishes whose acknowledgements may be outstanding while filling the stream.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    #[command(flatten)]
    server: ServerArgs,
}

/// The coordinator's login of the accounts `refbus up` would make.
const COORDINATOR: &str = "koordinator";

pub(crate) fn dashboard(args: DashboardArgs) -> anyhow::Result<ExitCode> {
    let registry = runtime::load_registry(&args.server.config)?;
    let options = DashboardOptions {
        open: args.open,
        boards: args.boards,
        rate: args.rate,
        duration: Duration::from_secs(args.seconds),
        pages: args.pages,
        window: args.window,
        ..DashboardOptions::default()
    };
    let scratch = Scratch::start(&args.server, "dashboard")?;
    let dir = scratch.dir.path().to_path_buf();
    // The operators' accounts of a local run, as `refbus up` makes them.
    let (accounts, logins) = crate::commands::dashboard::local_logins(&dir, &registry)?;
    let password = std::fs::read_to_string(&logins)?
        .lines()
        .find_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            (fields.first() == Some(&COORDINATOR)).then(|| fields.last().map(|p| (*p).to_owned()))
        })
        .flatten()
        .context("no coordinator in the local logins")?;
    // The dashboard verifies what the benchmark writes with the benchmark's public keys.
    let keys = dir.join("keys");
    std::fs::create_dir_all(&keys)?;
    refbus_bench::signing_keys(&registry).write_files(&keys)?;
    let log = dir.join("dashboard.log");
    let config = args.server.config.clone();
    let command = |url: &str, listen: SocketAddr, metrics: SocketAddr| {
        dashboard_command(&config, url, listen, metrics, &accounts, &keys, &log)
    };
    let start = DashboardCommand {
        command: &command,
        username: COORDINATOR.to_owned(),
        password,
    };
    let measured = refbus_bench::dashboard::dashboard(
        &scratch.server,
        registry,
        &start,
        &options,
        &mut |phase| eprintln!("refbus bench: {phase}"),
    );
    if measured.is_err() {
        eprintln!(
            "refbus bench: the dashboard's log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
    }
    scratch.stop()?;
    println!("{}", measured?);
    Ok(ExitCode::SUCCESS)
}

/// `refbus dashboard` (this very binary) for the server at `url`, logging to `log`.
fn dashboard_command(
    config: &Path,
    url: &str,
    listen: SocketAddr,
    metrics: SocketAddr,
    accounts: &Path,
    keys: &Path,
    log: &Path,
) -> std::process::Command {
    let mut command = std::process::Command::new(
        std::env::current_exe().unwrap_or_else(|_| PathBuf::from("refbus")),
    );
    command
        .arg("dashboard")
        .arg("--config")
        .arg(config)
        .arg("--nats")
        .arg(url)
        .arg("--listen")
        .arg(listen.to_string())
        .arg("--metrics-addr")
        .arg(metrics.to_string())
        .arg("--accounts")
        .arg(accounts)
        .arg("--insecure-plaintext-cookies")
        .arg("--public-keys")
        .arg(keys)
        // Its snapshot (and key): the first start writes it, the second starts from it.
        .arg("--state-dir")
        .arg(log.with_file_name("dashboard-state"))
        .stderr(
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(log)
                .map_or_else(|_| Stdio::null(), Stdio::from),
        );
    command
}
