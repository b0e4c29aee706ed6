//! The referral as every party sees it: who asked whom for what, where it stands, and its history.
//!
//! A [`Referral`] is never edited directly: it is the fold of its events ([`crate::evolve`]).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::chain::EventHash;
use crate::demographics::{AgeBand, Sex};
use crate::ids::{
    AgencyId, CaseId, CategoryId, ClockId, OperatorId, OutcomeCode, PolicyVersion, ReasonCode,
    ReferralId, ServiceId,
};
use crate::time::Timestamp;

/// How fast the recipient must act. Keys the acknowledge clock, among others.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Priority {
    Emergency,
    Urgent,
    Routine,
}

impl Priority {
    pub const ALL: [Priority; 3] = [Priority::Emergency, Priority::Urgent, Priority::Routine];

    pub fn as_str(self) -> &'static str {
        match self {
            Priority::Emergency => "emergency",
            Priority::Urgent => "urgent",
            Priority::Routine => "routine",
        }
    }

    pub fn parse(text: &str) -> Option<Priority> {
        Priority::ALL.into_iter().find(|p| p.as_str() == text)
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The main state of a referral (HL7 FHIR Task status, plus `cancel_requested` and `rerouted`).
///
/// ```text
/// requested -> received -> accepted -> in_progress -> completed
///          \------------\-> rejected            \-> failed
/// open -> on_hold -> (back)          accepted.. -> cancel_requested -> cancelled | (back)
/// requested/received -> cancelled    open -> rerouted    any -> entered_in_error
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Requested,
    Received,
    Accepted,
    InProgress,
    OnHold,
    CancelRequested,
    Completed,
    Rejected,
    Failed,
    Cancelled,
    /// Withdrawn from its recipient and moved to another agency as a linked child referral.
    Rerouted,
    EnteredInError,
}

impl Status {
    pub const ALL: [Status; 12] = [
        Status::Requested,
        Status::Received,
        Status::Accepted,
        Status::InProgress,
        Status::OnHold,
        Status::CancelRequested,
        Status::Completed,
        Status::Rejected,
        Status::Failed,
        Status::Cancelled,
        Status::Rerouted,
        Status::EnteredInError,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Status::Requested => "requested",
            Status::Received => "received",
            Status::Accepted => "accepted",
            Status::InProgress => "in_progress",
            Status::OnHold => "on_hold",
            Status::CancelRequested => "cancel_requested",
            Status::Completed => "completed",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
            Status::Rerouted => "rerouted",
            Status::EnteredInError => "entered_in_error",
        }
    }

    pub fn parse(text: &str) -> Option<Status> {
        Status::ALL.into_iter().find(|s| s.as_str() == text)
    }

    /// Terminal states never change again (a later reroute only adds a link).
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            Status::Completed
                | Status::Rejected
                | Status::Failed
                | Status::Cancelled
                | Status::Rerouted
                | Status::EnteredInError
        )
    }

    /// Whether the recipient has agreed to serve (the point after which the sender must ask to
    /// cancel instead of cancelling).
    pub fn is_after_acceptance(self) -> bool {
        matches!(self, Status::Accepted | Status::InProgress)
    }
}

impl fmt::Display for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The side of a referral an agency is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Party {
    Sender,
    Recipient,
}

impl Party {
    pub fn as_str(self) -> &'static str {
        match self {
            Party::Sender => "sender",
            Party::Recipient => "recipient",
        }
    }
}

/// Consent recorded by the sending agency (Primero's rule): a referral needs consent for
/// services, and for a child also consent to disclose to other agencies, unless overridden.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Consent {
    pub services: bool,
    pub disclose_to_agencies: bool,
    /// A written justification for referring without the consent above, sealed for the sender
    /// and the recipient like a note: free text can always hold a name. The parties and their
    /// auditors open it; the router and the bus see only that an override was made.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub override_justification: Option<SealedPayload>,
}

/// Bytes encrypted for a fixed set of agencies; nobody else, the router included, can read them.
///
/// The core never looks inside: it only checks that the payload is sealed for the right parties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedPayload {
    /// The agencies that can open it, in the order their key wraps appear in the envelope.
    pub recipients: Vec<AgencyId>,
    /// The envelope (see the `seal` crate), base64 in JSON.
    #[serde(with = "base64_bytes")]
    pub envelope: Vec<u8>,
}

impl SealedPayload {
    /// What a not-yet-sealed payload holds in place of an envelope (see
    /// [`SealedPayload::placeholder`]); never a valid envelope.
    pub const PLACEHOLDER: &'static [u8] = b"refbus: to be sealed once decided";

    /// A payload to be sealed for `recipients` once the core has decided on the rest: the
    /// decision checks the recipients; [`crate::Recorded::with_sealed_creation`] puts the real
    /// payload in and refuses to leave a placeholder.
    pub fn placeholder(recipients: Vec<AgencyId>) -> SealedPayload {
        SealedPayload {
            recipients,
            envelope: SealedPayload::PLACEHOLDER.to_vec(),
        }
    }

    pub fn is_placeholder(&self) -> bool {
        self.envelope == SealedPayload::PLACEHOLDER
    }

    /// Whether exactly `parties` (in any order) can open this payload.
    pub fn is_sealed_for(&self, parties: &[&AgencyId]) -> bool {
        self.recipients.len() == parties.len()
            && parties.iter().all(|party| self.recipients.contains(party))
    }
}

/// A coded reason, with an optional free-text note sealed for the two parties.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reason {
    pub code: ReasonCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<SealedPayload>,
}

/// The result of a completed referral, with an optional sealed note.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Outcome {
    pub code: OutcomeCode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<SealedPayload>,
}

/// What the sender asks for when it creates a referral.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Creation {
    pub case_id: CaseId,
    pub sender: AgencyId,
    pub recipient: AgencyId,
    pub service: ServiceId,
    pub priority: Priority,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub categories: Vec<CategoryId>,
    /// The person served is a child (under 18): consent to disclose is then required too.
    pub child: bool,
    pub consent: Consent,
    /// When the person first reported to the sending agency; statutory clocks (UU TPKS Pasal 41)
    /// run from then, not from when the referral was typed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub case_reported_at: Option<Timestamp>,
    /// The person's identity, sealed for the sender and the recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub identity: Option<SealedPayload>,
    /// A sealed note from the sender (what the recipient needs to know).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub note: Option<SealedPayload>,
    /// The clock and escalation policies this referral runs under, for its whole life.
    pub policy_version: PolicyVersion,
    /// The referral this one replaces after a reroute.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<ReferralId>,
    /// The person's sex, as statistical metadata in the clear (never the identity); omitted
    /// when unknown, so referrals recorded before it keep their bytes.
    #[serde(default, skip_serializing_if = "Sex::is_unknown")]
    pub sex: Sex,
    /// The person's age band, as statistical metadata in the clear (the birth date stays
    /// sealed); omitted when unknown.
    #[serde(default, skip_serializing_if = "AgeBand::is_unknown")]
    pub age_band: AgeBand,
}

/// Something a clock can start or stop on: entering a status, or a reroute step.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", content = "status")]
pub enum Milestone {
    Entered(Status),
    RerouteRequested,
    Rerouted,
}

/// One step of the referral's history that clocks care about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Step {
    pub at: Timestamp,
    pub milestone: Milestone,
}

/// An appointment the recipient scheduled; a no-show is recorded on it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Appointment {
    pub at: Timestamp,
    pub no_show: bool,
}

/// What the router has already recorded for a clock, so it is never recorded twice.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum Mark {
    Warning { permille: u16 },
    Breach,
    Escalation { level: u16, repetition: u16 },
    Acknowledged { level: u16 },
    RerouteRequested { level: u16 },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockMark {
    pub clock: ClockId,
    #[serde(flatten)]
    pub mark: Mark,
    /// For escalations: the agencies notified, who alone may acknowledge it.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub notified: Vec<AgencyId>,
}

/// A reroute the router asked for and the sender's adapter has yet to carry out (or has).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reroute {
    pub to: AgencyId,
    pub requested_at: Timestamp,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub child: Option<ReferralId>,
}

/// The current state of one referral: the fold of its events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Referral {
    pub id: ReferralId,
    /// Nested, not flattened: serde's flatten buffers every field of the whole state before
    /// decoding it, and states are decoded by the million when the router starts.
    pub creation: Creation,
    pub status: Status,
    /// The state to return to from `on_hold` or a declined cancellation request.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resume_to: Option<Status>,
    /// The last reason given (rejection, failure, hold, cancellation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<Reason>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub outcome: Option<Outcome>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub appointment: Option<Appointment>,
    /// Reroutes of this referral: children, oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ReferralId>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reroute: Option<Reroute>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// The operator who last acted for the sender or the recipient.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_operator: Option<OperatorId>,
    /// The number of events so far; the next event has `seq + 1`.
    pub seq: u64,
    /// The hash of the last event, which the next event must name as its predecessor.
    pub last_hash: EventHash,
    pub steps: Vec<Step>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub marks: Vec<ClockMark>,
}

impl Referral {
    /// The state as every record stores it: without the sealed identity and creation note,
    /// which stay in the `created` event alone so they are stored once.
    pub fn into_snapshot(mut self) -> Referral {
        self.take_sealed();
        self
    }

    /// `look` at the state as [`Referral::into_snapshot`] makes it, without a copy: the sealed
    /// identity and note are set aside meanwhile (a record's check compares every state it
    /// makes with the stored one).
    pub fn as_snapshot<R>(&mut self, look: impl FnOnce(&Referral) -> R) -> R {
        let (identity, note) = self.take_sealed();
        let seen = look(self);
        (self.creation.identity, self.creation.note) = (identity, note);
        seen
    }

    /// What a snapshot leaves out (to the `created` event): the sealed identity and note.
    fn take_sealed(&mut self) -> (Option<SealedPayload>, Option<SealedPayload>) {
        (self.creation.identity.take(), self.creation.note.take())
    }

    /// The creation of the child referral that moves this one to `to`: the same case, sender,
    /// service, priority, categories and consent, linked to this referral, under the policy in
    /// force now, with the identity and note sealed anew for the new recipient.
    pub fn reroute_child(
        &self,
        to: &AgencyId,
        identity: Option<SealedPayload>,
        note: Option<SealedPayload>,
        justification: Option<SealedPayload>,
        policy_version: PolicyVersion,
    ) -> Creation {
        let creation = &self.creation;
        // The consent carries over; its justification is sealed anew for the child's parties.
        let consent = Consent {
            override_justification: justification,
            ..creation.consent.clone()
        };
        Creation {
            case_id: creation.case_id.clone(),
            sender: creation.sender.clone(),
            recipient: to.clone(),
            service: creation.service.clone(),
            priority: creation.priority,
            categories: creation.categories.clone(),
            child: creation.child,
            consent,
            case_reported_at: creation.case_reported_at,
            identity,
            note,
            policy_version,
            parent: Some(self.id),
            sex: creation.sex,
            age_band: creation.age_band,
        }
    }

    pub fn sender(&self) -> &AgencyId {
        &self.creation.sender
    }

    pub fn recipient(&self) -> &AgencyId {
        &self.creation.recipient
    }

    /// The side `agency` is on, if it is a party at all.
    pub fn party_of(&self, agency: &AgencyId) -> Option<Party> {
        if agency == self.sender() {
            Some(Party::Sender)
        } else if agency == self.recipient() {
            Some(Party::Recipient)
        } else {
            None
        }
    }

    pub fn has_mark(&self, clock: &ClockId, mark: Mark) -> bool {
        self.marks
            .iter()
            .any(|m| &m.clock == clock && m.mark == mark)
    }

    /// Whether any escalation of `clock` was acknowledged (which stops its later levels).
    pub fn is_acknowledged(&self, clock: &ClockId) -> bool {
        self.marks
            .iter()
            .any(|m| &m.clock == clock && matches!(m.mark, Mark::Acknowledged { .. }))
    }

    /// The business status shown beside the main state, as in BSeR/360X.
    pub fn business_status(&self) -> Option<&'static str> {
        match &self.appointment {
            Some(appointment) if appointment.no_show => Some("no_show"),
            Some(_) => Some("scheduled"),
            None => None,
        }
    }
}

/// Serde for byte strings as standard base64, the form JSON readers expect.
mod base64_bytes {
    use data_encoding::BASE64;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(bytes: &[u8], serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&BASE64.encode(bytes))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Vec<u8>, D::Error> {
        let text = String::deserialize(deserializer)?;
        BASE64
            .decode(text.as_bytes())
            .map_err(serde::de::Error::custom)
    }
}
