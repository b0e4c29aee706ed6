//! `refbus router`: the clocks and escalations of a deployment.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use clap::Args;
use refbus_router::{Activity, Options, Router};

use crate::runtime;

#[derive(Debug, Args)]
pub(crate) struct RouterArgs {
    /// The deployment's registry (with every policy version still in use).
    #[arg(long, value_name = "FILE", default_value = "deploy/config/refbus.toml")]
    config: PathBuf,
    #[command(flatten)]
    nats: runtime::NatsArgs,
    /// This replica's name: replicas may run side by side; each reads every event (or, with
    /// --partitions, its share), and every item is recorded once whichever records it. With
    /// --partitions each replica needs a name of its own (letters, digits, `-`, `_`).
    #[arg(long, default_value = "main")]
    replica: String,
    /// Share the referrals among the replicas running with the same count: they are cut into
    /// this many partitions, each replica claims a fair share of them (leases in JetStream's
    /// bucket REFBUS_ROUTER_LEASES) and holds only their timers, and a replica's partitions
    /// are taken over by the others when it stops or dies. Without it, every replica reads
    /// every event and holds every timer. Every replica of a deployment gets the same count,
    /// at most 12 (the counts whose consumers the shipped NATS permissions keep from readers).
    #[arg(long, value_name = "N",
          value_parser = clap::value_parser!(u32).range(1..=i64::from(refbus_router::MAX_PARTITIONS)))]
    partitions: Option<u32>,
    /// With --partitions: how long a replica's leases live unless renewed; a dead replica's
    /// partitions are claimed by the others within this and a twelfth of it.
    #[arg(long, value_name = "SECONDS", default_value_t = 6, requires = "partitions",
          value_parser = clap::value_parser!(u64).range(1..=600))]
    lease_ttl: u64,
    /// Where the router keeps the snapshot of its timers (`router-<replica>.timers`), so that a
    /// restart reads again only the referrals that changed since it was written (with
    /// --partitions, one file per partition, `router-part-<k>-of-<n>.timers`, which any replica
    /// sharing the directory starts a partition it takes from). Without it, every restart
    /// reads every open referral.
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// The router's secret signing key (from `refbus keys generate-router`).
    #[arg(long, value_name = "FILE")]
    signing_key: PathBuf,
    /// A directory of `<name>.sign.pub` files, for signing keys the registry does not list.
    #[arg(long, value_name = "DIR")]
    public_keys: Option<PathBuf>,
    /// Demonstrations and tests only: pretend the clock started at this instant (RFC 3339).
    #[arg(long, value_name = "INSTANT", hide = true)]
    clock_start: Option<String>,
    /// Demonstrations and tests only: how fast pretended time runs (0 freezes it).
    #[arg(long, value_name = "FACTOR", hide = true, default_value_t = 1.0)]
    clock_speed: f64,
    /// Where to serve Prometheus metrics (`GET /metrics`, plain HTTP, no identity in them;
    /// see docs/OPERATIONS.md), e.g. 127.0.0.1:9470. Not served unless given.
    #[arg(long, value_name = "ADDR", env = "REFBUS_METRICS_ADDR")]
    metrics_addr: Option<SocketAddr>,
}

pub(crate) fn run(args: RouterArgs) -> anyhow::Result<ExitCode> {
    runtime::init_tracing_beside_router_activity();
    let registry = runtime::load_registry(&args.config)?;
    let key = runtime::signing_key(&args.signing_key, refbus_core::signature::Signer::Router)?;
    let signers = Arc::new(runtime::signers(&registry, args.public_keys.as_deref())?);
    // A pretended clock is not JetStream's: the time-against-storage check would refuse the
    // router's own records.
    let max_skew = args
        .clock_start
        .is_none()
        .then_some(refbus_core::integrity::DEFAULT_MAX_SKEW);
    let verifier = refbus_bus::Verifier::new(registry.clone(), signers, max_skew);
    let metrics = runtime::metrics_endpoint(args.metrics_addr)?;
    tokio::runtime::Runtime::new()?.block_on(async move {
        let clock = runtime::clock(args.clock_start.as_deref(), args.clock_speed)?;
        let bus = args.nats.connect_attesting(&key).await?;
        let router = Router::new(
            bus,
            verifier,
            key,
            clock,
            Options {
                replica: args.replica.clone(),
                partitions: args.partitions.map(|count| refbus_router::Partitions {
                    count,
                    lease_ttl: std::time::Duration::from_secs(args.lease_ttl),
                }),
                metrics,
                snapshot: args
                    .state_dir
                    .as_deref()
                    .map(|dir| snapshot_file(dir, &args.replica)),
                ..Options::default()
            },
        );
        let activity = router.activity();
        tokio::spawn(print_activity(activity));
        // An error (the events stopped coming) exits non-zero, for a supervisor (systemd's
        // Restart=on-failure, a container restart policy) to start the router again: it
        // resumes from its durable consumer and rebuilds its timers from the bus.
        router.run(runtime::stop_signal()).await.map_err(|err| {
            anyhow::anyhow!(
                "{err}; the router stopped so that a supervisor restarts it (it resumes where it \
                 stopped and rebuilds its timers)"
            )
        })?;
        Ok(ExitCode::SUCCESS)
    })
}

/// The router's snapshot of its timers in `dir`, one file per replica.
pub(crate) fn snapshot_file(dir: &std::path::Path, replica: &str) -> PathBuf {
    dir.join(format!("router-{replica}.timers"))
}

/// One line per thing the router does, on stdout, for operators watching a terminal.
pub(crate) async fn print_activity(mut activity: tokio::sync::broadcast::Receiver<Activity>) {
    loop {
        match activity.recv().await {
            // A check that found the stream as configured is not news.
            Ok(Activity::StreamChecked { differences }) if differences.is_empty() => {}
            Ok(activity) => println!("{}", describe(&activity)),
            Err(tokio::sync::broadcast::error::RecvError::Lagged(missed)) => {
                println!("router: ({missed} more not shown)");
            }
            Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
        }
    }
}

pub(crate) fn describe(activity: &Activity) -> String {
    match activity {
        Activity::Ready {
            referrals,
            pending,
            took,
            from_snapshot: None,
        } => {
            format!(
                "router: ready ({referrals} referrals, {pending} with pending clocks, rebuilt in {took:?})"
            )
        }
        Activity::Ready {
            referrals,
            pending,
            took,
            from_snapshot: Some(covers),
        } => {
            format!(
                "router: ready ({referrals} referrals read, {pending} with pending clocks, from the snapshot at stream sequence {covers} and the referrals changed since, in {took:?})"
            )
        }
        Activity::Claimed {
            partition,
            referrals,
            pending,
            took,
            from_snapshot,
        } => {
            let from = from_snapshot.map_or_else(
                || "rebuilt".to_owned(),
                |covers| format!("from the snapshot at stream sequence {covers} and the referrals changed since"),
            );
            format!(
                "router: partition {partition} claimed ({referrals} referrals read, {pending} with pending clocks, {from}, in {took:?})"
            )
        }
        Activity::Released { partition } => {
            format!("router: partition {partition} given up (another replica takes it)")
        }
        Activity::Snapshot { covers, entries } => {
            format!("router: snapshot of {entries} timers written, up to stream sequence {covers}")
        }
        Activity::Recorded {
            referral,
            key,
            change,
            due_at,
            recorded_at,
            ..
        } => {
            let late = lateness(recorded_at.since(*due_at));
            format!(
                "router: {change:<18} {key:<40} referral {referral} (due {due_at}, recorded {late} later)"
            )
        }
        Activity::Noticed {
            referral,
            agency,
            key,
        } => {
            format!("router: notice             {key:<40} to {agency} about referral {referral}")
        }
        Activity::StreamChecked { differences } if differences.is_empty() => {
            "router: the events stream checked again: as configured".to_owned()
        }
        Activity::StreamChecked { differences } => {
            format!(
                "router: STREAM the events stream no longer is as configured, adapters starting now refuse to, clocks keep running: {}",
                differences.join("; ")
            )
        }
        Activity::Flagged {
            referral,
            seq,
            problem,
            why,
        } => {
            let referral = referral.map_or_else(|| "(none)".to_owned(), |id| id.to_string());
            format!(
                "router: INTEGRITY {problem:<12} referral {referral}, record at stream sequence {seq} refused, clocks keep running: {why}"
            )
        }
    }
}

/// How long after its due time an item was recorded, as an operator reads it: milliseconds
/// while it is about timeliness (under a minute), hours, minutes and seconds once a router
/// catches up after being down.
fn lateness(late: std::time::Duration) -> String {
    let millis = late.as_millis();
    if millis < 60_000 {
        return format!("{millis} ms");
    }
    let seconds = late.as_secs();
    let (hours, minutes, seconds) = (seconds / 3600, seconds / 60 % 60, seconds % 60);
    if hours > 0 {
        format!("{hours} h {minutes} min {seconds} s")
    } else {
        format!("{minutes} min {seconds} s")
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::lateness;

    #[test]
    fn lateness_is_in_milliseconds_under_a_minute_and_in_hours_and_minutes_after() {
        assert_eq!(lateness(Duration::from_millis(0)), "0 ms");
        assert_eq!(lateness(Duration::from_millis(59_999)), "59999 ms");
        assert_eq!(lateness(Duration::from_millis(60_000)), "1 min 0 s");
        assert_eq!(
            lateness(Duration::from_millis(16_502_075)),
            "4 h 35 min 2 s"
        );
    }
}
