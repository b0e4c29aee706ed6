//! What the bus's test files share: the agencies, actors and first events of their referrals.

#![allow(dead_code)] // Each test file uses part of it.

use refbus_core::event::{Actor, Change};
use refbus_core::ids::{OperatorId, PolicyVersion, ServiceId};
use refbus_core::referral::{Consent, Creation, Priority};
use refbus_core::{
    AgencyId, CaseId, Event, EventHash, Referral, ReferralId, RequestId, Timestamp, evolve,
};

pub(crate) fn agency(id: &str) -> AgencyId {
    AgencyId::new(id).unwrap()
}

pub(crate) fn actor(id: &str) -> Actor {
    Actor::Agency {
        agency: agency(id),
        system: None,
        operator: OperatorId::new("op-1").unwrap(),
    }
}

/// A referral from `sender` to `recipient`, as its first event and state.
pub(crate) fn created(sender: &str, recipient: &str, request: &str) -> (Event, Referral) {
    let id = ReferralId::derive(&agency(sender), &RequestId::new(request).unwrap());
    let event = Event {
        referral_id: id,
        case_id: CaseId::new("MRS-1").unwrap(),
        seq: 1,
        at: Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap(),
        actor: actor(sender),
        request_id: Some(RequestId::new(request).unwrap()),
        change: Change::Created(Box::new(Creation {
            case_id: CaseId::new("MRS-1").unwrap(),
            sender: agency(sender),
            recipient: agency(recipient),
            service: ServiceId::new("shelter").unwrap(),
            priority: Priority::Urgent,
            categories: vec![],
            child: false,
            consent: Consent {
                services: true,
                disclose_to_agencies: true,
                override_justification: None,
            },
            case_reported_at: None,
            identity: None,
            note: None,
            policy_version: PolicyVersion::new("2026-01").unwrap(),
            parent: None,
            sex: Default::default(),
            age_band: Default::default(),
        })),
        prev_hash: EventHash::GENESIS,
    };
    let state = evolve(None, &event).unwrap();
    (event, state)
}
