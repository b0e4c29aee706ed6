//! refbus-adapter: one agency's door to the bus.
//!
//! An agency's IT system calls `ReferralService` (gRPC) on its own adapter. The adapter is
//! stateless: for each command it reads the referral's current state from the bus, decides with
//! the core, appends the event, and answers only after JetStream has stored it.
//!
//! # Layout
//!
//! - [`Adapter`]: the shared state (agency, registry, bus, keys, time source) and [`run`],
//!   which runs everything an adapter does (the gRPC server, and the reroutes the router asks
//!   of this agency) until a shutdown future completes. The binary and the tests call the same
//!   [`run`], so what a test sees is what a deployment runs.
//! - `service`: the `ReferralService` implementation, one thin method per RPC.
//! - `write`: the command pipeline (load, decide, append, retry on a concurrent change,
//!   recognise a retried request) and the reroute flow.
//! - `read`: get, list, and the inbox stream.
//! - `reroutes`: carrying out the reroutes the router requests, started by [`run`].
//! - `keys`: sealing and opening for this agency; `status`: every gRPC status in one place.
//! - `trace`: the spans of calls (children of the caller's `traceparent`) and deliveries.
//! - `metrics`: the adapter's operations metrics (served by [`run`] on `Options::metrics`).
//! - [`stages`]: optional timing of the create path by stage, for benchmarks.
//!
//! # Invariants
//!
//! - A refused call writes nothing: validation, permission and life-cycle checks all happen
//!   before the single append of a command.
//! - The adapter never holds a referral's state between calls; the bus is the only truth.
//! - Identity and notes are sealed before they leave the adapter and opened only for its own
//!   agency's system.

mod keys;
mod limits;
mod metrics;
mod peer;
mod read;
mod reroutes;
mod service;
pub mod stages;
mod status;
mod trace;
mod write;

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use refbus_bus::{Bus, Verifier};
use refbus_core::signature::SigningKey;
use refbus_core::{AgencyId, Registry, Timestamp};
use refbus_proto::v1::referral_service_server::ReferralServiceServer;
use refbus_seal::Keyring;
use tokio::net::TcpListener;
use tokio::sync::{Semaphore, watch};

pub use stages::{Stage, StageTimes};

pub use peer::Transport;
pub use reroutes::AUTOMATIC_OPERATOR;

/// The source of "now" for decisions: the system clock in production, fixed in some tests.
pub type Now = Arc<dyn Fn() -> Timestamp + Send + Sync>;

/// The system clock, read at the edge (the core never reads it).
pub fn system_now() -> Now {
    Arc::new(|| {
        let millis = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |since| {
                i64::try_from(since.as_millis()).unwrap_or(i64::MAX)
            });
        Timestamp::from_millis(millis)
    })
}

/// Tunables, each with a safe default.
#[derive(Debug, Clone)]
pub struct Options {
    /// Requests larger than this are refused with `RESOURCE_EXHAUSTED` before any work.
    pub max_request_bytes: usize,
    /// How many times a command is re-read and re-decided when another writer changed the
    /// referral in between, before answering `ABORTED`.
    pub conflict_retries: usize,
    /// How long a write rides through an outage of the bus before it answers `UNAVAILABLE`:
    /// a node's loss or a leader change in a NATS cluster (seconds), a reconnection. Within
    /// this time a command that failed for want of the bus is run again with the same request
    /// id, hence the same idempotency key and `Nats-Msg-Id`, so an attempt whose outcome was
    /// unknown (no acknowledgement) is found, never written twice. `Duration::ZERO`: answer
    /// at once.
    pub ride_through: Duration,
    /// How long an inbox stream may stay silent before the adapter closes it, with
    /// `UNAVAILABLE` (clients resume from their cursor).
    pub inbox_idle_timeout: Duration,
    /// How many inbox streams the adapter serves at once. Each holds a JetStream consumer and
    /// a task for as long as it is open; past this, `WatchInbox` answers `RESOURCE_EXHAUSTED`
    /// and opens nothing, so clients that never close their streams cannot exhaust the adapter
    /// or the bus.
    pub max_inbox_streams: usize,
    /// Benchmarks only: where to add up the time creates spend in each stage. `None` (the
    /// default) reads no clock.
    pub stage_times: Option<Arc<StageTimes>>,
    /// Where [`run`] serves the adapter's Prometheus metrics (`GET /metrics`); `None` (the
    /// default): not served.
    pub metrics: Option<refbus_metrics::Endpoint>,
    /// How often a running adapter reads the router's statement on the events stream again
    /// (see [`run`]).
    pub stream_recheck_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            max_request_bytes: 256 * 1024,
            conflict_retries: 4,
            // A NATS cluster elects a new stream leader within about 10 s of losing one (raft
            // election timeouts of 4-9 s after the last heartbeat), and an append waits 5 s
            // for its acknowledgement: 30 s covers one failover with room to spare.
            ride_through: Duration::from_secs(30),
            inbox_idle_timeout: Duration::from_secs(24 * 3600),
            max_inbox_streams: 64,
            stage_times: None,
            metrics: None,
            stream_recheck_every: refbus_bus::statement::RECHECK_EVERY,
        }
    }
}

/// One agency's adapter. Cloning is cheap.
#[derive(Clone)]
pub struct Adapter {
    inner: Arc<Inner>,
}

struct Inner {
    agency: AgencyId,
    registry: Arc<Registry>,
    bus: Bus,
    /// Every record the adapter reads passes through it.
    verifier: Verifier,
    keyring: Keyring,
    /// The agency's signing key: every event this adapter writes is signed with it.
    signing: SigningKey,
    now: Now,
    options: Options,
    /// One permit per open inbox stream (`options.max_inbox_streams`), held by the stream
    /// and given back when it ends or the client goes away.
    inbox_streams: Arc<Semaphore>,
    /// Set once [`run`]'s shutdown completed: open inbox streams end with `UNAVAILABLE` (an
    /// inbox stream never ends by itself, and a graceful shutdown waits for open streams).
    stopping: watch::Sender<bool>,
    metrics: metrics::Metrics,
    /// The adapter's own registry (no global one), served by [`run`].
    exposition: refbus_metrics::Exposition,
}

/// Why an adapter stopped other than by its shutdown.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the gRPC server failed: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("building gRPC reflection from the contract's descriptors: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(
        "insecure plaintext is served on loopback only, and {0} is not: serve mutual TLS \
         (--tls-cert, --tls-key) or listen on 127.0.0.1"
    )]
    PlaintextOffLoopback(std::net::SocketAddr),
    #[error("the adapter's server certificate: {0}")]
    Certificate(String),
    #[error("the listener: {0}")]
    Listener(#[from] std::io::Error),
    #[error("serving metrics: {0}")]
    Metrics(std::io::Error),
    /// The router's statement on the events stream refuses the start (see
    /// `refbus_bus::statement`): none yet, not the router's, or the stream misconfigured.
    #[error("the events stream: {0}")]
    Stream(refbus_bus::ConnectError),
}

impl Adapter {
    /// `verifier` holds the registry the adapter decides with; `signing` is the agency's
    /// signing key, `keyring` its sealing keys.
    pub fn new(
        agency: AgencyId,
        verifier: Verifier,
        bus: Bus,
        keyring: Keyring,
        signing: SigningKey,
        now: Now,
        options: Options,
    ) -> Adapter {
        let inbox_streams = Arc::new(Semaphore::new(
            options.max_inbox_streams.min(Semaphore::MAX_PERMITS),
        ));
        let (metrics, registry) = metrics::Metrics::new(agency.as_str());
        let exposition = metrics::exposition(registry, &metrics, &inbox_streams, &options);
        // The adapter counts the records it refuses itself, apart from other components; its
        // agency's own records vouch for the states they follow (`Bus::referral`).
        let verifier = {
            let metrics = metrics.clone();
            verifier
                .writing_as(&agency)
                .observed(move |problem| metrics.integrity_failure(problem))
        };
        Adapter {
            inner: Arc::new(Inner {
                agency,
                registry: verifier.registry().clone(),
                bus,
                verifier,
                keyring,
                signing,
                now,
                inbox_streams,
                options,
                stopping: watch::channel(false).0,
                metrics,
                exposition,
            }),
        }
    }

    pub fn agency(&self) -> &AgencyId {
        &self.inner.agency
    }

    pub fn bus(&self) -> &Bus {
        &self.inner.bus
    }

    fn now(&self) -> Timestamp {
        (self.inner.now)()
    }

    fn stopwatch(&self) -> stages::Stopwatch<'_> {
        stages::Stopwatch(self.inner.options.stage_times.as_deref())
    }
}

/// Runs `adapter` until `shutdown` completes: serves gRPC on `listener` (the
/// `ReferralService`, gRPC health and reflection) over `transport` and carries out the reroutes
/// the router asks of this agency. Refuses to start when the server certificate has expired
/// (and warns within 30 days of its end), or when insecure plaintext is asked for on an
/// address other than loopback. On shutdown, open inbox streams end with `UNAVAILABLE` (clients reconnect
/// with their cursor, to another adapter or this one restarted), calls in flight finish, and
/// `run` returns. An adapter that has run once stays stopped: build a new one to serve again.
pub async fn run(
    adapter: Adapter,
    listener: TcpListener,
    transport: Transport,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    transport.check_address(listener.local_addr()?)?;
    if let Transport::MutualTls { tls, .. } = &transport {
        check_expiry(tls)?;
    }
    check_stream(&adapter).await?;
    // Served for as long as the adapter runs, stopped with it.
    let metrics = match &adapter.inner.options.metrics {
        Some(endpoint) => Some(
            refbus_metrics::spawn(adapter.inner.exposition.clone(), endpoint)
                .map_err(Error::Metrics)?,
        ),
        None => None,
    };
    let stopping = adapter.inner.stopping.clone();
    let adapter_stopped = stopping.clone();
    let reroutes = {
        let mut stopped = stopping.subscribe();
        tokio::spawn(adapter.clone().carry_out_reroutes(async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }))
    };
    let stream_watch = {
        let mut stopped = stopping.subscribe();
        tokio::spawn(watch_stream(adapter.clone(), async move {
            let _ = stopped.wait_for(|stop| *stop).await;
        }))
    };
    let served = serve(adapter, listener, transport, async move {
        shutdown.await;
        tracing::info!("adapter stopping: ending inbox streams");
        stopping.send_replace(true);
    })
    .await;
    // Also when serving failed: nothing of the adapter may outlive `run`.
    adapter_stopped.send_replace(true);
    let _ = reroutes.await;
    let _ = stream_watch.await;
    if let Some(metrics) = metrics {
        metrics.stop().await;
    }
    served
}

/// Refuses to start unless the router has checked the events stream and found it as
/// configured: an adapter may not read the stream's settings itself (the answer can list every
/// referral's subject), so it reads the router's signed statement of its last check
/// (`refbus_bus::statement`). A statement older than `STALE_AFTER` (no router checked since)
/// is warned about, not refused: a router down must not also keep the agency from referring.
async fn check_stream(adapter: &Adapter) -> Result<(), Error> {
    let (statement, age) = adapter
        .inner
        .bus
        .router_statement(&adapter.inner.verifier)
        .await
        .map_err(Error::Stream)?;
    if age > refbus_bus::statement::STALE_AFTER {
        tracing::warn!(
            stream = %statement.stream,
            checked_at = %statement.checked_at,
            age_seconds = age.as_secs(),
            "the router's last check of the events stream is old: is a router running? Starting \
             on it; a stream altered since is not known here"
        );
    } else {
        tracing::info!(
            stream = %statement.stream,
            checked_at = %statement.checked_at,
            "the router checked the events stream: as configured"
        );
    }
    Ok(())
}

/// While the adapter runs, reads the router's statement on the events stream again every
/// `Options::stream_recheck_every`, until `stop`: a stream altered under a running adapter is
/// logged at ERROR at every reading and shown in `refbus_adapter_stream_unvouched`, for the
/// agency's IT staff. The adapter goes on serving: what it writes is stored all the same, and
/// refusing the agency's referrals would lose more than it protects.
async fn watch_stream(adapter: Adapter, stop: impl Future<Output = ()>) {
    let mut ticks = tokio::time::interval(adapter.inner.options.stream_recheck_every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is now: `check_stream` has just read it.
    ticks.tick().await;
    tokio::pin!(stop);
    loop {
        tokio::select! {
            () = &mut stop => return,
            _ = ticks.tick() => {}
        }
        let read = adapter
            .inner
            .bus
            .router_statement(&adapter.inner.verifier)
            .await;
        match read {
            Ok((statement, age)) => {
                adapter.inner.metrics.set_stream_unvouched(false);
                if age > refbus_bus::statement::STALE_AFTER {
                    tracing::warn!(
                        stream = %statement.stream,
                        checked_at = %statement.checked_at,
                        age_seconds = age.as_secs(),
                        "the router's last check of the events stream is old: is a router running?"
                    );
                }
            }
            Err(err)
                if matches!(
                    err.kind(),
                    refbus_bus::ConnectErrorKind::Misconfigured
                        | refbus_bus::ConnectErrorKind::Unvouched
                ) =>
            {
                adapter.inner.metrics.set_stream_unvouched(true);
                tracing::error!(
                    "{err}. This adapter goes on serving (what it writes is stored), but referral \
                     events can be lost: tell the refbus administrator; a restart of this adapter \
                     refuses until the stream is put right"
                );
            }
            Err(err) => tracing::warn!(
                "could not read the router's statement on the events stream again: {err}"
            ),
        }
    }
}

/// Serves `adapter` over gRPC on `listener` (with health checking and reflection) until
/// `shutdown` completes.
async fn serve(
    adapter: Adapter,
    listener: TcpListener,
    transport: Transport,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), Error> {
    let (health_reporter, health) = tonic_health::server::health_reporter();
    // Serving while the bus is reachable: load balancers and clients can wait on this.
    let mut connection = adapter.inner.bus.connection();
    let health_task = tokio::spawn(async move {
        loop {
            let up = *connection.borrow_and_update();
            if up {
                health_reporter
                    .set_serving::<ReferralServiceServer<Adapter>>()
                    .await;
            } else {
                health_reporter
                    .set_not_serving::<ReferralServiceServer<Adapter>>()
                    .await;
            }
            if connection.changed().await.is_err() {
                return;
            }
        }
    });
    // Health is listed too, so that tools (grpcurl) can call it from reflection alone.
    let reflection = tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(refbus_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1();
    let reflection = match reflection {
        Ok(reflection) => reflection,
        Err(err) => {
            health_task.abort();
            return Err(err.into());
        }
    };
    let limit = adapter.inner.options.max_request_bytes;
    let counted = metrics::CountLayer {
        metrics: adapter.inner.metrics.clone(),
    };
    let authenticate = peer::Authenticate {
        agency: adapter.inner.agency.clone(),
        clients: match &transport {
            Transport::MutualTls { clients, .. } => Some(clients.clone()),
            Transport::InsecurePlaintext => None,
        },
    };
    // Every ReferralService call is authenticated first; health and reflection (what the
    // contract looks like, whether the adapter serves) are public and stay open to probes.
    let service = tonic::service::interceptor::InterceptedService::new(
        ReferralServiceServer::new(adapter)
            .max_decoding_message_size(limit)
            .max_encoding_message_size(16 * 1024 * 1024),
        authenticate,
    );
    // Counting outermost, so it sees the status the client receives (the size limit's too).
    let router = tonic::transport::Server::builder()
        .trace_fn(trace::call)
        .layer(counted)
        .layer(limits::RequestLimitLayer { limit })
        .add_service(health)
        .add_service(reflection)
        .add_service(service);
    let served = match transport {
        Transport::MutualTls { tls, .. } => {
            router
                .serve_with_incoming_shutdown(tls.incoming(listener), shutdown)
                .await
        }
        Transport::InsecurePlaintext => {
            // Without TCP_NODELAY small gRPC answers wait for the peer's delayed ACK (~40 ms).
            let incoming =
                tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
            router
                .serve_with_incoming_shutdown(incoming, shutdown)
                .await
        }
    };
    health_task.abort();
    Ok(served?)
}

/// Refuses an expired server certificate and warns 30 days before it ends.
fn check_expiry(tls: &refbus_tls::ServerTls) -> Result<(), Error> {
    let Some(certificate) = tls.chain.first() else {
        return Err(Error::Certificate("the chain is empty".to_owned()));
    };
    let now = time::OffsetDateTime::now_utc();
    match refbus_tls::expiry(certificate, now).map_err(|err| Error::Certificate(err.to_string()))? {
        refbus_tls::Expiry::Valid { .. } => Ok(()),
        refbus_tls::Expiry::EndsSoon { not_after } => {
            tracing::warn!(
                %not_after,
                "CERTIFICATE: the adapter's server certificate expires within 30 days; renew it"
            );
            Ok(())
        }
        refbus_tls::Expiry::Expired { not_after } => Err(Error::Certificate(format!(
            "it expired at {not_after}; renew it (refbus certs server)"
        ))),
        refbus_tls::Expiry::NotYetValid { not_before } => Err(Error::Certificate(format!(
            "it is not valid before {not_before} (check this machine's clock)"
        ))),
    }
}
