//! `refbus bench audit`: `refbus audit verify` over a stream of whole referral lives, against a
//! raw ordered replay of the same stream in the same run.
//!
//! 1. `referrals` whole lives (created, received, accepted, started, completed: five events
//!    each; [`Writer::lives`]), published with the messages adapters publish.
//! 2. Rounds, each: the floor, a bare ordered consumer reading every message of the stream
//!    (no decoding); then `refbus_audit::verify::verify_bus` with the standard checks (every
//!    record through the one record check, sequences, order, clocks recomputed). The medians
//!    count; the ratio is the floor's time over verify's (verify's throughput as a share of a
//!    raw replay's).
//!
//! The record check's time-against-storage part is off (the lives are stamped before they are
//! stored; a million take longer to store than the two minutes allowed): it is one comparison
//! per record, nothing next to a signature.

use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::{Duration, Instant};

use async_nats::jetstream::consumer::{DeliverPolicy, pull::OrderedConfig};
use async_nats::jetstream::stream;
use futures::StreamExt;
use refbus_core::Registry;

use crate::histories::{self, Writer};
use crate::router::{connect, fresh_stream, system_now};
use crate::timing::{goal_line, seconds, thousands};
use crate::{BenchError, Server};

/// The goal: verify at least this share of a raw ordered replay's throughput.
pub const MIN_RATIO_TO_RAW: f64 = 0.7;

/// How much.
#[derive(Debug, Clone)]
pub struct AuditOptions {
    pub referrals: usize,
    /// Referrals whose events are interleaved, as many agencies' would be.
    pub group: usize,
    /// Publishes whose acknowledgements may be outstanding while filling.
    pub window: usize,
    pub rounds: usize,
}

impl Default for AuditOptions {
    fn default() -> AuditOptions {
        AuditOptions {
            referrals: 1_000_000,
            group: 100,
            window: 1024,
            rounds: 3,
        }
    }
}

/// What was measured.
#[derive(Debug, Clone)]
pub struct AuditReport {
    pub referrals: usize,
    pub messages: u64,
    pub fill: Duration,
    /// The floor, each round.
    pub raw: Vec<Duration>,
    /// Verify, each round.
    pub verify: Vec<Duration>,
    /// Problems verify reported (0 on the benchmark's stream).
    pub problems: usize,
}

fn median(times: &[Duration]) -> Duration {
    let mut sorted = times.to_vec();
    sorted.sort();
    sorted.get(sorted.len() / 2).copied().unwrap_or_default()
}

impl AuditReport {
    /// Verify's throughput over the raw replay's (medians).
    pub fn ratio_to_raw(&self) -> f64 {
        let verify = median(&self.verify).as_secs_f64();
        if verify > 0.0 {
            median(&self.raw).as_secs_f64() / verify
        } else {
            0.0
        }
    }
}

impl std::fmt::Display for AuditReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let rate = |time: Duration| self.messages as f64 / time.as_secs_f64().max(1e-9);
        let (raw, verify) = (median(&self.raw), median(&self.verify));
        writeln!(
            f,
            "audit verify: {} referrals, {} messages (filled in {})",
            self.referrals,
            self.messages,
            seconds(self.fill)
        )?;
        writeln!(
            f,
            "  raw ordered replay   median {} ({} msg/s) over {} round(s)",
            seconds(raw),
            thousands(rate(raw)),
            self.raw.len()
        )?;
        writeln!(
            f,
            "  audit verify         median {} ({} msg/s), {} problem(s)",
            seconds(verify),
            thousands(rate(verify)),
            self.problems
        )?;
        writeln!(
            f,
            "{}",
            goal_line(
                self.ratio_to_raw() >= MIN_RATIO_TO_RAW,
                "verify throughput / raw ordered replay",
                &format!("{:.2}x", self.ratio_to_raw()),
                &format!(">= {MIN_RATIO_TO_RAW}x"),
            )
        )
    }
}

/// The floor: a bare ordered consumer reading every message up to `last`.
pub(crate) async fn read_all(stream: &stream::Stream, last: u64) -> Result<Duration, BenchError> {
    let nats = |err: &dyn std::fmt::Display| BenchError::Nats(err.to_string());
    let started = Instant::now();
    let consumer = stream
        .create_consumer(OrderedConfig {
            deliver_policy: DeliverPolicy::All,
            ..Default::default()
        })
        .await
        .map_err(|e| nats(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| nats(&e))?;
    while let Some(message) = messages.next().await {
        let message = message.map_err(|e| nats(&e))?;
        if message.info().map_err(|e| nats(&e))?.stream_sequence >= last {
            break;
        }
    }
    Ok(started.elapsed())
}

/// The floor of a read of every referral's current state: a bare ordered consumer delivering
/// the last message of each subject, then one direct read of each subject's first message
/// (`concurrent` at once), nothing decoded or checked. Returns both times and the subjects.
pub(crate) async fn read_last_and_first(
    js: &async_nats::jetstream::Context,
    stream: &stream::Stream,
    subjects: usize,
    concurrent: usize,
) -> Result<(Duration, Duration), BenchError> {
    let nats = |err: &dyn std::fmt::Display| BenchError::Nats(err.to_string());
    let started = Instant::now();
    // nats-server answers only once it has found every subject's last message: over a
    // million subjects that takes longer than a request's usual bound (the bus waits as long).
    let mut js = js.clone();
    js.set_timeout(refbus_bus::SCAN_TIMEOUT);
    let consumer = js
        .create_consumer_on_stream(
            OrderedConfig {
                deliver_policy: DeliverPolicy::LastPerSubject,
                filter_subject: refbus_bus::subjects::ALL_REFERRALS.to_owned(),
                ..Default::default()
            },
            refbus_bus::StreamSettings::default().name,
        )
        .await
        .map_err(|e| nats(&e))?;
    let mut messages = consumer.messages().await.map_err(|e| nats(&e))?;
    let mut names = Vec::with_capacity(subjects);
    while names.len() < subjects {
        let Some(message) = messages.next().await else {
            break;
        };
        names.push(message.map_err(|e| nats(&e))?.subject.to_string());
    }
    let last = started.elapsed();
    let started = Instant::now();
    let mut firsts = futures::stream::iter(names)
        .map(|subject| async move {
            stream
                .direct_get_next_for_subject(subject, Some(1))
                .await
                .map_err(|e| nats(&e))
        })
        .buffered(concurrent.max(1));
    while let Some(first) = firsts.next().await {
        first?;
    }
    Ok((last, started.elapsed()))
}

/// What the notary benchmark starts from: `referrals` eight-event lives signed as adapters sign
/// them (the writer labelled `label`), not yet published (its fill is what it measures), and a
/// fresh events stream with the bus's connection and the bench's own JetStream one to it.
pub(crate) struct Lives {
    pub messages: Vec<histories::Prepared>,
    pub bus: refbus_bus::Bus,
    pub js: async_nats::jetstream::Context,
    pub stream: stream::Stream,
}

pub(crate) fn lives(
    runtime: &tokio::runtime::Runtime,
    server: &Server,
    registry: Arc<Registry>,
    label: &str,
    (referrals, group): (usize, usize),
    progress: &mut dyn FnMut(&str),
) -> Result<Lives, BenchError> {
    progress("building the referral lives (core decide and evolve, signed, as adapters do)");
    let start = system_now().minus(Duration::from_secs(3600));
    let messages = Writer::new(registry, label).audit_lives(referrals, group, start, 1)?;
    let (bus, js, stream) = fresh(runtime, server)?;
    Ok(Lives {
        messages,
        bus,
        js,
        stream,
    })
}

/// What the audit and indicators benchmarks read: a fresh events stream filled with
/// `referrals` eight-event lives as [`lives`] builds them, built in the background while
/// earlier ones are published (a million lives would not fit in memory), and how long that took.
pub(crate) struct Filled {
    pub fill: Duration,
    pub bus: refbus_bus::Bus,
    pub js: async_nats::jetstream::Context,
    pub stream: stream::Stream,
}

pub(crate) fn filled(
    runtime: &tokio::runtime::Runtime,
    server: &Server,
    registry: Arc<Registry>,
    label: &str,
    (referrals, group, window): (usize, usize, usize),
    progress: &mut dyn FnMut(&str),
) -> Result<Filled, BenchError> {
    let (bus, js, stream) = fresh(runtime, server)?;
    progress(
        "filling the stream with referral lives (core decide and evolve, signed, as adapters do; \
         built as they are published)",
    );
    let start = system_now().minus(Duration::from_secs(3600));
    let builders = std::thread::available_parallelism().map_or(1, std::num::NonZero::get);
    let chunks = Arc::new(Writer::new(registry, label))
        .audit_lives_in_background(referrals, group, start, builders);
    let (sent, fill) = runtime.block_on(histories::publish_chunks(&js, chunks, window))?;
    if sent != referrals * histories::AUDIT_LIFE_EVENTS {
        return Err(BenchError::Nats(format!(
            "{sent} messages published instead of {}",
            referrals * histories::AUDIT_LIFE_EVENTS
        )));
    }
    Ok(Filled {
        fill,
        bus,
        js,
        stream,
    })
}

/// A fresh events stream, created and checked by the bus as a component does, with the bus's
/// connection and the bench's own JetStream one to it.
fn fresh(
    runtime: &tokio::runtime::Runtime,
    server: &Server,
) -> Result<
    (
        refbus_bus::Bus,
        async_nats::jetstream::Context,
        stream::Stream,
    ),
    BenchError,
> {
    let control = runtime.block_on(async {
        async_nats::connect(&server.url)
            .await
            .map(async_nats::jetstream::new)
            .map_err(|err| BenchError::Nats(err.to_string()))
    })?;
    fresh_stream(runtime, &control)?;
    let bus = runtime.block_on(connect(&server.url))?;
    let (js, stream) = runtime.block_on(crate::raw::jetstream(&server.url))?;
    Ok((bus, js, stream))
}

pub fn audit(
    server: &Server,
    registry: Arc<Registry>,
    options: &AuditOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<AuditReport, BenchError> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let Filled {
        fill, bus, stream, ..
    } = filled(
        &runtime,
        server,
        registry.clone(),
        "audit",
        (options.referrals, options.group, options.window),
        progress,
    )?;
    let last = runtime
        .block_on(bus.last_sequence())
        .map_err(|err| BenchError::Nats(err.to_string()))?;
    let verifier = refbus_bus::Verifier::new(
        registry.clone(),
        Arc::new(crate::signing_keys(&registry).signers()),
        None,
    );
    let mut raw = Vec::new();
    let mut verify = Vec::new();
    let mut problems = 0;
    for round in 0..options.rounds.max(1) {
        progress(&format!("round {}: raw ordered replay", round + 1));
        raw.push(runtime.block_on(read_all(&stream, last))?);
        progress(&format!("round {}: audit verify", round + 1));
        let started = Instant::now();
        let checks =
            refbus_audit::checks::standard(registry.clone(), refbus_core::audit::DEFAULT_TOLERANCE);
        let options = refbus_audit::verify::Options {
            now: system_now(),
            resume: None,
            progress: false,
        };
        let outcome = runtime
            .block_on(refbus_audit::verify::verify_bus(
                &bus,
                &verifier,
                checks,
                &options,
                &AtomicBool::new(false),
            ))
            .map_err(|err| BenchError::Nats(err.to_string()))?;
        verify.push(started.elapsed());
        if let refbus_audit::verify::Outcome::Done(report) = outcome {
            problems = report.problems.len();
        }
    }
    Ok(AuditReport {
        referrals: options.referrals,
        messages: last,
        fill,
        raw,
        verify,
        problems,
    })
}
