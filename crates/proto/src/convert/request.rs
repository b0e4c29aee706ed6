//! Proto -> core for requests: every field validated, with an error naming the field.
//!
//! What this module checks is what a request can get wrong on its own: presence, shape,
//! lengths, enum values, instants. What depends on the deployment or the referral's state
//! (unknown agencies, services, reason codes; who may do what; consent rules; whether sealed
//! data is sealed for the right parties) is the core's `decide`, which runs next.
//!
//! Plaintext that must be sealed (the person's identity, notes) is handed to the caller's
//! [`Sealer`] only once everything else in the request is valid.

use chrono::NaiveDate;
use prost::Message;
use refbus_core::command::Command;
use refbus_core::demographics::{AgeBand, Sex};
use refbus_core::ids::{
    AgencyId, CaseId, CategoryId, ClockId, OperatorId, OutcomeCode, PolicyVersion, ReasonCode,
    ReferralId, RequestId, ServiceId,
};
use refbus_core::referral::{
    Consent, Creation, Outcome, Party, Reason, Referral, SealedPayload, Status,
};
use refbus_core::time::Timestamp;

use super::fields::{
    id, optional_id, optional_party, optional_timestamp, priority, required_timestamp,
    sealed_from_proto, status,
};
use super::{FieldError, SealTarget, Sealer};
use crate::v1;
use crate::v1::create_referral_request::Person;
use refbus_core::decide::MIN_JUSTIFICATION_CHARS;

/// The longest note accepted, in bytes of UTF-8.
pub const MAX_NOTE_BYTES: usize = 16 * 1024;
/// The longest narrative in an identity, in bytes of UTF-8.
pub const MAX_NARRATIVE_BYTES: usize = 64 * 1024;
/// The longest full name or guardian name, in characters.
pub const MAX_NAME_CHARS: usize = 200;
/// The longest address, in characters.
pub const MAX_ADDRESS_CHARS: usize = 500;
/// The longest phone number, in characters.
pub const MAX_PHONE_CHARS: usize = 32;
/// The longest consent override justification, in characters (the core sets the shortest).
pub const MAX_JUSTIFICATION_CHARS: usize = 2000;
/// The most categories a referral may carry.
pub const MAX_CATEGORIES: usize = 16;
/// The page size of a list request that gives none.
pub const DEFAULT_PAGE_SIZE: usize = 50;
/// The largest page a list request gets, whatever it asks for.
pub const MAX_PAGE_SIZE: usize = 500;

const NIK_DIGITS: usize = 16;

/// The operator named by the `x-refbus-operator` metadata header ([`crate::OPERATOR_METADATA_KEY`]);
/// pass the empty string when the header is absent.
pub fn operator(header: &str) -> Result<OperatorId, FieldError> {
    id(crate::OPERATOR_METADATA_KEY, header, OperatorId::new)
}

// === create ===

/// A validated create: the creation to decide, and the idempotency key the referral's id is
/// derived from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewReferral {
    pub request_id: RequestId,
    pub creation: Creation,
}

impl NewReferral {
    /// The id the referral gets: the same for every retry of the same create.
    pub fn referral_id(&self) -> ReferralId {
        ReferralId::derive(&self.creation.sender, &self.request_id)
    }

    pub fn into_command(self) -> Command {
        Command::Create(Box::new(self.creation))
    }
}

/// When and where a create is made, for counting the person's age: in whole years on the day
/// the case was reported (`case_reported_at`, else `now`) in the sender's time zone (the
/// offset its working hours have at `now`; Indonesia keeps no daylight saving time).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AgeReckoning {
    pub now: Timestamp,
    pub offset: chrono::FixedOffset,
}

impl AgeReckoning {
    /// The day an age is counted on.
    pub fn day(&self, reported: Option<Timestamp>) -> NaiveDate {
        reported
            .unwrap_or(self.now)
            .to_chrono()
            .with_timezone(&self.offset)
            .date_naive()
    }
}

/// Validates a create from `sender` (the caller's own agency) under `policy_version` (the
/// version the registry has in force now), sealing the identity and the note with `sealer`.
/// The statistical metadata (sex, age band) is taken from the request, or derived from a
/// plaintext identity when the request leaves it unspecified; see [`demographics`].
pub fn create_referral(
    request: &v1::CreateReferralRequest,
    sender: &AgencyId,
    policy_version: &PolicyVersion,
    reckoning: AgeReckoning,
    sealer: &mut Sealer<'_>,
) -> Result<NewReferral, FieldError> {
    let request_id = id("request_id", &request.request_id, RequestId::new)?;
    let recipient = id("recipient", &request.recipient, AgencyId::new)?;
    let case_id = id("case_id", &request.case_id, CaseId::new)?;
    let service = id("service", &request.service, ServiceId::new)?;
    let priority = priority("priority", request.priority)?;
    let categories = categories(&request.categories)?;
    check_consent(request.consent.as_ref())?;
    let case_reported_at =
        optional_timestamp("case_reported_at", request.case_reported_at.as_ref())?;
    let (sex, age_band) = demographics(request, reckoning.day(case_reported_at))?;

    let identity = match &request.person {
        None => None,
        Some(Person::SealedIdentity(sealed)) => Some(sealed_from_proto("sealed_identity", sealed)?),
        Some(Person::Identity(identity)) => {
            check_identity(identity)?;
            // Checked before anything is sealed, so a bad note never costs a sealing.
            check_note("", &request.note, request.sealed_note.as_ref())?;
            let plaintext = identity.encode_to_vec();
            Some(seal(
                "identity",
                SealTarget::Identity {
                    recipient: &recipient,
                },
                &plaintext,
                sealer,
            )?)
        }
    };
    let note = note(
        "",
        &request.note,
        request.sealed_note.as_ref(),
        Some(&recipient),
        sealer,
    )?;
    let consent = consent(request.consent.as_ref(), &recipient, sealer)?;
    Ok(NewReferral {
        request_id,
        creation: Creation {
            case_id,
            sender: sender.clone(),
            recipient,
            service,
            priority,
            categories,
            child: request.child,
            consent,
            case_reported_at,
            identity,
            note,
            policy_version: policy_version.clone(),
            parent: None,
            sex,
            age_band,
        },
    })
}

/// The person's sex and age band as the referral records them in the clear. What the request
/// gives is taken; what it leaves unspecified is derived from a plaintext identity (the adapter
/// sees it anyway, and a case worker should not have to type the same fact twice); a value that
/// contradicts the identity is refused, since one of the two is wrong and the statistics would
/// silently count the wrong one. A sealed identity is opaque here: the request's values stand.
/// Whether the band fits `child` is the core's check (it sees both in the clear).
fn demographics(
    request: &v1::CreateReferralRequest,
    day: NaiveDate,
) -> Result<(Sex, AgeBand), FieldError> {
    let given_sex = sex("sex", request.sex)?;
    let given_band = age_band("age_band", request.age_band)?;
    let Some(Person::Identity(identity)) = &request.person else {
        return Ok((given_sex, given_band));
    };
    // The identity's own fields are checked by `check_identity`; here only what they imply.
    let identity_sex = sex("identity.sex", identity.sex)?;
    let sex = match (given_sex, identity_sex) {
        (Sex::Unknown, derived) => derived,
        (given, Sex::Unknown) => given,
        (given, derived) if given == derived => given,
        (given, derived) => {
            return Err(FieldError::new(
                "sex",
                format!("{given} differs from identity.sex ({derived}); correct one of them"),
            ));
        }
    };
    let derived_band = match parse_date(&identity.birth_date) {
        None => AgeBand::Unknown,
        Some(birth) => AgeBand::on(birth, day).ok_or_else(|| {
            // Never the value itself: a birth date is part of the person's identity.
            FieldError::new(
                "identity.birth_date",
                "is after the day the case was reported",
            )
        })?,
    };
    let band = match (given_band, derived_band) {
        (AgeBand::Unknown, derived) => derived,
        (given, AgeBand::Unknown) => given,
        (given, derived) if given == derived => given,
        (given, derived) => {
            return Err(FieldError::new(
                "age_band",
                format!(
                    "{given} differs from the band identity.birth_date gives on the day the case \
                     was reported ({derived}); correct one of them, or leave age_band unset"
                ),
            ));
        }
    };
    Ok((sex, band))
}

/// A sex as the contract gives it: unspecified is unknown.
pub(crate) fn sex(field: &str, value: i32) -> Result<Sex, FieldError> {
    match v1::Sex::try_from(value) {
        Ok(v1::Sex::Unspecified) => Ok(Sex::Unknown),
        Ok(v1::Sex::Female) => Ok(Sex::Female),
        Ok(v1::Sex::Male) => Ok(Sex::Male),
        Err(_) => Err(FieldError::new(
            field,
            format!("unknown value {value}: use SEX_FEMALE, SEX_MALE or leave it unspecified"),
        )),
    }
}

/// An age band as the contract gives it: unspecified is unknown.
pub(crate) fn age_band(field: &str, value: i32) -> Result<AgeBand, FieldError> {
    match v1::AgeBand::try_from(value) {
        Ok(v1::AgeBand::Unspecified) => Ok(AgeBand::Unknown),
        Ok(v1::AgeBand::AgeBand0To5) => Ok(AgeBand::From0To5),
        Ok(v1::AgeBand::AgeBand6To12) => Ok(AgeBand::From6To12),
        Ok(v1::AgeBand::AgeBand13To17) => Ok(AgeBand::From13To17),
        Ok(v1::AgeBand::AgeBand18To24) => Ok(AgeBand::From18To24),
        Ok(v1::AgeBand::AgeBand25To59) => Ok(AgeBand::From25To59),
        Ok(v1::AgeBand::AgeBand60AndOver) => Ok(AgeBand::From60),
        Err(_) => Err(FieldError::new(
            field,
            format!(
                "unknown value {value}: use one of AGE_BAND_0_TO_5 .. AGE_BAND_60_AND_OVER, or \
                 leave it unspecified"
            ),
        )),
    }
}

fn categories(texts: &[String]) -> Result<Vec<CategoryId>, FieldError> {
    if texts.len() > MAX_CATEGORIES {
        return Err(FieldError::new(
            "categories",
            format!("at most {MAX_CATEGORIES} categories"),
        ));
    }
    texts
        .iter()
        .enumerate()
        .map(|(index, text)| id(&format!("categories[{index}]"), text, CategoryId::new))
        .collect()
}

/// The consent, with a plaintext justification checked (20 to 2000 characters, not counting
/// surrounding spaces) and sealed for the parties, or an end-to-end sealed one taken as it is.
fn consent(
    consent: Option<&v1::Consent>,
    recipient: &AgencyId,
    sealer: &mut Sealer<'_>,
) -> Result<Consent, FieldError> {
    let consent = check_consent(consent)?;
    let justification = match &consent.sealed_override_justification {
        Some(sealed) => Some(sealed_from_proto(
            "consent.sealed_override_justification",
            sealed,
        )?),
        None if consent.override_justification.trim().is_empty() => None,
        None => Some(seal(
            "consent.override_justification",
            SealTarget::Justification { recipient },
            consent.override_justification.trim().as_bytes(),
            sealer,
        )?),
    };
    Ok(Consent {
        services: consent.services,
        disclose_to_agencies: consent.disclose_to_agencies,
        override_justification: justification,
    })
}

/// Everything about the consent that can be checked before sealing anything.
fn check_consent(consent: Option<&v1::Consent>) -> Result<&v1::Consent, FieldError> {
    let consent = consent.ok_or_else(|| {
        FieldError::new(
            "consent",
            "required: the consent recorded (or an override justification)",
        )
    })?;
    let justification = consent.override_justification.trim();
    if !justification.is_empty() && consent.sealed_override_justification.is_some() {
        return Err(FieldError::new(
            "consent.sealed_override_justification",
            "set override_justification or sealed_override_justification, not both",
        ));
    }
    if let Some(sealed) = &consent.sealed_override_justification {
        sealed_from_proto("consent.sealed_override_justification", sealed)?;
        return Ok(consent);
    }
    let length = justification.chars().count();
    if length > MAX_JUSTIFICATION_CHARS {
        return Err(FieldError::new(
            "consent.override_justification",
            format!("at most {MAX_JUSTIFICATION_CHARS} characters"),
        ));
    }
    // The core sees the justification sealed, so its length is checked here, on the plaintext.
    if length > 0 && length < MIN_JUSTIFICATION_CHARS {
        return Err(FieldError::new(
            "consent.override_justification",
            format!(
                "a consent override needs a written justification of at least \
                 {MIN_JUSTIFICATION_CHARS} characters"
            ),
        ));
    }
    Ok(consent)
}

fn check_identity(identity: &v1::ClientIdentity) -> Result<(), FieldError> {
    if identity.full_name.trim().is_empty() {
        return Err(FieldError::new(
            "identity.full_name",
            "required when an identity is given; leave identity unset for an anonymous referral",
        ));
    }
    check_line("identity.full_name", &identity.full_name, MAX_NAME_CHARS)?;
    let nik_valid = identity.nik.is_empty()
        || (identity.nik.len() == NIK_DIGITS && identity.nik.bytes().all(|b| b.is_ascii_digit()));
    if !nik_valid {
        return Err(FieldError::new(
            "identity.nik",
            format!("a NIK is {NIK_DIGITS} digits"),
        ));
    }
    if !identity.birth_date.is_empty() && parse_date(&identity.birth_date).is_none() {
        // The value is part of the person's identity: the message (which the adapter logs and
        // the caller may log) names the field and the expected form, never the value.
        return Err(FieldError::new(
            "identity.birth_date",
            "not a date as YYYY-MM-DD (e.g. 2011-04-23)",
        ));
    }
    if v1::Sex::try_from(identity.sex).is_err() {
        return Err(FieldError::new(
            "identity.sex",
            format!("unknown value {}", identity.sex),
        ));
    }
    if identity.address.chars().count() > MAX_ADDRESS_CHARS {
        return Err(FieldError::new(
            "identity.address",
            format!("at most {MAX_ADDRESS_CHARS} characters"),
        ));
    }
    check_line("identity.phone", &identity.phone, MAX_PHONE_CHARS)?;
    if !identity
        .phone
        .chars()
        .all(|c| c.is_ascii_digit() || " +-()".contains(c))
    {
        return Err(FieldError::new(
            "identity.phone",
            "use digits, spaces, '+', '-', '(' and ')' only (e.g. +62 812-3456-7890)",
        ));
    }
    if identity.narrative.len() > MAX_NARRATIVE_BYTES {
        return Err(FieldError::new(
            "identity.narrative",
            format!("at most {MAX_NARRATIVE_BYTES} bytes"),
        ));
    }
    check_line(
        "identity.guardian_name",
        &identity.guardian_name,
        MAX_NAME_CHARS,
    )
}

/// A single line of text: no control characters, at most `max_chars` characters.
fn check_line(field: &str, text: &str, max_chars: usize) -> Result<(), FieldError> {
    if text.chars().any(char::is_control) {
        return Err(FieldError::new(
            field,
            "must be a single line without control characters",
        ));
    }
    if text.chars().count() > max_chars {
        return Err(FieldError::new(
            field,
            format!("at most {max_chars} characters"),
        ));
    }
    Ok(())
}

/// `YYYY-MM-DD`, exactly: ten characters, a real calendar date.
fn parse_date(text: &str) -> Option<NaiveDate> {
    let bytes = text.as_bytes();
    let shaped = bytes.len() == 10
        && bytes[4] == b'-'
        && bytes[7] == b'-'
        && bytes
            .iter()
            .enumerate()
            .all(|(index, b)| index == 4 || index == 7 || b.is_ascii_digit());
    if !shaped {
        return None;
    }
    let year = text[0..4].parse().ok()?;
    let month = text[5..7].parse().ok()?;
    let day = text[8..10].parse().ok()?;
    NaiveDate::from_ymd_opt(year, month, day)
}

// === notes and reasons ===

fn nested(prefix: &str, name: &str) -> String {
    if prefix.is_empty() {
        name.to_owned()
    } else {
        format!("{prefix}.{name}")
    }
}

fn check_note(
    prefix: &str,
    plaintext: &str,
    sealed: Option<&v1::SealedPayload>,
) -> Result<(), FieldError> {
    if !plaintext.is_empty() && sealed.is_some() {
        return Err(FieldError::new(
            nested(prefix, "sealed_note"),
            "set note or sealed_note, not both",
        ));
    }
    if plaintext.len() > MAX_NOTE_BYTES {
        return Err(FieldError::new(
            nested(prefix, "note"),
            format!("at most {MAX_NOTE_BYTES} bytes"),
        ));
    }
    if let Some(sealed) = sealed {
        sealed_from_proto(&nested(prefix, "sealed_note"), sealed)?;
    }
    Ok(())
}

/// An optional note, given in plaintext (sealed here) or already sealed.
fn note(
    prefix: &str,
    plaintext: &str,
    sealed: Option<&v1::SealedPayload>,
    recipient: Option<&AgencyId>,
    sealer: &mut Sealer<'_>,
) -> Result<Option<SealedPayload>, FieldError> {
    check_note(prefix, plaintext, sealed)?;
    if let Some(sealed) = sealed {
        return sealed_from_proto(&nested(prefix, "sealed_note"), sealed).map(Some);
    }
    if plaintext.is_empty() {
        return Ok(None);
    }
    seal(
        &nested(prefix, "note"),
        SealTarget::Note { recipient },
        plaintext.as_bytes(),
        sealer,
    )
    .map(Some)
}

fn seal(
    field: &str,
    target: SealTarget<'_>,
    plaintext: &[u8],
    sealer: &mut Sealer<'_>,
) -> Result<SealedPayload, FieldError> {
    sealer(target, plaintext).map_err(|error| FieldError::new(field, error.0))
}

fn reason(
    field: &str,
    reason: Option<&v1::Reason>,
    sealer: &mut Sealer<'_>,
) -> Result<Reason, FieldError> {
    let reason = reason.ok_or_else(|| FieldError::new(field, "required"))?;
    let code = id(&nested(field, "code"), &reason.code, ReasonCode::new)?;
    let note = note(
        field,
        &reason.note,
        reason.sealed_note.as_ref(),
        None,
        sealer,
    )?;
    Ok(Reason { code, note })
}

fn outcome(
    field: &str,
    outcome: Option<&v1::Outcome>,
    sealer: &mut Sealer<'_>,
) -> Result<Outcome, FieldError> {
    let outcome = outcome.ok_or_else(|| FieldError::new(field, "required"))?;
    let code = id(&nested(field, "code"), &outcome.code, OutcomeCode::new)?;
    let note = note(
        field,
        &outcome.note,
        outcome.sealed_note.as_ref(),
        None,
        sealer,
    )?;
    Ok(Outcome { code, note })
}

// === commands on an existing referral ===

/// A request that changes an existing referral. The adapter reads `referral_id` first (to load
/// the referral, whose parties the sealer seals for), then [`CommandRequest::parse`]s the rest.
pub trait CommandRequest {
    fn request_id(&self) -> Result<RequestId, FieldError>;

    fn referral_id(&self) -> Result<ReferralId, FieldError>;

    /// The core command; plaintext to seal goes through `sealer` as
    /// [`SealTarget::Note`] `{ recipient: None }` (for the referral's two parties).
    fn command(&self, sealer: &mut Sealer<'_>) -> Result<Command, FieldError>;

    /// All of it, fields checked in the order of the request message.
    fn parse(&self, sealer: &mut Sealer<'_>) -> Result<ParsedCommand, FieldError> {
        Ok(ParsedCommand {
            request_id: self.request_id()?,
            referral_id: self.referral_id()?,
            command: self.command(sealer)?,
        })
    }
}

/// A validated request on an existing referral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParsedCommand {
    pub request_id: RequestId,
    pub referral_id: ReferralId,
    pub command: Command,
}

macro_rules! command_request {
    ($request:ty, |$this:ident, $sealer:ident| $command:expr) => {
        impl CommandRequest for $request {
            fn request_id(&self) -> Result<RequestId, FieldError> {
                id("request_id", &self.request_id, RequestId::new)
            }

            fn referral_id(&self) -> Result<ReferralId, FieldError> {
                id("referral_id", &self.referral_id, ReferralId::parse)
            }

            fn command(&self, $sealer: &mut Sealer<'_>) -> Result<Command, FieldError> {
                let $this = self;
                Ok($command)
            }
        }
    };
}

command_request!(v1::ConfirmReceiptRequest, |_this, _sealer| {
    Command::ConfirmReceipt
});
command_request!(v1::AcceptReferralRequest, |_this, _sealer| Command::Accept);
command_request!(v1::RejectReferralRequest, |this, sealer| Command::Reject {
    reason: reason("reason", this.reason.as_ref(), sealer)?,
});
command_request!(v1::StartReferralRequest, |_this, _sealer| Command::Start);
command_request!(v1::ScheduleAppointmentRequest, |this, sealer| {
    let at = required_timestamp("time", this.time.as_ref())?;
    Command::ScheduleAppointment {
        at,
        note: note("", &this.note, this.sealed_note.as_ref(), None, sealer)?,
    }
});
command_request!(v1::RecordNoShowRequest, |_this, _sealer| {
    Command::RecordNoShow
});
command_request!(v1::AddNoteRequest, |this, sealer| Command::AddNote {
    note: note("", &this.note, this.sealed_note.as_ref(), None, sealer)?
        .ok_or_else(|| FieldError::new("note", "required: a note (or a sealed_note)"))?,
});
command_request!(v1::PutOnHoldRequest, |this, sealer| Command::PutOnHold {
    reason: reason("reason", this.reason.as_ref(), sealer)?,
});
command_request!(v1::ResumeReferralRequest, |_this, _sealer| Command::Resume);
command_request!(v1::RequestCancellationRequest, |this, sealer| {
    Command::RequestCancellation {
        reason: reason("reason", this.reason.as_ref(), sealer)?,
    }
});
command_request!(v1::ConfirmCancellationRequest, |_this, _sealer| {
    Command::ConfirmCancellation
});
command_request!(v1::DeclineCancellationRequest, |this, sealer| {
    Command::DeclineCancellation {
        reason: reason("reason", this.reason.as_ref(), sealer)?,
    }
});
command_request!(v1::CancelReferralRequest, |this, sealer| Command::Cancel {
    reason: reason("reason", this.reason.as_ref(), sealer)?,
});
command_request!(v1::CompleteReferralRequest, |this, sealer| {
    Command::Complete {
        outcome: outcome("outcome", this.outcome.as_ref(), sealer)?,
    }
});
command_request!(v1::FailReferralRequest, |this, sealer| Command::Fail {
    reason: reason("reason", this.reason.as_ref(), sealer)?,
});
command_request!(v1::EnterInErrorRequest, |this, sealer| {
    Command::EnterInError {
        reason: reason("reason", this.reason.as_ref(), sealer)?,
    }
});
command_request!(v1::AcknowledgeEscalationRequest, |this, _sealer| {
    Command::AcknowledgeEscalation {
        clock: id("clock_id", &this.clock_id, ClockId::new)?,
        level: level("level", this.level)?,
    }
});

/// An escalation level: counted from 1.
fn level(field: &str, value: u32) -> Result<u16, FieldError> {
    match u16::try_from(value) {
        Ok(0) => Err(FieldError::new(
            field,
            "required: levels are counted from 1",
        )),
        Ok(level) => Ok(level),
        Err(_) => Err(FieldError::new(
            field,
            format!("{value} is more than {}", u16::MAX),
        )),
    }
}

// === reroute ===

/// A validated reroute: the adapter creates the child referral, then records the reroute on
/// the original ([`RerouteOrder::record_command`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RerouteOrder {
    pub request_id: RequestId,
    pub referral_id: ReferralId,
    pub to: AgencyId,
    /// The child's note, sealed for the caller's agency and `to`.
    pub note: Option<SealedPayload>,
    /// The identity the client sealed end to end for the caller's agency and `to`; when absent,
    /// the adapter re-seals the original's identity itself.
    pub sealed_identity: Option<SealedPayload>,
}

impl RerouteOrder {
    /// The child's id, derived like any create's from the sender and this request's id, so a
    /// retried reroute finds the child it already made.
    pub fn child_id(&self, sender: &AgencyId) -> ReferralId {
        ReferralId::derive(sender, &self.request_id)
    }

    /// The child referral: the original's case, service, priority, categories and consent, for
    /// `to`, linked to the original, with `identity` sealed for the sender and `to`.
    pub fn child_creation(
        &self,
        original: &Referral,
        identity: Option<SealedPayload>,
        policy_version: PolicyVersion,
    ) -> Creation {
        let creation = &original.creation;
        Creation {
            case_id: creation.case_id.clone(),
            sender: creation.sender.clone(),
            recipient: self.to.clone(),
            service: creation.service.clone(),
            priority: creation.priority,
            categories: creation.categories.clone(),
            child: creation.child,
            consent: creation.consent.clone(),
            case_reported_at: creation.case_reported_at,
            identity,
            note: self.note.clone(),
            policy_version,
            parent: Some(original.id),
            sex: creation.sex,
            age_band: creation.age_band,
        }
    }

    /// The command that records the reroute on the original.
    pub fn record_command(&self, child: ReferralId) -> Command {
        Command::RecordReroute {
            child,
            to: self.to.clone(),
        }
    }
}

/// Validates a reroute, sealing its note for the caller's agency and the new recipient.
pub fn reroute_referral(
    request: &v1::RerouteReferralRequest,
    sealer: &mut Sealer<'_>,
) -> Result<RerouteOrder, FieldError> {
    let request_id = id("request_id", &request.request_id, RequestId::new)?;
    let referral_id = id("referral_id", &request.referral_id, ReferralId::parse)?;
    let to = id("to", &request.to, AgencyId::new)?;
    check_note("", &request.note, request.sealed_note.as_ref())?;
    let sealed_identity = request
        .sealed_identity
        .as_ref()
        .map(|sealed| sealed_from_proto("sealed_identity", sealed))
        .transpose()?;
    let note = note(
        "",
        &request.note,
        request.sealed_note.as_ref(),
        Some(&to),
        sealer,
    )?;
    Ok(RerouteOrder {
        request_id,
        referral_id,
        to,
        note,
        sealed_identity,
    })
}

// === reads ===

pub fn get_referral(request: &v1::GetReferralRequest) -> Result<ReferralId, FieldError> {
    id("referral_id", &request.referral_id, ReferralId::parse)
}

/// A validated receipt request: the referral and the event's number within it.
pub fn get_receipt(request: &v1::GetReceiptRequest) -> Result<(ReferralId, u64), FieldError> {
    let id = id("referral_id", &request.referral_id, ReferralId::parse)?;
    if request.event_seq == 0 {
        return Err(FieldError::new(
            "event_seq",
            "is required (1 is the referral's creation)",
        ));
    }
    Ok((id, request.event_seq))
}

/// A validated list request: filters that must all match, and the page wanted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ListQuery {
    /// The caller's side of the referral; `None` for either.
    pub side: Option<Party>,
    /// Empty for every status.
    pub statuses: Vec<Status>,
    pub service: Option<ServiceId>,
    /// Inclusive.
    pub created_after: Option<Timestamp>,
    /// Exclusive.
    pub created_before: Option<Timestamp>,
    pub case_id: Option<CaseId>,
    /// 1 to [`MAX_PAGE_SIZE`].
    pub page_size: usize,
    /// The opaque token of the page to read; `None` for the first.
    pub page_token: Option<String>,
}

impl ListQuery {
    /// Whether `referral` passes every filter, for the caller's `agency`.
    pub fn matches(&self, referral: &Referral, agency: &AgencyId) -> bool {
        let creation = &referral.creation;
        let side_matches = match (self.side, referral.party_of(agency)) {
            (_, None) => false,
            (None, Some(_)) => true,
            (Some(wanted), Some(side)) => wanted == side,
        };
        side_matches
            && (self.statuses.is_empty()
                || self.statuses.contains(&referral.status)
                // A rejected or failed referral keeps its status when rerouted and gains a
                // child: it is rerouted too, as the contract's filter says.
                || (self.statuses.contains(&Status::Rerouted) && !referral.children.is_empty()))
            && self
                .service
                .as_ref()
                .is_none_or(|service| &creation.service == service)
            && self
                .created_after
                .is_none_or(|after| referral.created_at >= after)
            && self
                .created_before
                .is_none_or(|before| referral.created_at < before)
            && self
                .case_id
                .as_ref()
                .is_none_or(|case_id| &creation.case_id == case_id)
    }
}

pub fn list_referrals(request: &v1::ListReferralsRequest) -> Result<ListQuery, FieldError> {
    let side = optional_party("side", request.side)?;
    let statuses = request
        .statuses
        .iter()
        .enumerate()
        .map(|(index, value)| status(&format!("statuses[{index}]"), *value))
        .collect::<Result<_, _>>()?;
    let service = optional_id("service", &request.service, ServiceId::new)?;
    let created_after = optional_timestamp("created_after", request.created_after.as_ref())?;
    let created_before = optional_timestamp("created_before", request.created_before.as_ref())?;
    if let (Some(after), Some(before)) = (created_after, created_before)
        && before <= after
    {
        return Err(FieldError::new(
            "created_before",
            format!("{before} is not after created_after, {after}"),
        ));
    }
    let case_id = optional_id("case_id", &request.case_id, CaseId::new)?;
    let page_size = match usize::try_from(request.page_size) {
        Err(_) => {
            return Err(FieldError::new(
                "page_size",
                format!("{} is negative", request.page_size),
            ));
        }
        Ok(0) => DEFAULT_PAGE_SIZE,
        Ok(size) => size.min(MAX_PAGE_SIZE),
    };
    Ok(ListQuery {
        side,
        statuses,
        service,
        created_after,
        created_before,
        case_id,
        page_size,
        page_token: Some(request.page_token.clone()).filter(|token| !token.is_empty()),
    })
}
