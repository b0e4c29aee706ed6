//! `refbus bench router`: how fast the router processes referral events, against a raw
//! JetStream pull consumer reading the same stream in the same run, and against the fastest
//! ingest the bus takes on this machine.
//!
//! The stream is filled with whole referral lives exactly as adapters write them (see
//! [`crate::histories`]); then a raw durable pull consumer with explicit acknowledgements reads
//! every event, then a fresh [`Router`] with its own durable consumer processes every event
//! (checks it with the core, reschedules its referral). Each is timed until the server reports
//! every event acknowledged. Last, CreateReferral calls through one adapter, as fast as they go,
//! give the ingest rate the router must keep up with.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, consumer::DeliverPolicy};
use futures::StreamExt;
use refbus_bus::{Bus, StreamSettings};
use refbus_core::{Registry, Timestamp};
use refbus_router::{Activity, Options, Router, SystemClock};
use tokio::runtime::Runtime;
use tokio::time::Instant;

use crate::fixture::{Fixture, Person};
use crate::harness::{CLIENT_THREADS, Layout, Runtimes};
use crate::histories::{self, LIFE_EVENTS, Writer};
use crate::timing::{self, goal_line, micros, per, rate, seconds, thousands};
use crate::{BenchError, Server, cpu, load, raw};

/// Thread name of the router's runtime (its event loop, its tasks, its NATS connection).
pub const ROUTER_THREADS: &str = "bench-router";
/// The router keeps up with at least this fraction of a raw pull consumer's rate.
pub const MIN_RATIO_TO_RAW: f64 = 0.5;

/// How much, and how it is sent.
#[derive(Debug, Clone)]
pub struct RouterOptions {
    /// Referrals, each a whole life of [`LIFE_EVENTS`] events.
    pub referrals: usize,
    /// Referrals whose events are interleaved.
    pub group: usize,
    /// Publishes whose acknowledgements may be outstanding while filling the stream.
    pub window: usize,
    /// Worker threads of the router's runtime (`refbus router` has one per CPU).
    pub router_threads: usize,
    /// CreateReferral calls measured for the ingest rate (0: skip).
    pub creates: usize,
    pub concurrency: usize,
    pub connections: usize,
    /// Passes of each consumer over the stream, taking turns (the median counts).
    pub rounds: usize,
}

impl Default for RouterOptions {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        RouterOptions {
            referrals: 20_000,
            group: 1000,
            window: 1024,
            router_threads: cpus,
            creates: 10_000,
            concurrency: 64,
            connections: 4,
            rounds: 3,
        }
    }
}

/// One consumer's pass over the stream.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Pass {
    pub events: usize,
    pub elapsed: Duration,
    /// CPU time of the consumer's threads.
    pub consumer_cpu: Duration,
    pub server_cpu: Duration,
}

impl Pass {
    pub fn rate(&self) -> f64 {
        rate(self.events, self.elapsed)
    }
}

/// Everything `refbus bench router` measured.
#[derive(Debug, Clone)]
pub struct RouterReport {
    pub conditions: Conditions,
    pub events: usize,
    pub referrals: usize,
    /// Mean payload of the events, in bytes.
    pub payload_bytes: usize,
    /// Building the events (decide, evolve, hash, encode), one thread.
    pub built_in: Duration,
    /// Publishing them (async, `window` outstanding): the rate JetStream ingests these very
    /// messages.
    pub fill: Duration,
    /// The median pass of each, and every pass's rate (lowest first).
    pub raw: Pass,
    pub raw_rates: Vec<f64>,
    pub router: Pass,
    pub router_rates: Vec<f64>,
    /// The router's longest rebuild at start (from its `Ready` report), before it consumed
    /// anything.
    pub rebuild: Duration,
    /// Events the router flagged (must be none: every event was decided by the core).
    pub flagged: usize,
    /// CreateReferral through one adapter, per second (`None`: skipped).
    pub creates_per_second: Option<f64>,
}

/// The run's conditions, for the report.
#[derive(Debug, Clone)]
pub struct Conditions {
    pub date: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub nats_version: String,
    pub durability: String,
    pub debug_build: bool,
    pub load_before: String,
    pub load_after: String,
    pub window: usize,
    pub router_threads: usize,
}

impl Conditions {
    pub(crate) fn now(
        server: &Server,
        nats_version: String,
        window: usize,
        threads: usize,
    ) -> Conditions {
        let (cpus, cpu_model) = cpu::machine();
        Conditions {
            date: chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
                .format("%Y-%m-%d %H:%M UTC")
                .to_string(),
            cpus,
            cpu_model,
            nats_version,
            durability: server.durability.clone(),
            debug_build: cfg!(debug_assertions),
            load_before: cpu::load_average(),
            load_after: String::new(),
            window,
            router_threads: threads,
        }
    }

    /// The title, the machine and its load; `measured` names what shares the machine with
    /// nats-server (the measured component and the load generator).
    pub(crate) fn header(
        &self,
        f: &mut std::fmt::Formatter<'_>,
        title: &str,
        measured: &str,
    ) -> std::fmt::Result {
        writeln!(f, "{title}, {}", self.date)?;
        if self.debug_build {
            writeln!(
                f,
                "WARNING: a debug build; run `cargo run --release -p refbus -- bench ...` for figures that mean anything"
            )?;
        }
        writeln!(
            f,
            "machine: {} CPUs ({}), shared by nats-server {} (loopback, {}), {measured} and the load generator",
            self.cpus, self.cpu_model, self.nats_version, self.durability
        )?;
        writeln!(
            f,
            "load average (1, 5, 15 min): {} at the start, {} at the end",
            self.load_before, self.load_after
        )
    }
}

/// Runs the phases, reporting progress through `progress`.
pub fn router(
    server: &Server,
    registry: Arc<Registry>,
    options: &RouterOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<RouterReport, BenchError> {
    let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
    let runtimes = Runtimes::new(cpus, cpus)?;
    let router_runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(options.router_threads.max(1))
        .thread_name(ROUTER_THREADS)
        .enable_all()
        .build()?;
    let (nats_version, control) = runtimes.client.block_on(async {
        let client = async_nats::connect(&server.url)
            .await
            .map_err(|err| BenchError::Nats(err.to_string()))?;
        Ok::<_, BenchError>((client.server_info().version, jetstream::new(client)))
    })?;
    let mut conditions =
        Conditions::now(server, nats_version, options.window, options.router_threads);

    progress("building the referral events (core decide and evolve, as adapters do)");
    let built = std::time::Instant::now();
    // Whole lives that ended a little while ago (they span about a minute): nothing falls due
    // while the router reads them, and every event's time lies within the record check's
    // allowed skew (2 minutes) of when JetStream stores it, as an adapter's would.
    let start = system_now().minus(Duration::from_secs(75));
    let writer = Writer::new(registry.clone(), "router");
    let messages = writer.lives(options.referrals, options.group, start, 1)?;
    let built_in = built.elapsed();
    let events = messages.len();
    let payload_bytes = messages
        .iter()
        .map(|prepared| prepared.payload.len())
        .sum::<usize>()
        / events.max(1);

    progress("filling the stream (async publish of the prepared events)");
    fresh_stream(&runtimes.client, &control)?;
    // The bus creates the stream and checks it, as a component does.
    runtimes.client.block_on(connect(&server.url))?;
    let (js, stream) = runtimes.client.block_on(raw::jetstream(&server.url))?;
    let fill = runtimes.client.block_on(histories::publish_planned(
        &js,
        messages,
        options.window,
        Some(1),
    ))?;
    let last_seq = events as u64;

    // A pass lasts a few seconds, so one disturbance on the shared CPUs weighs heavily: the
    // two consumers take turns, each with a fresh durable consumer, and the median counts.
    let mut raw_passes = Vec::new();
    let mut router_passes = Vec::new();
    let (mut rebuild, mut flagged) = (Duration::ZERO, 0);
    for round in 0..options.rounds.max(1) {
        progress(&format!(
            "round {}: a. raw durable pull consumer, explicit acks",
            round + 1
        ));
        let before = snapshot(server)?;
        let raw_elapsed = runtimes.client.block_on(raw_pass(
            stream.clone(),
            &format!("bench-raw-{round}"),
            events,
            last_seq,
        ))?;
        let spent = snapshot(server)?.since(&before);
        raw_passes.push(Pass {
            events,
            elapsed: raw_elapsed,
            consumer_cpu: spent.threads(CLIENT_THREADS),
            server_cpu: spent.server,
        });

        progress(&format!(
            "round {}: b. refbus router (its own durable consumer)",
            round + 1
        ));
        let (pass, took, flags) = router_pass(
            server,
            &registry,
            &router_runtime,
            &runtimes.client,
            &stream,
            &format!("bench-{round}"),
            last_seq,
        )?;
        router_passes.push(pass);
        rebuild = rebuild.max(took);
        flagged += flags;
    }
    let raw_rates = rates(&raw_passes);
    let router_rates = rates(&router_passes);
    let raw = median(raw_passes);
    let router_pass = median(router_passes);

    let creates_per_second = if options.creates > 0 {
        progress("c. CreateReferral through one adapter, as fast as it goes");
        fresh_stream(&runtimes.client, &control)?;
        Some(create_rate(server, registry, &runtimes, options)?)
    } else {
        None
    };
    conditions.load_after = cpu::load_average();
    Ok(RouterReport {
        conditions,
        events,
        referrals: options.referrals,
        payload_bytes,
        built_in,
        fill,
        raw,
        raw_rates,
        router: router_pass,
        router_rates,
        rebuild,
        flagged,
        creates_per_second,
    })
}

/// Every pass's rate, lowest first.
fn rates(passes: &[Pass]) -> Vec<f64> {
    let mut rates: Vec<f64> = passes.iter().map(Pass::rate).collect();
    rates.sort_by(f64::total_cmp);
    rates
}

/// The pass with the median rate.
fn median(mut passes: Vec<Pass>) -> Pass {
    passes.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
    let middle = passes.len() / 2;
    passes.swap_remove(middle)
}

pub(crate) fn system_now() -> Timestamp {
    Timestamp::from_millis(timing::now_nanos() / 1_000_000)
}

pub(crate) async fn connect(url: &str) -> Result<Bus, BenchError> {
    Bus::connect(url, &StreamSettings::default())
        .await
        .map_err(|err| BenchError::Nats(err.to_string()))
}

/// Deletes the events stream; whoever connects next creates it empty.
pub(crate) fn fresh_stream(
    runtime: &Runtime,
    control: &jetstream::Context,
) -> Result<(), BenchError> {
    let name = StreamSettings::default().name;
    runtime.block_on(async {
        if control.get_stream(&name).await.is_ok() {
            control
                .delete_stream(&name)
                .await
                .map_err(|err| BenchError::Nats(format!("deleting stream {name}: {err}")))?;
        }
        Ok(())
    })
}

/// CPU time by thread name in this process, and nats-server's.
pub(crate) struct Snapshot {
    threads: BTreeMap<String, Duration>,
    server: Duration,
}

pub(crate) struct Spent {
    threads: BTreeMap<String, Duration>,
    pub(crate) server: Duration,
}

impl Spent {
    pub(crate) fn threads(&self, name: &str) -> Duration {
        self.threads.get(name).copied().unwrap_or_default()
    }
}

impl Snapshot {
    pub(crate) fn since(&self, before: &Snapshot) -> Spent {
        Spent {
            threads: self
                .threads
                .iter()
                .map(|(name, spent)| {
                    let earlier = before.threads.get(name).copied().unwrap_or_default();
                    (name.clone(), spent.saturating_sub(earlier))
                })
                .collect(),
            server: self.server.saturating_sub(before.server),
        }
    }
}

pub(crate) fn snapshot(server: &Server) -> Result<Snapshot, BenchError> {
    Ok(Snapshot {
        threads: cpu::cpu_by_thread_name(cpu::Process::Current)?,
        server: cpu::process_cpu(cpu::Process::Pid(server.pid))?,
    })
}

/// A raw durable pull consumer: receive, acknowledge, nothing else; timed until the server
/// reports everything acknowledged.
async fn raw_pass(
    stream: jetstream::stream::Stream,
    name: &str,
    events: usize,
    last_seq: u64,
) -> Result<Duration, BenchError> {
    let nats = |err: &dyn std::fmt::Display| BenchError::Nats(err.to_string());
    let started = Instant::now();
    let consumer = timing::durable(&stream, name, DeliverPolicy::All).await?;
    let mut messages = consumer.messages().await.map_err(|e| nats(&e))?;
    for _ in 0..events {
        let message = messages
            .next()
            .await
            .ok_or_else(|| BenchError::Nats("the raw consumer ended early".to_owned()))?
            .map_err(|e| nats(&e))?;
        message.ack().await.map_err(|e| nats(&e))?;
    }
    timing::acknowledged_through(
        &stream,
        name,
        last_seq,
        Duration::from_millis(2),
        Duration::from_secs(60),
    )
    .await?;
    Ok(started.elapsed())
}

/// A fresh router on its own runtime, timed from its `Ready` to its consumer having every
/// event acknowledged. Returns the pass, the rebuild time and how many events it flagged.
fn router_pass(
    server: &Server,
    registry: &Arc<Registry>,
    runtime: &Runtime,
    client: &Runtime,
    stream: &jetstream::stream::Stream,
    replica: &str,
    last_seq: u64,
) -> Result<(Pass, Duration, usize), BenchError> {
    // Connecting inside the router's runtime puts its connection on the router's threads.
    let bus = runtime.block_on(connect(&server.url))?;
    let router = Router::new(
        bus,
        crate::verifier(registry),
        crate::signing_keys(registry).router(),
        Arc::new(SystemClock::new()),
        Options {
            replica: replica.to_owned(),
            ..Options::default()
        },
    );
    let mut activity = router.activity();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = runtime.spawn(router.run(async {
        let _ = stopped.await;
    }));
    let mut flagged = 0;
    let rebuild = runtime.block_on(async {
        loop {
            match activity.recv().await {
                Ok(Activity::Ready { took, .. }) => return Ok(took),
                Ok(Activity::Flagged { .. }) => flagged += 1,
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err(BenchError::Setup(
                        "the router stopped before it was ready".to_owned(),
                    ));
                }
            }
        }
    })?;
    let before = snapshot(server)?;
    let started = Instant::now();
    let stream = stream.clone();
    let done = client.block_on(timing::acknowledged_through(
        &stream,
        &format!("refbus-router-{replica}"),
        last_seq,
        Duration::from_millis(2),
        Duration::from_secs(600),
    ))?;
    let spent = snapshot(server)?.since(&before);
    let _ = stop.send(());
    runtime
        .block_on(task)
        .map_err(|err| BenchError::Setup(format!("the router task failed: {err}")))?
        .map_err(|err| BenchError::Setup(format!("the router failed: {err}")))?;
    loop {
        match activity.try_recv() {
            Ok(Activity::Flagged { .. }) => flagged += 1,
            Ok(_) | Err(tokio::sync::broadcast::error::TryRecvError::Lagged(_)) => {}
            Err(_) => break,
        }
    }
    Ok((
        Pass {
            events: usize::try_from(last_seq).unwrap_or(usize::MAX),
            elapsed: done.duration_since(started),
            consumer_cpu: spent.threads(ROUTER_THREADS),
            server_cpu: spent.server,
        },
        rebuild,
        flagged,
    ))
}

/// CreateReferral calls through one adapter (as deployed), as fast as `concurrency` callers
/// go, after a warm-up: the most the bus ingests through refbus on this machine.
fn create_rate(
    server: &Server,
    registry: Arc<Registry>,
    runtimes: &Runtimes,
    options: &RouterOptions,
) -> Result<f64, BenchError> {
    let fixture = Arc::new(Fixture::new(registry)?);
    let adapter = runtimes.start_adapter(&fixture, &server.url, Layout::AsDeployed)?;
    let (addr, connections) = (adapter.addr, options.connections);
    let connecting = fixture.clone();
    let clients = runtimes.client.block_on(async move {
        load::Clients::connect(addr, connections, &connecting, None).await
    })?;
    let warmup = (options.creates / 10).clamp(1, 1000);
    let run = |range: std::ops::Range<usize>| {
        let (clients, fixture) = (clients.clone(), fixture.clone());
        let concurrency = options.concurrency;
        let task = runtimes.client.spawn(async move {
            load::closed_loop(
                &clients,
                &fixture,
                "router",
                range,
                Person::Anonymous,
                concurrency,
            )
            .await
        });
        runtimes
            .client
            .block_on(task)
            .map_err(|err| BenchError::Setup(format!("a load task failed: {err}")))?
    };
    run(0..warmup)?;
    let elapsed = run(warmup..warmup + options.creates)?;
    drop(clients);
    runtimes.stop_adapter(adapter)?;
    Ok(rate(options.creates, elapsed))
}

impl RouterReport {
    pub fn ratio_to_raw(&self) -> f64 {
        self.router.rate() / self.raw.rate().max(f64::MIN_POSITIVE)
    }

    /// The rate JetStream took these very events at, published async.
    pub fn fill_rate(&self) -> f64 {
        rate(self.events, self.fill)
    }
}

impl std::fmt::Display for RouterReport {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let c = &self.conditions;
        c.header(f, "refbus bench router", "the router")?;
        writeln!(
            f,
            "run: {} events = {} referrals x {LIFE_EVENTS} (created, received, accepted, started, completed), {} referrals interleaved, \
             {} B payload on average; router runtime {} threads",
            thousands(self.events as f64),
            thousands(self.referrals as f64),
            thousands(1000.0),
            self.payload_bytes,
            c.router_threads
        )?;
        writeln!(
            f,
            "fill: built in {} (one thread), published in {}: {} events/s (async, window {}, Nats-Msg-Id and expected sequence as adapters send them)",
            seconds(self.built_in),
            seconds(self.fill),
            thousands(self.fill_rate()),
            c.window
        )?;
        writeln!(f)?;
        writeln!(
            f,
            "Consuming every event, until the server reports all acknowledged     events/s   CPU µs/event: consumer  nats-server"
        )?;
        writeln!(
            f,
            "  (the median of {} passes each, taking turns; the median pass's CPU time)",
            self.raw_rates.len()
        )?;
        for (name, pass, rates) in [
            (
                "a. raw durable pull consumer (receive, ack)",
                &self.raw,
                &self.raw_rates,
            ),
            (
                "b. refbus router (check with the core, reschedule, ack)",
                &self.router,
                &self.router_rates,
            ),
        ] {
            writeln!(
                f,
                "  {name:<66} {:>9}   {:>21} {:>12}",
                thousands(pass.rate()),
                format!(
                    "{:.1}",
                    per(pass.consumer_cpu, pass.events).as_secs_f64() * 1e6
                ),
                format!(
                    "{:.1}",
                    per(pass.server_cpu, pass.events).as_secs_f64() * 1e6
                ),
            )?;
            writeln!(
                f,
                "      every pass: {}",
                rates
                    .iter()
                    .map(|rate| thousands(*rate))
                    .collect::<Vec<_>>()
                    .join(" / ")
            )?;
        }
        writeln!(
            f,
            "  (the router timed from its Ready; its rebuild of {} referrals before that took at most {}; events flagged: {})",
            thousands(self.referrals as f64),
            seconds(self.rebuild),
            self.flagged
        )?;
        if let Some(creates) = self.creates_per_second {
            writeln!(
                f,
                "  c. CreateReferral through one adapter, as fast as it goes: {} /s",
                thousands(creates)
            )?;
        }
        writeln!(f)?;
        writeln!(f, "Goals")?;
        writeln!(
            f,
            "{}",
            goal_line(
                self.ratio_to_raw() >= MIN_RATIO_TO_RAW,
                "router vs raw pull consumer, same stream",
                &format!("{:.2}x", self.ratio_to_raw()),
                &format!(">= {MIN_RATIO_TO_RAW:.1}x"),
            )
        )?;
        if let Some(creates) = self.creates_per_second {
            writeln!(
                f,
                "{}",
                goal_line(
                    self.router.rate() >= creates,
                    "router never falls behind the fastest ingest",
                    &format!(
                        "{} events/s vs {} creates/s",
                        thousands(self.router.rate()),
                        thousands(creates)
                    ),
                    "router >= CreateReferral",
                )
            )?;
        }
        writeln!(
            f,
            "  (for scale: JetStream took these events at {} /s published raw; the router processes {:.2}x that; router CPU {} per event)",
            thousands(self.fill_rate()),
            self.router.rate() / self.fill_rate().max(f64::MIN_POSITIVE),
            micros(per(self.router.consumer_cpu, self.router.events))
        )?;
        if self.flagged > 0 {
            writeln!(
                f,
                "  WARNING: the router flagged {} events: the figures measure the wrong thing",
                self.flagged
            )?;
        }
        Ok(())
    }
}
