//! The notary's operations metrics (`refbus_notary_*`, listed in docs/OPERATIONS.md), read from
//! its [`Stats`] at each scrape, in its own registry, served by [`Notary::run`](crate::Notary)
//! when `Settings::metrics` names an endpoint; and a witness's (`refbus_witness_*`), read from
//! its [`WitnessStats`], served by `refbus witness --metrics-addr`.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use refbus_metrics::Exposition;

use crate::Stats;
use crate::witness::WitnessStats;

/// The registry, refreshed from `stats` before each scrape.
pub fn exposition(stats: Arc<Stats>) -> Exposition {
    let mut registry = Registry::default();
    let size = Gauge::<i64>::default();
    let checkpointed = Gauge::<i64>::default();
    let gaps = Counter::<u64>::default();
    let mismatches = Counter::<u64>::default();
    let stream_differences = Gauge::<i64>::default();
    registry.register(
        "refbus_notary_log_size",
        "Leaves in the notary's log (stream messages read)",
        size.clone(),
    );
    registry.register(
        "refbus_notary_checkpoint_size",
        "Size of the latest signed checkpoint",
        checkpointed.clone(),
    );
    registry.register(
        "refbus_notary_gaps",
        "Stream sequences the stream skipped, recorded as missing leaves (deleted messages)",
        gaps.clone(),
    );
    registry.register(
        "refbus_notary_mismatches",
        "Problems found comparing the stream with the signed log at start (tampering)",
        mismatches.clone(),
    );
    registry.register(
        "refbus_notary_stream_differences",
        "Differences from the configured settings the notary's last check of the events stream \
         found (0: as configured; above 0 the stream can lose events)",
        stream_differences.clone(),
    );
    Exposition::new(registry).refreshed_by(move || {
        let as_i64 = |value: u64| i64::try_from(value).unwrap_or(i64::MAX);
        size.set(as_i64(stats.size.load(Ordering::Relaxed)));
        stream_differences.set(as_i64(stats.stream_differences.load(Ordering::Relaxed)));
        checkpointed.set(as_i64(stats.checkpointed.load(Ordering::Relaxed)));
        for (counter, total) in [
            (&gaps, stats.gaps.load(Ordering::Relaxed)),
            (&mismatches, stats.mismatches.load(Ordering::Relaxed)),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        async {}
    })
}

/// A witness's registry, refreshed from `stats` before each scrape.
pub fn witness_exposition(stats: Arc<WitnessStats>) -> Exposition {
    let mut registry = Registry::default();
    let cosigned = Counter::<u64>::default();
    let refused = Counter::<u64>::default();
    let size = Gauge::<i64>::default();
    registry.register(
        "refbus_witness_cosigned",
        "Checkpoints of the notary's log the witness checked and cosigned",
        cosigned.clone(),
    );
    registry.register(
        "refbus_witness_refused",
        "Checkpoints the witness refused to cosign (a fork, a bad signature; logged as errors)",
        refused.clone(),
    );
    registry.register(
        "refbus_witness_checkpoint_size",
        "Size of the last checkpoint the witness cosigned",
        size.clone(),
    );
    Exposition::new(registry).refreshed_by(move || {
        size.set(i64::try_from(stats.size.load(Ordering::Relaxed)).unwrap_or(i64::MAX));
        for (counter, total) in [
            (&cosigned, stats.cosigned.load(Ordering::Relaxed)),
            (&refused, stats.refused.load(Ordering::Relaxed)),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
        async {}
    })
}
