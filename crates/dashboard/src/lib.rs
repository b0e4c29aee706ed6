//! refbus-dashboard: the operators' board. Every open referral with a running clock, coloured by
//! how late it is, per-agency load, each referral's timeline and the integrity alerts, pushed
//! live to browsers over server-sent events. Metadata only: the dashboard never reads, holds or
//! shows a person's identity (it cannot: identities are sealed for the two agencies).
//!
//! # Layout
//!
//! - [`projection`]: pure: checked records in, board rows and loads out, `now` passed in; the
//!   clock states are the core's clock views.
//! - `follow`: the loop that keeps the projection current (rebuild at start, then the stream,
//!   the router's integrity notices and the clock).
//! - `web`: the HTTP routes, compiled templates and the live feed.
//! - [`viewer`]: who is looking ([`Viewer`], put in each request by the login), and what they
//!   may see.
//! - [`local`]: languages and time zones.
//! - [`indicators`]: planning indicators (the core's fold, kept beside the projection), their
//!   page with server-drawn SVG charts and CSV, and the stream replay `refbus indicators` uses.
//! - [`act`]: acknowledging from the board, through the operator's agency's adapter.
//!
//! # Entry point
//!
//! [`run`] owns everything: it rebuilds the projection, follows the stream and serves HTTP on
//! the listener it is given until `shutdown`; `refbus dashboard`, `refbus up` and the tests all
//! call it.

pub mod act;
mod follow;
pub mod indicators;
pub mod local;
mod metrics;
pub mod projection;
pub mod snapshot;
pub mod viewer;
mod web;

use std::future::Future;
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use refbus_bus::{Bus, Verifier};
use refbus_clock::Clock;
use refbus_core::ReferralId;
use tokio::sync::{broadcast, watch};

pub use projection::{Filters, Projection, Row, RowState};
pub use viewer::{Role, Viewer};

/// What changed in the projection, as it happens: the live feed's source (and what tests wait
/// for).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// The projection is rebuilt; the board serves from here on.
    Ready { referrals: usize },
    /// A referral's row may have changed (a record, or time reaching one of its clock points).
    Referral { version: u64, id: ReferralId },
    /// The integrity alerts changed.
    Alerts { version: u64 },
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the bus failed: {0}")]
    Bus(#[from] refbus_bus::ReadError),
    #[error("serving HTTP: {0}")]
    Serve(#[from] std::io::Error),
    #[error("serving metrics: {0}")]
    Metrics(std::io::Error),
    /// The stream stopped delivering records (the connection gave up): the board would go
    /// stale, so the dashboard stops; started again, it rebuilds.
    #[error("the dashboard stopped following the stream")]
    Stopped,
}

/// What the loop and the handlers share.
pub(crate) struct Shared {
    bus: Bus,
    verifier: Verifier,
    clock: Arc<dyn Clock>,
    /// The projection: written by the follow loop alone, read by the handlers (never held
    /// across an await).
    projection: RwLock<Projection>,
    /// The planning indicators: every referral ever seen (the projection forgets closed ones),
    /// fed by the same checked records; written by the follow loop alone.
    indicators: RwLock<refbus_core::indicators::Indicators>,
    updates: broadcast::Sender<Update>,
    /// Names this process in the live feed's event ids: a browser that reconnects to another
    /// process (a restart) is sent the whole board, whatever version it saw.
    epoch: String,
    /// Set when the dashboard stops: open live feeds end, so the server can stop.
    closing: watch::Sender<bool>,
    /// The adapters the dashboard calls to act for operators (none: the board only shows).
    acting: std::sync::OnceLock<act::Acting>,
    metrics: metrics::Metrics,
    /// Where [`run`] serves the metrics, if anywhere.
    metrics_endpoint: std::sync::OnceLock<refbus_metrics::Endpoint>,
    /// Where the projection's snapshot is kept and with which key, if anywhere.
    snapshot: std::sync::OnceLock<Snapshots>,
    /// Each way the events stream differs from the configuration at its last check (empty:
    /// as configured), shown above every page: the stream can lose events.
    stream: RwLock<Vec<String>>,
    /// How often the stream is checked again while the dashboard runs.
    stream_recheck_every: std::sync::OnceLock<std::time::Duration>,
}

/// The projection's snapshot file and the dashboard's key for it (see [`snapshot`]).
pub(crate) struct Snapshots {
    pub(crate) path: std::path::PathBuf,
    pub(crate) key: refbus_core::signature::SigningKey,
    /// How often it is written, when anything changed.
    pub(crate) every: std::time::Duration,
}

impl Shared {
    fn read(&self) -> RwLockReadGuard<'_, Projection> {
        self.projection
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Projection> {
        self.projection
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Folds a checked state into the indicators.
    fn observe(&self, state: &refbus_core::Referral) {
        self.indicators
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .observe(self.verifier.registry(), state);
    }

    /// How many referrals the indicators count.
    fn indicators_len(&self) -> usize {
        self.indicators
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    fn acting(&self) -> Option<&act::Acting> {
        self.acting.get()
    }

    fn send(&self, update: Update) {
        let _ = self.updates.send(update);
    }

    /// What the last check of the stream found (empty: as configured).
    fn stream_differences(&self) -> Vec<String> {
        self.stream
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Checks the events stream again every [`Shared::stream_recheck_every`] (a minute unless
    /// set): the start-up check refuses to start on a stream that can lose events, and this
    /// one puts a stream altered under a running dashboard above every page (and logs it at
    /// ERROR at every check) until it is put right. The board goes on: what it shows is still
    /// what was recorded.
    async fn recheck_stream(self: Arc<Self>) {
        let every = self
            .stream_recheck_every
            .get()
            .copied()
            .unwrap_or(refbus_bus::statement::RECHECK_EVERY);
        let mut ticks = tokio::time::interval(every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is now: the start-up check has just been made.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            let differences = match self.bus.stream_differences().await {
                Ok(differences) => differences,
                Err(err) => {
                    tracing::warn!(error = %err, "could not check the events stream again");
                    continue;
                }
            };
            if !differences.is_empty() {
                tracing::error!(
                    differences = %differences.join("; "),
                    "the events stream no longer is as configured: it can lose or alter events; \
                     shown on every page of the dashboard until it is put right"
                );
            }
            let changed = {
                let mut shown = self
                    .stream
                    .write()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                let changed = *shown != differences;
                *shown = differences;
                changed
            };
            if changed {
                let version = self.read().version();
                self.send(Update::Alerts { version });
            }
        }
    }
}

/// The dashboard. Build it, subscribe to its [`updates`](Dashboard::updates), then [`run`] it.
#[derive(Clone)]
pub struct Dashboard {
    shared: Arc<Shared>,
}

impl Dashboard {
    /// `bus` reads the whole stream (the dashboard is not confined to an agency); `verifier`
    /// checks every record it reads and holds the registry; `clock` says what time it is.
    pub fn new(bus: Bus, verifier: Verifier, clock: Arc<dyn Clock>) -> Dashboard {
        let registry = verifier.registry().clone();
        let epoch = format!(
            "{:x}",
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |since| since.as_nanos())
        );
        Dashboard {
            shared: Arc::new(Shared {
                bus,
                verifier,
                clock,
                projection: RwLock::new(Projection::new(registry)),
                indicators: RwLock::new(refbus_core::indicators::Indicators::new()),
                updates: broadcast::channel(4096).0,
                epoch,
                closing: watch::channel(false).0,
                acting: std::sync::OnceLock::new(),
                metrics: metrics::Metrics::default(),
                metrics_endpoint: std::sync::OnceLock::new(),
                snapshot: std::sync::OnceLock::new(),
                stream: RwLock::new(Vec::new()),
                stream_recheck_every: std::sync::OnceLock::new(),
            }),
        }
    }

    /// The dashboard acting through `acting` (see [`act`]); set once, before [`run`] (a
    /// second call changes nothing).
    pub fn with_acting(self, acting: act::Acting) -> Dashboard {
        let _ = self.shared.acting.set(acting);
        self
    }

    /// The dashboard serving its Prometheus metrics on `endpoint` while it runs (see the
    /// `metrics` module); set once, before [`run`].
    pub fn with_metrics(self, endpoint: refbus_metrics::Endpoint) -> Dashboard {
        let _ = self.shared.metrics_endpoint.set(endpoint);
        self
    }

    /// The dashboard keeping a signed snapshot of its projection in `path` (written at start
    /// and then every `every` when anything changed), and starting from it: it then reads
    /// again only the referrals a message reached since. `key` is the dashboard's own
    /// ([`snapshot::key`]). Set once, before [`run`].
    pub fn with_snapshot(
        self,
        path: std::path::PathBuf,
        key: refbus_core::signature::SigningKey,
        every: std::time::Duration,
    ) -> Dashboard {
        let _ = self.shared.snapshot.set(Snapshots { path, key, every });
        self
    }

    /// The dashboard checking the events stream again every `every` rather than every
    /// minute (tests); set once, before [`run`].
    pub fn with_stream_recheck_every(self, every: std::time::Duration) -> Dashboard {
        let _ = self.shared.stream_recheck_every.set(every);
        self
    }

    /// A feed of the projection's changes; lagging receivers lose the oldest.
    pub fn updates(&self) -> broadcast::Receiver<Update> {
        self.shared.updates.subscribe()
    }

    /// The routes (see the `web` module). Every handler reads the [`Viewer`] from the
    /// request's extensions: wrap them with whatever puts it there.
    pub fn routes(&self) -> axum::Router {
        web::routes(self.shared.clone())
    }
}

/// Rebuilds the projection, then follows the stream and serves `wrap(dashboard.routes())` on
/// `listener` until `shutdown` completes. `wrap` adds what identifies the viewer (the login's
/// layers; in tests and development, a fixed `Extension<Viewer>`).
pub async fn run(
    dashboard: Dashboard,
    listener: tokio::net::TcpListener,
    wrap: impl FnOnce(axum::Router) -> axum::Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), Error> {
    let shared = dashboard.shared.clone();
    let _metrics = match shared.metrics_endpoint.get() {
        Some(endpoint) => Some(
            refbus_metrics::spawn(metrics::exposition(&shared), endpoint)
                .map_err(Error::Metrics)?,
        ),
        None => None,
    };
    let (after, referrals, from_snapshot) = follow::start(&shared).await?;
    shared.send(Update::Ready { referrals });
    tracing::info!(referrals, "dashboard ready");
    let indicators = from_snapshot.then(|| tokio::spawn(follow::observe_all(shared.clone())));
    let _indicators = indicators.map(|task| AbortOnDrop(task.abort_handle()));
    let _recheck = AbortOnDrop(tokio::spawn(shared.clone().recheck_stream()).abort_handle());
    let mut follower = tokio::spawn(follow::follow(shared.clone(), after));
    let app = wrap(dashboard.routes());
    let closing = shared.clone();
    // With the peer's address: the login limits failures per address, and believes a trusted
    // proxy's identity header only from the proxy's own address.
    let app = app.into_make_service_with_connect_info::<std::net::SocketAddr>();
    let server = axum::serve(listener, app).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = closing.closing.send(true);
    });
    tokio::select! {
        served = async move { server.await } => {
            follower.abort();
            served?;
            Ok(())
        }
        // A board that no longer follows the stream would show stale clocks as live: stop,
        // for whoever runs the dashboard to start it again (it rebuilds).
        ended = &mut follower => {
            let _ = shared.closing.send(true);
            Err(match ended {
                Ok(Err(err)) => Error::Bus(err),
                _ => Error::Stopped,
            })
        }
    }
}

/// Aborts a background task when the dashboard stops.
struct AbortOnDrop(tokio::task::AbortHandle);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
