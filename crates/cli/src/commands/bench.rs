//! `refbus bench`: benchmarks that start their own nats-server, so one command gives
//! comparable numbers. The measuring is in the refbus-bench crate; docs/BENCHMARKS.md holds
//! the figures. Run from a release build: `cargo run --release -p refbus -- bench ingest`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, Subcommand};
use refbus_bench::IngestOptions;

use crate::runtime::{self, Durability, LocalNats};

mod board;
mod timers;

#[derive(Debug, Subcommand)]
pub(crate) enum BenchCommand {
    /// Ingest: CreateReferral through an adapter (without and with sealed identity) against the
    /// floor (a bare tonic handler publishing the same message to JetStream) and raw JetStream,
    /// CPU time by stage, signatures alone, latency at a steady rate, `refbus up`'s footprint.
    Ingest(IngestArgs),
    /// Router: events per second processed by the router against a raw JetStream pull
    /// consumer on the same stream, and against the fastest CreateReferral ingest.
    Router(timers::RouterArgs),
    /// Seal: a create's sealing alone (identity and note), each payload on its own against one
    /// content key per create, for the sender and the recipient with and without backup keys.
    Seal(SealArgs),
    /// Clocks: a router restarted on a million open referrals (time to ready, memory), a
    /// hundred thousand clocks due within one minute (lateness), JetStream message schedules.
    Clocks(timers::ClocksArgs),
    /// Dashboard: a `refbus dashboard` on a million open referrals behind its login (start to
    /// ready, memory), a filtered board page, and the time from an event stored to its row on
    /// fifty live feeds against a bare ordered consumer.
    Dashboard(board::DashboardArgs),
    /// Audit: `refbus audit verify` over a stream of whole referral lives against a raw
    /// ordered replay of the same stream in the same run.
    Audit(AuditArgs),
    /// Notary: the notary following the stream filled at the highest ingest, its throughput
    /// against that ingest, and the time from an event stored to a checkpoint covering it.
    Notary(NotaryArgs),
    /// Indicators: `refbus indicators` over a stream of whole referral lives.
    Indicators(IndicatorsArgs),
}

#[derive(Debug, Args)]
pub(crate) struct SealArgs {
    /// Creates sealed per configuration and scheme, after a warm-up.
    #[arg(long, default_value_t = 2_000)]
    iterations: u32,
}

#[derive(Debug, Args)]
pub(crate) struct IngestArgs {
    /// Referrals (and raw messages) per throughput phase, after a warm-up.
    #[arg(long, default_value_t = 20_000)]
    count: usize,
    /// CreateReferral calls in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// HTTP/2 connections the calls share.
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Raw publishes whose acknowledgements may be outstanding at once.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Length of each steady-rate phase, in seconds.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// The steady rate, per second.
    #[arg(long, default_value_t = 1000)]
    rate: u32,
    /// Worker threads of the adapter's runtime (default: one per CPU, as `refbus adapter`).
    #[arg(long)]
    adapter_threads: Option<usize>,
    /// Worker threads of the load generator (default: one per CPU).
    #[arg(long)]
    client_threads: Option<usize>,
    /// Skip measuring `refbus up`'s footprint.
    #[arg(long)]
    no_footprint: bool,
    /// The adapter serves mutual TLS and the load generator presents a client certificate,
    /// as deployed (the floor serves the same TLS transport).
    #[arg(long)]
    tls: bool,
    /// How long `refbus up` stays idle before its memory is read, in seconds.
    #[arg(long, default_value_t = 5)]
    idle: u64,
    #[command(flatten)]
    server: ServerArgs,
}

/// Where the benchmark's nats-server comes from and how it writes.
#[derive(Debug, Args)]
pub(crate) struct ServerArgs {
    /// nats-server fsyncs before every acknowledgement, as refbus runs in production (default:
    /// nats-server's own default, every two minutes, as in the published JetStream figures).
    #[arg(long)]
    fsync_always: bool,
    /// The registry (the Kabupaten Maros one).
    #[arg(long, value_name = "FILE", default_value = "deploy/config/refbus.toml")]
    config: PathBuf,
    /// The nats-server binary (default: $REFBUS_NATS_SERVER, .tools/bin/nats-server, PATH).
    #[arg(long, value_name = "FILE")]
    nats_server: Option<PathBuf>,
}

/// A nats-server for one benchmark, in a scratch directory removed afterwards.
struct Scratch {
    // Dropped after the server (fields drop in order): the store is removed once it stopped.
    nats: LocalNats,
    runtime: tokio::runtime::Runtime,
    server: refbus_bench::Server,
    dir: tempfile::TempDir,
    /// The nats-server binary it runs (`refbus up` runs the same one).
    binary: PathBuf,
}

impl Scratch {
    fn start(args: &ServerArgs, name: &str) -> anyhow::Result<Scratch> {
        if cfg!(debug_assertions) {
            eprintln!(
                "refbus bench: WARNING: a debug build measures nothing useful; run \
                 `cargo run --release -p refbus -- bench {name}`"
            );
        }
        let binary = runtime::nats_server_binary(args.nats_server.as_deref())?;
        let dir = tempfile::tempdir().context("creating a temporary directory")?;
        let durability = if args.fsync_always {
            Durability::FsyncEveryWrite
        } else {
            Durability::FsyncEveryTwoMinutes
        };
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let port = runtime::free_ports(2)?;
        let nats = runtime.block_on(LocalNats::start_with(
            &binary,
            &dir.path().join(name),
            port,
            port + 1,
            durability,
        ))?;
        let server = refbus_bench::Server {
            url: nats.url.clone(),
            pid: nats
                .pid()
                .context("nats-server exited as soon as it started")?,
            durability: match durability {
                Durability::FsyncEveryWrite => "fsync before every ack (sync_interval: always)",
                Durability::FsyncEveryTwoMinutes => "fsync every 2 min (nats-server's default)",
            }
            .to_owned(),
        };
        Ok(Scratch {
            nats,
            runtime,
            server,
            dir,
            binary,
        })
    }

    fn stop(self) -> anyhow::Result<()> {
        self.runtime.block_on(self.nats.stop())?;
        drop(self.dir);
        Ok(())
    }
}

pub(crate) fn run(command: BenchCommand) -> anyhow::Result<ExitCode> {
    match command {
        BenchCommand::Ingest(args) => ingest(args),
        BenchCommand::Seal(args) => {
            print!("{}", refbus_bench::sealing::compare(args.iterations)?);
            Ok(ExitCode::SUCCESS)
        }
        BenchCommand::Router(args) => timers::router(args),
        BenchCommand::Clocks(args) => timers::clocks(args),
        BenchCommand::Dashboard(args) => board::dashboard(args),
        BenchCommand::Audit(args) => audit(args),
        BenchCommand::Notary(args) => notary(args),
        BenchCommand::Indicators(args) => indicators(args),
    }
}

fn ingest(args: IngestArgs) -> anyhow::Result<ExitCode> {
    let registry = runtime::load_registry(&args.server.config)?;
    let defaults = IngestOptions::default();
    let options = IngestOptions {
        adapter_threads: args.adapter_threads.unwrap_or(defaults.adapter_threads),
        client_threads: args.client_threads.unwrap_or(defaults.client_threads),
        count: args.count,
        concurrency: args.concurrency,
        connections: args.connections,
        window: args.window,
        rate: args.rate,
        seconds: args.seconds,
        tls: args.tls,
        ..defaults
    };
    eprintln!(
        "refbus bench: gRPC to the adapter over {}",
        if args.tls {
            "mutual TLS (client certificate checked on every call)"
        } else {
            "plaintext"
        }
    );
    let scratch = Scratch::start(&args.server, "ingest")?;
    let binary = scratch.binary.clone();
    let measured =
        refbus_bench::ingest(&scratch.server, registry.clone(), &options, &mut |phase| {
            eprintln!("refbus bench: {phase}");
        });
    scratch.stop()?;
    let mut report = measured?;

    if !args.no_footprint {
        eprintln!("refbus bench: f. footprint of refbus up");
        let agencies = u16::try_from(registry.agencies.len())?;
        let data = tempfile::tempdir().context("creating a temporary directory")?;
        let up = up_command(&args.server.config, &binary, data.path(), agencies)?;
        report.footprint = Some(refbus_bench::footprint::measure_up(
            up,
            Duration::from_secs(args.idle),
        )?);
    }
    println!(
        "gRPC to the adapter: {}",
        if args.tls {
            "mutual TLS, the client certificate checked on every call (the floor: plaintext)"
        } else {
            "plaintext"
        }
    );
    println!("{report}");
    Ok(ExitCode::SUCCESS)
}

/// `refbus up` (this very binary) on free ports, with its data in `data_dir`.
fn up_command(
    config: &Path,
    nats_server: &Path,
    data_dir: &Path,
    agencies: u16,
) -> anyhow::Result<std::process::Command> {
    let nats_port = runtime::free_ports(2)?;
    let base_port = runtime::free_ports(agencies)?;
    std::fs::create_dir_all(data_dir)?;
    let log = std::fs::File::create(data_dir.join("refbus-up.log"))?;
    let mut up = std::process::Command::new(std::env::current_exe()?);
    up.arg("up")
        .arg("--config")
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .arg("--nats-port")
        .arg(nats_port.to_string())
        .arg("--nats-monitor-port")
        .arg((nats_port + 1).to_string())
        .arg("--base-port")
        .arg(base_port.to_string())
        .arg("--nats-server")
        .arg(nats_server)
        .stderr(log);
    Ok(up)
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Referrals in the stream (whole lives of eight events each).
    #[arg(long, default_value_t = 1_000_000)]
    referrals: usize,
    /// Rounds of the raw replay and verify, taking turns; the medians count.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Publishes whose acknowledgements may be outstanding while filling the stream.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    #[command(flatten)]
    server: ServerArgs,
}

fn audit(args: AuditArgs) -> anyhow::Result<ExitCode> {
    let registry = runtime::load_registry(&args.server.config)?;
    let options = refbus_bench::audit::AuditOptions {
        referrals: args.referrals,
        rounds: args.rounds,
        window: args.window,
        ..refbus_bench::audit::AuditOptions::default()
    };
    let scratch = Scratch::start(&args.server, "audit")?;
    let measured = refbus_bench::audit::audit(&scratch.server, registry, &options, &mut |phase| {
        eprintln!("refbus bench: {phase}");
    });
    scratch.stop()?;
    println!("{}", measured?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub(crate) struct NotaryArgs {
    /// Referrals in the stream (whole lives of eight events each).
    #[arg(long, default_value_t = 100_000)]
    referrals: usize,
    /// How often the notary signs a checkpoint when its log grew, in milliseconds (`refbus
    /// notary`'s default).
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    interval_ms: u64,
    /// Publishes whose acknowledgements may be outstanding while filling the stream.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Fill the stream at this steady rate a second (e.g. the router's maximum ingest) instead
    /// of as fast as it takes messages.
    #[arg(long)]
    rate: Option<u32>,
    #[command(flatten)]
    server: ServerArgs,
}

fn notary(args: NotaryArgs) -> anyhow::Result<ExitCode> {
    let registry = runtime::load_registry(&args.server.config)?;
    let options = refbus_bench::notary::NotaryOptions {
        referrals: args.referrals,
        window: args.window,
        interval: Duration::from_millis(args.interval_ms.max(1)),
        rate: args.rate.filter(|&rate| rate > 0),
        ..refbus_bench::notary::NotaryOptions::default()
    };
    let scratch = Scratch::start(&args.server, "notary")?;
    let measured =
        refbus_bench::notary::notary(&scratch.server, registry, &options, &mut |phase| {
            eprintln!("refbus bench: {phase}");
        });
    scratch.stop()?;
    println!("{}", measured?);
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, Args)]
pub(crate) struct IndicatorsArgs {
    /// Referrals in the stream (whole lives of eight events each).
    #[arg(long, default_value_t = 1_000_000)]
    referrals: usize,
    /// Publishes whose acknowledgements may be outstanding while filling the stream.
    #[arg(long, default_value_t = 1024)]
    window: usize,
    /// Also time `refbus indicators --every-record` (every record checked against its
    /// predecessor) and compare its figures.
    #[arg(long)]
    every_record: bool,
    #[command(flatten)]
    server: ServerArgs,
}

fn indicators(args: IndicatorsArgs) -> anyhow::Result<ExitCode> {
    let registry = runtime::load_registry(&args.server.config)?;
    let options = refbus_bench::indicators::IndicatorsOptions {
        referrals: args.referrals,
        window: args.window,
        every_record: args.every_record,
        ..refbus_bench::indicators::IndicatorsOptions::default()
    };
    let scratch = Scratch::start(&args.server, "indicators")?;
    let measured =
        refbus_bench::indicators::indicators(&scratch.server, registry, &options, &mut |phase| {
            eprintln!("refbus bench: {phase}");
        });
    scratch.stop()?;
    println!("{}", measured?);
    Ok(ExitCode::SUCCESS)
}
