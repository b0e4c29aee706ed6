//! `refbus bench ingest`: every phase in one run against the same nats-server.
//!
//! Each phase starts on a fresh events stream (deleted and created again), so no phase pays
//! for the messages or the duplicate-window entries of another. Each adapter phase starts a
//! new adapter: instrumented for throughput, as deployed for latency (see [`Layout`]). Throughput phases send a warm-up (a tenth of the count, at most 1,000) before
//! the measured part; steady-rate phases discard their first half second.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream;
use refbus_adapter::Stage;
use refbus_bus::StreamSettings;
use refbus_core::Registry;

use crate::fixture::{Fixture, Person};
use crate::harness::{
    ADAPTER_THREADS, CLIENT_THREADS, Layout, NATS_IO_THREAD, RunningAdapter, Runtimes,
};
use crate::load::{self, Clients};
use crate::report::{Conditions, CpuUse, HandlerStages, IngestReport, Latency, Throughput};
use crate::{BenchError, cpu, raw, sealing, signatures};

/// How much load, and how it is sent.
#[derive(Debug, Clone)]
pub struct IngestOptions {
    /// Referrals (or raw messages) per throughput phase, after the warm-up.
    pub count: usize,
    /// gRPC calls in flight at once.
    pub concurrency: usize,
    /// HTTP/2 connections they share.
    pub connections: usize,
    /// Raw publishes whose acknowledgements may be outstanding at once.
    pub window: usize,
    /// The steady rate, per second.
    pub rate: u32,
    /// How long each steady-rate phase lasts.
    pub seconds: u64,
    /// Worker threads of the adapter's runtime.
    pub adapter_threads: usize,
    /// Worker threads of the load generator.
    pub client_threads: usize,
    /// Seal operations timed for the primitives alone.
    pub sealing_iterations: u32,
    /// Rounds of the raw throughput phase (the median counts).
    pub raw_rounds: usize,
    /// The adapter serves mutual TLS and the load generator authenticates, as deployed
    /// (the floor then serves the same TLS transport).
    pub tls: bool,
}

impl Default for IngestOptions {
    fn default() -> Self {
        let cpus = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        IngestOptions {
            count: 20_000,
            concurrency: 64,
            connections: 4,
            window: 1024,
            rate: 1000,
            seconds: 10,
            adapter_threads: cpus,
            client_threads: cpus,
            sealing_iterations: 2000,
            raw_rounds: 3,
            tls: false,
        }
    }
}

/// The nats-server the benchmark runs against (fresh, on loopback, for this run alone).
#[derive(Debug, Clone)]
pub struct Server {
    pub url: String,
    pub pid: u32,
    /// How it writes to disk, for the report.
    pub durability: String,
}

/// Runs every phase but the footprint, reporting progress through `progress`.
pub fn ingest(
    server: &Server,
    registry: Arc<Registry>,
    options: &IngestOptions,
    progress: &mut dyn FnMut(&str),
) -> Result<IngestReport, BenchError> {
    let load_before = cpu::load_average();
    let fixture = Arc::new(Fixture::new(registry)?);
    let mut runtimes = Runtimes::new(options.adapter_threads, options.client_threads)?;
    if options.tls {
        runtimes.tls = Some(crate::tls::BenchTls::generate(&fixture.sender)?);
    }
    // The control connection (stream resets and checks) lives on the load generator's
    // runtime; it is idle while a phase is measured.
    let (nats_version, control) = runtimes.client.block_on(async {
        let client = async_nats::connect(&server.url)
            .await
            .map_err(|err| BenchError::Nats(err.to_string()))?;
        Ok::<_, BenchError>((client.server_info().version, jetstream::new(client)))
    })?;
    let run = Run {
        server,
        options,
        fixture,
        control,
        runtimes,
    };

    progress("sealing primitives alone");
    let sealing = sealing::measure(&run.fixture, options.sealing_iterations)?;
    progress("signatures alone (sign, verify, record check)");
    let signatures = signatures::measure(&run.fixture, options.sealing_iterations)?;
    progress("a. raw JetStream async publish");
    let (raw, raw_rates, anonymous_bytes) = run.raw_throughput()?;
    progress("floor: bare tonic handler publishing the same messages");
    let floor = run.floor_throughput()?;
    progress("b. CreateReferral without identity");
    let (anonymous, _) = run.create_throughput("b", Person::Anonymous)?;
    progress("c. CreateReferral with sealed identity");
    let (sealed, sealed_bytes) = run.create_throughput("c", Person::Identified)?;
    progress("e. steady rate: raw synchronous publish");
    let raw_sync = run.raw_latency()?;
    progress("e. steady rate: floor");
    let (floor_latency, floor_steady_cpu) = run.floor_latency()?;
    progress("e. steady rate: CreateReferral without identity");
    let (anonymous_latency, anonymous_steady_cpu) = run.create_latency("e-b", Person::Anonymous)?;
    progress("e. steady rate: CreateReferral with sealed identity");
    let (sealed_latency, _) = run.create_latency("e-c", Person::Identified)?;

    let (cpus, cpu_model) = cpu::machine();
    Ok(IngestReport {
        conditions: Conditions {
            date: chrono::DateTime::<chrono::Utc>::from(std::time::SystemTime::now())
                .format("%Y-%m-%d %H:%M UTC")
                .to_string(),
            cpus,
            cpu_model,
            nats_version,
            durability: server.durability.clone(),
            debug_build: cfg!(debug_assertions),
            load_before,
            load_after: cpu::load_average(),
            count: options.count,
            concurrency: options.concurrency,
            connections: options.connections,
            window: options.window,
            rate: options.rate,
            seconds: options.seconds,
        },
        raw,
        raw_rates,
        message_bytes: (anonymous_bytes, sealed_bytes),
        anonymous,
        sealed,
        sealing,
        floor,
        signatures,
        raw_sync,
        floor_latency,
        anonymous_latency,
        sealed_latency,
        floor_steady_cpu,
        anonymous_steady_cpu,
        footprint: None,
    })
}

/// CPU time by thread name in this process, and nats-server's.
struct Snapshot {
    threads: BTreeMap<String, Duration>,
    server: Duration,
}

impl Snapshot {
    fn since(&self, before: &Snapshot) -> CpuUse {
        let spent = |name: &str| {
            let of = |snapshot: &Snapshot| snapshot.threads.get(name).copied().unwrap_or_default();
            of(self).saturating_sub(of(before))
        };
        CpuUse {
            adapter: spent(ADAPTER_THREADS),
            nats_io: spent(NATS_IO_THREAD),
            client: spent(CLIENT_THREADS),
            server: self.server.saturating_sub(before.server),
        }
    }
}

struct Run<'a> {
    server: &'a Server,
    options: &'a IngestOptions,
    fixture: Arc<Fixture>,
    control: jetstream::Context,
    runtimes: Runtimes,
}

impl Run<'_> {
    fn warmup(&self) -> usize {
        (self.options.count / 10).clamp(1, 1000)
    }

    fn steady_warmup(&self) -> usize {
        usize::try_from(self.options.rate / 2).unwrap_or(0)
    }

    fn steady_count(&self) -> usize {
        let seconds = usize::try_from(self.options.seconds).unwrap_or(usize::MAX);
        let rate = usize::try_from(self.options.rate).unwrap_or(usize::MAX);
        self.steady_warmup() + rate.saturating_mul(seconds)
    }

    /// Runs `work` as a task of the load generator's runtime.
    fn on_client<F>(&self, work: F) -> Result<F::Output, BenchError>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        let task = self.runtimes.client.spawn(work);
        self.runtimes
            .client
            .block_on(task)
            .map_err(|err| BenchError::Setup(format!("a load task failed: {err}")))
    }

    fn snapshot(&self) -> Result<Snapshot, BenchError> {
        Ok(Snapshot {
            threads: cpu::cpu_by_thread_name(cpu::Process::Current)?,
            server: cpu::process_cpu(cpu::Process::Pid(self.server.pid))?,
        })
    }

    /// Deletes the events stream; whoever connects next creates it empty.
    fn fresh_stream(&self) -> Result<(), BenchError> {
        let name = StreamSettings::default().name;
        let control = self.control.clone();
        self.runtimes.client.block_on(async move {
            if control.get_stream(&name).await.is_ok() {
                control
                    .delete_stream(&name)
                    .await
                    .map_err(|err| BenchError::Nats(format!("deleting stream {name}: {err}")))?;
            }
            Ok(())
        })
    }

    /// Checks the stream holds `expected` events (each with its creation-index entry when
    /// `through` the adapter, which indexes every creation); returns the payload size of the
    /// last event.
    fn stored(&self, phase: &str, expected: usize, through: Writer) -> Result<usize, BenchError> {
        let name = StreamSettings::default().name;
        let control = self.control.clone();
        let (messages, last_bytes) = self.runtimes.client.block_on(async move {
            let nats = |err: &dyn std::fmt::Display| BenchError::Nats(err.to_string());
            let mut stream = control.get_stream(&name).await.map_err(|e| nats(&e))?;
            let state = stream.info().await.map_err(|e| nats(&e))?.state.clone();
            // The last event: index entries (`refbus_bus::subjects::ALL_INDEXES`) may follow
            // it, creates running concurrently.
            let mut seq = state.last_sequence;
            let last = loop {
                let message = stream.direct_get(seq).await.map_err(|e| nats(&e))?;
                if !message.subject.starts_with("refbus.v1.idx.") || seq <= 1 {
                    break message;
                }
                seq -= 1;
            };
            Ok::<_, BenchError>((state.messages, last.payload.len()))
        })?;
        let per_event = match through {
            Writer::Raw => 1,
            Writer::Adapter => 2,
        };
        let expected = u64::try_from(expected * per_event).unwrap_or(u64::MAX);
        if messages != expected {
            return Err(BenchError::Stored {
                phase: phase.to_owned(),
                expected,
                stored: messages,
            });
        }
        Ok(last_bytes)
    }

    /// A connection of the load generator with the same JetStream settings as an adapter's,
    /// once a bus has created the stream as an adapter would.
    fn raw_jetstream(&self) -> Result<jetstream::Context, BenchError> {
        let url = self.server.url.clone();
        self.on_client(async move {
            refbus_bus::Bus::connect(&url, &StreamSettings::default())
                .await
                .map_err(|err| BenchError::Nats(err.to_string()))?;
            Ok(raw::jetstream(&url).await?.0)
        })?
    }

    fn raw_messages(
        &self,
        phase: &str,
        count: usize,
    ) -> Result<Vec<(String, jetstream::message::PublishMessage)>, BenchError> {
        let now = (refbus_adapter::system_now())();
        (0..count)
            .map(|index| {
                let request = self.fixture.create_request(phase, index, Person::Anonymous);
                self.fixture.event_message(&request, now)
            })
            .collect()
    }

    /// a. The adapter's messages, straight to JetStream: `raw_rounds` rounds, each on a fresh
    /// stream with the same messages (a round lasts about a second, so one disturbance would
    /// weigh heavily); the round with the median rate, and every round's rate.
    fn raw_throughput(&self) -> Result<(Throughput, Vec<f64>, usize), BenchError> {
        let (warmup, count) = (self.warmup(), self.options.count);
        let mut messages = self.raw_messages("a", warmup + count)?;
        let measured = messages.split_off(warmup);
        let mut rounds = Vec::new();
        let mut bytes = 0;
        for _ in 0..self.options.raw_rounds.max(1) {
            self.fresh_stream()?;
            let js = self.raw_jetstream()?;
            let window = self.options.window;
            self.on_client(raw::publish_async(js.clone(), messages.clone(), window))??;
            let measured = measured.clone();
            let before = self.snapshot()?;
            let elapsed = self.on_client(raw::publish_async(js, measured, window))??;
            let cpu = self.snapshot()?.since(&before);
            bytes = self.stored("a", warmup + count, Writer::Raw)?;
            rounds.push(Throughput {
                count,
                elapsed,
                cpu,
                stages: None,
            });
        }
        rounds.sort_by(|a, b| a.rate().total_cmp(&b.rate()));
        let rates = rounds.iter().map(Throughput::rate).collect();
        let median = rounds.swap_remove(rounds.len() / 2);
        Ok((median, rates, bytes))
    }

    fn start(&self, layout: Layout) -> Result<(RunningAdapter, Clients), BenchError> {
        self.fresh_stream()?;
        let adapter = self
            .runtimes
            .start_adapter(&self.fixture, &self.server.url, layout)?;
        let (addr, connections, fixture) =
            (adapter.addr, self.options.connections, self.fixture.clone());
        let tls = self.runtimes.tls.as_ref().map(|tls| tls.client.clone());
        let clients = self
            .on_client(async move { Clients::connect(addr, connections, &fixture, tls).await })??;
        Ok((adapter, clients))
    }

    fn stop(&self, adapter: RunningAdapter, clients: Clients) -> Result<(), BenchError> {
        // The adapter's graceful stop waits for its connections to close.
        drop(clients);
        self.runtimes.stop_adapter(adapter)
    }

    /// b and c. CreateReferral through gRPC, as fast as the callers go.
    fn create_throughput(
        &self,
        phase: &'static str,
        person: Person,
    ) -> Result<(Throughput, usize), BenchError> {
        let (warmup, count) = (self.warmup(), self.options.count);
        let (adapter, clients) = self.start(Layout::Measured)?;
        let concurrency = self.options.concurrency;
        let closed_loop = |range: std::ops::Range<usize>| {
            let (clients, fixture) = (clients.clone(), self.fixture.clone());
            self.on_client(async move {
                load::closed_loop(&clients, &fixture, phase, range, person, concurrency).await
            })
        };
        closed_loop(0..warmup)??;
        adapter.stages.reset();
        let before = self.snapshot()?;
        let elapsed = closed_loop(warmup..warmup + count)??;
        let cpu = self.snapshot()?.since(&before);
        let times = &adapter.stages;
        let stages = HandlerStages {
            validation: times.total(Stage::Validation),
            sealing: times.total(Stage::Sealing),
            event: times.total(Stage::Event),
            read: times.total(Stage::Read),
            publish: times.total(Stage::Publish),
            response: times.total(Stage::Response),
        };
        let answered = times.creates();
        let bytes = self.stored(phase, warmup + count, Writer::Adapter)?;
        self.stop(adapter, clients)?;
        if answered != u64::try_from(count).unwrap_or(u64::MAX) {
            return Err(BenchError::Setup(format!(
                "{phase}: {count} creates sent but the adapter counted {answered}"
            )));
        }
        Ok((
            Throughput {
                count,
                elapsed,
                cpu,
                stages: Some(stages),
            },
            bytes,
        ))
    }

    /// e. Raw synchronous publish at the steady rate.
    fn raw_latency(&self) -> Result<Latency, BenchError> {
        let total = self.steady_count();
        let messages = self.raw_messages("e-a", total)?;
        self.fresh_stream()?;
        let js = self.raw_jetstream()?;
        let histogram = self.on_client(raw::publish_sync(
            js,
            messages,
            self.options.rate,
            self.steady_warmup(),
        ))??;
        self.stored("e-a", total, Writer::Raw)?;
        Ok(Latency::of(&histogram))
    }

    /// e. CreateReferral at the steady rate; its latency, and the adapter's CPU time per call
    /// (its runtime, which runs its NATS connection as deployed).
    fn create_latency(
        &self,
        phase: &'static str,
        person: Person,
    ) -> Result<(Latency, Duration), BenchError> {
        let total = self.steady_count();
        let (adapter, clients) = self.start(Layout::AsDeployed)?;
        let (rate, warmup) = (self.options.rate, self.steady_warmup());
        let (load_clients, fixture) = (clients.clone(), self.fixture.clone());
        let before = self.snapshot()?;
        let histogram = self.on_client(async move {
            load::open_loop(&load_clients, &fixture, phase, total, person, rate, warmup).await
        })??;
        let cpu = self.snapshot()?.since(&before);
        self.stored(phase, total, Writer::Adapter)?;
        self.stop(adapter, clients)?;
        Ok((Latency::of(&histogram), per_call(cpu, total)))
    }

    /// The floor serving `messages` (they must cover every call), and clients of it.
    fn start_floor(
        &self,
        layout: Layout,
        messages: Vec<(String, jetstream::message::PublishMessage)>,
    ) -> Result<(crate::floor::RunningFloor, Clients), BenchError> {
        self.fresh_stream()?;
        // A bus creates the stream as an adapter would; the floor then publishes to it.
        drop(self.raw_jetstream()?);
        // With --tls the floor serves the adapter's TLS transport and its clients present the
        // same certificate as the adapter's.
        let server_tls = self
            .runtimes
            .tls
            .as_ref()
            .and_then(|tls| match &tls.transport {
                refbus_adapter::Transport::MutualTls { tls, .. } => Some(tls.clone()),
                refbus_adapter::Transport::InsecurePlaintext => None,
            });
        let floor = self
            .runtimes
            .start_floor(&self.server.url, layout, messages, server_tls)?;
        let (addr, connections, fixture) =
            (floor.addr, self.options.connections, self.fixture.clone());
        let client_tls = self.runtimes.tls.as_ref().map(|tls| tls.client.clone());
        let clients = self.on_client(async move {
            Clients::connect(addr, connections, &fixture, client_tls).await
        })??;
        Ok((floor, clients))
    }

    fn stop_floor(
        &self,
        phase: &str,
        floor: crate::floor::RunningFloor,
        clients: Clients,
        expected: usize,
    ) -> Result<(), BenchError> {
        let answered = floor.answered();
        drop(clients);
        self.runtimes.stop_floor(floor)?;
        if answered != u64::try_from(expected).unwrap_or(u64::MAX) {
            return Err(BenchError::Setup(format!(
                "{phase}: {expected} creates sent but the floor answered {answered}"
            )));
        }
        Ok(())
    }

    /// The floor: the same creates as b, each answered by a bare tonic handler after it has
    /// published the adapter's message for it, as fast as the callers go; CPU time accounted
    /// as the adapter's (its runtime's threads and its NATS connection's thread).
    fn floor_throughput(&self) -> Result<Throughput, BenchError> {
        let (warmup, count) = (self.warmup(), self.options.count);
        let messages = self.raw_messages("floor", warmup + count)?;
        let (floor, clients) = self.start_floor(Layout::Measured, messages)?;
        let concurrency = self.options.concurrency;
        let closed_loop = |range: std::ops::Range<usize>| {
            let (clients, fixture) = (clients.clone(), self.fixture.clone());
            self.on_client(async move {
                load::closed_loop(
                    &clients,
                    &fixture,
                    "floor",
                    range,
                    Person::Anonymous,
                    concurrency,
                )
                .await
            })
        };
        closed_loop(0..warmup)??;
        let before = self.snapshot()?;
        let elapsed = closed_loop(warmup..warmup + count)??;
        let cpu = self.snapshot()?.since(&before);
        self.stored("floor", warmup + count, Writer::Raw)?;
        self.stop_floor("floor", floor, clients, warmup + count)?;
        Ok(Throughput {
            count,
            elapsed,
            cpu,
            stages: None,
        })
    }

    /// e. The floor at the steady rate, as deployed (its NATS connection on its runtime).
    fn floor_latency(&self) -> Result<(Latency, Duration), BenchError> {
        let total = self.steady_count();
        let messages = self.raw_messages("e-floor", total)?;
        let (floor, clients) = self.start_floor(Layout::AsDeployed, messages)?;
        let (rate, warmup) = (self.options.rate, self.steady_warmup());
        let (load_clients, fixture) = (clients.clone(), self.fixture.clone());
        let before = self.snapshot()?;
        let histogram = self.on_client(async move {
            load::open_loop(
                &load_clients,
                &fixture,
                "e-floor",
                total,
                Person::Anonymous,
                rate,
                warmup,
            )
            .await
        })??;
        let cpu = self.snapshot()?.since(&before);
        self.stored("e-floor", total, Writer::Raw)?;
        self.stop_floor("e-floor", floor, clients, total)?;
        Ok((Latency::of(&histogram), per_call(cpu, total)))
    }
}

/// The server's CPU time per call (its runtime and its NATS connection's thread).
fn per_call(cpu: CpuUse, calls: usize) -> Duration {
    (cpu.adapter + cpu.nats_io) / u32::try_from(calls.max(1)).unwrap_or(u32::MAX)
}

/// Who wrote a phase's events: the bench itself (one message per event), or the adapter (each
/// creation with its index entry).
#[derive(Debug, Clone, Copy)]
enum Writer {
    Raw,
    Adapter,
}
