//! Keeping the projection current: rebuilt at start from every referral's last checked record
//! (as the router rebuilds its timers), then following the stream through the one record check
//! (`Bus::consume`), the router's integrity notices, and time itself (a row turns at risk or
//! breached when its clock says so, even before the router records it).

use std::collections::BTreeSet;
use std::sync::Arc;

use futures::StreamExt;
use refbus_bus::consume::{ConsumeSpec, Start};
use refbus_bus::replay::Replayed;
use refbus_bus::subjects::{self, Parsed};
use refbus_bus::{Item, ReadError};
use refbus_core::integrity::IntegrityNotice;
use refbus_core::{ReferralId, Timestamp};

use crate::{Shared, Update, snapshot};

/// When each referral's row may next change by the passing of time alone.
#[derive(Default)]
struct Wakes {
    due: BTreeSet<(Timestamp, ReferralId)>,
}

impl Wakes {
    fn schedule(&mut self, shared: &Shared, id: ReferralId, now: Timestamp) {
        // The instants the row keeps from the core's clock views (a warning point, a
        // deadline) at which what the board shows changes; escalations arrive as records.
        if let Some(at) = shared.read().next_change(&id, now) {
            self.due.insert((at, id));
        }
    }

    fn next(&self) -> Option<Timestamp> {
        self.due.first().map(|(at, _)| *at)
    }

    fn take_due(&mut self, now: Timestamp) -> Vec<ReferralId> {
        let mut due = Vec::new();
        while let Some(&(at, id)) = self.due.first()
            && at <= now
        {
            self.due.pop_first();
            due.push(id);
        }
        due
    }
}

/// Sets the projection up: from its snapshot and the referrals changed since, if there is a
/// usable snapshot, otherwise from every referral ([`rebuild`]). The stream sequence the live
/// feed resumes after, how many referrals are held, and whether the snapshot was used (then
/// the indicators still need every referral: [`observe_all`]).
pub(crate) async fn start(shared: &Shared) -> Result<(u64, usize, bool), ReadError> {
    let rebuilt = |(after, held)| (after, held, false);
    let Some(snapshots) = shared.snapshot.get() else {
        return rebuild(shared).await.map(rebuilt);
    };
    let (path, key) = (snapshots.path.clone(), snapshots.key.clone());
    let registry = shared.verifier.registry().clone();
    let read = tokio::task::spawn_blocking(move || snapshot::read(&path, &key, registry))
        .await
        .unwrap_or_else(|err| Err(std::io::Error::other(err).into()));
    match read {
        Ok(Some((projection, covers))) => from_snapshot(shared, projection, covers)
            .await
            .map(|(after, held)| (after, held, true)),
        Ok(None) => rebuild(shared).await.map(rebuilt),
        Err(err) => {
            // Loud, and harmless: the projection is rebuilt from the bus, as without one.
            tracing::error!(
                path = %snapshots.path.display(),
                "the dashboard's snapshot is not used, rebuilding from every referral: {err}"
            );
            rebuild(shared).await.map(rebuilt)
        }
    }
}

/// The projection from a snapshot covering the stream up to `covers`, then every referral a
/// message reached since, read again through the record check (`Bus::referral`, as the
/// router's restart does).
async fn from_snapshot(
    shared: &Shared,
    projection: crate::Projection,
    covers: u64,
) -> Result<(u64, usize), ReadError> {
    let after = shared.bus.last_sequence().await?;
    *shared.write() = projection;
    let changed = shared.bus.referral_subjects_after(covers).await?;
    let mut reads = futures::stream::iter(changed)
        .map(|subject| async move { shared.bus.referral(&shared.verifier, &subject).await })
        .buffer_unordered(64);
    let mut reread = 0;
    while let Some(read) = reads.next().await {
        let Some(stored) = read? else { continue };
        reread += 1;
        shared.metrics.applied();
        shared.observe(&stored.record.state);
        shared.write().apply(stored.seq, &stored.record.state);
    }
    let mut projection = shared.write();
    projection.prune(shared.clock.now());
    projection.shrink();
    let held = projection.len();
    drop(projection);
    tracing::info!(covers, reread, held, "dashboard: started from its snapshot");
    Ok((after, held))
}

/// The indicators of every referral, closed ones included, which the board's snapshot does not
/// hold: read beside the live feed after a start from the snapshot (the fold keeps the newest
/// state of each referral, so the two may interleave). The indicators page counts fewer
/// referrals until it ends.
pub(crate) async fn observe_all(shared: Arc<Shared>) {
    let count = until_read(|| {
        crate::indicators::read_latest(&shared.bus, &shared.verifier, |state| {
            shared.observe(state);
        })
    })
    .await;
    tracing::info!(count, "dashboard: indicators read every referral");
}

/// The first wait before reading again after a failed read, doubled up to [`MAX_WAIT`].
const FIRST_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
const MAX_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

/// What `read` counts once a read succeeds: after each failure, logged as an ERROR, it reads
/// again from the start after [`FIRST_WAIT`], doubling up to [`MAX_WAIT`]. Loud: the page's
/// figures are partial until a read ends; and safe to read again, as the fold keeps the newest
/// state of each referral.
async fn until_read<Read, Reading>(mut read: Read) -> u64
where
    Read: FnMut() -> Reading,
    Reading: std::future::Future<Output = Result<u64, ReadError>>,
{
    let mut wait = FIRST_WAIT;
    loop {
        match read().await {
            Ok(count) => return count,
            Err(err) => tracing::error!(
                "dashboard: reading every referral for the indicators: {err}; reading again in {} s",
                wait.as_secs()
            ),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(MAX_WAIT);
    }
}

/// Writes the projection's snapshot as of `covers`, beside the loop, if a snapshot is kept.
fn save(shared: &Arc<Shared>, covers: u64) -> Option<tokio::task::JoinHandle<()>> {
    shared.snapshot.get()?;
    let shared = shared.clone();
    Some(tokio::task::spawn_blocking(move || {
        let Some(snapshots) = shared.snapshot.get() else {
            return;
        };
        let bytes = snapshot::encode(&shared.read(), covers, &snapshots.key);
        if let Err(err) = snapshot::write(&snapshots.path, &bytes) {
            // A restart then starts from an older snapshot, or rebuilds: slower, not wrong.
            tracing::warn!(path = %snapshots.path.display(), "writing the dashboard's snapshot: {err}");
        }
    }))
}

/// Reads every referral's last checked record into the projection; the stream sequence the
/// live feed resumes after (taken first, so nothing stored meanwhile is missed: the two
/// overlap, and the projection keeps the newer record).
pub(crate) async fn rebuild(shared: &Shared) -> Result<(u64, usize), ReadError> {
    let after = shared.bus.last_sequence().await?;
    shared.write().defer_indexes();
    let mut latest = shared
        .bus
        .latest_checked(&shared.verifier, vec![subjects::ALL_REFERRALS.to_owned()])
        .await?;
    let mut count = 0;
    while let Some(stored) = latest.next().await {
        let stored = stored?;
        count += 1;
        shared.metrics.applied();
        shared.observe(&stored.record.state);
        shared.write().apply(stored.seq, &stored.record.state);
    }
    let mut projection = shared.write();
    projection.prune(shared.clock.now());
    projection.shrink();
    drop(projection);
    Ok((after, count))
}

/// Follows the stream after `after`, the integrity notices and the clock, until dropped.
pub(crate) async fn follow(shared: Arc<Shared>, after: u64) -> Result<(), ReadError> {
    let mut records = shared
        .bus
        .consume(
            &shared.verifier,
            ConsumeSpec::all_referrals(Start::After(after)),
        )
        .await?
        .boxed();
    let coordinator = shared.verifier.registry().coordinator.clone();
    let mut notices = shared
        .bus
        .watch(
            &shared.verifier,
            vec![subjects::integrity_notices_for(&coordinator)],
            0,
        )
        .await?
        .boxed();
    let mut wakes = Wakes::default();
    {
        let now = shared.clock.now();
        wakes.due.extend(shared.read().next_changes(now));
    }
    // Closed referrals leave the projection after a while (see `CLOSED_KEPT`).
    let mut prune = tokio::time::interval(std::time::Duration::from_secs(3600));
    // The snapshot: written at once (a restart soon after starts from it), then whenever
    // `every` passed and something changed. Every record up to `applied` is in the projection.
    let mut applied = after;
    let mut saved_version = None;
    let mut saving: Option<tokio::task::JoinHandle<()>> = None;
    let mut snapshots = tokio::time::interval(
        shared
            .snapshot
            .get()
            .map_or(std::time::Duration::from_secs(3600), |s| s.every),
    );
    snapshots.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let sleep = shared
            .clock
            .sleep_until(wakes.next().unwrap_or(Timestamp::MAX));
        tokio::select! {
            item = records.next() => match item {
                Some(Ok(Replayed::Record(stored))) => {
                    let id = stored.record.state.id;
                    applied = applied.max(stored.seq);
                    shared.metrics.applied();
                    let now = shared.clock.now();
                    shared.observe(&stored.record.state);
                    let version = {
                        let mut projection = shared.write();
                        projection
                            .apply(stored.seq, &stored.record.state)
                            .then(|| projection.version())
                    };
                    wakes.schedule(&shared, id, now);
                    if let Some(version) = version {
                        shared.send(Update::Referral { version, id });
                    }
                }
                Some(Ok(Replayed::Refused { seq, subject, failure })) => {
                    let referral_id = match subjects::parse(&subject) {
                        Some(Parsed::Referral(parsed)) => Some(parsed.id),
                        _ => None,
                    };
                    alert(&shared, IntegrityNotice {
                        subject,
                        stream_seq: seq,
                        referral_id,
                        problem: failure.problem,
                        detail: failure.detail,
                        at: shared.clock.now(),
                    });
                }
                Some(Err(err)) => tracing::warn!("dashboard: reading the stream: {err}"),
                None => return Ok(()),
            },
            item = notices.next() => match item {
                Some(Ok(Item::Integrity(stored))) => alert(&shared, stored.record),
                Some(Ok(_)) => {}
                Some(Err(err)) => tracing::warn!("dashboard: reading integrity notices: {err}"),
                None => return Ok(()),
            },
            _ = prune.tick() => shared.write().prune(shared.clock.now()),
            _ = snapshots.tick(), if shared.snapshot.get().is_some() => {
                let version = shared.read().version();
                // One write at a time, and none when nothing changed.
                if saved_version != Some(version) && saving.as_ref().is_none_or(|s| s.is_finished()) {
                    saved_version = Some(version);
                    saving = save(&shared, applied);
                }
            }
            () = sleep => {
                let now = shared.clock.now();
                for id in wakes.take_due(now) {
                    if !shared.read().holds(&id) {
                        continue;
                    }
                    wakes.schedule(&shared, id, now);
                    let version = shared.write().touch();
                    shared.send(Update::Referral { version, id });
                }
            }
        }
    }
}

fn alert(shared: &Shared, notice: IntegrityNotice) {
    let version = {
        let mut projection = shared.write();
        projection.alert(notice).then(|| projection.version())
    };
    if let Some(version) = version {
        shared.send(Update::Alerts { version });
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;
    use std::time::Duration;

    use refbus_bus::{ReadError, ReadErrorKind};
    use tokio::time::Instant;

    use super::until_read;

    /// A read failing eight times, then counting 42: read again after 1, 2, 4 ... 60 s.
    #[tokio::test(start_paused = true)]
    async fn a_failed_read_is_read_again_backing_off_to_a_minute() {
        let started = Instant::now();
        let reads: Mutex<Vec<Duration>> = Mutex::new(Vec::new());
        let count = until_read(|| {
            let mut reads = reads.lock().unwrap();
            reads.push(started.elapsed());
            let failed = reads.len() <= 8;
            async move {
                if failed {
                    Err(ReadError::with_source(
                        ReadErrorKind::Unavailable,
                        "no server",
                    ))
                } else {
                    Ok(42)
                }
            }
        })
        .await;
        assert_eq!(count, 42);
        let waits: Vec<u64> = reads
            .into_inner()
            .unwrap()
            .windows(2)
            .map(|pair| (pair[1] - pair[0]).as_secs())
            .collect();
        assert_eq!(waits, [1, 2, 4, 8, 16, 32, 60, 60]);
    }
}
