//! Lateness distributions, waiting on a consumer's acknowledgements, and the number formats the
//! router and clock reports share.

use std::time::Duration;

use async_nats::jetstream::consumer::{PullConsumer, pull};
use async_nats::jetstream::{consumer::AckPolicy, consumer::DeliverPolicy, stream};
use refbus_bus::subjects;
use tokio::time::Instant;

use crate::BenchError;

/// How late things happened after they were due: every sample kept, percentiles exact.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lateness {
    pub samples: usize,
    /// Samples that came before their due time (clocks of two processes differ slightly).
    pub early: usize,
    /// Signed, in milliseconds.
    pub min: f64,
    pub p50: f64,
    pub p90: f64,
    pub p99: f64,
    pub max: f64,
}

impl Lateness {
    /// From lateness samples in nanoseconds (negative: early).
    pub fn of(mut nanos: Vec<i64>) -> Lateness {
        nanos.sort_unstable();
        let at = |quantile: f64| -> f64 {
            if nanos.is_empty() {
                return 0.0;
            }
            // Nearest rank.
            let rank = (quantile * nanos.len() as f64).ceil() as usize;
            nanos[rank.clamp(1, nanos.len()) - 1] as f64 / 1e6
        };
        Lateness {
            samples: nanos.len(),
            early: nanos.iter().filter(|&&late| late < 0).count(),
            min: nanos.first().map_or(0.0, |&late| late as f64 / 1e6),
            p50: at(0.5),
            p90: at(0.9),
            p99: at(0.99),
            max: nanos.last().map_or(0.0, |&late| late as f64 / 1e6),
        }
    }

    /// `p50 / p90 / p99 / max` in milliseconds.
    pub fn row(&self) -> String {
        format!(
            "{:>7.1} {:>7.1} {:>7.1} {:>8.1}   ({} samples{})",
            self.p50,
            self.p90,
            self.p99,
            self.max,
            thousands(self.samples as f64),
            if self.early > 0 {
                format!(", {} early, earliest {:.1} ms", self.early, self.min)
            } else {
                String::new()
            }
        )
    }
}

/// Nanoseconds since the Unix epoch of a JetStream timestamp.
pub fn unix_nanos(at: &async_nats::jetstream::message::Info<'_>) -> i64 {
    i64::try_from(at.published.unix_timestamp_nanos()).unwrap_or(i64::MAX)
}

/// Nanoseconds since the Unix epoch, now, by this machine's wall clock.
pub fn now_nanos() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |since| {
            i64::try_from(since.as_nanos()).unwrap_or(i64::MAX)
        })
}

/// A durable pull consumer of every referral event with the router's own settings
/// (`Bus::durable`), from `deliver_policy`.
pub async fn durable(
    stream: &stream::Stream,
    name: &str,
    deliver_policy: DeliverPolicy,
) -> Result<PullConsumer, BenchError> {
    stream
        .create_consumer(pull::Config {
            durable_name: Some(name.to_owned()),
            description: Some("refbus bench: every referral event, in order".to_owned()),
            filter_subject: subjects::ALL_REFERRALS.to_owned(),
            ack_policy: AckPolicy::Explicit,
            deliver_policy,
            ack_wait: Duration::from_secs(60),
            max_ack_pending: 20_000,
            ..Default::default()
        })
        .await
        .map_err(|err| BenchError::Nats(format!("creating consumer {name}: {err}")))
}

/// Waits until consumer `name` has every message up to `last_seq` acknowledged; returns when
/// that was first seen (polled every `every`), or fails after `timeout`.
pub async fn acknowledged_through(
    stream: &stream::Stream,
    name: &str,
    last_seq: u64,
    every: Duration,
    timeout: Duration,
) -> Result<Instant, BenchError> {
    let deadline = Instant::now() + timeout;
    loop {
        let info = stream
            .consumer_info(name)
            .await
            .map_err(|err| BenchError::Nats(format!("consumer {name}: {err}")))?;
        if info.ack_floor.stream_sequence >= last_seq && info.num_ack_pending == 0 {
            return Ok(Instant::now());
        }
        if Instant::now() > deadline {
            return Err(BenchError::Setup(format!(
                "consumer {name} acknowledged up to {} of {last_seq} within {} s",
                info.ack_floor.stream_sequence,
                timeout.as_secs()
            )));
        }
        tokio::time::sleep(every).await;
    }
}

pub fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

pub fn seconds(duration: Duration) -> String {
    format!("{:.2} s", duration.as_secs_f64())
}

pub fn micros(duration: Duration) -> String {
    format!("{:.1} µs", duration.as_secs_f64() * 1e6)
}

/// `12,345`.
pub fn thousands(value: f64) -> String {
    let digits = format!("{:.0}", value.max(0.0));
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `count` per second over `elapsed`.
pub fn rate(count: usize, elapsed: Duration) -> f64 {
    count as f64 / elapsed.as_secs_f64().max(f64::MIN_POSITIVE)
}

/// `total / count`.
pub fn per(total: Duration, count: usize) -> Duration {
    total.div_f64(count.max(1) as f64)
}

/// A goal and whether it was met, for the printed report.
pub fn goal_line(met: bool, name: &str, measured: &str, wanted: &str) -> String {
    format!(
        "  {:<8} {name:<52} {measured} (goal {wanted})",
        if met { "met" } else { "NOT MET" }
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_are_nearest_rank() {
        let lateness = Lateness::of((1..=100).rev().map(|ms| ms * 1_000_000).collect());
        assert_eq!(lateness.samples, 100);
        assert_eq!(lateness.p50, 50.0);
        assert_eq!(lateness.p99, 99.0);
        assert_eq!(lateness.max, 100.0);
        assert_eq!(lateness.early, 0);
        let early = Lateness::of(vec![-2_000_000, 5_000_000]);
        assert_eq!(early.early, 1);
        assert_eq!(early.min, -2.0);
        assert_eq!(Lateness::of(Vec::new()).p99, 0.0);
        assert_eq!(thousands(1_234_567.0), "1,234,567");
    }
}
