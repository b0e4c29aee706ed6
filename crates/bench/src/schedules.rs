//! The alternative to the router's in-memory timers: JetStream message schedules (nats-server
//! 2.12+), one `@at` schedule subject per referral clock, measured on the same server.
//!
//! A schedule's target must be a subject of the same stream, and refbus's events stream refuses
//! purges (history is never removed), so schedules would live in a stream of their own: a
//! schedule per pending referral clock (`Nats-Schedule: @at <RFC 3339 UTC>`,
//! `Nats-Schedule-Target`), replaced after every event that moves the clock and purged when it
//! stops; the router consumes the fired messages, then reads the referral and records what is
//! due, exactly as it does now. What is measured here is the part schedules would replace: from
//! each `@at` to the produced message (its stream timestamp) and to a consumer receiving it.

use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::{self, stream};
use futures::StreamExt;
use tokio::time::Instant;

use crate::BenchError;
use crate::cpu::{self, Process};
use crate::histories::{self, Prepared};
use crate::timing::{self, Lateness};

/// The stream the benchmark's schedules live in (deleted at the end).
pub const STREAM: &str = "REFBUS_BENCH_TIMERS";
const TIMERS: &str = "refbus.bench.timer";
const FIRED: &str = "refbus.bench.fired";

/// How many schedules, over how long, from when.
#[derive(Debug, Clone)]
pub struct ScheduleOptions {
    /// Schedules due within `spread`.
    pub count: usize,
    pub spread: Duration,
    /// From publishing the first schedule to the first `@at`.
    pub lead: Duration,
    /// Publishes whose acknowledgements may be outstanding at once.
    pub window: usize,
    /// Pending schedules cancelled (purged) one by one afterwards, to time a cancellation.
    pub purges: usize,
}

impl Default for ScheduleOptions {
    fn default() -> Self {
        ScheduleOptions {
            count: 100_000,
            spread: Duration::from_secs(60),
            lead: Duration::from_secs(15),
            window: 1024,
            purges: 10_000,
        }
    }
}

/// What the schedules did.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleFigures {
    pub count: usize,
    pub spread: Duration,
    /// Publishing every schedule (async, with the window).
    pub publish: Duration,
    /// nats-server's resident memory before and after publishing them.
    pub server_before: u64,
    pub server_after: u64,
    /// Schedules that fired within the spread plus 30 s.
    pub fired: usize,
    /// From each `@at` to the produced message's stream timestamp.
    pub stored: Lateness,
    /// From each `@at` to a consumer (ordered, on this machine) receiving the produced message.
    pub received: Lateness,
    pub purges: usize,
    /// Purging `purges` pending schedules, 64 requests in flight.
    pub purge: Duration,
}

impl ScheduleFigures {
    pub fn publish_rate(&self) -> f64 {
        timing::rate(self.count, self.publish)
    }

    pub fn purge_rate(&self) -> f64 {
        timing::rate(self.purges, self.purge)
    }
}

fn nats(err: impl std::fmt::Display) -> BenchError {
    BenchError::Nats(err.to_string())
}

/// Runs the schedules on `js`'s server (pid `server_pid`, for its memory).
pub async fn measure(
    js: jetstream::Context,
    server_pid: u32,
    options: &ScheduleOptions,
) -> Result<ScheduleFigures, BenchError> {
    if js.get_stream(STREAM).await.is_ok() {
        js.delete_stream(STREAM).await.map_err(nats)?;
    }
    let stream = js
        .create_stream(stream::Config {
            name: STREAM.to_owned(),
            description: Some("refbus bench: timers as JetStream message schedules".to_owned()),
            subjects: vec![format!("{TIMERS}.>"), format!("{FIRED}.>")],
            storage: stream::StorageType::File,
            allow_message_schedules: true,
            allow_direct: true,
            ..Default::default()
        })
        .await
        .map_err(|err| BenchError::Nats(format!("creating stream {STREAM}: {err}")))?;

    let count = options.count.max(1);
    let first_at = timing::now_nanos() + nanos(options.lead);
    let spread = nanos(options.spread);
    let due_at = move |index: usize| first_at + spread * index as i64 / count as i64;

    // The consumer that plays the router's part, started before anything can fire.
    let fired = stream
        .create_consumer(OrderedConfig {
            filter_subject: format!("{FIRED}.>"),
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(nats)?;
    let mut messages = fired.messages().await.map_err(nats)?;
    let deadline = Instant::now() + options.lead + options.spread + Duration::from_secs(30);
    let collector = tokio::spawn(async move {
        let mut seen: Vec<(usize, i64, i64)> = Vec::with_capacity(count);
        while seen.len() < count {
            let message = match tokio::time::timeout_at(deadline, messages.next()).await {
                Ok(Some(Ok(message))) => message,
                Ok(Some(Err(err))) => return Err(nats(err)),
                Ok(None) | Err(_) => break,
            };
            let received = timing::now_nanos();
            let info = message.info().map_err(nats)?;
            let stored = timing::unix_nanos(&info);
            let index = message
                .subject
                .rsplit('.')
                .next()
                .and_then(|index| index.parse().ok())
                .ok_or_else(|| nats(format!("unexpected subject {}", message.subject)))?;
            seen.push((index, stored, received));
        }
        Ok(seen)
    });

    let server_before = cpu::resident(Process::Pid(server_pid))?.now;
    let schedules: Vec<Prepared> = (0..count)
        .map(|index| {
            schedule(
                &format!("{TIMERS}.{index}"),
                &format!("{FIRED}.{index}"),
                due_at(index),
            )
        })
        .collect();
    let publish = histories::publish_planned(&js, schedules, options.window, None).await?;
    let server_after = cpu::resident(Process::Pid(server_pid))?.now;

    let seen = collector
        .await
        .map_err(|err| BenchError::Setup(format!("the schedule consumer failed: {err}")))??;
    let stored = seen
        .iter()
        .map(|&(index, stored, _)| stored - due_at(index))
        .collect();
    let received = seen
        .iter()
        .map(|&(index, _, received)| received - due_at(index))
        .collect();

    // Cancelling: the router would purge a referral's schedule when its clock stops.
    let purges = options.purges;
    let far = timing::now_nanos() + 3_600 * 1_000_000_000;
    let pending: Vec<Prepared> = (0..purges)
        .map(|index| {
            schedule(
                &format!("{TIMERS}.cancel.{index}"),
                &format!("{FIRED}.cancel.{index}"),
                far,
            )
        })
        .collect();
    histories::publish_planned(&js, pending, options.window, None).await?;
    let started = Instant::now();
    let outcomes: Vec<Result<(), BenchError>> = futures::stream::iter(0..purges)
        .map(|index| {
            let stream = &stream;
            async move {
                let purged = stream
                    .purge()
                    .filter(format!("{TIMERS}.cancel.{index}"))
                    .await
                    .map_err(nats)?;
                if purged.purged != 1 {
                    return Err(nats(format!(
                        "purging schedule {index} removed {}",
                        purged.purged
                    )));
                }
                Ok(())
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    let purge = started.elapsed();
    outcomes.into_iter().collect::<Result<Vec<()>, _>>()?;
    js.delete_stream(STREAM).await.map_err(nats)?;

    Ok(ScheduleFigures {
        count,
        spread: options.spread,
        publish,
        server_before,
        server_after,
        fired: seen.len(),
        stored: Lateness::of(stored),
        received: Lateness::of(received),
        purges,
        purge,
    })
}

fn nanos(duration: Duration) -> i64 {
    i64::try_from(duration.as_nanos()).unwrap_or(i64::MAX)
}

/// A schedule on `subject` that produces one message on `target` at `at` (Unix nanoseconds),
/// carrying what the router would need: which referral to look at.
fn schedule(subject: &str, target: &str, at: i64) -> Prepared {
    let at = chrono::DateTime::from_timestamp_nanos(at)
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let mut headers = HeaderMap::new();
    headers.insert("Nats-Schedule", format!("@at {at}").as_str());
    headers.insert("Nats-Schedule-Target", target);
    let payload = format!(
        "{{\"referral\":\"refbus.v1.ref.maros-uptd-ppa.maros-dinsos.0123456789ABCDEFGHJKMNPQRS\",\"wake\":\"{at}\"}}"
    );
    Prepared {
        subject: subject.to_owned(),
        headers,
        payload: payload.into(),
        message_id: None,
        expected_last_subject_seq: None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedules_are_at_an_instant_in_utc_with_milliseconds() {
        let prepared = schedule("t.1", "f.1", 1_772_413_200_123_456_789);
        assert_eq!(prepared.subject, "t.1");
        assert_eq!(
            prepared.header("Nats-Schedule"),
            Some("@at 2026-03-02T01:00:00.123Z")
        );
        assert_eq!(prepared.header("Nats-Schedule-Target"), Some("f.1"));
    }
}
