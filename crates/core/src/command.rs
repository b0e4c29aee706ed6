//! Commands: what an agency (or the router) asks to do to a referral.

use crate::escalation::Due;
use crate::event::Actor;
use crate::ids::{AgencyId, ClockId, ReferralId, RequestId};
use crate::referral::{Creation, Outcome, Reason, SealedPayload};
use crate::time::Timestamp;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// The sender refers a case to the recipient.
    Create(Box<Creation>),
    /// The recipient's system has taken the referral from its inbox (not yet a decision).
    ConfirmReceipt,
    Accept,
    Reject {
        reason: Reason,
    },
    Start,
    ScheduleAppointment {
        at: Timestamp,
        note: Option<SealedPayload>,
    },
    RecordNoShow,
    AddNote {
        note: SealedPayload,
    },
    PutOnHold {
        reason: Reason,
    },
    Resume,
    RequestCancellation {
        reason: Reason,
    },
    ConfirmCancellation,
    DeclineCancellation {
        reason: Reason,
    },
    Cancel {
        reason: Reason,
    },
    Complete {
        outcome: Outcome,
    },
    Fail {
        reason: Reason,
    },
    EnterInError {
        reason: Reason,
    },
    AcknowledgeEscalation {
        clock: ClockId,
        level: u16,
    },
    /// The sender has created `child` for `to` to replace this referral.
    RecordReroute {
        child: ReferralId,
        to: AgencyId,
    },
    /// The router records something its clocks made due.
    Record(Due),
    /// The router records that a record on this referral's subject failed the integrity check.
    RecordIntegrityAlert {
        stream_seq: u64,
        problem: crate::integrity::Problem,
    },
}

impl Command {
    /// The verb, for messages: "cannot accept a referral that is completed".
    pub fn verb(&self) -> &'static str {
        match self {
            Command::Create(_) => "create",
            Command::ConfirmReceipt => "confirm receipt of",
            Command::Accept => "accept",
            Command::Reject { .. } => "reject",
            Command::Start => "start",
            Command::ScheduleAppointment { .. } => "schedule an appointment for",
            Command::RecordNoShow => "record a no-show for",
            Command::AddNote { .. } => "add a note to",
            Command::PutOnHold { .. } => "put on hold",
            Command::Resume => "resume",
            Command::RequestCancellation { .. } => "request cancellation of",
            Command::ConfirmCancellation => "confirm cancellation of",
            Command::DeclineCancellation { .. } => "decline cancellation of",
            Command::Cancel { .. } => "cancel",
            Command::Complete { .. } => "complete",
            Command::Fail { .. } => "fail",
            Command::EnterInError { .. } => "enter in error",
            Command::AcknowledgeEscalation { .. } => "acknowledge an escalation of",
            Command::RecordReroute { .. } => "reroute",
            Command::Record(_) => "record a clock event on",
            Command::RecordIntegrityAlert { .. } => "record an integrity alert on",
        }
    }
}

/// A command with who asks and their idempotency key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub command: Command,
    pub actor: Actor,
    pub request_id: Option<RequestId>,
}
