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
//! - `ingest`: checking and applying consumed events; notices for escalations.
//! - `fire`: recording what is due on one referral.
//! - `timers`: the in-memory timer table, rebuilt at start from the referrals' states.
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
mod timers;

use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

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

/// Tunables, each with a safe default.
#[derive(Debug, Clone)]
pub struct Options {
    /// Names this replica's durable consumer: each replica reads every event.
    pub replica: String,
    /// How many referrals are being recorded on at once.
    pub max_concurrent_fires: usize,
    /// How many referral states are kept in memory to check the next event against; the rest
    /// are read back from the bus when needed.
    pub state_cache: usize,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            replica: "main".to_owned(),
            max_concurrent_fires: 256,
            state_cache: 100_000,
        }
    }
}

/// What the router did, as it happens.
#[derive(Debug, Clone, PartialEq)]
pub enum Activity {
    /// Timers rebuilt from the referrals' current states: the router is ready.
    Ready {
        referrals: usize,
        pending: usize,
        took: Duration,
    },
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
}

/// A referral's last state the router checked, to check its next event against.
#[derive(Debug, Clone)]
pub(crate) struct Known {
    pub(crate) seq: u64,
    pub(crate) state: refbus_core::Referral,
}

/// What the event loop owns.
struct Loop {
    timers: timers::Timers,
    known: HashMap<ReferralId, Known>,
}

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
        Router {
            bus,
            registry: verifier.registry().clone(),
            verifier,
            key,
            clock,
            options,
            activity: broadcast::channel(16_384).0,
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
        let router = Arc::new(self);
        let mut state = Loop {
            timers: timers::Timers::default(),
            known: HashMap::new(),
        };
        // Consume from here on before rebuilding, so nothing recorded meanwhile is missed; the
        // rebuild and the backlog overlap harmlessly (older states never override newer ones).
        let mut deliveries = router
            .bus
            .durable(&format!("refbus-router-{}", router.options.replica))
            .await?;
        router.rebuild(&mut state).await?;

        let (fired_tx, mut fired) = mpsc::unbounded_channel::<fire::Fired>();
        let mut fires = JoinSet::new();
        let mut in_flight: std::collections::HashSet<ReferralId> = Default::default();
        tokio::pin!(shutdown);
        loop {
            let capacity = router
                .options
                .max_concurrent_fires
                .saturating_sub(fires.len());
            let now = router.clock.now();
            for (referral, entry) in state.timers.take_due(now, capacity) {
                if !in_flight.insert(referral) {
                    continue;
                }
                // The state this wake-up was computed from, if still cached.
                let cached = state
                    .known
                    .get(&referral)
                    .filter(|known| known.seq == entry.seq)
                    .map(|known| (known.seq, known.state.clone()));
                let router = router.clone();
                let fired_tx = fired_tx.clone();
                fires.spawn(async move {
                    let outcome = router.fire(referral, &entry.subject, cached).await;
                    let _ = fired_tx.send(outcome);
                });
            }
            let next_wake = state.timers.next_wake().unwrap_or(Timestamp::MAX);
            let sleep = router.clock.sleep_until(next_wake);
            tokio::select! {
                () = &mut shutdown => break,
                delivery = deliveries.next() => match delivery {
                    Some(first) => {
                        // Events already received are taken together, up to a bound, before
                        // timers are looked at again: the loop's own cost is paid once per batch.
                        let mut next = Some(first);
                        let mut taken = 0;
                        while let Some(delivery) = next.take() {
                            if !router.consume(&mut state, delivery, &mut shutdown).await {
                                break;
                            }
                            taken += 1;
                            if taken < INGEST_BATCH {
                                next = deliveries.next().now_or_never().flatten();
                            }
                        }
                    }
                    None => {
                        fires.shutdown().await;
                        return Err(Error::ConsumerEnded {
                            consumer: format!("refbus-router-{}", router.options.replica),
                        });
                    }
                },
                Some(outcome) = fired.recv() => {
                    in_flight.remove(&outcome.referral);
                    state.timers.set(outcome.referral, &outcome.subject, outcome.seq, outcome.next_wake);
                }
                Some(_) = fires.join_next(), if !fires.is_empty() => {}
                () = sleep, if next_wake < Timestamp::MAX => {}
            }
        }
        fires.shutdown().await;
        Ok(())
    }

    /// Applies one consumed event, then acknowledges it: only once its effects (timers set,
    /// notices and alerts published) are done. A transient failure (the bus unreachable) is
    /// retried with backoff, never taken for an integrity problem. `false` if shutdown came
    /// first (the delivery is then left unacknowledged, and delivered again).
    async fn consume(
        &self,
        state: &mut Loop,
        delivery: Result<Delivery, refbus_bus::ReadError>,
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
        loop {
            match self.ingest(state, &delivery).await {
                Ok(()) => break,
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
        }
        if let Err(err) = delivery.ack().await {
            // Delivered again later, and recognised as applied.
            tracing::warn!("acknowledging event {}: {err}", delivery.seq);
        }
        true
    }

    /// Rebuilds the timers from every referral's current state (its last message).
    async fn rebuild(&self, state: &mut Loop) -> Result<(), Error> {
        let started = std::time::Instant::now();
        let now = self.clock.now();
        let mut referrals = 0;
        // Each referral's last record, its signature checked; its state was checked against
        // its events when this router consumed it (a record not consumed yet is checked when it
        // is, right after). A last record that fails is replaced by the last one that passes.
        let mut latest = self
            .bus
            .latest_checked(&self.verifier, vec![subjects::ALL_REFERRALS.to_owned()])
            .await?;
        while let Some(stored) = latest.next().await {
            let stored = stored?;
            let (seq, subject, referral) = (stored.seq, stored.subject, stored.record.state);
            referrals += 1;
            let referral = &referral;
            let evaluation = evaluate(referral, &self.registry, now);
            let wake = if evaluation.due.is_empty() {
                evaluation.next_wake
            } else {
                Some(now)
            };
            state.timers.set(referral.id, &subject, seq, wake);
        }
        self.report(Activity::Ready {
            referrals,
            pending: state.timers.len(),
            took: started.elapsed(),
        });
        tracing::info!(referrals, pending = state.timers.len(), "router ready");
        Ok(())
    }
}
