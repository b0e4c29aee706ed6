//! Recording what is due on one referral: read its current state from the bus, ask the core
//! what is due now, and append each item with a stable message id and the expected sequence.

use std::time::Duration;

use refbus_bus::{Append, AppendErrorKind, Idempotency};
use refbus_core::command::{Command, Request};
use refbus_core::{Actor, Referral, ReferralId, Timestamp, evaluate, record};

use crate::{Activity, Router};

/// How a firing ended: the referral's next wake-up, computed from its state at `seq`.
#[derive(Debug)]
pub(crate) struct Fired {
    pub(crate) referral: ReferralId,
    pub(crate) subject: String,
    pub(crate) seq: u64,
    pub(crate) next_wake: Option<Timestamp>,
}

/// How long to wait before trying again when the bus failed.
const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Re-reads after another writer got there first, before trying again later.
const MAX_ATTEMPTS: usize = 8;

impl Router {
    /// Records what is due on `referral`. `cached` is its state at a stream sequence, if the
    /// router holds the state its wake-up was computed from: the first attempt starts from it
    /// instead of reading it back (every append names that sequence, so if the referral moved
    /// meanwhile the append is refused and the referral is read again). `checked`: how far the
    /// router's consumer of the referral's partition has checked the stream (see `current`).
    pub(crate) async fn fire(
        &self,
        referral: ReferralId,
        subject: &str,
        mut cached: Option<(u64, Referral)>,
        checked: u64,
    ) -> Fired {
        let done = |seq, next_wake| Fired {
            referral,
            subject: subject.to_owned(),
            seq,
            next_wake,
        };
        let mut last_seq = 0;
        for _ in 0..MAX_ATTEMPTS {
            // The sequence the next append expects as the subject's last: the record the state
            // is from, unless messages after it failed the check.
            let mut tail = None;
            let (mut seq, mut current) = match cached.take() {
                Some(known) => known,
                None => match self.current(subject, checked).await {
                    Ok(Some(stored)) => {
                        tail = Some(stored.last_seq);
                        (stored.seq, stored.record.state)
                    }
                    // The router holds a timer for it because it consumed one of its records,
                    // and records are never deleted: a read that finds nothing was answered by
                    // a replica that has not got the referral yet (a node restarted or cut off
                    // and catching up). Dropping the timer there lost every item still due on
                    // the referral (found by `refbus chaos`, docs/RELIABILITY.md): read again.
                    Ok(None) => {
                        tracing::warn!(%referral, "reading the referral to record what is due: not found on the replica that answered; reading again");
                        return done(last_seq, Some(self.clock.now().plus(RETRY_AFTER)));
                    }
                    Err(err) => {
                        tracing::warn!(%referral, "reading the referral to record what is due: {err}");
                        return done(last_seq, Some(self.clock.now().plus(RETRY_AFTER)));
                    }
                },
            };
            let now = self.clock.now();
            let evaluation = evaluate(&current, &self.registry, now);
            if evaluation.due.is_empty() {
                return done(seq, evaluation.next_wake);
            }
            let due = evaluation.due;
            let mut interrupted = false;
            for item in due {
                let key = item.key();
                let due_at = item.due_at();
                let counted = crate::metrics::Item::of(&item);
                let request = Request {
                    command: Command::Record(item),
                    actor: Actor::Router,
                    request_id: None,
                };
                let recorded = match record(&self.registry, Some(&current), &request, now) {
                    Ok(recorded) => recorded,
                    Err(err) => {
                        tracing::error!(%referral, key, "the core refuses an item it said was due: {err}");
                        continue;
                    }
                };
                let next = recorded.state;
                let change = recorded.event.change.kind();
                let append = Append {
                    event: recorded.event,
                    state_after: &next,
                    expected_last_seq: tail.take().unwrap_or(seq),
                    prev_seq: seq,
                    key: Idempotency::ClockItem {
                        referral,
                        key: &key,
                    },
                };
                match self.bus.append_with_payload(&self.key, append).await {
                    Ok((appended, written, payload)) if !appended.duplicate => {
                        seq = appended.seq;
                        current = next;
                        // Stored at `seq` as written: applied from this record when the consumer
                        // delivers these very bytes back (crate::own).
                        self.remember_own(seq, written, &payload);
                        self.metrics.recorded(&counted);
                        tracing::info!(%referral, key, %due_at, "recorded");
                        self.report(Activity::Recorded {
                            referral,
                            key,
                            change,
                            due_at,
                            recorded_at: now,
                            seq,
                        });
                    }
                    // Another router recorded it, or the referral moved: read it again.
                    Ok(_) => {
                        interrupted = true;
                        break;
                    }
                    Err(err) if err.kind() == AppendErrorKind::Conflict => {
                        interrupted = true;
                        break;
                    }
                    Err(err) => {
                        tracing::warn!(%referral, key, "recording: {err}");
                        return done(seq, Some(self.clock.now().plus(RETRY_AFTER)));
                    }
                }
            }
            last_seq = seq;
            if !interrupted {
                let evaluation = evaluate(&current, &self.registry, self.clock.now());
                let wake = if evaluation.due.is_empty() {
                    evaluation.next_wake
                } else {
                    Some(self.clock.now())
                };
                return done(seq, wake);
            }
        }
        // The referral kept changing under us: look again shortly.
        done(last_seq, Some(self.clock.now().plus(RETRY_AFTER)))
    }

    /// The referral's state to record on. Its last record checked against its predecessor's
    /// stored state (`Bus::referral`, a few direct reads) if the router's consumer has checked
    /// the stream that far: the router then believed or refused that record itself, and a
    /// refused one is followed by the router's integrity alert. Past that point the stored
    /// state is the writer's word: a party that stores two records in a row, the first
    /// claiming a state its event does not make, has the second pass that check, and an item
    /// recorded after it would go on from the claimed state (a breach recorded early or never,
    /// its alert written nowhere). The history is then read and checked in full.
    async fn current(
        &self,
        subject: &str,
        checked: u64,
    ) -> Result<Option<refbus_bus::Stored<refbus_bus::EventRecord>>, refbus_bus::ReadError> {
        match self.bus.referral(&self.verifier, subject).await? {
            Some(stored) if stored.seq > checked => {
                tracing::debug!(
                    %subject,
                    seq = stored.seq,
                    checked,
                    "a record the consumer has not checked yet: reading the referral's history"
                );
                self.bus.referral_in_full(&self.verifier, subject).await
            }
            read => Ok(read),
        }
    }
}
