//! Events: the facts of a referral's life, never updated and never deleted.
//!
//! Every event names the referral, its position in the referral's history (`seq`), who acted,
//! when, what changed, and the hash of the event before it (a per-referral hash chain).

use serde::{Deserialize, Serialize};

use crate::chain::EventHash;
use crate::escalation::{Action, Role};
use crate::ids::{
    AgencyId, CaseId, ClockId, OperatorId, ReferralId, RequestId, ServiceId, SystemId,
};
use crate::referral::{Creation, Outcome, Priority, Reason, Referral, SealedPayload, Status};
use crate::time::Timestamp;

/// Who caused an event: an operator of an agency (through its adapter), or the router.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Actor {
    Agency {
        agency: AgencyId,
        operator: OperatorId,
        /// The agency's system that made the call, as its client certificate proved; absent
        /// on what the adapter does by itself (reroutes), on records written before systems
        /// authenticated, and behind an adapter serving insecure plaintext. Omitted from the
        /// canonical encoding when absent, so older records keep their hashes and signatures.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        system: Option<SystemId>,
    },
    /// The router, acting on a clock. It never acts for an agency.
    Router,
}

impl Actor {
    pub fn agency(&self) -> Option<&AgencyId> {
        match self {
            Actor::Agency { agency, .. } => Some(agency),
            Actor::Router => None,
        }
    }

    pub fn describe(&self) -> String {
        match self {
            Actor::Agency {
                agency,
                operator,
                system: None,
            } => format!("{operator} at {agency}"),
            Actor::Agency {
                agency,
                operator,
                system: Some(system),
            } => format!("{operator} at {agency} (system {system})"),
            Actor::Router => "the router".to_owned(),
        }
    }
}

/// An agency and the role within it that an escalation notifies.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Notified {
    pub agency: AgencyId,
    pub role: Role,
}

/// Why the router asked for a reroute.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum RerouteCause {
    /// An escalation level of a clock whose action is to reroute.
    Escalation { clock: ClockId, level: u16 },
    /// A reroute rule on a status (e.g. the recipient rejected).
    Status { status: Status },
}

/// What an event changed. Tagged by `type` in JSON.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "type")]
pub enum Change {
    Created(Box<Creation>),
    Received,
    Accepted,
    Rejected {
        reason: Reason,
    },
    Started,
    AppointmentScheduled {
        at: Timestamp,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        note: Option<SealedPayload>,
    },
    NoShowRecorded {
        appointment_at: Timestamp,
    },
    NoteAdded {
        note: SealedPayload,
    },
    PutOnHold {
        reason: Reason,
    },
    Resumed,
    CancellationRequested {
        reason: Reason,
    },
    CancellationConfirmed,
    CancellationDeclined {
        reason: Reason,
    },
    Cancelled {
        reason: Reason,
    },
    Completed {
        outcome: Outcome,
    },
    Failed {
        reason: Reason,
    },
    EnteredInError {
        reason: Reason,
    },
    ClockWarning {
        clock: ClockId,
        permille: u16,
        due_at: Timestamp,
        deadline: Timestamp,
    },
    ClockBreached {
        clock: ClockId,
        deadline: Timestamp,
    },
    Escalated {
        clock: ClockId,
        level: u16,
        repetition: u16,
        due_at: Timestamp,
        action: Action,
        notified: Vec<Notified>,
    },
    EscalationAcknowledged {
        clock: ClockId,
        level: u16,
    },
    RerouteRequested {
        to: AgencyId,
        cause: RerouteCause,
        due_at: Timestamp,
    },
    Rerouted {
        child: ReferralId,
        to: AgencyId,
    },
    /// The router refused a record stored on this referral's subject (forged, altered,
    /// back-dated...): it is not part of the referral, whose clocks keep running from this
    /// event's predecessor. Metadata only: the stream sequence and the kind of problem.
    IntegrityAlert {
        stream_seq: u64,
        problem: crate::integrity::Problem,
    },
}

impl Change {
    /// The stable name of the change, as used in CloudEvents `type` and logs.
    pub fn kind(&self) -> &'static str {
        match self {
            Change::Created(_) => "created",
            Change::Received => "received",
            Change::Accepted => "accepted",
            Change::Rejected { .. } => "rejected",
            Change::Started => "started",
            Change::AppointmentScheduled { .. } => "appointment_scheduled",
            Change::NoShowRecorded { .. } => "no_show_recorded",
            Change::NoteAdded { .. } => "note_added",
            Change::PutOnHold { .. } => "put_on_hold",
            Change::Resumed => "resumed",
            Change::CancellationRequested { .. } => "cancellation_requested",
            Change::CancellationConfirmed => "cancellation_confirmed",
            Change::CancellationDeclined { .. } => "cancellation_declined",
            Change::Cancelled { .. } => "cancelled",
            Change::Completed { .. } => "completed",
            Change::Failed { .. } => "failed",
            Change::EnteredInError { .. } => "entered_in_error",
            Change::ClockWarning { .. } => "clock_warning",
            Change::ClockBreached { .. } => "clock_breached",
            Change::Escalated { .. } => "escalated",
            Change::EscalationAcknowledged { .. } => "escalation_acknowledged",
            Change::RerouteRequested { .. } => "reroute_requested",
            Change::Rerouted { .. } => "rerouted",
            Change::IntegrityAlert { .. } => "integrity_alert",
        }
    }

    /// Whether the router (and never an agency) is the author of this kind of change.
    pub fn is_router_change(&self) -> bool {
        matches!(
            self,
            Change::ClockWarning { .. }
                | Change::ClockBreached { .. }
                | Change::Escalated { .. }
                | Change::RerouteRequested { .. }
                | Change::IntegrityAlert { .. }
        )
    }
}

/// One fact about one referral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Event {
    pub referral_id: ReferralId,
    pub case_id: CaseId,
    /// 1 for the creation, then one more for each event of this referral.
    pub seq: u64,
    pub at: Timestamp,
    pub actor: Actor,
    /// The client's idempotency key, for changes an agency asked for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<RequestId>,
    pub change: Change,
    /// The hash of event `seq - 1` of this referral ([`EventHash::GENESIS`] for the first).
    pub prev_hash: EventHash,
}

impl Event {
    /// A globally unique id: the referral and the position in its chain.
    pub fn id(&self) -> String {
        format!("{}-{}", self.referral_id, self.seq)
    }

    pub fn operator(&self) -> Option<&OperatorId> {
        match &self.actor {
            Actor::Agency { operator, .. } => Some(operator),
            Actor::Router => None,
        }
    }

    /// The authenticated system of the agency that caused the event, if one did.
    pub fn system(&self) -> Option<&SystemId> {
        match &self.actor {
            Actor::Agency { system, .. } => system.as_ref(),
            Actor::Router => None,
        }
    }
}

/// An escalation notice for an agency that is not a party to the referral (the parties see the
/// escalation event itself): metadata only, never identity.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notice {
    pub referral_id: ReferralId,
    pub case_id: CaseId,
    pub recipient: AgencyId,
    pub sender: AgencyId,
    pub service: ServiceId,
    pub priority: Priority,
    pub clock: ClockId,
    pub level: u16,
    pub repetition: u16,
    pub action: Action,
    pub notified: Notified,
    pub due_at: Timestamp,
    /// When the escalation was recorded.
    pub at: Timestamp,
    /// The escalation event on the referral.
    pub event_seq: u64,
}

/// The notices `event` makes: one per agency and role it notifies that is not a party to
/// `referral`. None for any event but an escalation.
pub fn notices(referral: &Referral, event: &Event) -> Vec<Notice> {
    let Change::Escalated {
        clock,
        level,
        repetition,
        due_at,
        action,
        notified,
    } = &event.change
    else {
        return Vec::new();
    };
    notified
        .iter()
        .filter(|target| referral.party_of(&target.agency).is_none())
        .map(|target| Notice {
            referral_id: event.referral_id,
            case_id: event.case_id.clone(),
            recipient: referral.recipient().clone(),
            sender: referral.sender().clone(),
            service: referral.creation.service.clone(),
            priority: referral.creation.priority,
            clock: clock.clone(),
            level: *level,
            repetition: *repetition,
            action: *action,
            notified: target.clone(),
            due_at: *due_at,
            at: event.at,
            event_seq: event.seq,
        })
        .collect()
}
