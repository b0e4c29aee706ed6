//! A steady request rate and the latency histograms it fills.
//!
//! Requests are sent open loop: one every `1 / rate` seconds whatever the answers do, so a
//! slow answer cannot hold back the next request and hide itself. Latency is measured from the
//! moment a request is sent, not from its planned time: tokio's timer has a 1 ms resolution,
//! and its own lateness is not the system's.

use std::time::Duration;

use hdrhistogram::Histogram;
use tokio::time::{Interval, MissedTickBehavior};

use crate::BenchError;

/// Ticks `rate` times a second; a late tick is made up by the following ones, so the average
/// rate holds.
pub struct Pacer {
    interval: Interval,
}

impl Pacer {
    pub fn new(rate: u32) -> Pacer {
        let period = Duration::from_secs(1) / rate.max(1);
        let mut interval = tokio::time::interval(period);
        interval.set_missed_tick_behavior(MissedTickBehavior::Burst);
        Pacer { interval }
    }

    pub async fn tick(&mut self) {
        self.interval.tick().await;
    }
}

/// A histogram of latencies in nanoseconds, from 1 µs to a minute, to three significant digits.
pub fn histogram() -> Result<Histogram<u64>, BenchError> {
    Histogram::new_with_bounds(1_000, 60_000_000_000, 3)
        .map_err(|err| BenchError::Setup(err.to_string()))
}

pub fn record(histogram: &mut Histogram<u64>, latency: Duration) {
    let nanos = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
    histogram.saturating_record(nanos.clamp(histogram.low(), histogram.high()));
}
