//! Sealing and opening for one agency: the closures the proto conversions call.
//!
//! Identity and notes are sealed for exactly a referral's sender and recipient, bound to the
//! referral (`refbus_seal::Context`), so they cannot be moved to another referral.

use refbus_core::referral::SealedPayload;
use refbus_core::{AgencyId, ReferralId};
use refbus_proto::convert::{SealError, SealTarget};
use refbus_seal::{Context, Keyring};

/// Seals for a referral: `referral` is its id, `parties` its sender and recipient (for a new
/// referral, the recipient comes from the request through [`SealTarget`]).
pub(crate) fn sealer<'a>(
    keyring: &'a Keyring,
    referral: ReferralId,
    parties: Option<(&'a AgencyId, &'a AgencyId)>,
) -> impl FnMut(SealTarget<'_>, &[u8]) -> Result<SealedPayload, SealError> + 'a {
    move |target, plaintext| {
        let own = keyring.agency();
        let (first, second) = match (target.recipient(), parties) {
            (Some(recipient), _) => (own, recipient),
            (None, Some((sender, recipient))) => (sender, recipient),
            (None, None) => return Err(SealError("no referral to seal for".to_owned())),
        };
        let context = match target {
            SealTarget::Identity { .. } => Context::Identity(&referral),
            SealTarget::Note { .. } => Context::Note(&referral),
        };
        keyring
            .seal_for(&[first, second], plaintext, &context.aad())
            .map_err(|err| SealError(err.to_string()))
    }
}

/// Opens what this agency may read on `referral`: identity under the identity context, notes
/// under the note context. Anything else stays closed.
pub(crate) fn opener(
    keyring: &Keyring,
    referral: ReferralId,
) -> impl Fn(&SealedPayload) -> Option<Vec<u8>> + '_ {
    move |payload| {
        if !payload.recipients.contains(keyring.agency()) {
            return None;
        }
        keyring
            .open(payload, &Context::Note(&referral).aad())
            .or_else(|_| keyring.open(payload, &Context::Identity(&referral).aad()))
            .ok()
    }
}
