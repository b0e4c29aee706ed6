//! refbus-router: makes sure no referral is late without someone hearing of it.
//!
//! The router consumes every referral event from a durable consumer, re-decides each one with
//! the core (an event the core would have refused is flagged loudly and never moves a clock),
//! keeps a timer per open referral, and when something falls due records it on the referral:
//! warnings, breaches, escalations and reroute requests, with notices to third agencies.
//!
//! # Layout
//!
//! - [`Router`]: the event loop, which alone owns the timers and the state cache (one owner);
//!   [`Router::activity`] reports what it does, for operators' screens and tests.
//! - `ingest`: checking and applying consumed events; notices for escalations, confirmed
//!   stored beside the loop before the escalation is acknowledged.
//! - `fire`: recording what is due on one referral.
//! - `timers`: the in-memory timer table, rebuilt at start from the referrals' states.
//! - `trace`: the spans of consuming an event and of firing a timer (trace context carried on
//!   from the event's `traceparent` to what the router appends and the notices it sends).
//! - `snapshot`: the timer table written now and then to a signed file, so that a restart
//!   reads again only the referrals that changed since.
//! - `share`: routers that partition: which referrals are this replica's ([`Partitions`]),
//!   and the leases in JetStream that share the partitions out among replicas.
//! - `metrics`: the router's operations metrics (served by [`Router::run`] on
//!   `Options::metrics`).
//! - [`clock`]: where "now" comes from ([`SystemClock`], or [`ManualClock`] in tests), the
//!   `refbus-clock` crate, shared with the dashboard.
//!
//! # Exactly once
//!
//! Every item recorded has a stable message id (`router:<referral>:<item>`) and names the
//! referral's last sequence; the core refuses to record an item twice (each is marked on the
//! referral). A router that crashes, restarts, or runs beside another replica therefore records
//! each item once: a second writer is refused by the bus, re-reads, and finds nothing due.

mod fire;
mod ingest;
mod metrics;
mod own;
mod share;
mod snapshot;
mod timers;
mod trace;

pub use share::{BUCKET as LEASE_BUCKET, MAX_PARTITIONS, Partitions};

use std::collections::{BTreeMap, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{AbortHandle, Abortable, BoxStream, SelectAll};
use futures::{FutureExt, StreamExt};
use refbus_bus::{Bus, Delivery, subjects};
use refbus_core::{ReferralId, Registry, Timestamp, evaluate};
use tokio::sync::{broadcast, mpsc};
use tokio::task::JoinSet;

/// The time sources live in `refbus-clock`, shared with the dashboard; re-exported here so
/// `refbus_router::ManualClock` and `refbus_router::clock::*` keep working.
pub use refbus_clock as clock;
pub use refbus_clock::{Clock, ManualClock, ScaledClock, SystemClock};

/// At most this many events already received are applied in a row before due timers are looked
/// at again (a few milliseconds of work: timers are not held up noticeably).
const INGEST_BATCH: usize = 64;

/// At most this many consumed escalations wait at once for their notices to be stored.
const MAX_SETTLING: usize = 1_024;

/// Referrals changed since a snapshot read again at once when partitions are set up from
/// their snapshots (each a task: the reads' checks spread over every core).
const CATCH_UP_READS: usize = 64;

/// Tunables, each with a safe default.
#[derive(Debug, Clone)]
pub struct Options {
    /// Names this replica (its durable consumer when it reads every event, its leases when
    /// it holds a share).
    pub replica: String,
    /// `None` (the default): this replica reads every event and holds every timer. `Some`:
    /// the referrals are cut into partitions shared out among the replicas running, and this
    /// one holds only the timers of the partitions it claimed (see [`Partitions`]).
    pub partitions: Option<Partitions>,
    /// How many referrals are being recorded on at once.
    pub max_concurrent_fires: usize,
    /// How many referral states are kept in memory to check the next event against; the rest
    /// are read back from the bus when needed.
    pub state_cache: usize,
    /// Where [`Router::run`] serves the router's Prometheus metrics (`GET /metrics`); `None`
    /// (the default): not served.
    pub metrics: Option<refbus_metrics::Endpoint>,
    /// Where to keep the snapshot of the timer table (a file, one per replica), so that a
    /// restart reads again only what changed since; `None` rebuilds from every open referral.
    pub snapshot: Option<PathBuf>,
    /// How often the snapshot is written, when anything changed.
    pub snapshot_every: Duration,
    /// How often the events stream is checked again, and the router's signed statement of it
    /// renewed for the adapters ([`refbus_bus::statement`]).
    pub stream_recheck_every: Duration,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            replica: "main".to_owned(),
            partitions: None,
            max_concurrent_fires: 256,
            state_cache: 100_000,
            metrics: None,
            snapshot: None,
            snapshot_every: Duration::from_secs(60),
            stream_recheck_every: refbus_bus::statement::RECHECK_EVERY,
        }
    }
}

/// What the router did, as it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    /// Timers rebuilt from the referrals' current states: the router is ready.
    Ready {
        /// Referrals read from the bus: every open one, or after a snapshot only those that
        /// changed since it.
        referrals: usize,
        pending: usize,
        took: Duration,
        /// The stream sequence of the snapshot the timers started from, if one was used.
        from_snapshot: Option<u64>,
    },
    /// A partition claimed (a partitioned router), its timers set up: this replica now holds
    /// its share of the referrals.
    Claimed {
        partition: u32,
        /// Referrals of the partition read from the bus (all, or after a snapshot only those
        /// that changed since it).
        referrals: usize,
        /// Referrals of the partition with pending clocks.
        pending: usize,
        took: Duration,
        from_snapshot: Option<u64>,
    },
    /// A partition given up (its lease lost, or given back to a replica that joined): its
    /// timers are dropped here, another replica takes them.
    Released { partition: u32 },
    /// The timer table was written to its snapshot file, as of a stream sequence.
    Snapshot { covers: u64, entries: usize },
    /// An item was recorded on a referral (`key` names it, e.g. `acknowledge_urgent.breach`).
    Recorded {
        referral: ReferralId,
        key: String,
        change: &'static str,
        due_at: Timestamp,
        recorded_at: Timestamp,
        seq: u64,
    },
    /// A notice was sent to a third agency.
    Noticed {
        referral: ReferralId,
        agency: String,
        key: String,
    },
    /// The events stream checked again ([`Options::stream_recheck_every`]) and the router's
    /// statement of it stored: `differences` names each setting that can lose events (empty:
    /// as configured). Differences are logged at ERROR at every check; the clocks keep
    /// running, and adapters starting from now on refuse to.
    StreamChecked { differences: Vec<String> },
    /// A record that fails the integrity check: it is not applied, the referral's clocks keep
    /// running from its last verified state, and the coordinator is told.
    Flagged {
        /// The referral its subject names, if it names one.
        referral: Option<ReferralId>,
        seq: u64,
        problem: refbus_core::integrity::Problem,
        why: String,
    },
}

/// The router. Build it, subscribe to its [`activity`](Router::activity), then [`run`](Router::run).
pub struct Router {
    bus: Bus,
    verifier: refbus_bus::Verifier,
    /// The router signs what it records with this key.
    key: refbus_core::signature::SigningKey,
    registry: Arc<Registry>,
    clock: Arc<dyn Clock>,
    options: Options,
    activity: broadcast::Sender<Activity>,
    metrics: metrics::Metrics,
    /// The router's own registry (no global one), served by [`Router::run`].
    exposition: refbus_metrics::Exposition,
    /// What the router appended and JetStream acknowledged, until delivered back (`own`).
    own: std::sync::Mutex<own::OwnAppends>,
    /// The events handed back, counted for the log ([`HandBacks`]).
    hand_backs: Arc<HandBacks>,
}

/// A referral's last state the router checked, to check its next event against.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub(crate) seq: u64,
    pub(crate) state: refbus_core::Referral,
    /// The span that consumed the event at `seq`: a firing computed from this state descends
    /// from it (`trace`).
    pub(crate) trace: opentelemetry::trace::SpanContext,
}

/// What the event loop owns.
struct Loop {
    timers: timers::Timers,
    known: HashMap<ReferralId, Known>,
    /// Referrals being recorded on, taken out of the timers meanwhile (subject, sequence).
    in_flight: HashMap<ReferralId, (Arc<str>, u64)>,
    /// The partitions held (`{0}` for a router that holds every referral), with the highest
    /// stream sequence applied from each one's consumer (or read by a rebuild). Not a promise
    /// that every event up to it is in the timers: an event given to another reader of the
    /// consumer and not acknowledged there (a previous holder's) comes here later, out of
    /// order. A snapshot covers no further than the consumer's acknowledged position for that
    /// reason ([`Router::acknowledged`]).
    applied: HashMap<u32, u64>,
    /// Each held partition's consumer, to stop it when the partition is given up.
    feeds: HashMap<u32, HeldFeed>,
    /// How far each held partition's consumer has checked the stream: its acknowledged
    /// position, read when it is opened and every [`POSITIONS_EVERY`]: every message up to it
    /// was checked by a router holding the partition (applied or refused by the record check)
    /// before it was acknowledged. Not moved by the events delivered here (one another reader
    /// did not acknowledge comes after later ones, see [`Router::acknowledged`]), nor by a
    /// rebuild or a snapshot, which take referrals' last records on a lighter check: a fire
    /// goes on from a record past it only after reading the referral's history in full.
    checked: HashMap<u32, u64>,
    /// For a partitioned router, until when its leases let it act on each partition.
    tenure: Option<share::Tenure>,
}

/// The durable consumer of a router replica that holds every referral (run without
/// `--partitions`): `refbus-router-<replica>`. The shipped NATS permissions deny it to readers
/// for the replica names the shipped deployment files use (deploy/nats/permissions.conf).
pub fn replica_consumer(replica: &str) -> String {
    format!("refbus-router-{replica}")
}

impl Loop {
    fn holds(&self, partitions: Option<&Partitions>, referral: &ReferralId) -> bool {
        partitions.is_none_or(|partitions| self.applied.contains_key(&partitions.of(referral)))
    }

    /// Whether this router may still act on `partition`'s events (always, unpartitioned).
    fn in_tenure(&self, partition: u32) -> bool {
        self.tenure
            .as_ref()
            .is_none_or(|tenure| tenure.holds(partition))
    }
}

/// How the loop stops a held partition's consumer.
struct HeldFeed {
    /// Takes the consumer's feed out of the loop's merged feeds (without its end being
    /// reported as the consumer's failure).
    abort: AbortHandle,
    /// Stops the consumer itself at once, returning what it had buffered.
    stop: refbus_bus::DurableStop,
}

impl HeldFeed {
    /// Stops `partition`'s consumer and hands back the deliveries it had received and the loop
    /// had not taken yet: they are the partition's new holder's, at once rather than after the
    /// acknowledgement timeout (a consumer dropped with them would leave them a minute
    /// unacknowledged, nobody acting on them). Returns the hand-backs' task.
    fn stop(self, partition: u32, hand_backs: Arc<HandBacks>) -> tokio::task::JoinHandle<()> {
        self.abort.abort();
        let buffered = self.stop.stop();
        tokio::spawn(async move {
            if buffered.is_empty() {
                return;
            }
            tracing::warn!(
                partition,
                events = buffered.len(),
                "the partition's consumer is stopped with events received and not taken yet: \
                 each handed back to the consumer, for the partition's holder"
            );
            for delivery in &buffered {
                send_back(&hand_backs, partition, delivery).await;
            }
        })
    }
}

/// What the held partitions' consumers deliver, merged.
#[allow(
    clippy::large_enum_variant,
    reason = "nearly every item is a delivery, of this size anyway; a box would cost an \
              allocation per event"
)]
enum Feed {
    Delivery(u32, Result<Delivery, refbus_bus::ReadError>),
    /// A consumer's stream of events ended (not stopped by the router).
    Ended(u32),
}

/// Stops the lease keeper when the router stops: without giving the leases back if the router
/// was dropped (aborted, as a killed process would be: others wait for them to expire), after
/// giving them back on a clean stop ([`Router::run`] awaits that).
struct KeeperGuard(Option<tokio::task::JoinHandle<()>>);

impl Drop for KeeperGuard {
    fn drop(&mut self) {
        if let Some(task) = self.0.take() {
            task.abort();
        }
    }
}

impl Router {
    /// Every [`Options::stream_recheck_every`], checks the events stream as at start and stores
    /// the router's signed statement of it (`refbus_bus::statement`): an adapter starting reads
    /// it, since it may not read the stream's settings itself. A stream altered under a running
    /// router is logged at ERROR at every check until it is put right; the router goes on (its
    /// clocks matter more than its refusal: the start-up check refuses it at its next start).
    async fn recheck_stream(self: Arc<Self>) {
        let mut ticks = tokio::time::interval(self.options.stream_recheck_every);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // The first tick is now: the start-up check has just been made.
        ticks.tick().await;
        loop {
            ticks.tick().await;
            match self.bus.recheck_stream(&self.key).await {
                Ok(differences) => {
                    self.metrics.set_stream_differences(differences.len());
                    if !differences.is_empty() {
                        tracing::error!(
                            stream = %self.bus.settings().name,
                            differences = %differences.join("; "),
                            "the events stream no longer is as configured: it can lose or alter \
                             events. Adapters starting now refuse to; this router goes on and \
                             refuses at its next start. Find out why it differs, then correct it"
                        );
                    }
                    self.report(Activity::StreamChecked { differences });
                }
                Err(err) => tracing::warn!(
                    error = %err,
                    "could not check the events stream again; trying at the next check"
                ),
            }
        }
    }
}

/// How many times the router tries to open a durable consumer while JetStream does not answer
/// in time (half a second before the second, doubling: about 7.5 s of waits, plus each
/// attempt's own time out).
const OPEN_ATTEMPTS: u32 = 5;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the bus failed: {0}")]
    Bus(#[from] refbus_bus::ReadError),
    /// The router's durable consumer cannot be opened (refused if someone changed it).
    #[error("the router's consumer: {0}")]
    Consumer(#[from] refbus_bus::ConsumerError),
    /// The durable consumer's stream of events ended (the consumer or the stream was deleted,
    /// or the connection gave up): without events no clock moves, so the router stops rather
    /// than run blind; started again, it recreates its consumer and rebuilds its timers.
    #[error("the router's consumer {consumer} stopped delivering events")]
    ConsumerEnded { consumer: String },
    #[error("serving metrics: {0}")]
    Metrics(std::io::Error),
}

impl Error {
    /// Whether JetStream merely did not answer (in time, or at all): worth trying again.
    fn is_transient(&self) -> bool {
        match self {
            Error::Bus(err) => err.kind() == refbus_bus::ReadErrorKind::Unavailable,
            Error::Consumer(err) => err.kind() == refbus_bus::ConsumerErrorKind::Unavailable,
            Error::ConsumerEnded { .. } | Error::Metrics(_) => false,
        }
    }
}

impl Router {
    /// `verifier` checks every record the router reads (it holds the registry the router
    /// decides with); `key` signs what the router records.
    pub fn new(
        bus: Bus,
        verifier: refbus_bus::Verifier,
        key: refbus_core::signature::SigningKey,
        clock: Arc<dyn Clock>,
        options: Options,
    ) -> Router {
        let (metrics, registry) = metrics::Metrics::new(verifier.registry());
        let exposition =
            metrics.exposition(registry, bus.clone(), replica_consumer(&options.replica));
        Router {
            bus,
            registry: verifier.registry().clone(),
            // Its fires read a referral in full past what its consumer checked (`Router::current`
            // in fire.rs), so a one-step read may take any stored state its consumer checked.
            verifier: verifier.believing_every_writer(),
            key,
            clock,
            options,
            activity: broadcast::channel(16_384).0,
            metrics,
            exposition,
            own: std::sync::Mutex::default(),
            hand_backs: Arc::default(),
        }
    }

    /// A feed of what the router does; lagging receivers lose the oldest items.
    pub fn activity(&self) -> broadcast::Receiver<Activity> {
        self.activity.subscribe()
    }

    fn report(&self, activity: Activity) {
        let _ = self.activity.send(activity);
    }

    /// Runs until `shutdown` completes: rebuilds the timers, then processes events and fires
    /// timers. Stopping at any moment loses nothing: what was not acknowledged is delivered
    /// again, and timers are rebuilt from the bus. Returns an error if the events stop coming
    /// ([`Error::ConsumerEnded`]): whoever runs the router restarts it.
    pub async fn run(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        // On the heap: the loop's future is large (its state, feeds and spans), and every
        // caller would otherwise hold it in its own.
        Box::pin(self.run_loop(shutdown)).await
    }

    async fn run_loop(self, shutdown: impl Future<Output = ()> + Send) -> Result<(), Error> {
        // Served for as long as the router runs, stopped with it (also on an error).
        let _metrics = match &self.options.metrics {
            Some(endpoint) => Some(
                refbus_metrics::spawn(self.exposition.clone(), endpoint).map_err(Error::Metrics)?,
            ),
            None => None,
        };
        let router = Arc::new(self);
        // Beside the loop, stopped with it: the stream checked again, the adapters told.
        let _recheck = KeeperGuard(Some(tokio::spawn(router.clone().recheck_stream())));
        let mut state = Loop {
            timers: timers::Timers::default(),
            known: HashMap::new(),
            in_flight: HashMap::new(),
            applied: HashMap::new(),
            feeds: HashMap::new(),
            checked: HashMap::new(),
            tenure: router
                .options
                .partitions
                .as_ref()
                .map(|_| share::Tenure::default()),
        };
        let mut feeds: SelectAll<BoxStream<'static, Feed>> = SelectAll::new();
        let partitions = router.options.partitions.clone();
        // A partitioned router learns what it holds from its lease keeper, beside the loop (a
        // long rebuild in the loop must not hold up the renewals).
        let (changes_tx, mut changes) = mpsc::channel::<share::Change>(64);
        // What came of each partition's takeover, for the keeper: one that failed is given
        // back (`Router::gain`).
        let (takeovers, takeovers_rx) = mpsc::unbounded_channel::<share::Takeover>();
        let mut keeper = KeeperGuard(None);
        match &partitions {
            None => {
                drop(changes_tx);
                // Consume from here on before rebuilding, so nothing recorded meanwhile is
                // missed; the rebuild and the backlog overlap harmlessly (older states never
                // override newer ones).
                router.open(&mut state, &mut feeds, 0).await?;
                let started = std::time::Instant::now();
                if !router
                    .start_from_snapshots(&mut state, vec![None], started)
                    .await?
                    .is_empty()
                {
                    router.rebuild(&mut state, None, started).await?;
                }
            }
            Some(partitions) => {
                keeper.0 = Some(tokio::spawn(share::keep(
                    router.bus.clone(),
                    router.options.replica.clone(),
                    partitions.clone(),
                    state.tenure.clone().unwrap_or_default(),
                    changes_tx,
                    takeovers_rx,
                )));
            }
        }
        // Real time, not the router's clock: how often to save work is not a domain deadline.
        let mut snapshots = tokio::time::interval(router.options.snapshot_every);
        snapshots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // What each partition's last snapshot in this run covers (none yet: the first tick
        // writes what the start found). A partition applied past it is saved again at a tick
        // once its consumer's acknowledged position lets the snapshot cover more.
        let mut saved: HashMap<u32, u64> = HashMap::new();
        let mut saving: Option<tokio::task::JoinHandle<()>> = None;
        let mut snapshot_due = false;
        // How far each held partition's consumer was acknowledged, read beside the loop every
        // POSITIONS_EVERY: `checked` and the snapshots go by it (`Router::acknowledged`).
        let mut positions_every = tokio::time::interval(POSITIONS_EVERY);
        positions_every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let (positions_tx, mut positions) = mpsc::unbounded_channel::<Vec<(u32, u64)>>();
        let mut reading_positions = false;

        let (fired_tx, mut fired) = mpsc::unbounded_channel::<fire::Fired>();
        let mut fires = JoinSet::new();
        // Escalations whose notices are sent but not yet confirmed stored (`ingest::settle`).
        let mut settling = JoinSet::new();
        tokio::pin!(shutdown);
        loop {
            router.metrics.set_timers_pending(state.timers.len());
            let capacity = router
                .options
                .max_concurrent_fires
                .saturating_sub(fires.len());
            let now = router.clock.now();
            for (referral, entry) in state.timers.take_due(now, capacity) {
                if state.in_flight.contains_key(&referral) {
                    continue;
                }
                state
                    .in_flight
                    .insert(referral, (entry.subject.clone(), entry.seq));
                // The state this wake-up was computed from, if still cached.
                let known = state
                    .known
                    .get(&referral)
                    .filter(|known| known.seq == entry.seq);
                let span = trace::fire(referral, known.map(|known| &known.trace));
                let cached = known.map(|known| (known.seq, known.state.clone()));
                let partition = partitions
                    .as_ref()
                    .map_or(0, |partitions| partitions.of(&referral));
                let checked = state.checked.get(&partition).copied().unwrap_or(0);
                let router = router.clone();
                let fired_tx = fired_tx.clone();
                fires.spawn(tracing::Instrument::instrument(
                    async move {
                        let outcome = router.fire(referral, &entry.subject, cached, checked).await;
                        let _ = fired_tx.send(outcome);
                    },
                    span,
                ));
            }
            let next_wake = state.timers.next_wake().unwrap_or(Timestamp::MAX);
            let sleep = router.clock.sleep_until(next_wake);
            tokio::select! {
                () = &mut shutdown => break,
                feed = feeds.next(), if !feeds.is_empty() => match feed {
                    Some(Feed::Delivery(partition, first)) => {
                        // Events already received are taken together, up to a bound, before
                        // timers are looked at again: the loop's own cost is paid once per batch.
                        let mut next = Some((partition, first));
                        let mut taken = 0;
                        while let Some((partition, delivery)) = next.take() {
                            if !router.take(&mut state, partition, delivery, &mut settling, &mut shutdown).await {
                                break;
                            }
                            taken += 1;
                            if taken < INGEST_BATCH {
                                next = match feeds.next().now_or_never().flatten() {
                                    Some(Feed::Delivery(partition, delivery)) => Some((partition, delivery)),
                                    Some(Feed::Ended(partition)) if state.feeds.contains_key(&partition) => {
                                        return router.ended(fires, settling, partition).await;
                                    }
                                    _ => None,
                                };
                            }
                        }
                    }
                    Some(Feed::Ended(partition)) if state.feeds.contains_key(&partition) => {
                        return router.ended(fires, settling, partition).await;
                    }
                    _ => {}
                },
                Some(change) = changes.recv() => {
                    // The changes of one round of the keeper together: partitions gained at
                    // once are rebuilt in one pass over the referrals, not one pass each.
                    let mut gained = Vec::new();
                    let mut next = Some(change);
                    while let Some(change) = next.take() {
                        match change {
                            share::Change::Gained(partition) => gained.push(partition),
                            share::Change::Lost(partition) => {
                                gained.retain(|gained| *gained != partition);
                                router.release(&mut state, partition);
                                saved.remove(&partition);
                            }
                        }
                        next = changes.try_recv().ok();
                    }
                    for outcome in router.gain(&mut state, &mut feeds, gained).await? {
                        if let share::Takeover::Failed(partition) = outcome {
                            saved.remove(&partition);
                        }
                        let _ = takeovers.send(outcome);
                    }
                }
                Some(outcome) = fired.recv() => {
                    state.in_flight.remove(&outcome.referral);
                    // A partition given up meanwhile: its new holder has the referral.
                    if state.holds(partitions.as_ref(), &outcome.referral) {
                        state.timers.set(outcome.referral, &outcome.subject, outcome.seq, outcome.next_wake);
                    }
                }
                Some(_) = fires.join_next(), if !fires.is_empty() => {}
                Some(_) = settling.join_next(), if !settling.is_empty() => {}
                () = sleep, if next_wake < Timestamp::MAX => {}
                _ = snapshots.tick(), if router.options.snapshot.is_some() => snapshot_due = true,
                _ = positions_every.tick(), if !reading_positions && !state.feeds.is_empty() => {
                    reading_positions = true;
                    router.acknowledged(state.feeds.keys().copied().collect(), positions_tx.clone());
                }
                Some(read) = positions.recv() => {
                    reading_positions = false;
                    // A partition given up meanwhile is its new holder's (to check, to save).
                    for (partition, acknowledged) in &read {
                        if let Some(checked) = state.checked.get_mut(partition) {
                            *checked = (*checked).max(*acknowledged);
                        }
                    }
                    if snapshot_due && saving.as_ref().is_none_or(tokio::task::JoinHandle::is_finished) {
                        snapshot_due = false;
                        let mut due = Vec::new();
                        for (partition, acknowledged) in read {
                            let Some(applied) = state.applied.get(&partition) else {
                                continue;
                            };
                            let covers = (*applied).min(acknowledged);
                            if saved.get(&partition).is_none_or(|saved| covers > *saved) {
                                saved.insert(partition, covers);
                                due.push((partition, covers));
                            }
                        }
                        if !due.is_empty() {
                            saving = Some(router.save(&state, due));
                        }
                    }
                }
            }
        }
        fires.shutdown().await;
        settling.shutdown().await;
        // What the consumers had buffered goes back to them before the leases do: the next
        // holders get it at once.
        for (partition, feed) in state.feeds.drain() {
            let _ = feed.stop(partition, router.hand_backs.clone()).await;
        }
        // A clean stop gives the leases back at once (closing the channel tells the keeper).
        drop(changes);
        if let Some(task) = keeper.0.take() {
            let _ = task.await;
        }
        Ok(())
    }

    /// A held partition's consumer stopped delivering: the router stops with an error.
    async fn ended(
        &self,
        mut fires: JoinSet<()>,
        mut settling: JoinSet<()>,
        partition: u32,
    ) -> Result<(), Error> {
        fires.shutdown().await;
        settling.shutdown().await;
        Err(Error::ConsumerEnded {
            consumer: self.consumer_name(partition),
        })
    }

    /// The durable consumer of `partition` (of every event, for a router that holds all).
    fn consumer_name(&self, partition: u32) -> String {
        match &self.options.partitions {
            Some(partitions) => partitions.consumer(partition),
            None => replica_consumer(&self.options.replica),
        }
    }

    /// Opens `partition`'s durable consumer and adds its events to the loop's. JetStream not
    /// answering in time is tried again, [`OPEN_ATTEMPTS`] times in all: a partitioned router
    /// that gains a partition while nats-server is busy (another replica reading a million
    /// referrals to set its own up) timed out once in `bench clocks`, and stopping dropped
    /// every partition it held. A consumer configured otherwise is refused at once.
    async fn open(
        &self,
        state: &mut Loop,
        feeds: &mut SelectAll<BoxStream<'static, Feed>>,
        partition: u32,
    ) -> Result<(), Error> {
        let name = self.consumer_name(partition);
        let mut backoff = Duration::from_millis(500);
        let mut attempt = 1;
        let (durable, acknowledged) = loop {
            match self.open_durable(&name).await {
                Ok(opened) => break opened,
                Err(err) if attempt < OPEN_ATTEMPTS && err.is_transient() => {
                    tracing::warn!(
                        consumer = %name,
                        "opening the router's consumer failed for now, trying again in {backoff:?}: {err}"
                    );
                    tokio::time::sleep(backoff).await;
                    backoff *= 2;
                    attempt += 1;
                }
                Err(err) => return Err(err),
            }
        };
        let (abort, registration) = AbortHandle::new_pair();
        let stop = durable.stopper();
        let feed = durable
            .map(move |delivery| Feed::Delivery(partition, delivery))
            .chain(futures::stream::once(async move { Feed::Ended(partition) }));
        feeds.push(Abortable::new(feed, registration).boxed());
        state.feeds.insert(partition, HeldFeed { abort, stop });
        state.applied.entry(partition).or_insert(0);
        let checked = state.checked.entry(partition).or_insert(0);
        *checked = (*checked).max(acknowledged);
        Ok(())
    }

    /// The durable consumer `name`'s events, and how far it was acknowledged (read after
    /// opening it: whatever was acknowledged by then was checked by a router).
    async fn open_durable(&self, name: &str) -> Result<(refbus_bus::Durable, u64), Error> {
        let deliveries = self.bus.durable(name).await?;
        let acknowledged = self.bus.durable_acknowledged(name).await?;
        Ok((deliveries, acknowledged))
    }

    /// Gives `partition` up: its consumer stopped (what it had buffered handed back), its
    /// timers and cached states dropped (what is being recorded on goes on: every item is
    /// recorded at most once whoever records it).
    fn release(&self, state: &mut Loop, partition: u32) {
        if let Some(feed) = state.feeds.remove(&partition) {
            drop(feed.stop(partition, self.hand_backs.clone()));
        }
        state.applied.remove(&partition);
        state.checked.remove(&partition);
        if let Some(partitions) = &self.options.partitions {
            state
                .timers
                .retain(|referral| partitions.of(referral) != partition);
            state
                .known
                .retain(|referral, _| partitions.of(referral) != partition);
        }
        self.report(Activity::Released { partition });
        tracing::info!(partition, "router partition given up");
    }

    /// One delivery from `partition`'s consumer: applied if it is of the partition (a
    /// partition's consumer delivers every event; the others are acknowledged unread), handed
    /// back if the partition was given up meanwhile or its lease may have passed to another
    /// replica (its holder gets it at once, see [`share::Tenure`]).
    async fn take(
        &self,
        state: &mut Loop,
        partition: u32,
        delivery: Result<Delivery, refbus_bus::ReadError>,
        settling: &mut JoinSet<()>,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> bool {
        if !state.feeds.contains_key(&partition) || !state.in_tenure(partition) {
            if let Ok(delivery) = &delivery {
                hand_back(&self.hand_backs, partition, delivery).await;
            }
            return true;
        }
        if let (Some(partitions), Ok(delivery)) = (&self.options.partitions, &delivery)
            && partitions.of_subject(&delivery.subject) != partition
        {
            acknowledge(&self.hand_backs, state.tenure.as_ref(), partition, delivery).await;
            // Nothing of the partition to apply: what it applied reaches this far as well, and
            // its snapshot may cover this event too.
            if let Some(applied) = state.applied.get_mut(&partition) {
                *applied = (*applied).max(delivery.seq);
            }
        } else if !self
            .consume(state, partition, delivery, settling, shutdown)
            .await
        {
            return false;
        }
        true
    }

    /// Applies one consumed event, then acknowledges it: only once its effects (timers set,
    /// notices and alerts published) are done. A transient failure (the bus unreachable) is
    /// retried with backoff, never taken for an integrity problem. `false` if shutdown came
    /// first (the delivery is then left unacknowledged, and delivered again).
    async fn consume(
        &self,
        state: &mut Loop,
        partition: u32,
        delivery: Result<Delivery, refbus_bus::ReadError>,
        settling: &mut JoinSet<()>,
        shutdown: &mut (impl Future<Output = ()> + Unpin),
    ) -> bool {
        let delivery = match delivery {
            Ok(delivery) => delivery,
            Err(err) => {
                tracing::warn!("reading events: {err}");
                return true;
            }
        };
        let mut backoff = Duration::from_millis(50);
        let span = trace::consume(&delivery);
        let sent = loop {
            match tracing::Instrument::instrument(self.ingest(state, &delivery), span.clone()).await
            {
                Ok(sent) => break sent,
                Err(err) => {
                    tracing::warn!(
                        seq = delivery.seq,
                        "applying an event failed for now, trying again in {backoff:?}: {err}"
                    );
                    tokio::select! {
                        () = &mut *shutdown => return false,
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(2));
                }
            }
        };
        if let Some(applied) = state.applied.get_mut(&partition) {
            *applied = (*applied).max(delivery.seq);
        }
        self.metrics.consumed();
        if sent.is_empty() {
            acknowledge(
                &self.hand_backs,
                state.tenure.as_ref(),
                partition,
                &delivery,
            )
            .await;
        } else {
            // Bounded: past the bound, the loop waits for the oldest notices to be stored.
            while settling.len() >= MAX_SETTLING {
                settling.join_next().await;
            }
            let (bus, activity, tenure, hand_backs) = (
                self.bus.clone(),
                self.activity.clone(),
                state.tenure.clone(),
                self.hand_backs.clone(),
            );
            settling.spawn(tracing::Instrument::instrument(
                async move {
                    ingest::settle(bus, activity, sent, &delivery).await;
                    acknowledge(&hand_backs, tenure.as_ref(), partition, &delivery).await;
                },
                span,
            ));
        }
        true
    }

    /// Takes the partitions `gained` over: their consumers opened, their timers set up. Returns
    /// what came of each, for the keeper: those it could not take over because JetStream did
    /// not answer (in time, or at all) are given back, for any replica to claim (this one
    /// too, after a wait: [`share::Takeover`]).
    ///
    /// Given back, not the router stopped: a stop dropped every partition it held, the ones
    /// working too, and a restart took them all over again, against the same unsettled
    /// JetStream (docs/RELIABILITY.md, finding 9: a router stopped four times in 70 s).
    async fn gain(
        &self,
        state: &mut Loop,
        feeds: &mut SelectAll<BoxStream<'static, Feed>>,
        gained: Vec<u32>,
    ) -> Result<Vec<share::Takeover>, Error> {
        let mut opened = Vec::new();
        let mut outcomes = Vec::new();
        for partition in gained {
            match self.open(state, feeds, partition).await {
                Ok(()) => opened.push(partition),
                Err(err) if err.is_transient() => {
                    tracing::warn!(
                        partition,
                        "taking the partition over failed for now, giving it back: {err}"
                    );
                    outcomes.push(share::Takeover::Failed(partition));
                }
                Err(err) => return Err(err),
            }
        }
        match self.take_over(state, opened.clone()).await {
            Ok(()) => outcomes.extend(opened.into_iter().map(share::Takeover::Done)),
            Err(err) if err.is_transient() => {
                for partition in opened {
                    tracing::warn!(
                        partition,
                        "taking the partition over failed for now, giving it back: {err}"
                    );
                    self.release(state, partition);
                    outcomes.push(share::Takeover::Failed(partition));
                }
            }
            Err(err) => return Err(err),
        }
        Ok(outcomes)
    }

    /// Sets the timers of the partitions gained up: those with a usable snapshot from it, the
    /// others together in one rebuild.
    async fn take_over(&self, state: &mut Loop, gained: Vec<u32>) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let parts = gained.into_iter().map(Some).collect();
        let rebuild: Vec<u32> = self
            .start_from_snapshots(state, parts, started)
            .await?
            .into_iter()
            .flatten()
            .collect();
        if !rebuild.is_empty() {
            self.rebuild(state, Some(rebuild), std::time::Instant::now())
                .await?;
        }
        Ok(())
    }

    /// Sets the timers of `parts` (`[None]`: of every referral) up from their snapshots and
    /// what changed since, all together: the snapshot files read at once, one pass over the
    /// stream's subjects since the oldest of them, the changed referrals read at once. Which of
    /// `parts` have no usable snapshot (the caller rebuilds them, [`Router::rebuild`]).
    ///
    /// Together because a takeover gains several partitions in one keeper round, and each
    /// set up alone repeated the pass over the stream and held up the others' due items
    /// (docs/BENCHMARKS.md, the takeover at a million open referrals).
    async fn start_from_snapshots(
        &self,
        state: &mut Loop,
        parts: Vec<Option<u32>>,
        started: std::time::Instant,
    ) -> Result<Vec<Option<u32>>, Error> {
        let reads = futures::future::join_all(parts.iter().map(|partition| {
            let (path, key) = (self.snapshot_path(*partition), self.key.clone());
            async move {
                let path = path?;
                let shown = path.clone();
                let read = tokio::task::spawn_blocking(move || snapshot::Snapshot::read(&path, &key))
                    .await
                    .unwrap_or_else(|err| Err(std::io::Error::other(err).into()));
                match read {
                    Ok(snapshot) => snapshot,
                    Err(err) => {
                        // Loud, and harmless: the timers are rebuilt from the bus, as without one.
                        tracing::error!(
                            path = %shown.display(),
                            "the timers' snapshot is not used, rebuilding from every referral: {err}"
                        );
                        None
                    }
                }
            }
        }))
        .await;
        let mut unusable = Vec::new();
        let mut restored = Vec::new();
        for (partition, read) in parts.into_iter().zip(reads) {
            let Some(snapshot) = read else {
                unusable.push(partition);
                continue;
            };
            let keep = self.keeps(partition.map(|partition| vec![partition]));
            for entry in snapshot.entries {
                // A snapshot names its partition in its file; its entries are checked all the same.
                if keep(&entry.subject) {
                    state
                        .timers
                        .set(entry.referral, &entry.subject, entry.seq, Some(entry.wake));
                }
            }
            state
                .applied
                .insert(partition.unwrap_or(0), snapshot.covers);
            restored.push((partition, snapshot.covers));
        }
        let Some(oldest) = restored.iter().map(|(_, covers)| *covers).min() else {
            return Ok(unusable);
        };
        // Every referral of those parts a message reached after its snapshot (after the oldest
        // of them: a referral read again is set from its last verified record all the same).
        let keep = match restored.iter().map(|(partition, _)| *partition).collect() {
            Some(parts) => self.keeps(Some(parts)),
            None => self.keeps(None),
        };
        let mut changed = self.bus.referral_subjects_after(oldest).await?;
        changed.retain(|subject| keep(subject));
        let now = self.clock.now();
        // Each read is a task of its own: a read is two round trips and two signature checks,
        // and polled in place they all ran on the one thread polling this stream (a takeover
        // of half a million referrals' partitions spent 4.7 s here, docs/BENCHMARKS.md).
        let mut reads = futures::stream::iter(changed)
            .map(|subject| {
                let (bus, verifier) = (self.bus.clone(), self.verifier.clone());
                tokio::spawn(async move { bus.referral(&verifier, &subject).await })
            })
            .buffer_unordered(CATCH_UP_READS);
        let mut referrals: BTreeMap<u32, usize> = BTreeMap::new();
        while let Some(read) = reads.next().await {
            let read = match read {
                Ok(read) => read,
                Err(join) if join.is_panic() => std::panic::resume_unwind(join.into_panic()),
                // Cancelled: the runtime is shutting down, and this start with it.
                Err(join) => Err(refbus_bus::ReadError::with_source(
                    refbus_bus::ReadErrorKind::Unavailable,
                    join,
                )),
            };
            let Some(stored) = read? else { continue };
            let partition = self
                .options
                .partitions
                .as_ref()
                .map_or(0, |partitions| partitions.of_subject(&stored.subject));
            *referrals.entry(partition).or_default() += 1;
            let referral = &stored.record.state;
            state.timers.set(
                referral.id,
                &stored.subject,
                stored.seq,
                wake_of(referral, &self.registry, now),
            );
        }
        for (partition, covers) in restored {
            let read = referrals.get(&partition.unwrap_or(0)).copied().unwrap_or(0);
            self.ready(state, partition, read, started, Some(covers));
        }
        Ok(unusable)
    }

    /// Which subjects are of one of `parts` (every one for `None`).
    fn keeps(&self, parts: Option<Vec<u32>>) -> impl Fn(&str) -> bool + Send + 'static {
        let partitions = self.options.partitions.clone();
        move |subject: &str| match (&partitions, &parts) {
            (Some(partitions), Some(parts)) => parts.contains(&partitions.of_subject(subject)),
            _ => true,
        }
    }

    /// The snapshot file of `partition`: the configured file for a router that holds every
    /// referral, one beside it per partition (`router-part-<k>-of-<n>.timers`) otherwise.
    fn snapshot_path(&self, partition: Option<u32>) -> Option<PathBuf> {
        let path = self.options.snapshot.as_ref()?;
        match (&self.options.partitions, partition) {
            (Some(partitions), Some(partition)) => Some(path.with_file_name(format!(
                "router-part-{partition}-of-{}.timers",
                partitions.count
            ))),
            _ => Some(path.clone()),
        }
    }

    /// Reads how far each of `partitions`' consumers was acknowledged (sent to `positions`; a
    /// partition whose consumer does not answer is left out, read again at the next look).
    ///
    /// Every event up to that position was checked and applied (or refused) by a router holding
    /// the partition, then acknowledged, so this router's timers or the catch-up of its claim
    /// reflect it. Where this router's `checked` goes, and no snapshot covers further: the
    /// highest event it was delivered is no such bound. JetStream gives an event another reader
    /// of the consumer did not acknowledge (a previous holder's, handed back, or lost with a
    /// feed stopped or a process killed) to this router only after events past it (long run
    /// #5, docs/RELIABILITY.md finding 8): a holder starting from a snapshot past it did not
    /// read its referral, and a fire believed its record on the lighter check.
    fn acknowledged(
        &self,
        partitions: Vec<u32>,
        positions: mpsc::UnboundedSender<Vec<(u32, u64)>>,
    ) {
        let consumers: Vec<(u32, String)> = partitions
            .into_iter()
            .map(|partition| (partition, self.consumer_name(partition)))
            .collect();
        let bus = self.bus.clone();
        tokio::spawn(async move {
            let reads = consumers.into_iter().map(|(partition, consumer)| {
                let bus = bus.clone();
                async move { (partition, bus.durable_acknowledged(&consumer).await) }
            });
            let mut read = Vec::new();
            for (partition, position) in futures::future::join_all(reads).await {
                match position {
                    Ok(position) => read.push((partition, position)),
                    // Every second while JetStream is away: the consequence is a fire reading a
                    // history in full, or a snapshot written a minute later.
                    Err(err) => tracing::debug!(
                        partition,
                        "reading how far the partition's consumer was acknowledged: {err}"
                    ),
                }
            }
            let _ = positions.send(read);
        });
    }

    /// Writes the timer table of each partition in `partitions` (with the referrals being
    /// recorded on, due now) to its snapshot file, beside the loop, covering up to the stream
    /// sequence given with it: the lower of what this router applied and its consumer's
    /// acknowledged position, read before (see [`Router::acknowledged`]).
    fn save(&self, state: &Loop, partitions: Vec<(u32, u64)>) -> tokio::task::JoinHandle<()> {
        let now = self.clock.now();
        let mut files = Vec::new();
        for (partition, covers) in partitions {
            let part = self.options.partitions.as_ref().map(|_| partition);
            let Some(path) = self.snapshot_path(part) else {
                continue;
            };
            let of = |referral: &ReferralId| {
                self.options
                    .partitions
                    .as_ref()
                    .is_none_or(|partitions| partitions.of(referral) == partition)
            };
            let mut entries: Vec<snapshot::Entry> = state
                .timers
                .iter()
                .filter(|(referral, _)| of(referral))
                .map(|(referral, entry)| snapshot::Entry {
                    referral: *referral,
                    subject: entry.subject.clone(),
                    seq: entry.seq,
                    wake: entry.wake,
                })
                .collect();
            entries.extend(
                state
                    .in_flight
                    .iter()
                    .filter(|(referral, _)| of(referral))
                    .map(|(referral, (subject, seq))| snapshot::Entry {
                        referral: *referral,
                        subject: subject.clone(),
                        seq: *seq,
                        wake: now,
                    }),
            );
            files.push((path, snapshot::Snapshot { covers, entries }));
        }
        let (key, activity) = (self.key.clone(), self.activity.clone());
        tokio::task::spawn_blocking(move || {
            for (path, snapshot) in files {
                match snapshot.write(&path, &key) {
                    Ok(()) => {
                        let _ = activity.send(Activity::Snapshot {
                            covers: snapshot.covers,
                            entries: snapshot.entries.len(),
                        });
                    }
                    // A restart then starts from an older snapshot, or rebuilds: slower, not
                    // wrong.
                    Err(err) => {
                        tracing::warn!(path = %path.display(), "writing the timers' snapshot: {err}")
                    }
                }
            }
        })
    }

    fn ready(
        &self,
        state: &Loop,
        partition: Option<u32>,
        referrals: usize,
        started: std::time::Instant,
        from_snapshot: Option<u64>,
    ) {
        let took = started.elapsed();
        match (&self.options.partitions, partition) {
            (Some(partitions), Some(partition)) => {
                let pending = state
                    .timers
                    .iter()
                    .filter(|(referral, _)| partitions.of(referral) == partition)
                    .count();
                self.report(Activity::Claimed {
                    partition,
                    referrals,
                    pending,
                    took,
                    from_snapshot,
                });
                tracing::info!(
                    partition,
                    referrals,
                    pending,
                    ?from_snapshot,
                    "router partition claimed"
                );
            }
            _ => {
                self.report(Activity::Ready {
                    referrals,
                    pending: state.timers.len(),
                    took,
                    from_snapshot,
                });
                tracing::info!(
                    referrals,
                    pending = state.timers.len(),
                    ?from_snapshot,
                    "router ready"
                );
            }
        }
    }

    /// Rebuilds the timers of the partitions `parts` (`None`: of every referral) from each
    /// referral's current state (its last message), in one pass.
    async fn rebuild(
        &self,
        state: &mut Loop,
        parts: Option<Vec<u32>>,
        started: std::time::Instant,
    ) -> Result<(), Error> {
        let now = self.clock.now();
        // Per partition (0 alone for a router that holds every referral): referrals read, and
        // the highest sequence among their last records.
        let mut counts: HashMap<u32, (usize, u64)> = parts
            .iter()
            .flatten()
            .map(|partition| (*partition, (0, 0)))
            .collect();
        // Each referral's last record, its signature checked; its state was checked against
        // its events when this router consumed it (a record not consumed yet is checked when it
        // is, right after). A last record that fails is replaced by the last one that passes.
        // Other partitions' records are passed over unchecked.
        let mut latest = self
            .bus
            .latest_checked_where(
                &self.verifier,
                vec![subjects::ALL_REFERRALS.to_owned()],
                self.keeps(parts.clone()),
            )
            .await?;
        while let Some(stored) = latest.next().await {
            let stored = stored?;
            let (seq, subject, referral) = (stored.seq, stored.subject, stored.record.state);
            let partition = match (&self.options.partitions, &parts) {
                (Some(partitions), Some(_)) => partitions.of_subject(&subject),
                _ => 0,
            };
            let count = counts.entry(partition).or_insert((0, 0));
            count.0 += 1;
            count.1 = count.1.max(seq);
            state.timers.set(
                referral.id,
                &subject,
                seq,
                wake_of(&referral, &self.registry, now),
            );
        }
        match parts {
            None => {
                let (referrals, highest) = counts.get(&0).copied().unwrap_or((0, 0));
                let applied = state.applied.entry(0).or_insert(0);
                *applied = (*applied).max(highest);
                self.ready(state, None, referrals, started, None);
            }
            Some(parts) => {
                for partition in parts {
                    let (referrals, highest) = counts.get(&partition).copied().unwrap_or((0, 0));
                    let applied = state.applied.entry(partition).or_insert(0);
                    *applied = (*applied).max(highest);
                    self.ready(state, Some(partition), referrals, started, None);
                }
            }
        }
        Ok(())
    }
}

/// How often a router reads how far its partitions' consumers were acknowledged
/// ([`Router::acknowledged`]): a fire on a referral changed since the last look reads its
/// history in full.
const POSITIONS_EVERY: Duration = Duration::from_secs(1);

/// How long an event handed back waits before JetStream delivers it again: long enough not to
/// come straight back to this replica before its loop gives the partition up, short beside the
/// acknowledgement timeout (a minute) the partition's holder would otherwise wait for it.
const HAND_BACK_AFTER: Duration = Duration::from_millis(500);

/// Acknowledges an applied event of `partition`'s consumer while this router holds the
/// partition; hands it back otherwise: the replica holding it now must apply it too, or the
/// referral has no clock there ([`share::Tenure`]).
async fn acknowledge(
    hand_backs: &HandBacks,
    tenure: Option<&share::Tenure>,
    partition: u32,
    delivery: &Delivery,
) {
    if tenure.is_some_and(|tenure| !tenure.holds(partition)) {
        hand_back(hand_backs, partition, delivery).await;
    } else if let Err(err) = delivery.ack().await {
        // Delivered again later, and recognised as applied.
        tracing::warn!("acknowledging event {}: {err}", delivery.seq);
    }
}

/// Leaves an event of `partition`'s consumer unapplied here, for whichever router replica
/// holds the partition now.
async fn hand_back(hand_backs: &HandBacks, partition: u32, delivery: &Delivery) {
    if let Some(events) = hand_backs
        .handed
        .count(partition, std::time::Instant::now())
    {
        tracing::warn!(
            partition,
            events,
            last_seq = delivery.seq,
            "the partition is given up or its lease may be another router replica's: events \
             handed back to its consumer, not acknowledged here (counted since this line last \
             came)"
        );
    }
    send_back(hand_backs, partition, delivery).await;
}

/// Hands an event of `partition`'s consumer back to JetStream, for delivery again after
/// [`HAND_BACK_AFTER`]. One JetStream does not take back is delivered again after the
/// acknowledgement timeout instead: reported, as the hand-backs are, in one line per partition
/// a second (they fail together, while the bus does not answer).
async fn send_back(hand_backs: &HandBacks, partition: u32, delivery: &Delivery) {
    if let Err(err) = delivery.hand_back(HAND_BACK_AFTER).await
        && let Some(events) = hand_backs
            .failed
            .count(partition, std::time::Instant::now())
    {
        tracing::warn!(
            partition,
            events,
            last_seq = delivery.seq,
            "events could not be handed back, each is delivered again after the acknowledgement \
             timeout (counted since this line last came): {err}"
        );
    }
}

/// The events handed back per partition, and the hand-backs that failed, for one log line of
/// each per partition a second at most: a partition in doubt hands back every event delivered
/// to it, each coming again half a second later, and a line per event made thousands of
/// warnings in a fault campaign's router log.
#[derive(Debug, Default)]
struct HandBacks {
    handed: PerSecond,
    failed: PerSecond,
}

/// Events counted per partition, reported at most once a second each.
#[derive(Debug, Default)]
struct PerSecond(std::sync::Mutex<HashMap<u32, (std::time::Instant, u64)>>);

impl PerSecond {
    /// Counts one event of `partition` at `now`; returns how many to report now: the first
    /// since the partition's last line a second or more ago, with those counted meanwhile.
    fn count(&self, partition: u32, now: std::time::Instant) -> Option<u64> {
        let mut counts = self
            .0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match counts.get_mut(&partition) {
            None => {
                counts.insert(partition, (now, 0));
                Some(1)
            }
            Some((since, counted)) => {
                *counted += 1;
                if now.duration_since(*since) < Duration::from_secs(1) {
                    return None;
                }
                let events = *counted;
                *since = now;
                *counted = 0;
                Some(events)
            }
        }
    }
}

/// When to look at a referral next: now if something is due, else its next deadline.
fn wake_of(
    referral: &refbus_core::Referral,
    registry: &Registry,
    now: Timestamp,
) -> Option<Timestamp> {
    let evaluation = evaluate(referral, registry, now);
    if evaluation.due.is_empty() {
        evaluation.next_wake
    } else {
        Some(now)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_handed_back_make_one_line_per_partition_a_second_and_none_is_left_uncounted() {
        let hand_backs = PerSecond::default();
        let start = std::time::Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        // The first of a burst is reported at once; the rest of its second only counted.
        assert_eq!(hand_backs.count(2, at(0)), Some(1));
        assert_eq!(hand_backs.count(2, at(300)), None);
        assert_eq!(hand_backs.count(2, at(999)), None);
        // Another partition has lines of its own.
        assert_eq!(hand_backs.count(1, at(500)), Some(1));
        // A second later, one line for the second's events (this one included).
        assert_eq!(hand_backs.count(2, at(1000)), Some(3));
        assert_eq!(hand_backs.count(2, at(1500)), None);
        // A burst long after: what was counted since the last line comes with it.
        assert_eq!(hand_backs.count(2, at(60_000)), Some(2));
        assert_eq!(hand_backs.count(1, at(60_000)), Some(1));
    }
}
