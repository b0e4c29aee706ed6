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
        keyring
            .seal_for(&[first, second], plaintext, context(&target, &referral))
            .map_err(|err| SealError(err.to_string()))
    }
}

/// The context a payload for `target` is sealed in.
pub(crate) fn context<'r>(target: &SealTarget<'_>, referral: &'r ReferralId) -> Context<'r> {
    match target {
        SealTarget::Identity { .. } => Context::Identity(referral),
        SealTarget::Note { .. } => Context::Note(referral),
        SealTarget::Justification { .. } => Context::Justification(referral),
    }
}

/// What one call sealed: each envelope with its plaintext, so the call's answer can show the
/// plaintext back without opening what it has just sealed (an X25519 operation per recipient
/// and attempt).
#[derive(Debug, Default)]
pub(crate) struct SealedHere {
    sealed: Vec<(Vec<u8>, Vec<u8>)>,
}

impl SealedHere {
    pub(crate) fn remember(&mut self, sealed: &SealedPayload, plaintext: &[u8]) {
        self.sealed
            .push((sealed.envelope.clone(), plaintext.to_vec()));
    }

    fn plaintext_of(&self, payload: &SealedPayload) -> Option<Vec<u8>> {
        self.sealed
            .iter()
            .find(|(envelope, _)| *envelope == payload.envelope)
            .map(|(_, plaintext)| plaintext.clone())
    }
}

/// [`opener`], answering from `known` for the envelopes it holds. An envelope sealed by an
/// earlier attempt of the same request (a retry) is not among them and is opened.
pub(crate) fn opener_knowing<'a>(
    keyring: &'a Keyring,
    referral: ReferralId,
    known: &'a SealedHere,
) -> impl Fn(&SealedPayload) -> Option<Vec<u8>> + 'a {
    let open = opener(keyring, referral);
    move |payload| known.plaintext_of(payload).or_else(|| open(payload))
}

/// Opens what this agency may read on `referral`, with its current key or an earlier one:
/// notes, identity and consent justifications, each under its own context (one unwrap, then a
/// cheap try per context). Anything else stays closed.
pub(crate) fn opener(
    keyring: &Keyring,
    referral: ReferralId,
) -> impl Fn(&SealedPayload) -> Option<Vec<u8>> + '_ {
    move |payload| {
        if !payload.recipients.contains(keyring.agency()) {
            return None;
        }
        let contexts = [
            Context::Note(&referral),
            Context::Identity(&referral),
            Context::Justification(&referral),
        ];
        keyring
            .open_any(payload, &contexts)
            .ok()
            .map(|(_, plaintext)| plaintext)
    }
}
