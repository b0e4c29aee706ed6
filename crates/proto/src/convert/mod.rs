//! Conversions between the contract's messages and the core's types.
//!
//! # Layout
//!
//! - [`fields`]: one field at a time (ids, enums, instants, durations, sealed payloads), each
//!   failure a [`FieldError`] naming the field as the request spells it (`reason.code`).
//! - [`view`]: core -> proto, what an agency system reads: referrals with their clocks, events,
//!   escalation notices. Sealed data is opened with an [`Opener`] when the caller's agency can.
//! - [`parse`]: proto -> core for those views (an event or referral read back), so every view
//!   is checked to carry what the core recorded.
//! - [`request`]: proto -> core for requests: every field validated, plaintext that must be
//!   sealed handed to a [`Sealer`], the result a core [`Command`](refbus_core::Command) or
//!   [`Creation`](refbus_core::referral::Creation).
//!
//! This crate holds no keys and does no cryptography: opening and sealing are closures the
//! adapter passes in.

pub mod fields;
pub mod parse;
pub mod request;
pub mod view;

#[cfg(test)]
mod tests;

use refbus_core::ids::AgencyId;
use refbus_core::referral::SealedPayload;

pub use parse::{event_from_view, referral_from_view};
pub use request::{
    AgeReckoning, CommandRequest, ListQuery, NewReferral, ParsedCommand, RerouteOrder,
    create_referral, get_receipt, get_referral, list_referrals, operator, reroute_referral,
};
pub use view::{clock_view, event_view, integrity_notice_view, notice_view, referral_view};

/// A request field that is missing or wrong; the adapter answers `INVALID_ARGUMENT` with it.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct FieldError {
    /// The field as the request spells it: `reason.code`, `categories[2]`, `identity.nik`.
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }

    /// The same error for a field nested in `parent`: `note` in `reason` is `reason.note`.
    pub fn within(self, parent: &str) -> Self {
        FieldError {
            field: format!("{parent}.{}", self.field),
            message: self.message,
        }
    }
}

/// What a plaintext payload is, and for whom the sealer must seal it.
///
/// Sealed data on a referral is always for exactly its sender and its recipient. When the
/// request names the recipient (a create, a reroute), it is given here; otherwise the payload
/// is for the two parties of the referral the request names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SealTarget<'a> {
    /// The person's identity (an encoded `refbus.v1.ClientIdentity`) on a new referral to
    /// `recipient`, from the caller's agency.
    Identity { recipient: &'a AgencyId },
    /// A note (UTF-8 text): on a new referral to `recipient`, or, when `None`, on the existing
    /// referral the request names.
    Note { recipient: Option<&'a AgencyId> },
    /// A consent override's written justification (UTF-8 text) on a new referral to
    /// `recipient`.
    Justification { recipient: &'a AgencyId },
}

impl SealTarget<'_> {
    /// The recipient named by the request, if the payload is for a new referral.
    pub fn recipient(&self) -> Option<&AgencyId> {
        match self {
            SealTarget::Identity { recipient } | SealTarget::Justification { recipient } => {
                Some(recipient)
            }
            SealTarget::Note { recipient } => *recipient,
        }
    }
}

/// Why the sealer could not seal a payload (e.g. the recipient has no public key yet). The
/// conversion reports it as a [`FieldError`] on the field the plaintext came from.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct SealError(pub String);

/// Seals plaintext for the parties [`SealTarget`] names.
pub type Sealer<'a> = dyn FnMut(SealTarget<'_>, &[u8]) -> Result<SealedPayload, SealError> + 'a;

/// Opens a sealed payload when the caller's agency is one of its recipients; `None` otherwise
/// (or if it cannot be opened). Identity plaintext is an encoded `refbus.v1.ClientIdentity`;
/// note plaintext is UTF-8.
pub type Opener<'a> = dyn Fn(&SealedPayload) -> Option<Vec<u8>> + 'a;
