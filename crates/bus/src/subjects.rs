//! The subject scheme: where each fact lives on the bus, so NATS permissions can say who may
//! touch what.
//!
//! ```text
//! refbus.v1.ref.<recipient>.<sender>.<referral_id>   every event of one referral, in order
//! refbus.v1.notice.<agency>.<referral_id>            escalation notices to a third agency
//! refbus.v1.idx.<recipient>.<sender>                 the referrals a sender made for a recipient
//! ```
//!
//! An agency's adapter needs only `refbus.v1.ref.<me>.*.*`, `refbus.v1.ref.*.<me>.*` and
//! `refbus.v1.notice.<me>.*`; the router reads everything and writes clock events.

use refbus_core::{AgencyId, ReferralId};

/// The first tokens of every refbus subject; the version moves with the event format.
pub const PREFIX: &str = "refbus.v1";

/// All referral events.
pub const ALL_REFERRALS: &str = "refbus.v1.ref.>";
/// All notices.
pub const ALL_NOTICES: &str = "refbus.v1.notice.>";
/// Where the notary publishes each signed checkpoint of its Merkle log (core NATS, outside
/// the events stream).
pub const LOG_CHECKPOINT: &str = "refbus.v1.log.checkpoint";
/// Where witnesses publish the checkpoints they cosigned.
pub const LOG_COSIGNATURE: &str = "refbus.v1.log.cosignature";
/// Where the notary answers requests for an inclusion proof (a receipt) of one stream sequence.
pub const LOG_PROOF: &str = "refbus.v1.log.proof";

/// All index chains.
pub const ALL_INDEXES: &str = "refbus.v1.idx.>";

/// The index chain of the referrals `sender` made for `recipient` (see [`crate::index`]).
pub fn index(recipient: &AgencyId, sender: &AgencyId) -> String {
    format!("{PREFIX}.idx.{recipient}.{sender}")
}

/// The subject of every event of one referral.
pub fn referral(recipient: &AgencyId, sender: &AgencyId, id: &ReferralId) -> String {
    format!("{PREFIX}.ref.{recipient}.{sender}.{id}")
}

/// The subject of a referral found by its id alone, from the point of view of `agency`
/// (which must be its sender or its recipient): two patterns with one wildcard each.
pub fn referral_patterns_for(agency: &AgencyId, id: &ReferralId) -> [String; 2] {
    [
        format!("{PREFIX}.ref.{agency}.*.{id}"),
        format!("{PREFIX}.ref.*.{agency}.{id}"),
    ]
}

/// A referral `sender` made, by id, whoever its recipient: where a create looks for its
/// referral on another recipient's subject.
pub fn referral_sent_pattern(sender: &AgencyId, id: &ReferralId) -> String {
    format!("{PREFIX}.ref.*.{sender}.{id}")
}

/// A referral by id, whoever its parties are (slower on a large stream: two wildcards).
pub fn referral_pattern(id: &ReferralId) -> String {
    format!("{PREFIX}.ref.*.*.{id}")
}

/// Notices about one referral for one third agency.
pub fn notice(agency: &AgencyId, id: &ReferralId) -> String {
    format!("{PREFIX}.notice.{agency}.{id}")
}

/// Events of referrals `agency` received.
pub fn received_by(agency: &AgencyId) -> String {
    format!("{PREFIX}.ref.{agency}.*.*")
}

/// Events of referrals `agency` sent.
pub fn sent_by(agency: &AgencyId) -> String {
    format!("{PREFIX}.ref.*.{agency}.*")
}

/// What every referral subject begins with ([`ALL_REFERRALS`] without its wildcard).
pub const REFERRAL_PREFIX: &str = "refbus.v1.ref.";

/// The first tokens of every notice subject.
pub const NOTICE_PREFIX: &str = "refbus.v1.notice.";

/// Integrity notices for the coordinator `agency`: one subject for all of them.
pub fn integrity_notices_for(agency: &AgencyId) -> String {
    format!("{PREFIX}.notice.{agency}.integrity")
}

/// `subject` itself if it is an integrity notice subject, else an empty string.
pub fn integrity_notices_for_subject_agency(subject: &str) -> &str {
    match subject.strip_prefix(NOTICE_PREFIX) {
        Some(rest) if rest.ends_with(".integrity") && rest.matches('.').count() == 1 => subject,
        _ => "",
    }
}

/// Notices for `agency`.
pub fn notices_for(agency: &AgencyId) -> String {
    format!("{PREFIX}.notice.{agency}.*")
}

/// Everything an agency's inbox shows: referrals to it, referrals from it, notices for it.
pub fn inbox(agency: &AgencyId) -> Vec<String> {
    vec![received_by(agency), sent_by(agency), notices_for(agency)]
}

/// Whether `subject` (no wildcards) is one that `pattern` (a NATS filter: `*` one token, `>`
/// the rest, at least one) names, as nats-server matches a consumer's filter.
pub fn matches(pattern: &str, subject: &str) -> bool {
    let mut tokens = subject.split('.');
    for wanted in pattern.split('.') {
        match (wanted, tokens.next()) {
            (">", Some(_)) => return true,
            ("*", Some(_)) => {}
            (wanted, Some(token)) if wanted == token => {}
            _ => return false,
        }
    }
    tokens.next().is_none()
}

/// The parts of a referral subject.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReferralSubject {
    pub recipient: AgencyId,
    pub sender: AgencyId,
    pub id: ReferralId,
}

/// What a subject on the bus is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    Referral(ReferralSubject),
    Notice { agency: AgencyId, id: ReferralId },
}

/// Parses a subject produced by this module; `None` for anything else.
pub fn parse(subject: &str) -> Option<Parsed> {
    let rest = subject.strip_prefix(PREFIX)?.strip_prefix('.')?;
    let tokens: Vec<&str> = rest.split('.').collect();
    match tokens.as_slice() {
        ["ref", recipient, sender, id] => Some(Parsed::Referral(ReferralSubject {
            recipient: AgencyId::new(*recipient).ok()?,
            sender: AgencyId::new(*sender).ok()?,
            id: ReferralId::parse(id).ok()?,
        })),
        ["notice", agency, id] => Some(Parsed::Notice {
            agency: AgencyId::new(*agency).ok()?,
            id: ReferralId::parse(id).ok()?,
        }),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_match_as_nats_server_matches_filters() {
        let subject = "refbus.v1.ref.maros-uptd-ppa.maros-dinsos.01J";
        for pattern in [
            ALL_REFERRALS,
            "refbus.v1.ref.*.maros-dinsos.*",
            subject,
            "refbus.>",
        ] {
            assert!(matches(pattern, subject), "{pattern}");
        }
        for pattern in [
            ALL_NOTICES,
            "refbus.v1.ref.*.maros-dp3a.*",
            "refbus.v1.ref.*.*",
            "refbus.v1.ref.maros-uptd-ppa.maros-dinsos.01J.x",
            "refbus.v1.ref.maros-uptd-ppa.maros-dinsos.01J.>",
        ] {
            assert!(!matches(pattern, subject), "{pattern}");
        }
    }

    #[test]
    fn subjects_round_trip() {
        let recipient = AgencyId::new("maros-uptd-ppa").unwrap();
        let sender = AgencyId::new("maros-dinsos").unwrap();
        let id = ReferralId::from_bytes([9; 16]);
        let subject = referral(&recipient, &sender, &id);
        assert_eq!(
            parse(&subject),
            Some(Parsed::Referral(ReferralSubject {
                recipient: recipient.clone(),
                sender,
                id
            }))
        );
        assert_eq!(
            parse(&notice(&recipient, &id)),
            Some(Parsed::Notice {
                agency: recipient,
                id
            })
        );
        assert_eq!(parse("refbus.v1.ref.a.b"), None);
        assert_eq!(parse("other.v1.ref.a.b.c"), None);
    }
}
