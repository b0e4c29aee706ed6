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
    /// Where to serve Prometheus metrics (`GET /metrics`: refbus_notary_*, see
    /// docs/OPERATIONS.md). Not served unless given. The variable's earlier name,
    /// REFBUS_NOTARY_METRICS_ADDR, is still read when REFBUS_METRICS_ADDR is not set.
    #[arg(long, value_name = "ADDR", env = "REFBUS_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
}

/// The notary's metrics variable before every component read `REFBUS_METRICS_ADDR`.
const EARLIER_METRICS_VARIABLE: &str = "REFBUS_NOTARY_METRICS_ADDR";

/// The notary's metrics address: `--metrics-addr` (or `REFBUS_METRICS_ADDR`), else the earlier
/// variable `variable(EARLIER_METRICS_VARIABLE)` names, so settings written for it keep working.
fn notary_metrics_addr(
    given: Option<SocketAddr>,
    variable: impl Fn(&str) -> Option<String>,
) -> anyhow::Result<Option<SocketAddr>> {
    if given.is_some() {
        return Ok(given);
    }
    match variable(EARLIER_METRICS_VARIABLE) {
        Some(value) if !value.trim().is_empty() => {
            let addr = value.trim().parse().map_err(|err| {
                super::UsageError(format!("{EARLIER_METRICS_VARIABLE}={value}: {err}"))
            })?;
            Ok(Some(addr))
        }
        _ => Ok(None),
    }
}

pub(crate) fn run(args: NotaryArgs) -> anyhow::Result<ExitCode> {
    runtime::init_tracing_beside_router_activity();
    let key = NoteKey::read(&args.key, KeyKind::Notary)?;
    let origin = args.origin.clone().unwrap_or_else(|| key.name().to_owned());
    let metrics_addr = notary_metrics_addr(args.metrics_addr, |name| std::env::var(name).ok())?;
    let metrics = runtime::metrics_endpoint(metrics_addr)?;
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
                metrics,
                stream_recheck_every: refbus_bus::statement::RECHECK_EVERY,
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
    /// Where to serve Prometheus metrics (`GET /metrics`: refbus_witness_*, see
    /// docs/OPERATIONS.md). Not served unless given.
    #[arg(long, value_name = "ADDR", env = "REFBUS_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
    #[command(flatten)]
    nats: runtime::NatsArgs,
}

pub(crate) fn witness(args: WitnessArgs) -> anyhow::Result<ExitCode> {
    runtime::init_tracing_beside_router_activity();
    let key = NoteKey::read(&args.key, KeyKind::Witness)?;
    let vkey = verifier_key_arg(&args.notary_key);
    let notary = notary_verifier(&vkey)?;
    let origin = args.origin.clone().unwrap_or_else(|| key_name(&vkey));
    let metrics = runtime::metrics_endpoint(args.metrics_addr)?;
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
        let metrics = match metrics {
            Some(endpoint) => Some(
                refbus_metrics::spawn(
                    refbus_notary::metrics::witness_exposition(witness.stats.clone()),
                    &endpoint,
                )
                .context("serving metrics (--metrics-addr)")?,
            ),
            None => None,
        };
        witness.run(runtime::stop_signal()).await;
        if let Some(metrics) = metrics {
            metrics.stop().await;
        }
        Ok(ExitCode::SUCCESS)
    })
}

/// A verifier key given on the command line: the key itself, or a file holding it.
pub(crate) fn verifier_key_arg(arg: &str) -> String {
    match std::fs::read_to_string(arg) {
        Ok(text) => text.trim().to_owned(),
        Err(_) => arg.to_owned(),
    }
}

/// A verifier key's name (its first `+`-separated part): a log's default origin.
pub(crate) fn key_name(vkey: &str) -> String {
    vkey.split('+').next().unwrap_or_default().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_notary_reads_its_earlier_metrics_variable_when_the_common_one_is_unset() {
        let earlier = |value: &'static str| {
            move |name: &str| (name == EARLIER_METRICS_VARIABLE).then(|| value.to_owned())
        };
        let given: SocketAddr = "10.0.0.7:9472".parse().unwrap();
        // The flag (or REFBUS_METRICS_ADDR, which clap reads into it) wins.
        assert_eq!(
            notary_metrics_addr(Some(given), earlier("10.0.0.8:1")).unwrap(),
            Some(given)
        );
        assert_eq!(
            notary_metrics_addr(None, earlier("10.0.0.7:9472")).unwrap(),
            Some(given)
        );
        assert_eq!(notary_metrics_addr(None, |_| None).unwrap(), None);
        assert_eq!(notary_metrics_addr(None, earlier(" ")).unwrap(), None);
        let refused = notary_metrics_addr(None, earlier("not an address")).unwrap_err();
        assert!(
            refused.to_string().contains(EARLIER_METRICS_VARIABLE),
            "{refused}"
        );
    }
}
