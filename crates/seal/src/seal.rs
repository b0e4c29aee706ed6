//! Sealing and opening: one ChaCha20-Poly1305 content encryption, one HPKE key wrap per agency.

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit, Nonce, Tag};
use hpke::aead::{AeadTag, ChaCha20Poly1305 as HpkeChaCha20Poly1305};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR, OpModeS, Serializable};
use refbus_core::AgencyId;
use refbus_core::referral::SealedPayload;
use zeroize::Zeroizing;

use crate::envelope::{
    self, CONTENT_KEY_LEN, ENC_LEN, Envelope, MAX_RECIPIENTS, MalformedEnvelope, NONCE_LEN,
    TAG_LEN, WRAPPED_KEY_LEN,
};
use crate::keys::{KeyId, PublicKey, SecretKey};

/// The HPKE `info` prefix; the recipient agency id follows it.
const WRAP_INFO_PREFIX: &[u8] = b"refbus-seal/v1\0";
const MAX_WRAP_INFO_LEN: usize = WRAP_INFO_PREFIX.len() + 48;

/// Why a payload could not be sealed.
#[derive(Debug, thiserror::Error)]
pub enum SealError {
    #[error("a payload must be sealed for at least one agency")]
    NoRecipients,
    #[error("a payload can be sealed for at most {MAX_RECIPIENTS} agencies, not {0}")]
    TooManyRecipients(usize),
    #[error("agency `{0}` is listed twice among the recipients")]
    DuplicateRecipient(AgencyId),
    #[error("no public key is known for agency `{0}`; is it in the registry?")]
    UnknownAgency(AgencyId),
    #[error("the public key of agency `{0}` is unusable; the registry must hold a real key")]
    RecipientKey(AgencyId),
    #[error("the operating system gave no randomness: {0}")]
    Randomness(getrandom::Error),
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

/// Seals `plaintext` so that only the listed agencies can open it, bound to the context `aad`
/// (which `open` must be given again; it is not stored).
///
/// Recipients appear in the payload, and in its envelope, in the order given.
pub fn seal(
    plaintext: &[u8],
    recipients: &[(&AgencyId, &PublicKey)],
    aad: &[u8],
) -> Result<SealedPayload, SealError> {
    match recipients.len() {
        0 => return Err(SealError::NoRecipients),
        count if count > MAX_RECIPIENTS => return Err(SealError::TooManyRecipients(count)),
        _ => {}
    }
    for (index, (agency, _)) in recipients.iter().enumerate() {
        if recipients[..index].iter().any(|(seen, _)| seen == agency) {
            return Err(SealError::DuplicateRecipient((*agency).clone()));
        }
    }

    let mut content_key = Zeroizing::new([0u8; CONTENT_KEY_LEN]);
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(content_key.as_mut_slice()).map_err(SealError::Randomness)?;
    getrandom::fill(&mut nonce).map_err(SealError::Randomness)?;

    let header_len = envelope::header_len(recipients.iter().map(|(agency, _)| *agency));
    let mut bytes = Vec::with_capacity(header_len + plaintext.len() + TAG_LEN);
    envelope::write_start(&mut bytes, recipients.len());
    for (agency, public_key) in recipients {
        let (enc, wrapped_key) = wrap_content_key(&content_key, agency, public_key, aad)?;
        envelope::write_wrap(&mut bytes, agency, public_key.key_id(), &enc, &wrapped_key);
    }
    bytes.extend_from_slice(&nonce);
    debug_assert_eq!(bytes.len(), header_len);

    let content_aad = content_aad(&bytes, aad);
    bytes.extend_from_slice(plaintext);
    let tag = content_cipher(&content_key)
        .encrypt_inout_detached(
            &Nonce::from(nonce),
            &content_aad,
            InOutBuf::from(&mut bytes[header_len..]),
        )
        .map_err(|_| SealError::PlaintextTooLong)?;
    bytes.extend_from_slice(&tag);

    Ok(SealedPayload {
        recipients: recipients
            .iter()
            .map(|(agency, _)| (*agency).clone())
            .collect(),
        envelope: bytes,
    })
}

/// Opens a payload as `agency`, holding `secret`, in the context `aad` it was sealed with.
pub fn open(
    payload: &SealedPayload,
    agency: &AgencyId,
    secret: &SecretKey,
    aad: &[u8],
) -> Result<Vec<u8>, OpenError> {
    let envelope = Envelope::parse(&payload.envelope)?;
    envelope.check_recipients(&payload.recipients)?;
    let wrap = envelope
        .wraps
        .iter()
        .find(|wrap| &wrap.agency == agency)
        .ok_or_else(|| OpenError::NotRecipient {
            agency: agency.clone(),
        })?;
    let held = secret.public_key().key_id();
    if wrap.key_id != held {
        return Err(OpenError::WrongKey {
            agency: agency.clone(),
            sealed_for: wrap.key_id,
            held,
        });
    }
    let content_key = unwrap_content_key(wrap.enc, wrap.wrapped_key, agency, secret, aad)?;

    let (ciphertext, tag) = envelope
        .ciphertext
        .split_at(envelope.ciphertext.len() - TAG_LEN);
    let tag = Tag::try_from(tag).map_err(|_| MalformedEnvelope::Truncated("the ciphertext"))?;
    let mut plaintext = ciphertext.to_vec();
    content_cipher(&content_key)
        .decrypt_inout_detached(
            &Nonce::from(*envelope.nonce),
            &content_aad(envelope.header, aad),
            InOutBuf::from(plaintext.as_mut_slice()),
            &tag,
        )
        .map_err(|_| OpenError::Unauthentic)?;
    Ok(plaintext)
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
    let (enc, tag) = hpke::single_shot_seal_inout_detached::<
        HpkeChaCha20Poly1305,
        HkdfSha256,
        X25519HkdfSha256,
    >(
        &OpModeS::Base,
        public_key.hpke(),
        WrapInfo::new(agency).as_bytes(),
        InOutBuf::from(&mut wrapped_key[..CONTENT_KEY_LEN]),
        aad,
    )
    .map_err(|_| SealError::RecipientKey(agency.clone()))?;
    wrapped_key[CONTENT_KEY_LEN..].copy_from_slice(&tag.to_bytes());
    let mut enc_bytes = [0u8; ENC_LEN];
    enc_bytes.copy_from_slice(&enc.to_bytes());
    Ok((enc_bytes, *wrapped_key))
}

fn unwrap_content_key(
    enc: &[u8; ENC_LEN],
    wrapped_key: &[u8; WRAPPED_KEY_LEN],
    agency: &AgencyId,
    secret: &SecretKey,
    aad: &[u8],
) -> Result<Zeroizing<[u8; CONTENT_KEY_LEN]>, OpenError> {
    // Both conversions accept any bytes of the right length, which the parser guarantees.
    let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(enc)
        .map_err(|_| OpenError::Unauthentic)?;
    let tag = AeadTag::<HpkeChaCha20Poly1305>::from_bytes(&wrapped_key[CONTENT_KEY_LEN..])
        .map_err(|_| OpenError::Unauthentic)?;
    let mut content_key = Zeroizing::new([0u8; CONTENT_KEY_LEN]);
    content_key.copy_from_slice(&wrapped_key[..CONTENT_KEY_LEN]);
    // A small-order `enc` fails decapsulation; like any other alteration it is unauthentic.
    hpke::single_shot_open_inout_detached::<HpkeChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        secret.hpke(),
        &enc,
        WrapInfo::new(agency).as_bytes(),
        InOutBuf::from(content_key.as_mut_slice()),
        aad,
        &tag,
    )
    .map_err(|_| OpenError::Unauthentic)?;
    Ok(content_key)
}
