//! Sealing and opening: one ChaCha20-Poly1305 content encryption, one HPKE key wrap per agency.

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit, Nonce, Tag};
use refbus_core::AgencyId;
use refbus_core::referral::SealedPayload;
use zeroize::Zeroizing;

use crate::envelope::{
    self, CONTENT_KEY_LEN, ENC_LEN, Envelope, MAX_RECIPIENTS, MAX_WRAPS, MalformedEnvelope,
    NONCE_LEN, TAG_LEN, WRAPPED_KEY_LEN,
};
use crate::keys::{KeyId, PublicKey, SecretKey};
use crate::wrap::{self, WrapError};

/// The HPKE `info` prefix; the recipient agency id follows it.
const WRAP_INFO_PREFIX: &[u8] = b"refbus-seal/v1\0";
const MAX_WRAP_INFO_LEN: usize = WRAP_INFO_PREFIX.len() + 48;

/// Why a payload could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("a payload must be sealed for at least one agency")]
    NoRecipients,
    #[error(
        "a payload can be sealed for at most {MAX_RECIPIENTS} agencies and {MAX_WRAPS} keys, \
         not {0}"
    )]
    TooManyRecipients(usize),
    #[error("agency `{0}` is listed twice among the recipients")]
    DuplicateRecipient(AgencyId),
    #[error("no public key is known for agency `{0}`; is it in the registry?")]
    UnknownAgency(AgencyId),
    #[error(
        "the public keys of agency `{0}` are unusable (none, or the same key twice); the \
         registry must hold real keys"
    )]
    RecipientKey(AgencyId),
    #[error("the operating system gave no randomness: {0}")]
    Randomness(getrandom::Error),
    #[error("the operating system gave no randomness for an ephemeral key")]
    EphemeralRandomness,
    #[error("the plaintext is too long to seal")]
    PlaintextTooLong,
}

/// Why a payload could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum OpenError {
    #[error("the payload is not sealed for agency `{agency}`")]
    NotRecipient { agency: AgencyId },
    #[error("the sealed payload is malformed: {0}")]
    Malformed(#[from] MalformedEnvelope),
    #[error(
        "the payload was sealed for `{agency}` under key {sealed_for}, but this key is {held}: \
         the agency's key was replaced (keep the old one to open old payloads), or the envelope \
         was altered"
    )]
    WrongKey {
        agency: AgencyId,
        sealed_for: KeyId,
        held: KeyId,
    },
    #[error(
        "the sealed payload failed authentication: it was altered, sealed for another context \
         (another referral?), or the key does not match"
    )]
    Unauthentic,
}

/// One agency a payload is sealed for, with every key its content key is wrapped for: the
/// agency's online key first, then (refbus does this whenever the registry lists one) the backup
/// key its head keeps offline, so that losing the online key loses nothing sealed for it.
#[derive(Debug, Clone, Copy)]
pub struct Recipient<'a> {
    pub agency: &'a AgencyId,
    pub keys: &'a [PublicKey],
}

/// A content key wrapped for a set of agencies' keys, ready to seal any number of payloads: the
/// identity, the note and the consent justification of one create cost one HPKE wrap per key
/// instead of one per key and payload. Each payload gets its own nonce; each payload's
/// associated data (its context) binds it to its purpose, and the wraps are bound to `wrap_aad`
/// (for refbus, the referral: [`Context::wrap_aad`](crate::Context::wrap_aad)).
pub struct Batch {
    content_key: Zeroizing<[u8; CONTENT_KEY_LEN]>,
    recipients: Vec<AgencyId>,
    /// Version, wrap count and every wrap: the header up to the nonce.
    wraps: Vec<u8>,
}

impl std::fmt::Debug for Batch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Batch")
            .field("recipients", &self.recipients)
            .finish_non_exhaustive()
    }
}

impl Batch {
    /// Draws a content key and wraps it for every key of every recipient, in the order given.
    pub fn new(recipients: &[Recipient<'_>], wrap_aad: &[u8]) -> Result<Batch, SealError> {
        match recipients.len() {
            0 => return Err(SealError::NoRecipients),
            count if count > MAX_RECIPIENTS => return Err(SealError::TooManyRecipients(count)),
            _ => {}
        }
        let mut wrap_count = 0;
        for (index, recipient) in recipients.iter().enumerate() {
            if recipients[..index]
                .iter()
                .any(|seen| seen.agency == recipient.agency)
            {
                return Err(SealError::DuplicateRecipient(recipient.agency.clone()));
            }
            let keys = recipient.keys;
            let repeated = keys
                .iter()
                .enumerate()
                .any(|(at, key)| keys[..at].iter().any(|seen| seen.key_id() == key.key_id()));
            if keys.is_empty() || repeated {
                return Err(SealError::RecipientKey(recipient.agency.clone()));
            }
            wrap_count += keys.len();
        }
        if wrap_count > MAX_WRAPS {
            return Err(SealError::TooManyRecipients(wrap_count));
        }

        let mut content_key = Zeroizing::new([0u8; CONTENT_KEY_LEN]);
        getrandom::fill(content_key.as_mut_slice()).map_err(SealError::Randomness)?;
        let mut wraps = Vec::with_capacity(envelope::header_len(
            recipients
                .iter()
                .flat_map(|recipient| recipient.keys.iter().map(|_| recipient.agency)),
        ));
        envelope::write_start(&mut wraps, wrap_count);
        for recipient in recipients {
            for public_key in recipient.keys {
                let (enc, wrapped_key) =
                    wrap_content_key(&content_key, recipient.agency, public_key, wrap_aad)?;
                envelope::write_wrap(
                    &mut wraps,
                    recipient.agency,
                    public_key.key_id(),
                    &enc,
                    &wrapped_key,
                );
            }
        }
        Ok(Batch {
            content_key,
            recipients: recipients
                .iter()
                .map(|recipient| recipient.agency.clone())
                .collect(),
            wraps,
        })
    }

    /// Writes another format version, to make the envelopes earlier versions wrote.
    #[cfg(test)]
    pub(crate) fn set_version_for_tests(&mut self, version: u8) {
        self.wraps[0] = version;
    }

    /// The agencies the batch seals for, in order.
    pub fn recipients(&self) -> &[AgencyId] {
        &self.recipients
    }

    /// Seals `plaintext` in `context` (which must name the referral the batch was made for:
    /// otherwise it will not open).
    pub fn seal_in(
        &self,
        plaintext: &[u8],
        context: crate::Context<'_>,
    ) -> Result<SealedPayload, SealError> {
        self.seal(plaintext, &context.aad())
    }

    /// Seals `plaintext` under the batch's content key, bound to `aad` (the payload's context,
    /// which opening must be given again; it is not stored).
    pub fn seal(&self, plaintext: &[u8], aad: &[u8]) -> Result<SealedPayload, SealError> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).map_err(SealError::Randomness)?;
        let header_len = self.wraps.len() + NONCE_LEN;
        let mut bytes = Vec::with_capacity(header_len + plaintext.len() + TAG_LEN);
        bytes.extend_from_slice(&self.wraps);
        bytes.extend_from_slice(&nonce);
        let content_aad = content_aad(&bytes, aad);
        bytes.extend_from_slice(plaintext);
        let tag = content_cipher(&self.content_key)
            .encrypt_inout_detached(
                &Nonce::from(nonce),
                &content_aad,
                InOutBuf::from(&mut bytes[header_len..]),
            )
            .map_err(|_| SealError::PlaintextTooLong)?;
        bytes.extend_from_slice(&tag);
        Ok(SealedPayload {
            recipients: self.recipients.clone(),
            envelope: bytes,
        })
    }
}

/// Seals `plaintext` so that only the listed agencies can open it, each with one key, bound to
/// the context `aad` (which `open` must be given again; it is not stored). The wraps are bound
/// to `aad` too. refbus itself seals through a [`Keyring`](crate::Keyring), which binds the
/// wraps to the referral and wraps for backup keys as well.
///
/// Recipients appear in the payload, and in its envelope, in the order given.
pub fn seal(
    plaintext: &[u8],
    recipients: &[(&AgencyId, &PublicKey)],
    aad: &[u8],
) -> Result<SealedPayload, SealError> {
    let recipients: Vec<Recipient<'_>> = recipients
        .iter()
        .map(|(agency, key)| Recipient {
            agency,
            keys: std::slice::from_ref(*key),
        })
        .collect();
    Batch::new(&recipients, aad)?.seal(plaintext, aad)
}

/// Opens a payload as `agency`, holding `secret`, in the context `aad` it was sealed with by
/// [`seal`] (wraps and content bound to the same `aad`).
pub fn open(
    payload: &SealedPayload,
    agency: &AgencyId,
    secret: &SecretKey,
    aad: &[u8],
) -> Result<Vec<u8>, OpenError> {
    open_with(payload, agency, &[secret], aad, &[aad]).map(|(_, plaintext)| plaintext)
}

/// Opens a payload as `agency` with whichever of `secrets` it was wrapped for (an agency keeps
/// its earlier keys after a rotation, and its backup key opens everything in a recovery): the
/// content key is unwrapped under `wrap_aad`, then the content is tried under each of `aads`
/// in turn (cheap: no Diffie-Hellman). Returns the index of the context that opened it.
pub fn open_with(
    payload: &SealedPayload,
    agency: &AgencyId,
    secrets: &[&SecretKey],
    wrap_aad: &[u8],
    aads: &[&[u8]],
) -> Result<(usize, Vec<u8>), OpenError> {
    let envelope = Envelope::parse(&payload.envelope)?;
    envelope.check_recipients(&payload.recipients)?;
    let mut own = envelope
        .wraps
        .iter()
        .filter(|wrap| &wrap.agency == agency)
        .peekable();
    let Some(first) = own.peek() else {
        return Err(OpenError::NotRecipient {
            agency: agency.clone(),
        });
    };
    let sealed_for = first.key_id;
    let Some((wrap, secret)) = own.find_map(|wrap| {
        secrets
            .iter()
            .find(|secret| secret.public_key().key_id() == wrap.key_id)
            .map(|secret| (wrap, *secret))
    }) else {
        return Err(OpenError::WrongKey {
            agency: agency.clone(),
            sealed_for,
            held: secrets
                .first()
                .map_or(sealed_for, |secret| secret.public_key().key_id()),
        });
    };
    let content_key = unwrap_content_key(wrap.enc, wrap.wrapped_key, agency, secret, wrap_aad)?;

    let (ciphertext, tag) = envelope
        .ciphertext
        .split_at(envelope.ciphertext.len() - TAG_LEN);
    let tag = Tag::try_from(tag).map_err(|_| MalformedEnvelope::Truncated("the ciphertext"))?;
    let cipher = content_cipher(&content_key);
    for (index, aad) in aads.iter().enumerate() {
        let mut plaintext = ciphertext.to_vec();
        let opened = cipher.decrypt_inout_detached(
            &Nonce::from(*envelope.nonce),
            &content_aad(envelope.header, aad),
            InOutBuf::from(plaintext.as_mut_slice()),
            &tag,
        );
        if opened.is_ok() {
            return Ok((index, plaintext));
        }
    }
    Err(OpenError::Unauthentic)
}

/// The envelope format version of a payload, if it has one: 1 (wraps bound to the payload's
/// own context) or 2 (wraps bound to the caller's `wrap_aad`, the referral for refbus).
pub(crate) fn version(payload: &SealedPayload) -> Option<u8> {
    payload.envelope.first().copied()
}

/// The content's associated data: the whole header (so no wrap, id or nonce can be swapped),
/// then the caller's context. The header is self-delimiting, so the concatenation is unambiguous.
fn content_aad(header: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut joined = Vec::with_capacity(header.len() + aad.len());
    joined.extend_from_slice(header);
    joined.extend_from_slice(aad);
    joined
}

fn content_cipher(content_key: &[u8; CONTENT_KEY_LEN]) -> ChaCha20Poly1305 {
    ChaCha20Poly1305::new(content_key.into())
}

/// HPKE `info` for the wrap addressed to `agency`: the scheme version and the agency, so a wrap
/// cannot be presented as another agency's.
struct WrapInfo {
    bytes: [u8; MAX_WRAP_INFO_LEN],
    len: usize,
}

impl WrapInfo {
    fn new(agency: &AgencyId) -> WrapInfo {
        let id = agency.as_str().as_bytes();
        let mut bytes = [0u8; MAX_WRAP_INFO_LEN];
        let len = WRAP_INFO_PREFIX.len() + id.len();
        bytes[..WRAP_INFO_PREFIX.len()].copy_from_slice(WRAP_INFO_PREFIX);
        bytes[WRAP_INFO_PREFIX.len()..len].copy_from_slice(id);
        WrapInfo { bytes, len }
    }

    fn as_bytes(&self) -> &[u8] {
        &self.bytes[..self.len]
    }
}

fn wrap_content_key(
    content_key: &[u8; CONTENT_KEY_LEN],
    agency: &AgencyId,
    public_key: &PublicKey,
    aad: &[u8],
) -> Result<([u8; ENC_LEN], [u8; WRAPPED_KEY_LEN]), SealError> {
    // The wrap is encrypted in place, so the buffer holds the content key until it is sealed.
    let mut wrapped_key = Zeroizing::new([0u8; WRAPPED_KEY_LEN]);
    wrapped_key[..CONTENT_KEY_LEN].copy_from_slice(content_key);
    let (enc, tag) = wrap::seal(
        &public_key.to_bytes(),
        WrapInfo::new(agency).as_bytes(),
        aad,
        &mut wrapped_key[..CONTENT_KEY_LEN],
    )
    .map_err(|error| match error {
        WrapError::Randomness => SealError::EphemeralRandomness,
        WrapError::RecipientKey => SealError::RecipientKey(agency.clone()),
    })?;
    wrapped_key[CONTENT_KEY_LEN..].copy_from_slice(&tag);
    Ok((enc, *wrapped_key))
}

fn unwrap_content_key(
    enc: &[u8; ENC_LEN],
    wrapped_key: &[u8; WRAPPED_KEY_LEN],
    agency: &AgencyId,
    secret: &SecretKey,
    aad: &[u8],
) -> Result<Zeroizing<[u8; CONTENT_KEY_LEN]>, OpenError> {
    // A small-order `enc` fails decapsulation; like any other alteration it is unauthentic.
    wrap::open(
        enc,
        wrapped_key,
        secret,
        WrapInfo::new(agency).as_bytes(),
        aad,
    )
    .ok_or(OpenError::Unauthentic)
}
