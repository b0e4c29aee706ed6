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

use crate::{Shared, Update};

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

/// Reads every referral's last checked record into the projection; the stream sequence the
/// live feed resumes after (taken first, so nothing stored meanwhile is missed: the two
/// overlap, and the projection keeps the newer record).
pub(crate) async fn rebuild(shared: &Shared) -> Result<(u64, usize), ReadError> {
    let after = shared.bus.last_sequence().await?;
    let mut latest = shared
        .bus
        .latest_checked(&shared.verifier, vec![subjects::ALL_REFERRALS.to_owned()])
        .await?;
    let mut count = 0;
    while let Some(stored) = latest.next().await {
        let stored = stored?;
        count += 1;
        shared.metrics.applied();
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
    loop {
        let sleep = shared
            .clock
            .sleep_until(wakes.next().unwrap_or(Timestamp::MAX));
        tokio::select! {
            item = records.next() => match item {
                Some(Ok(Replayed::Record(stored))) => {
                    let id = stored.record.state.id;
                    shared.metrics.applied();
                    let now = shared.clock.now();
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
