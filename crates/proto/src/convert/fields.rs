//! Field by field, both ways: ids, enums, instants, durations and sealed payloads.
//!
//! Every function that reads a field takes the field's name as the request spells it, so an
//! error says exactly which field is wrong and why.

use std::time::Duration;

use refbus_core::escalation::{Action, Role};
use refbus_core::ids::{AgencyId, IdError};
use refbus_core::referral::{Party, Priority, SealedPayload, Status};
use refbus_core::time::Timestamp;

use super::FieldError;
use crate::v1;

/// The most agencies a sealed payload may name (a referral's payloads name exactly two).
pub const MAX_SEALED_RECIPIENTS: usize = 8;
/// The largest sealed envelope accepted: a full identity with its narrative, sealed.
pub const MAX_ENVELOPE_BYTES: usize = 128 * 1024;

/// 0001-01-01T00:00:00Z and 9999-12-31T23:59:59Z: the range google.protobuf.Timestamp allows.
const MIN_TIMESTAMP_SECONDS: i64 = -62_135_596_800;
const MAX_TIMESTAMP_SECONDS: i64 = 253_402_300_799;
const NANOS_PER_MILLI: i32 = 1_000_000;
const NANOS_PER_SECOND: i32 = 1_000_000_000;

// === ids ===

/// A required identifier, parsed by the core's validating constructor.
pub fn id<'a, T>(
    field: &str,
    text: &'a str,
    parse: impl FnOnce(&'a str) -> Result<T, IdError>,
) -> Result<T, FieldError> {
    if text.is_empty() {
        return Err(FieldError::new(field, "required"));
    }
    parse(text).map_err(|error| FieldError::new(field, error.to_string()))
}

/// An optional identifier: the empty string means absent.
pub fn optional_id<'a, T>(
    field: &str,
    text: &'a str,
    parse: impl FnOnce(&'a str) -> Result<T, IdError>,
) -> Result<Option<T>, FieldError> {
    if text.is_empty() {
        Ok(None)
    } else {
        id(field, text, parse).map(Some)
    }
}

/// The text of an optional value: the empty string for absent.
pub fn text_or_empty(value: Option<&impl ToString>) -> String {
    value.map(ToString::to_string).unwrap_or_default()
}

// === enums ===

fn known<E: TryFrom<i32>>(field: &str, value: i32) -> Result<E, FieldError> {
    E::try_from(value).map_err(|_| FieldError::new(field, format!("unknown value {value}")))
}

fn unspecified(field: &str, choices: &str) -> FieldError {
    FieldError::new(field, format!("required: one of {choices}"))
}

impl From<Priority> for v1::Priority {
    fn from(priority: Priority) -> Self {
        match priority {
            Priority::Emergency => v1::Priority::Emergency,
            Priority::Urgent => v1::Priority::Urgent,
            Priority::Routine => v1::Priority::Routine,
        }
    }
}

pub fn priority(field: &str, value: i32) -> Result<Priority, FieldError> {
    match known(field, value)? {
        v1::Priority::Unspecified => Err(unspecified(
            field,
            "PRIORITY_EMERGENCY, PRIORITY_URGENT, PRIORITY_ROUTINE",
        )),
        v1::Priority::Emergency => Ok(Priority::Emergency),
        v1::Priority::Urgent => Ok(Priority::Urgent),
        v1::Priority::Routine => Ok(Priority::Routine),
    }
}

impl From<Status> for v1::ReferralStatus {
    fn from(status: Status) -> Self {
        match status {
            Status::Requested => v1::ReferralStatus::Requested,
            Status::Received => v1::ReferralStatus::Received,
            Status::Accepted => v1::ReferralStatus::Accepted,
            Status::InProgress => v1::ReferralStatus::InProgress,
            Status::OnHold => v1::ReferralStatus::OnHold,
            Status::CancelRequested => v1::ReferralStatus::CancelRequested,
            Status::Completed => v1::ReferralStatus::Completed,
            Status::Rejected => v1::ReferralStatus::Rejected,
            Status::Failed => v1::ReferralStatus::Failed,
            Status::Cancelled => v1::ReferralStatus::Cancelled,
            Status::Rerouted => v1::ReferralStatus::Rerouted,
            Status::EnteredInError => v1::ReferralStatus::EnteredInError,
        }
    }
}

/// An optional status: unspecified means absent.
pub fn optional_status(field: &str, value: i32) -> Result<Option<Status>, FieldError> {
    Ok(match known(field, value)? {
        v1::ReferralStatus::Unspecified => None,
        v1::ReferralStatus::Requested => Some(Status::Requested),
        v1::ReferralStatus::Received => Some(Status::Received),
        v1::ReferralStatus::Accepted => Some(Status::Accepted),
        v1::ReferralStatus::InProgress => Some(Status::InProgress),
        v1::ReferralStatus::OnHold => Some(Status::OnHold),
        v1::ReferralStatus::CancelRequested => Some(Status::CancelRequested),
        v1::ReferralStatus::Completed => Some(Status::Completed),
        v1::ReferralStatus::Rejected => Some(Status::Rejected),
        v1::ReferralStatus::Failed => Some(Status::Failed),
        v1::ReferralStatus::Cancelled => Some(Status::Cancelled),
        v1::ReferralStatus::Rerouted => Some(Status::Rerouted),
        v1::ReferralStatus::EnteredInError => Some(Status::EnteredInError),
    })
}

pub fn status(field: &str, value: i32) -> Result<Status, FieldError> {
    optional_status(field, value)?.ok_or_else(|| unspecified(field, "the REFERRAL_STATUS_* values"))
}

impl From<Party> for v1::Party {
    fn from(party: Party) -> Self {
        match party {
            Party::Sender => v1::Party::Sender,
            Party::Recipient => v1::Party::Recipient,
        }
    }
}

/// An optional side: unspecified means either.
pub fn optional_party(field: &str, value: i32) -> Result<Option<Party>, FieldError> {
    Ok(match known(field, value)? {
        v1::Party::Unspecified => None,
        v1::Party::Sender => Some(Party::Sender),
        v1::Party::Recipient => Some(Party::Recipient),
    })
}

impl From<Role> for v1::Role {
    fn from(role: Role) -> Self {
        match role {
            Role::HandlingOperator => v1::Role::HandlingOperator,
            Role::Supervisor => v1::Role::Supervisor,
            Role::Head => v1::Role::Head,
            Role::Coordinator => v1::Role::Coordinator,
        }
    }
}

pub fn role(field: &str, value: i32) -> Result<Role, FieldError> {
    match known(field, value)? {
        v1::Role::Unspecified => Err(unspecified(
            field,
            "ROLE_HANDLING_OPERATOR, ROLE_SUPERVISOR, ROLE_HEAD, ROLE_COORDINATOR",
        )),
        v1::Role::HandlingOperator => Ok(Role::HandlingOperator),
        v1::Role::Supervisor => Ok(Role::Supervisor),
        v1::Role::Head => Ok(Role::Head),
        v1::Role::Coordinator => Ok(Role::Coordinator),
    }
}

impl From<Action> for v1::EscalationAction {
    fn from(action: Action) -> Self {
        match action {
            Action::Notify => v1::EscalationAction::Notify,
            Action::Reroute => v1::EscalationAction::Reroute,
        }
    }
}

pub fn action(field: &str, value: i32) -> Result<Action, FieldError> {
    match known(field, value)? {
        v1::EscalationAction::Unspecified => Err(unspecified(
            field,
            "ESCALATION_ACTION_NOTIFY, ESCALATION_ACTION_REROUTE",
        )),
        v1::EscalationAction::Notify => Ok(Action::Notify),
        v1::EscalationAction::Reroute => Ok(Action::Reroute),
    }
}

/// An escalation level or repetition, which the core counts in `u16`.
pub fn small_count(field: &str, value: u32) -> Result<u16, FieldError> {
    u16::try_from(value)
        .map_err(|_| FieldError::new(field, format!("{value} is more than {}", u16::MAX)))
}

// === instants and durations ===

pub fn timestamp(at: Timestamp) -> prost_types::Timestamp {
    let millis = at.as_millis();
    prost_types::Timestamp {
        seconds: millis.div_euclid(1000),
        // The remainder is below 1000, so the product is below one second in nanoseconds.
        nanos: i32::try_from(millis.rem_euclid(1000)).unwrap_or(0) * NANOS_PER_MILLI,
    }
}

/// An instant, truncated to the millisecond refbus records.
pub fn timestamp_from_proto(
    field: &str,
    value: &prost_types::Timestamp,
) -> Result<Timestamp, FieldError> {
    if !(0..NANOS_PER_SECOND).contains(&value.nanos) {
        return Err(FieldError::new(
            field,
            format!("nanos must be 0 to 999999999, not {}", value.nanos),
        ));
    }
    if !(MIN_TIMESTAMP_SECONDS..=MAX_TIMESTAMP_SECONDS).contains(&value.seconds) {
        return Err(FieldError::new(
            field,
            format!(
                "{} seconds is outside 0001-01-01 to 9999-12-31",
                value.seconds
            ),
        ));
    }
    Ok(Timestamp::from_millis(
        value.seconds * 1000 + i64::from(value.nanos / NANOS_PER_MILLI),
    ))
}

pub fn optional_timestamp(
    field: &str,
    value: Option<&prost_types::Timestamp>,
) -> Result<Option<Timestamp>, FieldError> {
    value
        .map(|value| timestamp_from_proto(field, value))
        .transpose()
}

pub fn required_timestamp(
    field: &str,
    value: Option<&prost_types::Timestamp>,
) -> Result<Timestamp, FieldError> {
    optional_timestamp(field, value)?.ok_or_else(|| FieldError::new(field, "required"))
}

pub fn duration(duration: Duration) -> prost_types::Duration {
    prost_types::Duration {
        seconds: i64::try_from(duration.as_secs()).unwrap_or(i64::MAX),
        nanos: i32::try_from(duration.subsec_nanos()).unwrap_or(NANOS_PER_SECOND - 1),
    }
}

/// A duration that is not negative.
pub fn duration_from_proto(
    field: &str,
    value: &prost_types::Duration,
) -> Result<Duration, FieldError> {
    let seconds =
        u64::try_from(value.seconds).map_err(|_| FieldError::new(field, "must not be negative"))?;
    let nanos = u32::try_from(value.nanos)
        .ok()
        .filter(|nanos| *nanos < 1_000_000_000)
        .ok_or_else(|| {
            FieldError::new(
                field,
                format!("nanos must be 0 to 999999999, not {}", value.nanos),
            )
        })?;
    Ok(Duration::new(seconds, nanos))
}

// === sealed payloads ===

pub fn sealed(payload: &SealedPayload) -> v1::SealedPayload {
    v1::SealedPayload {
        recipients: payload.recipients.iter().map(ToString::to_string).collect(),
        envelope: payload.envelope.clone(),
    }
}

/// A sealed payload as received: its shape only. Whether it is sealed for the right parties is
/// the core's rule, checked when the command is decided.
pub fn sealed_from_proto(
    field: &str,
    payload: &v1::SealedPayload,
) -> Result<SealedPayload, FieldError> {
    if payload.recipients.is_empty() {
        return Err(FieldError::new(
            format!("{field}.recipients"),
            "required: the agencies the payload is sealed for",
        ));
    }
    if payload.recipients.len() > MAX_SEALED_RECIPIENTS {
        return Err(FieldError::new(
            format!("{field}.recipients"),
            format!("at most {MAX_SEALED_RECIPIENTS} agencies"),
        ));
    }
    let mut recipients = Vec::with_capacity(payload.recipients.len());
    for (index, text) in payload.recipients.iter().enumerate() {
        let agency = id(&format!("{field}.recipients[{index}]"), text, AgencyId::new)?;
        if recipients.contains(&agency) {
            return Err(FieldError::new(
                format!("{field}.recipients[{index}]"),
                format!("{agency} is listed twice"),
            ));
        }
        recipients.push(agency);
    }
    if payload.envelope.is_empty() {
        return Err(FieldError::new(format!("{field}.envelope"), "required"));
    }
    if payload.envelope.len() > MAX_ENVELOPE_BYTES {
        return Err(FieldError::new(
            format!("{field}.envelope"),
            format!(
                "{} bytes is more than the {MAX_ENVELOPE_BYTES} allowed",
                payload.envelope.len()
            ),
        ));
    }
    Ok(SealedPayload {
        recipients,
        envelope: payload.envelope.clone(),
    })
}

pub fn optional_sealed_from_proto(
    field: &str,
    payload: Option<&v1::SealedPayload>,
) -> Result<Option<SealedPayload>, FieldError> {
    payload
        .map(|payload| sealed_from_proto(field, payload))
        .transpose()
}
