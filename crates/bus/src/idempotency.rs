//! Idempotency keys: what makes an append the repeat of an earlier one. The bus turns a key
//! into the message's `Nats-Msg-Id` (JetStream's deduplication within its window), so no
//! component formats NATS message ids, and the ids of one kind of writer can never collide with
//! another's.

use refbus_core::{AgencyId, ReferralId, RequestId};

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
    /// The message id JetStream deduplicates by.
    pub(crate) fn message_id(&self) -> String {
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
}
