//! Idempotency keys: what makes an append the repeat of an earlier one. The bus turns a key
//! into the message's `Nats-Msg-Id` (JetStream's deduplication within its window), so no
//! component formats NATS message ids, and the ids of one kind of writer can never collide with
//! another's.

use refbus_core::escalation::Due;
use refbus_core::event::{Actor, Change};
use refbus_core::{AgencyId, Event, ReferralId, RequestId};

/// Why an append may repeat an earlier one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Idempotency<'a> {
    /// An agency's request, by the request id its system gave (the adapter's commands and
    /// creates): `<agency>:<request_id>`.
    Request {
        agency: &'a AgencyId,
        request_id: &'a RequestId,
    },
    /// The second record one agency request makes, on another referral than its first: the
    /// link a reroute records on the original after creating the child under the same request
    /// id: `<agency>:<request_id>:link`.
    RequestLink {
        agency: &'a AgencyId,
        request_id: &'a RequestId,
    },
    /// A clock item the router records on a referral (a warning, a breach, an escalation
    /// level), by its key: `router:<referral>:<key>`. Two routers racing write it once.
    ClockItem { referral: ReferralId, key: &'a str },
    /// The router's integrity alert about the refused message at stream sequence `seq`:
    /// `router:integrity:<seq>`.
    IntegrityAlert { seq: u64 },
    /// An escalation notice to a third agency, by the escalation event and whom it notifies:
    /// `notice:<referral>:<event seq>:<agency>:<role>`.
    Notice {
        referral: ReferralId,
        event_seq: u64,
        agency: &'a AgencyId,
        role: refbus_core::escalation::Role,
    },
}

impl Idempotency<'_> {
    /// The message id JetStream deduplicates by (a writer outside the bus, such as the bench's
    /// fixture publishing in bulk, names its messages with it too).
    pub fn message_id(&self) -> String {
        match self {
            Idempotency::Request { agency, request_id } => format!("{agency}:{request_id}"),
            Idempotency::RequestLink { agency, request_id } => {
                format!("{agency}:{request_id}:link")
            }
            Idempotency::ClockItem { referral, key } => format!("router:{referral}:{key}"),
            Idempotency::IntegrityAlert { seq } => format!("router:integrity:{seq}"),
            Idempotency::Notice {
                referral,
                event_seq,
                agency,
                role,
            } => format!("notice:{referral}:{event_seq}:{agency}:{role}"),
        }
    }
}

/// The message id refbus's writer of `event` gives it: an agency's request (or the link a
/// reroute records on the original), a clock item or an integrity alert the router records.
/// `None` for an event no refbus writer makes (an agency's event without a request id). A
/// reader compares it with the id a record was stored under: JetStream stores nothing twice
/// under one id within its duplicate window, so a record stored under its writer's id is the
/// one its writer appended, not a copy of it placed elsewhere in the referral's history.
pub(crate) fn message_id_of(event: &Event) -> Option<String> {
    Some(match &event.actor {
        Actor::Agency { agency, .. } => {
            let request_id = event.request_id.as_ref()?;
            if matches!(event.change, Change::Rerouted { .. }) {
                Idempotency::RequestLink { agency, request_id }.message_id()
            } else {
                Idempotency::Request { agency, request_id }.message_id()
            }
        }
        Actor::Router => match &event.change {
            Change::IntegrityAlert { stream_seq, .. } => {
                Idempotency::IntegrityAlert { seq: *stream_seq }.message_id()
            }
            change => Idempotency::ClockItem {
                referral: event.referral_id,
                key: &Due::recorded_as(change)?.key(),
            }
            .message_id(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_ids_keep_their_stored_form() {
        let agency = AgencyId::new("maros-dinsos").unwrap();
        let request_id = RequestId::new("req-1").unwrap();
        let referral = ReferralId::from_bytes([1; 16]);
        assert_eq!(
            Idempotency::Request {
                agency: &agency,
                request_id: &request_id
            }
            .message_id(),
            "maros-dinsos:req-1"
        );
        assert_eq!(
            Idempotency::RequestLink {
                agency: &agency,
                request_id: &request_id
            }
            .message_id(),
            "maros-dinsos:req-1:link"
        );
        assert_eq!(
            Idempotency::ClockItem {
                referral,
                key: "ack.breach"
            }
            .message_id(),
            format!("router:{referral}:ack.breach")
        );
        assert_eq!(
            Idempotency::IntegrityAlert { seq: 7 }.message_id(),
            "router:integrity:7"
        );
        assert_eq!(
            Idempotency::Notice {
                referral,
                event_seq: 5,
                agency: &agency,
                role: refbus_core::escalation::Role::Head,
            }
            .message_id(),
            format!(
                "notice:{referral}:5:maros-dinsos:{}",
                refbus_core::escalation::Role::Head
            )
        );
    }

    #[test]
    fn a_records_message_id_is_the_one_its_writer_gives_it() {
        use refbus_core::ids::{CaseId, ClockId, OperatorId};
        let agency = AgencyId::new("maros-dinsos").unwrap();
        let referral = ReferralId::from_bytes([2; 16]);
        let at = refbus_core::Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap();
        let event = |actor: Actor, request: Option<&str>, change: Change| Event {
            referral_id: referral,
            case_id: CaseId::new("MRS-1").unwrap(),
            seq: 2,
            at,
            actor,
            request_id: request.map(|id| RequestId::new(id).unwrap()),
            change,
            prev_hash: refbus_core::EventHash::GENESIS,
        };
        let operator = Actor::Agency {
            agency: agency.clone(),
            system: None,
            operator: OperatorId::new("op").unwrap(),
        };
        let breach = Due::Breach {
            clock: ClockId::new("acknowledge").unwrap(),
            deadline: at,
        };
        let cases = [
            (
                event(operator.clone(), Some("req-1"), Change::Accepted),
                Some("maros-dinsos:req-1".to_owned()),
            ),
            (
                event(
                    operator.clone(),
                    Some("req-2"),
                    Change::Rerouted {
                        child: ReferralId::from_bytes([3; 16]),
                        to: AgencyId::new("maros-dp3a").unwrap(),
                    },
                ),
                Some("maros-dinsos:req-2:link".to_owned()),
            ),
            (event(operator, None, Change::Accepted), None),
            (
                event(Actor::Router, None, breach.change()),
                Some(
                    Idempotency::ClockItem {
                        referral,
                        key: &breach.key(),
                    }
                    .message_id(),
                ),
            ),
            (
                event(
                    Actor::Router,
                    None,
                    Change::IntegrityAlert {
                        stream_seq: 9,
                        problem: refbus_core::integrity::Problem::Signature,
                    },
                ),
                Some("router:integrity:9".to_owned()),
            ),
        ];
        for (event, expected) in cases {
            assert_eq!(message_id_of(&event), expected, "{:?}", event.change);
        }
    }
}
