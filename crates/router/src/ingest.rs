//! Consumed events: re-decide each with the core, apply it, reschedule the referral, and send
//! notices for escalations. An event the core would not have decided is flagged and not applied.

use refbus_bus::record::into_snapshot;
use refbus_bus::{Delivery, subjects};
use refbus_core::verify::recheck_hashed;
use refbus_core::{Change, Event, Referral, ReferralId, evaluate};

use crate::{Activity, Known, Loop, Router};

impl Router {
    pub(crate) async fn ingest(&self, state: &mut Loop, delivery: &Delivery) {
        // Delivered again (after a restart before its acknowledgement): already applied.
        let record = match delivery.checked() {
            Ok(record) => record,
            Err(err) => return self.flag_unreadable(delivery, err.to_string()),
        };
        let event = &record.event;
        let referral = event.referral_id;
        if state.flagged.contains(&referral) {
            return;
        }
        if state
            .known
            .get(&referral)
            .is_some_and(|known| known.seq >= delivery.seq)
        {
            return;
        }
        let before = match self.state_before(state, event, delivery.prev_seq).await {
            Ok(before) => before,
            Err(why) => return self.flag(state, referral, delivery.seq, why),
        };
        let after = match recheck_hashed(&self.registry, before, event, record.bytes_hash) {
            // The router keeps and checks only what snapshots hold (never sealed payloads).
            Ok(after) => into_snapshot(after),
            Err(why) => {
                let why = format!("{} event: {why}", event.change.kind());
                return self.flag(state, referral, delivery.seq, why);
            }
        };
        if record.stored_hash != record.bytes_hash {
            let why = "the stored hash is not the hash of the stored event (altered, or not in canonical form)";
            return self.flag(state, referral, delivery.seq, why.to_owned());
        }
        if !record.state_is(&after) {
            let why = "the stored state is not the state its events make".to_owned();
            return self.flag(state, referral, delivery.seq, why);
        }

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
        if let Change::Escalated { .. } = &event.change {
            self.notify(&after, event).await;
        }
        if wake.is_none() && after.status.is_terminal() {
            state.known.remove(&referral);
        } else {
            let known = Known {
                seq: delivery.seq,
                state: after,
            };
            self.remember(state, known);
        }
    }

    /// The state the event was decided on: the cached one if it is the event's predecessor
    /// (taken out of the cache: the state after the event replaces it), otherwise read back from
    /// the bus (the predecessor's message carries it).
    async fn state_before(
        &self,
        state: &mut Loop,
        event: &Event,
        prev_seq: u64,
    ) -> Result<Option<Referral>, String> {
        if event.seq == 1 {
            return Ok(None);
        }
        if state
            .known
            .get(&event.referral_id)
            .is_some_and(|known| known.seq == prev_seq)
            && let Some(known) = state.known.remove(&event.referral_id)
        {
            return Ok(Some(known.state));
        }
        match self.bus.event_at(prev_seq).await {
            Ok(Some(previous)) if previous.record.event.referral_id == event.referral_id => {
                Ok(Some(previous.record.state))
            }
            Ok(_) => Err(format!(
                "its predecessor (stream sequence {prev_seq}) is missing or belongs to another referral"
            )),
            Err(err) => Err(format!("its predecessor cannot be read: {err}")),
        }
    }

    fn remember(&self, state: &mut Loop, known: Known) {
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

    fn flag(&self, state: &mut Loop, referral: ReferralId, seq: u64, why: String) {
        tracing::error!(
            %referral,
            seq,
            "INTEGRITY: an event on the bus is not what refbus decides; it is not applied and the \
             referral is left for people to investigate (refbus audit): {why}"
        );
        state.flagged.insert(referral);
        state.timers.remove(&referral);
        state.known.remove(&referral);
        self.report(Activity::Flagged { referral, seq, why });
    }

    /// A message that is not a refbus record at all: nothing to apply, everything to report.
    fn flag_unreadable(&self, delivery: &Delivery, why: String) {
        tracing::error!(seq = delivery.seq, subject = %delivery.subject, "INTEGRITY: an unreadable message on the bus: {why}");
        if let Some(refbus_bus::subjects::Parsed::Referral(subject)) =
            refbus_bus::subjects::parse(&delivery.subject)
        {
            self.report(Activity::Flagged {
                referral: subject.id,
                seq: delivery.seq,
                why,
            });
        }
    }

    /// Notices to the third agencies an escalation names (the parties see the event itself).
    async fn notify(&self, referral: &Referral, event: &Event) {
        for notice in refbus_core::notices(referral, event) {
            let target = &notice.notified;
            let message_id = format!(
                "notice:{}:{}:{}:{}",
                referral.id, event.seq, target.agency, target.role
            );
            let subject = subjects::notice(&target.agency, &referral.id);
            match self
                .bus
                .publish_notice(&subject, &notice, &message_id)
                .await
            {
                Ok(_) => self.report(Activity::Noticed {
                    referral: referral.id,
                    agency: target.agency.to_string(),
                    key: format!(
                        "{}.level.{}.{}",
                        notice.clock, notice.level, notice.repetition
                    ),
                }),
                Err(err) => {
                    tracing::warn!(referral = %referral.id, agency = %target.agency, "notice: {err}")
                }
            }
        }
    }
}
