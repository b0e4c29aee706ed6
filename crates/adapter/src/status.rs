//! Every refusal the adapter gives, mapped to a gRPC status in one place.
//!
//! Agency IT staff read these messages in their logs: each says what was wrong and, where it
//! helps, what to do. Every refused call has written nothing to the bus.

use refbus_bus::{AppendError, AppendErrorKind, ReadError, ReadErrorKind};
use refbus_core::Rejection;
use refbus_proto::convert::FieldError;
use tonic::{Code, Status};

/// A caller without a valid client certificate of an agency; nothing was read or written.
pub(crate) fn unauthenticated(refusal: &refbus_tls::Refusal) -> Status {
    Status::unauthenticated(refusal.to_string())
}

/// A call that reached a method without passing the authentication check (a wiring bug: the
/// service is served only behind it).
pub(crate) fn no_peer() -> Status {
    Status::unauthenticated("the caller was not authenticated")
}

/// A valid certificate of another agency's system: it must call its own agency's adapter.
pub(crate) fn other_agency(
    identity: &refbus_tls::SystemIdentity,
    agency: &refbus_core::AgencyId,
) -> Status {
    Status::permission_denied(format!(
        "the client certificate is {identity}'s, of agency {}; this adapter serves {agency} \
         only: call your own agency's adapter",
        identity.agency
    ))
}

/// A caller naming the operator the adapter records on what it does by itself.
pub(crate) fn reserved_operator(operator: &str) -> Status {
    Status::permission_denied(format!(
        "x-refbus-operator: {operator} is reserved for what the adapter does by itself; name \
         the person who acts"
    ))
}

/// A core rejection: the request itself, the caller's role, or the referral's state.
pub(crate) fn rejection(rejection: &Rejection, referral: &str) -> Status {
    match rejection {
        Rejection::Invalid { field, message } => {
            Status::invalid_argument(format!("{field}: {message}"))
        }
        Rejection::NotFound => not_found(referral),
        Rejection::AlreadyExists { referral } => Status::already_exists(format!(
            "referral {referral} already exists with other content: this request_id was used \
             before for a different referral; use a new request_id"
        )),
        Rejection::PermissionDenied(message) => Status::permission_denied(message.clone()),
        Rejection::WrongState { .. } => Status::failed_precondition(rejection.to_string()),
    }
}

/// The core could not record what it decided (a bug, never the caller's fault).
pub(crate) fn record(error: &refbus_core::RecordError) -> Status {
    match error {
        refbus_core::RecordError::Rejected(refused) => rejection(refused, "(new)"),
        other => Status::internal(other.to_string()),
    }
}

pub(crate) fn kept_changing() -> Status {
    Status::aborted(
        "the referral kept changing while this request was being recorded; retry with the same request_id",
    )
}

pub(crate) fn refused_record(seq: u64) -> Status {
    Status::internal(format!(
        "the record at sequence {seq} fails refbus's integrity check; tell the operators"
    ))
}

pub(crate) fn request_id_reused(
    request_id: Option<&refbus_core::RequestId>,
    referral: &refbus_core::ReferralId,
) -> Status {
    Status::already_exists(format!(
        "request_id {} was already used for another request (on referral {referral}); use a new \
         request_id for each new request",
        request_id.map(|id| id.to_string()).unwrap_or_default(),
    ))
}

pub(crate) fn lost_record(seq: u64) -> Status {
    Status::internal(format!("the bus lost the event at sequence {seq}"))
}

pub(crate) fn no_policy(now: refbus_core::Timestamp) -> Status {
    Status::failed_precondition(format!(
        "no clock policy is in force at {now}; tell the operators"
    ))
}

pub(crate) fn sealing(error: &refbus_proto::convert::SealError) -> Status {
    Status::internal(format!("sealing: {}", error.0))
}

pub(crate) fn cannot_reseal(error: &impl std::fmt::Display) -> Status {
    Status::failed_precondition(format!(
        "this agency cannot open the identity to re-seal it: {error}"
    ))
}

pub(crate) fn field(error: &FieldError) -> Status {
    Status::invalid_argument(error.to_string())
}

pub(crate) fn not_found(referral: &str) -> Status {
    Status::not_found(format!("referral {referral} does not exist"))
}

/// A receipt asked for an event the referral does not have.
pub(crate) fn no_such_event(referral: &str, event_seq: u64) -> Status {
    Status::not_found(format!("referral {referral} has no event {event_seq}"))
}

/// A receipt for an event the log's latest checkpoint does not cover yet.
pub(crate) fn receipt_not_yet() -> Status {
    Status::unavailable("the verifiable log does not cover this event yet; retry in a few seconds")
}

/// A receipt nobody could give: no notary answered over the bus.
pub(crate) fn no_notary() -> Status {
    Status::unavailable("no notary answered for the verifiable log; retry later")
}

pub(crate) fn append(error: &AppendError) -> Status {
    match error.kind() {
        AppendErrorKind::Conflict => Status::aborted(
            "the referral was changed by someone else at the same moment; read it again and retry",
        ),
        // A publish that timed out may still have been stored: only a retry with the same
        // request_id (which the adapter recognises) is safe, never a new one.
        AppendErrorKind::Unavailable => Status::unavailable(
            "the referral bus did not confirm the write in time; the event may have been \
             recorded: retry with the same request_id (safe: a repeated request_id is recorded \
             once)",
        ),
        AppendErrorKind::TooLarge => {
            Status::resource_exhausted("the request is too large for the referral bus")
        }
        AppendErrorKind::Refused => {
            Status::internal(format!("the referral bus refused the event: {error}"))
        }
    }
}

pub(crate) fn read(error: &ReadError) -> Status {
    match error.kind() {
        // Reads write nothing, so whatever the call was, nothing of it was recorded.
        ReadErrorKind::Unavailable => Status::unavailable(
            "the referral bus is unreachable; nothing was recorded by this call: retry",
        ),
        ReadErrorKind::Corrupt(seq) => Status::internal(format!(
            "the bus holds a message refbus cannot read at sequence {seq}; tell the operators"
        )),
    }
}

/// Why an open inbox stream ends when its adapter stops.
pub(crate) const SHUTTING_DOWN: &str = "the adapter is shutting down; reconnect with your cursor";

pub(crate) fn shutting_down() -> Status {
    Status::unavailable(SHUTTING_DOWN)
}

/// A `WatchInbox` past the adapter's limit of open streams; nothing was opened.
pub(crate) fn too_many_inbox_streams(limit: usize) -> Status {
    Status::resource_exhausted(format!(
        "this adapter already serves {limit} inbox streams; close one or retry later"
    ))
}

/// Why an inbox stream ends after a silence: a client that goes on reconnects with its
/// cursor and misses nothing, while a forgotten stream stops holding a consumer.
pub(crate) fn inbox_idle(idle: std::time::Duration) -> Status {
    Status::unavailable(format!(
        "the inbox stream had nothing to send for {idle:?} and was closed; reconnect with your cursor"
    ))
}

/// Whether a write's status says only that the bus did not answer (`read` and `append` with
/// `Unavailable`: no connection, no acknowledgement, no stream leader): the write may be run
/// again with the same request id. Every `UNAVAILABLE` a write can answer comes from there.
pub(crate) fn is_bus_unavailable(status: &Status) -> bool {
    status.code() == Code::Unavailable
}

/// Whether a status tells the client it may simply retry.
pub(crate) fn is_retryable(status: &Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Aborted)
}
