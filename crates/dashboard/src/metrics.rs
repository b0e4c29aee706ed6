//! The dashboard's operations metrics (Prometheus, its own registry), served by [`crate::run`]
//! on a port of their own: a scraper has no operator login.

use std::sync::Arc;

use refbus_metrics::prometheus_client::metrics::counter::Counter;
use refbus_metrics::prometheus_client::metrics::gauge::Gauge;
use refbus_metrics::prometheus_client::registry::Registry;

#[derive(Debug, Clone, Default)]
pub(crate) struct Metrics {
    boards: Gauge<i64>,
    referrals: Gauge<i64>,
    indicators: Gauge<i64>,
    alerts: Gauge<i64>,
    stream_differences: Gauge<i64>,
    records: Counter,
}

/// Counts a connected board for as long as it lives.
pub(crate) struct Connected(Gauge<i64>);

impl Drop for Connected {
    fn drop(&mut self) {
        self.0.dec();
    }
}

impl Metrics {
    pub(crate) fn registry(&self) -> Registry {
        let mut registry = Registry::with_prefix("refbus_dashboard");
        registry.register(
            "board_clients_connected",
            "Live feeds (open boards, load and timeline pages) connected now",
            self.boards.clone(),
        );
        registry.register(
            "referrals_held",
            "Referrals in the dashboard's projection (open ones, and closed ones for 8 days)",
            self.referrals.clone(),
        );
        registry.register(
            "indicators_referrals",
            "Referrals the planning indicators count (every referral ever seen, closed ones included); \
             below the stream's count while the indicators are read after a start from the snapshot",
            self.indicators.clone(),
        );
        registry.register(
            "integrity_alerts_held",
            "Integrity alerts shown on top of every board",
            self.alerts.clone(),
        );
        registry.register(
            "stream_differences",
            "Differences from the configured settings the dashboard's last check of the events \
             stream found, shown above every page (0: as configured; above 0 it can lose events)",
            self.stream_differences.clone(),
        );
        registry.register(
            "records_applied",
            "Checked records applied to the projection since start",
            self.records.clone(),
        );
        registry
    }

    pub(crate) fn board_connected(&self) -> Connected {
        self.boards.inc();
        Connected(self.boards.clone())
    }

    pub(crate) fn applied(&self) {
        self.records.inc();
    }

    /// Brought up to date before each scrape.
    pub(crate) fn held(&self, held: Held) {
        let gauge = |n: usize| i64::try_from(n).unwrap_or(i64::MAX);
        self.referrals.set(gauge(held.referrals));
        self.indicators.set(gauge(held.indicators));
        self.alerts.set(gauge(held.alerts));
        self.stream_differences.set(gauge(held.stream_differences));
    }
}

/// What the dashboard holds and shows at a scrape.
pub(crate) struct Held {
    pub(crate) referrals: usize,
    pub(crate) indicators: usize,
    pub(crate) alerts: usize,
    pub(crate) stream_differences: usize,
}

/// What [`crate::run`] serves.
pub(crate) fn exposition(shared: &Arc<crate::Shared>) -> refbus_metrics::Exposition {
    let weak = Arc::downgrade(shared);
    refbus_metrics::Exposition::new(shared.metrics.registry()).refreshed_by(move || {
        let weak = weak.clone();
        async move {
            if let Some(shared) = weak.upgrade() {
                let (referrals, alerts) = shared.read().sizes();
                shared.metrics.held(Held {
                    referrals,
                    indicators: shared.indicators_len(),
                    alerts,
                    stream_differences: shared.stream_differences().len(),
                });
            }
        }
    })
}
