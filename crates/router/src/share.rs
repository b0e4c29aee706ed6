//! Routers that partition: which referrals are this replica's, and the leases that say so.
//!
//! The referrals are cut into a fixed number of partitions by their id (FNV-1a of the id's
//! text, the last token of the referral's subject, modulo the count). Each partition has one
//! durable consumer shared by whichever replica holds it (`refbus-router-part-<k>-of-<n>`: its
//! acknowledged position is the partition's, not a replica's) and one lease in the bucket
//! [`BUCKET`]. A replica claims free partitions up to its fair share (the count divided by the
//! replicas alive, rounded up; each replica keeps a `member.<replica>` key alive too), keeps
//! them by renewing their leases, and gives back what exceeds its share when replicas join.
//! A replica that dies stops renewing; its leases age out after the time to live, and the
//! survivors, whose fair share grew, claim them. Why leases and not subject-transform
//! partitions or pinned priority groups: docs/ARCHITECTURE.md, "Routers that partition".

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use refbus_bus::{Bus, Lease, Leases};
use refbus_core::ReferralId;
use tokio::sync::mpsc;
use tokio::time::Instant;

/// The lease bucket of the router's partitions.
pub const BUCKET: &str = "REFBUS_ROUTER_LEASES";

/// The most partitions `refbus router --partitions` cuts the referrals into. The shipped NATS
/// permissions (deploy/nats/permissions.conf, `READERS_NEVER`) deny adapters, auditors and the
/// dashboard every partitioned router's consumer of every count up to it, by name: a consumer
/// name is one subject token, so no wildcard can cover them, and a count the file does not list
/// would leave its consumers open to any reader (pulled from, its events hide from the routers;
/// deleted, a partition starts over). Twelve shares out evenly among 1, 2, 3, 4, 6 or 12
/// replicas.
pub const MAX_PARTITIONS: u32 = 12;

/// How the referrals are shared among replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Partitions {
    /// How many partitions the referrals are cut into: the same for every replica, and never
    /// changed while any runs (a partition's consumer keeps its place).
    pub count: u32,
    /// How long a lease lives without being renewed: a dead replica's partitions are claimed
    /// by others within this plus a twelfth of it (each replica looks every twelfth of it).
    pub lease_ttl: Duration,
}

impl Partitions {
    /// `count` partitions with leases that live 6 s (claimed by others within 6.5 s).
    pub fn new(count: u32) -> Partitions {
        Partitions {
            count: count.max(1),
            lease_ttl: Duration::from_secs(6),
        }
    }

    /// The partition a referral belongs to.
    pub fn of(&self, referral: &ReferralId) -> u32 {
        partition_of_token(&referral.text(), self.count)
    }

    /// The partition of the referral a subject names (its last token): a subject that names no
    /// valid referral still falls in exactly one partition, so its alert is raised once.
    pub fn of_subject(&self, subject: &str) -> u32 {
        partition_of_token(
            subject.rsplit('.').next().unwrap_or(subject).as_bytes(),
            self.count,
        )
    }

    /// The durable consumer of partition `k`.
    pub fn consumer(&self, k: u32) -> String {
        format!("refbus-router-part-{k}-of-{}", self.count)
    }

    fn lease_key(&self, k: u32) -> String {
        format!("partition.{k}-of-{}", self.count)
    }
}

/// FNV-1a (64 bits) of `token`, modulo `count`: stable across versions and platforms, which a
/// partition must be (every replica computes the same).
fn partition_of_token(token: &[u8], count: u32) -> u32 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &byte in token {
        hash ^= u64::from(byte);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    u32::try_from(hash % u64::from(count.max(1))).unwrap_or(0)
}

/// A change in what this replica holds, for the event loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Change {
    Gained(u32),
    Lost(u32),
}

/// What came of the loop's takeover of a partition the keeper gained, for the keeper.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Takeover {
    /// The partition's consumer is open and its timers are set up.
    Done(u32),
    /// JetStream did not answer: the partition is to be given back ([`Retakes`]).
    Failed(u32),
}

/// When this replica may claim again a partition it could not take over. A failed takeover
/// gives the partition back at once, for any replica to claim, and this one waits before
/// claiming it itself: a look after the first failure, twice as long after each failure in a
/// row, at most a time to live; a takeover done ends the row. Why: while JetStream does not
/// answer, every takeover fails, and claiming the partition again at the next look made a
/// give-back with its warnings every few seconds (docs/RELIABILITY.md, finding 9: 23 and 60 in
/// a 30-minute campaign). Capped at the time to live, the wait delays a partition's clocks no
/// more than a dead replica's lease aging out does.
#[derive(Debug)]
struct Retakes {
    first: Duration,
    most: Duration,
    /// Per partition in a row of failures: not claimed by this replica before the instant;
    /// the wait that led to it.
    waiting: HashMap<u32, (Instant, Duration)>,
}

impl Retakes {
    fn new(ttl: Duration) -> Retakes {
        Retakes {
            first: ttl / LOOKS_PER_TTL,
            most: ttl,
            waiting: HashMap::new(),
        }
    }

    /// Partition `k`'s takeover failed at `now`: returns how long this replica leaves it.
    fn failed(&mut self, k: u32, now: Instant) -> Duration {
        let wait = match self.waiting.get(&k) {
            Some((_, last)) => (*last * 2).min(self.most),
            None => self.first,
        };
        self.waiting.insert(k, (now + wait, wait));
        wait
    }

    /// Partition `k` was taken over: its next failure waits the least again.
    fn done(&mut self, k: u32) {
        self.waiting.remove(&k);
    }

    /// Whether this replica may claim partition `k` at `now`.
    fn may_claim(&self, k: u32, now: Instant) -> bool {
        self.waiting
            .get(&k)
            .is_none_or(|(not_before, _)| now >= *not_before)
    }
}

/// Until when this replica may act on each partition it holds, on this process's monotonic
/// clock: when its lease was last written (the request sent, before the server wrote it) plus
/// the time to live. The server lets another replica claim the lease only once that write has
/// aged out, so past this instant the partition may be another's, whatever this replica's
/// keeper has yet to find out.
///
/// Why the event loop asks it before acknowledging an event: a replica paused (SIGSTOP, a
/// frozen VM) while holding a partition resumes with deliveries of the partition's durable
/// consumer in hand, received into its open pull requests meanwhile. Applied and acknowledged
/// there, they never reach the replica that holds the partition now, and the paused one drops
/// their timers when its keeper reports the loss a moment later: the referral created then has
/// no clock anywhere (docs/RELIABILITY.md, finding 6). Handed back instead, they go to the
/// holder at once.
#[derive(Debug, Clone, Default)]
pub(crate) struct Tenure(Arc<Mutex<HashMap<u32, Instant>>>);

impl Tenure {
    /// Whether partition `k` is still this replica's, as far as its lease says.
    pub(crate) fn holds(&self, k: u32) -> bool {
        self.lock()
            .get(&k)
            .is_some_and(|until| Instant::now() < *until)
    }

    /// Until when partition `k` is this replica's, if it holds it.
    fn until(&self, k: u32) -> Option<Instant> {
        self.lock().get(&k).copied()
    }

    fn hold(&self, k: u32, until: Instant) {
        self.lock().insert(k, until);
    }

    fn end(&self, k: u32) {
        self.lock().remove(&k);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, Instant>> {
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

/// Keeps this replica's leases until `changes` is closed (the loop stopped), then gives them
/// back. Every third of the time to live it renews the member key and each held lease (a lease
/// not renewed for a whole time to live, because the bucket could not be reached, is counted
/// lost: another replica may hold it by now); every twelfth it looks at who is alive, gives
/// back what exceeds the fair share and claims free partitions up to it. Looking more often
/// than renewing is what bounds a takeover: a dead replica's lease ages out between two
/// thirds of the time to live and all of it after its death (when it last renewed), and a
/// survivor claims it at most a twelfth later, not a third.
///
/// What came of each partition's takeover comes on `takeovers`: one the loop could not take
/// over (the bus failed meanwhile) is given up, for whichever replica claims it next (this
/// one too, after a wait: [`Retakes`]).
///
/// Nothing slow holds up a renewal: the replicas alive are counted beside the rounds
/// ([`count_replicas`]), and every other request of a round is abandoned before the first
/// held lease is due (docs/RELIABILITY.md, finding 9: a count that took 5 to 27 s to fail
/// cost both routers their leases, round after round).
pub(crate) async fn keep(
    bus: Bus,
    replica: String,
    partitions: Partitions,
    tenure: Tenure,
    changes: mpsc::Sender<Change>,
    mut takeovers: mpsc::UnboundedReceiver<Takeover>,
) {
    let tick = partitions.lease_ttl / LOOKS_PER_TTL;
    let leases = loop {
        match bus.leases(BUCKET, partitions.lease_ttl, &replica).await {
            Ok(leases) => break leases,
            Err(err) => {
                tracing::warn!("the router's lease bucket: {err}; trying again");
                tokio::select! {
                    () = changes.closed() => return,
                    () = tokio::time::sleep(tick) => {}
                }
            }
        }
    };
    let (replicas_tx, replicas) = tokio::sync::watch::channel(None);
    let counting = tokio::spawn(count_replicas(
        leases.clone(),
        tick,
        partitions.lease_ttl,
        replicas_tx,
    ));
    let mut keeper = Keeper {
        leases,
        member: format!("member.{replica}"),
        member_lease: None,
        member_renewed_at: tokio::time::Instant::now(),
        held: BTreeMap::new(),
        retakes: Retakes::new(partitions.lease_ttl),
        partitions,
        tenure,
        replicas,
    };
    // The first round claims only once the replicas are counted: waited for a look at most.
    let _ = tokio::time::timeout(tick, keeper.replicas.changed()).await;
    let mut interval = tokio::time::interval(tick);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = changes.closed() => break,
            Some(takeover) = takeovers.recv() => {
                match takeover {
                    Takeover::Done(k) => keeper.retakes.done(k),
                    Takeover::Failed(k) => keeper.give_back_one(k).await,
                }
                continue;
            }
            _ = interval.tick() => {}
        }
        for change in keeper.round().await {
            if changes.send(change).await.is_err() {
                break;
            }
        }
    }
    counting.abort();
    keeper.give_back().await;
}

/// Counts the replicas alive (their `member.` keys) every `every`, for the keeper's rounds.
/// Apart from them because listing a bucket's keys is the slowest request a round makes, and
/// while JetStream is unsettled it fails only after seconds (a time out, or a missed heartbeat
/// of its consumer after 27 s): awaited in a round, it held the renewals up past the leases'
/// time to live. A count not answered within `ttl` is abandoned and asked again; meanwhile the
/// rounds go by the last one.
async fn count_replicas(
    leases: Leases,
    every: Duration,
    ttl: Duration,
    count: tokio::sync::watch::Sender<Option<usize>>,
) {
    let mut interval = tokio::time::interval(every);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        match tokio::time::timeout(ttl, leases.held("member.")).await {
            Ok(Ok(members)) => {
                count.send_replace(Some(members.len().max(1)));
            }
            Ok(Err(err)) => tracing::warn!("reading the router replicas alive: {err}"),
            Err(_) => tracing::warn!(
                "reading the router replicas alive: no answer within {ttl:?}, asking again"
            ),
        }
    }
}

/// How many times per time to live a replica looks for free partitions (and for replicas
/// joined or gone); it renews its leases every [`LOOKS_PER_RENEWAL`] looks.
const LOOKS_PER_TTL: u32 = 12;
const LOOKS_PER_RENEWAL: u32 = 4;

struct Keeper {
    leases: Leases,
    member: String,
    member_lease: Option<Lease>,
    member_renewed_at: tokio::time::Instant,
    partitions: Partitions,
    /// Partitions held, with their lease and when it was last renewed.
    held: BTreeMap<u32, (Lease, tokio::time::Instant)>,
    /// What the event loop may still act on, as of the leases' last writes.
    tenure: Tenure,
    /// How many replicas are alive, as last counted ([`count_replicas`]); `None` before the
    /// first count.
    replicas: tokio::sync::watch::Receiver<Option<usize>>,
    /// Partitions this replica could not take over, left a while before it claims them again.
    retakes: Retakes,
}

impl Keeper {
    async fn round(&mut self) -> Vec<Change> {
        let mut changes = Vec::new();
        let ttl = self.partitions.lease_ttl;
        // A lease not renewed within its time to live (this replica paused, or cut off) may be
        // another's already: given up at once, before any round trip, so that the loop stops
        // working the partition (it hands its events back meanwhile, see `Tenure`).
        let outlived: Vec<u32> = self
            .held
            .keys()
            .copied()
            .filter(|k| !self.tenure.holds(*k))
            .collect();
        for k in outlived {
            tracing::warn!(
                partition = k,
                "the partition's lease outlived its time to live unrenewed (this router was \
                 paused or cut off): giving the partition up"
            );
            self.held.remove(&k);
            self.tenure.end(k);
            changes.push(Change::Lost(k));
        }
        // Renewed a little early rather than a look late: a lease written less than this long
        // ago is left alone this round.
        let renew_after = ttl * (LOOKS_PER_RENEWAL - 1) / LOOKS_PER_TTL;
        // Keep what is held first: every lease due renewed at once, so that a slow server
        // costs one round trip per round, not one per partition.
        let held: Vec<(u32, Lease, tokio::time::Instant)> = self
            .held
            .iter()
            .filter(|(_, (_, renewed_at))| renewed_at.elapsed() >= renew_after)
            .map(|(k, (lease, renewed_at))| (*k, lease.clone(), *renewed_at))
            .collect();
        let sent = Instant::now();
        // Each renewal waits no longer than its lease's tenure: past it the partition is given
        // up whatever the answer would have been.
        let (leases, tenure) = (&self.leases, &self.tenure);
        let renewals = futures::future::join_all(held.iter().map(|(k, lease, _)| {
            let until = tenure.until(*k).unwrap_or(sent);
            async move {
                tokio::time::timeout_at(until, leases.renew(lease))
                    .await
                    .unwrap_or(Ok(None))
            }
        }))
        .await;
        for ((k, _, renewed_at), renewal) in held.into_iter().zip(renewals) {
            match renewal {
                Ok(Some(lease)) => {
                    self.held.insert(k, (lease, tokio::time::Instant::now()));
                    self.tenure.hold(k, sent + ttl);
                }
                Ok(None) => {
                    tracing::warn!(partition = k, "the router lost its partition's lease");
                    self.held.remove(&k);
                    self.tenure.end(k);
                    changes.push(Change::Lost(k));
                }
                Err(err) if renewed_at.elapsed() >= ttl => {
                    tracing::warn!(
                        partition = k,
                        "the partition's lease could not be renewed for its whole time to live, \
                         giving the partition up: {err}"
                    );
                    self.held.remove(&k);
                    self.tenure.end(k);
                    changes.push(Change::Lost(k));
                }
                Err(err) => tracing::warn!(partition = k, "renewing a lease: {err}"),
            }
        }
        // Everything else this round waits no longer than this: the leases held come first.
        let deadline = self.look_deadline();
        if self.member_renewed_at.elapsed() >= renew_after
            && let Some(lease) = self.member_lease.take()
        {
            self.member_lease =
                match tokio::time::timeout_at(deadline, self.leases.renew(&lease)).await {
                    Ok(Ok(renewed)) => {
                        self.member_renewed_at = tokio::time::Instant::now();
                        renewed
                    }
                    Ok(Err(_)) | Err(_) => Some(lease),
                };
        }
        if self.member_lease.is_none() {
            self.member_lease = tokio::time::timeout_at(deadline, self.leases.claim(&self.member))
                .await
                .ok()
                .and_then(Result::ok)
                .flatten();
            self.member_renewed_at = tokio::time::Instant::now();
        }
        // The fair share, from the replicas alive (this one at least) as last counted.
        let Some(members) = *self.replicas.borrow() else {
            return changes;
        };
        let count = self.partitions.count as usize;
        let share = count.div_ceil(members);
        // Replicas joined: give back the highest partitions beyond the share.
        while self.held.len() > share {
            let Some((k, (lease, _))) = self.held.pop_last() else {
                break;
            };
            self.tenure.end(k);
            changes.push(Change::Lost(k));
            self.release_by(k, lease, deadline).await;
        }
        if self.held.len() >= share {
            return changes;
        }
        // Claim free partitions, starting at a place of this replica's own (so replicas
        // starting together mostly try different ones first).
        let start = partition_of_token(self.member.as_bytes(), self.partitions.count);
        for offset in 0..self.partitions.count {
            if self.held.len() >= share {
                break;
            }
            let k = (start + offset) % self.partitions.count;
            if self.held.contains_key(&k) || !self.retakes.may_claim(k, Instant::now()) {
                continue;
            }
            let sent = Instant::now();
            match tokio::time::timeout_at(
                deadline,
                self.leases.claim(&self.partitions.lease_key(k)),
            )
            .await
            {
                Ok(Ok(Some(lease))) => {
                    self.held.insert(k, (lease, tokio::time::Instant::now()));
                    self.tenure.hold(k, sent + ttl);
                    changes.push(Change::Gained(k));
                }
                Ok(Ok(None)) => {}
                Ok(Err(err)) => {
                    tracing::warn!(partition = k, "claiming a partition: {err}");
                    break;
                }
                // Abandoned for the renewals: if the server did write it meanwhile, the lease
                // ages out unrenewed within its time to live and is claimed then.
                Err(_) => {
                    tracing::warn!(
                        partition = k,
                        "claiming a partition: no answer before the leases held fall due"
                    );
                    break;
                }
            }
        }
        changes
    }

    /// Until when a round's requests other than the renewals may wait: half the time to live
    /// before the first lease held runs out unrenewed (the other half is its next renewal's),
    /// and at least a look from now; with none held, a time to live (nothing to keep, and a
    /// claim answered slowly is still a claim).
    fn look_deadline(&self) -> Instant {
        let ttl = self.partitions.lease_ttl;
        let now = Instant::now();
        let first_end = self.held.keys().filter_map(|k| self.tenure.until(*k)).min();
        match first_end {
            Some(end) => end
                .checked_sub(ttl / 2)
                .unwrap_or(now)
                .max(now + ttl / LOOKS_PER_TTL),
            None => now + ttl,
        }
    }

    /// Gives partition `k` up at the loop's request (it could not take it over): its lease
    /// released, for whichever replica claims it next, this one after a wait ([`Retakes`]).
    /// One not released ages out instead.
    async fn give_back_one(&mut self, k: u32) {
        let Some((lease, _)) = self.held.remove(&k) else {
            return;
        };
        self.tenure.end(k);
        let wait = self.retakes.failed(k, Instant::now());
        tracing::info!(
            partition = k,
            "the partition is given back; this router claims it again in {wait:?} at the \
             earliest"
        );
        let wait = self.partitions.lease_ttl / LOOKS_PER_TTL;
        self.release_by(k, lease, Instant::now() + wait).await;
    }

    /// Releases partition `k`'s lease, waiting no later than `deadline`: a lease not released
    /// ages out within its time to live instead.
    async fn release_by(&self, k: u32, lease: Lease, deadline: Instant) {
        match tokio::time::timeout_at(deadline, self.leases.release(lease)).await {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(partition = k, "giving a partition back: {err}"),
            Err(_) => tracing::warn!(partition = k, "giving a partition back: no answer"),
        }
    }

    /// On a clean stop: every lease back at once, so others need not wait for them to expire.
    async fn give_back(self) {
        for (k, (lease, _)) in self.held {
            self.tenure.end(k);
            let _ = self.leases.release(lease).await;
        }
        if let Some(lease) = self.member_lease {
            let _ = self.leases.release(lease).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_referral_falls_in_one_partition_and_they_spread() {
        let partitions = Partitions::new(3);
        let mut counts = [0usize; 3];
        for n in 0..3_000u32 {
            let mut bytes = [0u8; 16];
            bytes[..4].copy_from_slice(&n.to_le_bytes());
            let id = ReferralId::from_bytes(bytes);
            let k = partitions.of(&id);
            let subject = format!("refbus.v1.ref.a.b.{id}");
            assert_eq!(partitions.of_subject(&subject), k);
            counts[k as usize] += 1;
        }
        for count in counts {
            assert!((800..1_200).contains(&count), "{counts:?}");
        }
    }

    #[test]
    fn a_partition_not_taken_over_waits_longer_after_each_failure_in_a_row_up_to_a_ttl() {
        let ttl = Duration::from_secs(6);
        let mut retakes = Retakes::new(ttl);
        let start = Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        assert!(retakes.may_claim(3, at(0)));
        // The first failure: a look (half a second).
        assert_eq!(retakes.failed(3, at(0)), Duration::from_millis(500));
        assert!(!retakes.may_claim(3, at(499)));
        assert!(retakes.may_claim(3, at(500)));
        // Another partition is claimed meanwhile as ever.
        assert!(retakes.may_claim(4, at(100)));
        // Failures in a row double the wait, up to the time to live.
        assert_eq!(retakes.failed(3, at(600)), Duration::from_secs(1));
        assert!(!retakes.may_claim(3, at(1_599)));
        assert_eq!(retakes.failed(3, at(2_000)), Duration::from_secs(2));
        assert_eq!(retakes.failed(3, at(5_000)), Duration::from_secs(4));
        assert_eq!(retakes.failed(3, at(10_000)), ttl);
        assert_eq!(retakes.failed(3, at(20_000)), ttl);
        assert!(!retakes.may_claim(3, at(25_999)));
        assert!(retakes.may_claim(3, at(26_000)));
        // A takeover done ends the row: the next failure waits a look again.
        retakes.done(3);
        assert!(retakes.may_claim(3, at(20_001)));
        assert_eq!(retakes.failed(3, at(30_000)), Duration::from_millis(500));
    }

    #[test]
    fn the_partition_function_does_not_change() {
        // Stable across versions: partitions' consumers keep their places across upgrades.
        // FNV-1a's offset basis (the empty input) and its published value for "a".
        assert_eq!(
            u64::from(partition_of_token(b"", 7)),
            0xcbf2_9ce4_8422_2325_u64 % 7
        );
        assert_eq!(
            u64::from(partition_of_token(b"a", 1_000)),
            0xaf63_dc4c_8601_ec8c_u64 % 1_000
        );
    }
}
