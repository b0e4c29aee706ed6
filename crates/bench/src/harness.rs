//! Where everything runs: separate tokio runtimes with named threads for the load generator,
//! the adapter and the adapter's NATS connection, so `/proc` can tell their CPU time apart.
//!
//! In production an adapter's NATS connection shares the adapter's runtime. For the CPU time by
//! stage it gets a thread of its own ([`Layout::Measured`]), the only way to see what
//! publishing costs beside gRPC: the work is the same, but each hand-over between the two costs
//! a thread wake-up, so latency is measured with the deployed layout ([`Layout::AsDeployed`]).

use std::net::SocketAddr;
use std::sync::Arc;

use refbus_adapter::{Adapter, Options, StageTimes};
use refbus_bus::{Bus, StreamSettings};
use tokio::runtime::Runtime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::fixture::Fixture;
use crate::{BenchError, cpu};

/// Thread name of the adapter's runtime (gRPC server and handlers).
pub const ADAPTER_THREADS: &str = "bench-adapter";
/// Thread name of the adapter's NATS connection.
pub const NATS_IO_THREAD: &str = "bench-nats-io";
/// Thread name of the load generator (gRPC clients, and the raw publisher).
pub const CLIENT_THREADS: &str = "bench-client";

/// The three runtimes.
pub struct Runtimes {
    pub client: Runtime,
    pub adapter: Runtime,
    pub nats_io: Runtime,
    /// Adapters serve mutual TLS with these (`refbus bench ingest --tls`); plaintext on
    /// loopback when `None`.
    pub tls: Option<crate::tls::BenchTls>,
}

impl Runtimes {
    /// `adapter_threads` workers for the adapter (an adapter on this machine gets one per CPU),
    /// `client_threads` for the load generator, one for the adapter's NATS connection.
    pub fn new(adapter_threads: usize, client_threads: usize) -> std::io::Result<Runtimes> {
        let runtime = |name: &str, threads: usize| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(threads)
                .thread_name(name)
                .enable_all()
                .build()
        };
        Ok(Runtimes {
            client: runtime(CLIENT_THREADS, client_threads)?,
            adapter: runtime(ADAPTER_THREADS, adapter_threads)?,
            nats_io: runtime(NATS_IO_THREAD, 1)?,
            tls: None,
        })
    }

    /// Starts the sender's adapter on a free loopback port.
    pub fn start_adapter(
        &self,
        fixture: &Fixture,
        nats_url: &str,
        layout: Layout,
    ) -> Result<RunningAdapter, BenchError> {
        // Connecting inside a runtime puts the connection's tasks on its threads.
        let nats_runtime = match layout {
            Layout::Measured => &self.nats_io,
            Layout::AsDeployed => &self.adapter,
        };
        // As the router's start connects: the stream checked and the router's statement of
        // it stored, without which an adapter does not start.
        let bus = nats_runtime
            .block_on(Bus::connect_attesting(
                nats_url,
                &StreamSettings::default(),
                &crate::signing_keys(&fixture.registry).router(),
            ))
            .map_err(|err| BenchError::Nats(err.to_string()))?;
        let stages = Arc::new(StageTimes::new(cpu::thread_cpu));
        let options = Options {
            stage_times: (layout == Layout::Measured).then(|| stages.clone()),
            ..Options::default()
        };
        let adapter = Adapter::new(
            fixture.sender.clone(),
            crate::verifier(&fixture.registry),
            bus,
            fixture.keyring(&fixture.sender)?,
            crate::signing_keys(&fixture.registry).agency(&fixture.sender),
            refbus_adapter::system_now(),
            options,
        );
        let listener = self
            .adapter
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))?;
        let addr = listener.local_addr()?;
        let (shutdown, stop) = oneshot::channel::<()>();
        let task = self.adapter.spawn(refbus_adapter::run(
            adapter,
            listener,
            // Plaintext on loopback, unless the benchmark measures TLS as deployed.
            self.tls
                .as_ref()
                .map_or(refbus_adapter::Transport::InsecurePlaintext, |tls| {
                    tls.transport.clone()
                }),
            async {
                let _ = stop.await;
            },
        ));
        Ok(RunningAdapter {
            addr,
            stages,
            shutdown,
            task,
        })
    }

    /// Stops an adapter and waits for it to finish its calls.
    pub fn stop_adapter(&self, running: RunningAdapter) -> Result<(), BenchError> {
        let _ = running.shutdown.send(());
        self.adapter
            .block_on(running.task)
            .map_err(|err| BenchError::Setup(format!("the adapter task failed: {err}")))?
            .map_err(|err| BenchError::Setup(format!("the adapter failed: {err}")))
    }
}

/// How an adapter runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Its create path timed by stage (thread CPU time), its NATS connection on a thread of
    /// its own: for the CPU time by stage.
    Measured,
    /// As deployed: no timing, the NATS connection on the adapter's runtime: for latency.
    AsDeployed,
}

/// An adapter serving on `addr`; `stages` stay empty unless it runs [`Layout::Measured`].
pub struct RunningAdapter {
    pub addr: SocketAddr,
    pub stages: Arc<StageTimes>,
    shutdown: oneshot::Sender<()>,
    task: JoinHandle<Result<(), refbus_adapter::Error>>,
}
