//! Consumed events: check each with the one record check, apply it, reschedule the referral,
//! and send notices for escalations (their storage is confirmed off the event loop, in
//! [`settle`], before the event is acknowledged).
//!
//! Fail loud, never silent: a record that fails the check is never applied and never removes a
//! clock. The referral keeps running from its last verified state; the failure becomes an
//! integrity alert event on the referral (chained from that state, so every reader goes on from
//! it) and an integrity notice to the coordinator. A failure to read the bus is not an
//! integrity problem: it is retried, and the delivery is acknowledged only once its effects
//! are done.

use std::time::Duration;

use refbus_bus::{
    Append, Bus, Delivery, EventRecord, Idempotency, Pending, ReadError, Unchecked, subjects,
};
use refbus_core::command::{Command, Request};
use refbus_core::integrity::{Failure, IntegrityNotice};
use refbus_core::{Actor, Change, Event, Notice, Referral, ReferralId, evaluate, record};
use tokio::sync::broadcast;

use crate::{Activity, Known, Loop, Router, own};

/// A failure that goes away by itself (the bus unreachable): try the delivery again later.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub(crate) struct Transient(pub(crate) String);

impl From<ReadError> for Transient {
    fn from(err: ReadError) -> Transient {
        Transient(err.to_string())
    }
}

impl Router {
    /// Applies one delivery, and returns the notices it sent, still to be confirmed stored.
    /// `Err` only for transient failures: the caller retries.
    pub(crate) async fn ingest(
        &self,
        state: &mut Loop,
        delivery: &Delivery,
    ) -> Result<Vec<Sent>, Transient> {
        // The router's own append, delivered back byte for byte: applied from what it wrote,
        // not checked again (crate::own; docs/ARCHITECTURE.md, "The router trusts its own
        // appends"). Anything else goes through the one record check below.
        let taken = self.lock_own().delivered(delivery.seq);
        match taken.compare(&delivery.subject, delivery.payload()) {
            own::Delivered::Own(written) => {
                let EventRecord {
                    event,
                    state: after,
                    ..
                } = *written;
                if state
                    .known
                    .get(&event.referral_id)
                    .is_some_and(|known| known.seq >= delivery.seq)
                {
                    return Ok(Vec::new());
                }
                self.metrics.own_append_applied();
                return self.apply(state, delivery, &event, after).await;
            }
            own::Delivered::Differs => {
                tracing::error!(
                    seq = delivery.seq,
                    subject = %delivery.subject,
                    "INTEGRITY: the message at this sequence is not what the router appended \
                     there and JetStream acknowledged; checking it in full"
                );
            }
            own::Delivered::Other => {}
        }
        let record = match delivery.unchecked(&self.verifier) {
            Ok(record) => record,
            // Not a refbus record, or of a format this router does not read: loud, as any
            // failure of the check (the failure says which).
            Err(failure) => {
                let referral = match subjects::parse(&delivery.subject) {
                    Some(subjects::Parsed::Referral(subject)) => Some(subject.id),
                    _ => None,
                };
                self.alert(delivery.seq, &delivery.subject, referral, failure)
                    .await?;
                return Ok(Vec::new());
            }
        };
        let event = &record.record.event;
        let referral = event.referral_id;
        // Delivered again (after a restart before its acknowledgement): already applied.
        if state
            .known
            .get(&referral)
            .is_some_and(|known| known.seq >= delivery.seq)
        {
            return Ok(Vec::new());
        }
        let before = self.state_before(state, event, &record).await?;
        let after = match self
            .verifier
            .check(&record, before.as_ref().map(|(_, state)| state.clone()))
        {
            // The router keeps only what snapshots hold (never sealed payloads).
            Ok(after) => after.into_snapshot(),
            Err(failure) => {
                // Nothing changes for the referral's clocks: the cached state (if it was taken
                // out for the check) goes back, and its timers stay as they were.
                if let Some((seq, before)) = before {
                    self.remember(
                        state,
                        Known {
                            seq,
                            state: before,
                            trace: opentelemetry::trace::SpanContext::empty_context(),
                        },
                    );
                }
                let tokens = record.tokens.as_ref().map(|tokens| tokens.referral);
                self.alert(delivery.seq, &delivery.subject, tokens, failure)
                    .await?;
                return Ok(Vec::new());
            }
        };

        self.apply(state, delivery, event, after).await
    }

    /// Applies a delivered event, checked or the router's own, whose referral is `after` it:
    /// reschedules the referral, sends an escalation's notices, and keeps the state to check
    /// the referral's next event against.
    async fn apply(
        &self,
        state: &mut Loop,
        delivery: &Delivery,
        event: &Event,
        after: Referral,
    ) -> Result<Vec<Sent>, Transient> {
        let referral = event.referral_id;
        let now = self.clock.now();
        let evaluation = evaluate(&after, &self.registry, now);
        let wake = if evaluation.due.is_empty() {
            evaluation.next_wake
        } else {
            Some(now)
        };
        state
            .timers
            .set(referral, &delivery.subject, delivery.seq, wake);
        let sent = if let Change::Escalated { .. } = &event.change {
            self.notify(&after, event).await?
        } else {
            Vec::new()
        };
        if wake.is_none() && after.status.is_terminal() {
            state.known.remove(&referral);
        } else {
            let known = Known {
                seq: delivery.seq,
                state: after,
                trace: crate::trace::current(),
            };
            self.remember(state, known);
        }
        Ok(sent)
    }

    /// The state the record is checked against, with the stream sequence of the record that made
    /// it: what the subject held just before the record. The cached state when JetStream
    /// proves the record was stored right after the predecessor it names
    /// (`Unchecked::follows_its_predecessor`) and the cache is at that predecessor (taken out of
    /// the cache: the state after the event replaces it); otherwise read back
    /// (`Bus::state_preceding`): a second creation, or a record written after newer ones but
    /// following an older one, is then checked against the referral as it stands, and refused
    /// (the check says why), never believed as the referral's new state.
    async fn state_before(
        &self,
        state: &mut Loop,
        event: &Event,
        record: &Unchecked,
    ) -> Result<Option<(u64, Referral)>, Transient> {
        if record.follows_its_predecessor()
            && event.seq > 1
            && state
                .known
                .get(&event.referral_id)
                .is_some_and(|known| known.seq == record.prev_seq)
            && let Some(known) = state.known.remove(&event.referral_id)
        {
            return Ok(Some((known.seq, known.state)));
        }
        // A read that fails (a replica behind included) is transient: the delivery comes again.
        Ok(self.bus.state_preceding(&self.verifier, record).await?)
    }

    /// Remembers an append JetStream acknowledged at `seq` (not a duplicate), to recognise it
    /// when the consumer delivers it back.
    pub(crate) fn remember_own(&self, seq: u64, written: EventRecord, payload: &[u8]) {
        let state = &written.state;
        let subject = subjects::referral(state.recipient(), state.sender(), &state.id);
        let digest = own::digest(payload);
        self.lock_own().wrote(seq, &subject, digest, written);
    }

    fn lock_own(&self) -> std::sync::MutexGuard<'_, own::OwnAppends> {
        // Poisoned only if a holder panicked; what it holds is still consistent (each call
        // changes it in one step).
        self.own
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(crate) fn remember(&self, state: &mut Loop, known: Known) {
        // A referral already cached only replaces its entry: nothing to make room for.
        if state.known.len() >= self.options.state_cache
            && !state.known.contains_key(&known.state.id)
        {
            // Forget a tenth; any of them is read back from the bus if its referral moves.
            let forget: Vec<_> = state
                .known
                .keys()
                .take(self.options.state_cache / 10 + 1)
                .copied()
                .collect();
            for referral in forget {
                state.known.remove(&referral);
            }
        }
        state.known.insert(known.state.id, known);
    }

    /// A record that fails the check: an integrity notice to the coordinator and, when the
    /// record sits on a real referral's subject, an integrity alert event on that referral,
    /// chained from its last verified record. Clocks are not touched.
    async fn alert(
        &self,
        seq: u64,
        subject: &str,
        referral: Option<ReferralId>,
        failure: Failure,
    ) -> Result<(), Transient> {
        let now = self.clock.now();
        // Counted once per record flagged (each is consumed once), not per read of it.
        self.metrics.integrity_failure(failure.problem);
        self.report(Activity::Flagged {
            referral,
            seq,
            problem: failure.problem,
            why: failure.detail.clone(),
        });
        let notice = IntegrityNotice {
            subject: subject.to_owned(),
            stream_seq: seq,
            referral_id: referral,
            problem: failure.problem,
            detail: failure.detail,
            at: now,
        };
        self.bus
            .publish_integrity_notice(&self.registry.coordinator, &notice)
            .await
            .map_err(|err| Transient(format!("the integrity notice: {err}")))?;
        if referral.is_none() {
            return Ok(());
        }
        // The referral's last verified record on this very subject, if it has one, from its
        // whole checked history: not from the last record checked against its predecessor's
        // stored state (`Bus::referral`), which a party can make believed by storing two
        // records in a row, the first claiming a state its event does not make. The alert
        // would then go on from that claimed state, and every reader with it. A history that
        // does not reach the refused record was read from a replica behind: read again later.
        let history = self
            .bus
            .checked_history_through(&self.verifier, subject, seq)
            .await?;
        let Some(good) = history.into_iter().last() else {
            return Ok(());
        };
        if good.seq > seq {
            // The referral already went on past the refused record.
            return Ok(());
        }
        let request = Request {
            command: Command::RecordIntegrityAlert {
                stream_seq: seq,
                problem: failure.problem,
            },
            actor: Actor::Router,
            request_id: None,
        };
        let recorded = match record(&self.registry, Some(&good.record.state), &request, now) {
            Ok(recorded) => recorded,
            Err(err) => {
                tracing::error!(%subject, seq, "the core refuses the integrity alert: {err}");
                return Ok(());
            }
        };
        let append = Append {
            event: recorded.event,
            state_after: &recorded.state,
            expected_last_seq: seq,
            prev_seq: good.seq,
            key: Idempotency::IntegrityAlert { seq },
        };
        match self.bus.append(&self.key, append).await {
            Ok(_) => Ok(()),
            // Something was written after the refused record: the referral goes on from it
            // (and it is checked in turn when it is consumed).
            Err(err) if err.kind() == refbus_bus::AppendErrorKind::Conflict => Ok(()),
            Err(err) => Err(Transient(format!("the integrity alert: {err}"))),
        }
    }

    /// Sends the notices to the third agencies an escalation names (the parties see the event
    /// itself), in order on the router's connection, without waiting for each to be stored.
    async fn notify(&self, referral: &Referral, event: &Event) -> Result<Vec<Sent>, Transient> {
        let mut sent = Vec::new();
        for notice in refbus_core::notices(referral, event) {
            let pending =
                self.bus.send_notice(&notice).await.map_err(|err| {
                    Transient(format!("notice to {}: {err}", notice.notified.agency))
                })?;
            sent.push(Sent { notice, pending });
        }
        Ok(sent)
    }
}

/// A notice sent, its storage not yet confirmed.
pub(crate) struct Sent {
    notice: Notice,
    pending: Pending,
}

/// Waits until every notice of a consumed escalation is stored (sending again, with the same
/// message id, any that failed); the caller then acknowledges the escalation. Runs beside the
/// event loop: a round trip per notice there would hold up every timer behind it. If the
/// router stops first the escalation is not acknowledged, is delivered again, and its notices
/// are sent again: their message ids make the second sending write nothing.
pub(crate) async fn settle(
    bus: Bus,
    activity: broadcast::Sender<Activity>,
    sent: Vec<Sent>,
    delivery: &Delivery,
) {
    for Sent { notice, pending } in sent {
        let mut stored = pending.stored().await;
        let mut backoff = Duration::from_millis(50);
        while let Err(err) = stored {
            tracing::warn!(
                seq = delivery.seq,
                agency = %notice.notified.agency,
                "a notice was not stored, sending it again in {backoff:?}: {err}"
            );
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(Duration::from_secs(2));
            stored = bus.publish_notice(&notice).await;
        }
        let _ = activity.send(Activity::Noticed {
            referral: notice.referral_id,
            agency: notice.notified.agency.to_string(),
            key: format!(
                "{}.level.{}.{}",
                notice.clock, notice.level, notice.repetition
            ),
        });
    }
}
