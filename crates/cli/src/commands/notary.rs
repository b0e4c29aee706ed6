//! `refbus notary` and `refbus witness`: the verifiable log of the events stream, and the
//! cosigner another office runs over it (crates/notary).

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use clap::Args;
use refbus_notary::note::{KeyKind, NoteKey, notary_verifier};

use crate::runtime;

#[derive(Debug, Args)]
pub(crate) struct NotaryArgs {
    #[command(flatten)]
    nats: runtime::NatsArgs,
    /// The log's directory: tiles, entry bundles and `checkpoint` (C2SP tlog-tiles layout).
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// The notary's secret note key (from `refbus keys generate-notary`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The log's origin, the first line of every checkpoint (default: the key's name).
    #[arg(long)]
    origin: Option<String>,
    /// How often a checkpoint is signed when the log grew, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    interval_ms: u64,
    /// Where the log's files are served read-only over HTTP (`/checkpoint`, `/tile/...`) for
    /// witnesses and auditors.
    #[arg(long, value_name = "ADDR", default_value = "127.0.0.1:7480")]
    listen: SocketAddr,
}

pub(crate) fn run(args: NotaryArgs) -> anyhow::Result<ExitCode> {
    runtime::init_tracing_beside_router_activity();
    let key = NoteKey::read(&args.key, KeyKind::Notary)?;
    let origin = args.origin.clone().unwrap_or_else(|| key.name().to_owned());
    tokio::runtime::Runtime::new()?.block_on(async move {
        let bus = args.nats.connect(None).await?;
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .with_context(|| format!("listening on {}", args.listen))?;
        println!("notary: serving the log on http://{}", args.listen);
        let notary = refbus_notary::Notary {
            bus,
            key,
            settings: refbus_notary::Settings {
                dir: args.dir,
                origin,
                interval: Duration::from_millis(args.interval_ms.max(1)),
            },
            stats: Arc::default(),
        };
        // A stream that no longer matches the signed log stops the notary with every problem
        // named (and an ERROR line each): an operator must look before anything is appended.
        notary
            .run(Some(listener), runtime::stop_signal())
            .await
            .map_err(|err| anyhow::anyhow!("notary stopped: {err}"))?;
        Ok(ExitCode::SUCCESS)
    })
}

#[derive(Debug, Args)]
pub(crate) struct WitnessArgs {
    /// The log's HTTP prefix, as its notary serves it (e.g. http://notary.example:7480).
    #[arg(long, value_name = "URL")]
    log_url: String,
    /// The notary's verifier key, or a file holding it (`notary.vkey`).
    #[arg(long, value_name = "VKEY|FILE")]
    notary_key: String,
    /// The log's origin (default: the notary key's name).
    #[arg(long)]
    origin: Option<String>,
    /// This witness's secret key (from `refbus keys generate-witness`).
    #[arg(long, value_name = "FILE")]
    key: PathBuf,
    /// The witness's own directory: the last checkpoint it cosigned, and fork evidence.
    #[arg(long, value_name = "DIR")]
    dir: PathBuf,
    /// How often the checkpoint is fetched, in milliseconds.
    #[arg(long, value_name = "MS", default_value_t = 1000)]
    interval_ms: u64,
    /// Also publish each cosigned checkpoint on NATS (`refbus.v1.log.cosignature`), where the
    /// notary adds it to the checkpoint it serves.
    #[arg(long)]
    publish: bool,
    #[command(flatten)]
    nats: runtime::NatsArgs,
}

pub(crate) fn witness(args: WitnessArgs) -> anyhow::Result<ExitCode> {
    runtime::init_tracing_beside_router_activity();
    let key = NoteKey::read(&args.key, KeyKind::Witness)?;
    let vkey = match std::fs::read_to_string(&args.notary_key) {
        Ok(text) => text.trim().to_owned(),
        Err(_) => args.notary_key.clone(),
    };
    let notary = notary_verifier(&vkey)?;
    let origin = args
        .origin
        .clone()
        .unwrap_or_else(|| vkey.split('+').next().unwrap_or_default().to_owned());
    tokio::runtime::Runtime::new()?.block_on(async move {
        let bus = match args.publish {
            true => Some(args.nats.connect(None).await?),
            false => None,
        };
        println!(
            "witness {}: following {} ({origin})",
            key.verifier_key(),
            args.log_url
        );
        let witness = refbus_notary::witness::Witness {
            key,
            notary,
            settings: refbus_notary::witness::Settings {
                log_url: args.log_url,
                origin,
                dir: args.dir,
                interval: Duration::from_millis(args.interval_ms.max(1)),
            },
            bus,
            stats: Arc::default(),
        };
        witness.run(runtime::stop_signal()).await;
        Ok(ExitCode::SUCCESS)
    })
}
