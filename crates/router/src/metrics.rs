//! The router's operations metrics (`refbus_router_*`, documented in docs/OPERATIONS.md), in
//! the router's own registry, served by [`Router::run`](crate::Router::run) when
//! `Options::metrics` names an endpoint.
//!
//! The lag behind the stream is read when scraped, from JetStream's account of the router's
//! durable consumer (events stored and not yet acknowledged: one request), so it is right
//! after a restart and grows while the router is stuck even though nothing in the router moves.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use refbus_bus::Bus;
use refbus_core::Due;
use refbus_core::event::RerouteCause;
use refbus_core::integrity::Problem;
use refbus_metrics::Exposition;

/// What the router recorded on a referral.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Item {
    /// `warning`, `breach`, `escalation` or `reroute`.
    item: &'static str,
    /// The clock (a registry id such as `acknowledge`).
    clock: String,
    /// An escalation's level (`1`, `2`, ...; a reroute's when an escalation asked for it), a
    /// warning's share of the target in thousandths (`750`); empty for a breach.
    level: String,
}

impl Item {
    pub(crate) fn of(due: &Due) -> Item {
        let (item, clock, level) = match due {
            Due::Warning {
                clock, permille, ..
            } => ("warning", clock.to_string(), permille.to_string()),
            Due::Breach { clock, .. } => ("breach", clock.to_string(), String::new()),
            Due::Escalation { clock, level, .. } => {
                ("escalation", clock.to_string(), level.to_string())
            }
            Due::Reroute {
                cause: RerouteCause::Escalation { clock, level },
                ..
            } => ("reroute", clock.to_string(), level.to_string()),
            Due::Reroute { .. } => ("reroute", String::new(), String::new()),
        };
        Item { item, clock, level }
    }
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Integrity {
    problem: &'static str,
}

/// The router's metric families. Cloning is cheap (the families are shared).
#[derive(Clone)]
pub(crate) struct Metrics {
    events_consumed: Counter,
    own_appends_applied: Counter,
    lag: Gauge,
    timers_pending: Gauge,
    recorded: Family<Item, Counter>,
    integrity_failures: Family<Integrity, Counter>,
    stream_differences: Gauge,
}

impl Metrics {
    /// The families, with a zero series for every integrity problem and for every breach and
    /// warning `policies` can record (so that an alert on `increase` sees the first one).
    pub(crate) fn new(policies: &refbus_core::Registry) -> (Metrics, Registry) {
        let mut registry = Registry::with_prefix("refbus_router");
        let metrics = Metrics {
            events_consumed: Counter::default(),
            own_appends_applied: Counter::default(),
            lag: Gauge::default(),
            timers_pending: Gauge::default(),
            recorded: Family::default(),
            integrity_failures: Family::default(),
            stream_differences: Gauge::default(),
        };
        registry.register(
            "events_consumed",
            "Referral events consumed from the router's durable consumer and applied",
            metrics.events_consumed.clone(),
        );
        registry.register(
            "own_appends_applied",
            "Of the events consumed, those the router appended itself, delivered back byte for byte at the sequence JetStream acknowledged, and applied without checking them again",
            metrics.own_appends_applied.clone(),
        );
        registry.register(
            "lag_events",
            "Referral events stored and not yet applied by this router (its durable consumer's pending and unacknowledged), when scraped",
            metrics.lag.clone(),
        );
        registry.register(
            "timers_pending",
            "Referrals with a clock item the router will look at (timers in memory)",
            metrics.timers_pending.clone(),
        );
        registry.register(
            "items_recorded",
            "Warnings, breaches, escalations and reroute requests the router recorded, by item, clock and level",
            metrics.recorded.clone(),
        );
        registry.register(
            "integrity_failures",
            "Records consumed that failed refbus's record check and were flagged, by problem",
            metrics.integrity_failures.clone(),
        );
        registry.register(
            "stream_differences",
            "Settings of the events stream that differ from the configuration in a way that can lose events, at the router's last check (0: as configured)",
            metrics.stream_differences.clone(),
        );
        for problem in Problem::ALL {
            let _ = metrics.integrity_failures.get_or_create(&Integrity {
                problem: problem.as_str(),
            });
        }
        for clock in policies.policies.iter().flat_map(|set| &set.clocks) {
            let series = |item, level: String| Item {
                item,
                clock: clock.id.to_string(),
                level,
            };
            let _ = metrics
                .recorded
                .get_or_create(&series("breach", String::new()));
            for permille in &clock.warnings {
                let _ = metrics
                    .recorded
                    .get_or_create(&series("warning", permille.to_string()));
            }
        }
        (metrics, registry)
    }

    /// An event consumed and applied (acknowledged or not).
    pub(crate) fn consumed(&self) {
        self.events_consumed.inc();
    }

    /// Of the events consumed, one the router appended itself and applied without checking it
    /// again (`crate::own`).
    pub(crate) fn own_append_applied(&self) {
        self.own_appends_applied.inc();
    }

    pub(crate) fn set_timers_pending(&self, pending: usize) {
        self.timers_pending
            .set(i64::try_from(pending).unwrap_or(i64::MAX));
    }

    /// An item the router recorded (not a duplicate another replica recorded first).
    pub(crate) fn recorded(&self, item: &Item) {
        self.recorded.get_or_create(item).inc();
    }

    /// What the last check of the events stream found.
    pub(crate) fn set_stream_differences(&self, differences: usize) {
        self.stream_differences
            .set(i64::try_from(differences).unwrap_or(i64::MAX));
    }

    pub(crate) fn integrity_failure(&self, problem: Problem) {
        self.integrity_failures
            .get_or_create(&Integrity {
                problem: problem.as_str(),
            })
            .inc();
    }

    /// The exposition of `registry`, with the lag of the durable consumer `consumer` read from
    /// `bus` before each scrape (kept as it was if the bus does not answer, or before the
    /// router created its consumer: the read errors are logged).
    pub(crate) fn exposition(&self, registry: Registry, bus: Bus, consumer: String) -> Exposition {
        let lag = self.lag.clone();
        Exposition::new(registry).refreshed_by(move || {
            let lag = lag.clone();
            let bus = bus.clone();
            let consumer = consumer.clone();
            async move {
                match bus.durable_backlog(&consumer).await {
                    Ok(backlog) => {
                        lag.set(i64::try_from(backlog).unwrap_or(i64::MAX));
                    }
                    Err(err) => tracing::warn!("metrics: reading the router's backlog: {err}"),
                }
            }
        })
    }
}
