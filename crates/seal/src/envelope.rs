//! The envelope's bytes: the version 1 layout, written exactly and read with every length checked.
//!
//! No cryptography here: this module only knows where each field is. The layout is specified in
//! the crate documentation.

use refbus_core::AgencyId;
use refbus_core::referral::SealedPayload;

use crate::keys::KeyId;

/// The version written: 2, where an agency may hold several wraps (its online key and its
/// backup key). Version 1 (one wrap per agency) is still read.
pub(crate) const VERSION: u8 = 2;
const VERSION_ONE_WRAP_EACH: u8 = 1;
/// The most agencies one payload can be sealed for. refbus seals for two (sender and recipient);
/// the bound keeps parsing cheap and the count fits one byte.
pub const MAX_RECIPIENTS: usize = 8;
/// The most wraps one envelope holds: each agency's online key and its backup key.
pub const MAX_WRAPS: usize = 2 * MAX_RECIPIENTS;
pub(crate) const KEY_ID_LEN: usize = 8;
pub(crate) const ENC_LEN: usize = 32;
pub(crate) const CONTENT_KEY_LEN: usize = 32;
pub(crate) const TAG_LEN: usize = 16;
pub(crate) const WRAPPED_KEY_LEN: usize = CONTENT_KEY_LEN + TAG_LEN;
pub(crate) const NONCE_LEN: usize = 12;
/// Agency ids are at most 48 bytes (see `refbus_core::ids`).
const MAX_AGENCY_ID_LEN: usize = 48;

/// Why bytes are not a version 1 envelope, or not the envelope its payload claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MalformedEnvelope {
    #[error("the envelope is empty")]
    Empty,
    #[error("envelope version {0} is unknown; this refbus reads versions 1 and {VERSION}")]
    UnknownVersion(u8),
    #[error("the envelope is sealed for nobody")]
    NoRecipients,
    #[error("the envelope claims {0} key wraps; at most {MAX_WRAPS} are allowed")]
    TooManyRecipients(usize),
    #[error("the envelope ends inside {0}")]
    Truncated(&'static str),
    #[error("recipient {index} of the envelope is not a valid agency id")]
    InvalidAgency { index: usize },
    #[error(
        "the envelope names agency `{0}` twice (an agency's wraps must be adjacent, each for \
         another key)"
    )]
    DuplicateRecipient(AgencyId),
    #[error(
        "the payload says it is sealed for [{claimed}] but its envelope is sealed for [{actual}]"
    )]
    RecipientsMismatch { claimed: String, actual: String },
}

/// One recipient's key wrap, as read from an envelope.
pub(crate) struct Wrap<'a> {
    pub(crate) agency: AgencyId,
    pub(crate) key_id: KeyId,
    pub(crate) enc: &'a [u8; ENC_LEN],
    pub(crate) wrapped_key: &'a [u8; WRAPPED_KEY_LEN],
}

/// An envelope read from bytes; it borrows them.
pub(crate) struct Envelope<'a> {
    pub(crate) wraps: Vec<Wrap<'a>>,
    pub(crate) nonce: &'a [u8; NONCE_LEN],
    /// Everything before the ciphertext, authenticated with the content.
    pub(crate) header: &'a [u8],
    /// The encrypted content followed by its tag.
    pub(crate) ciphertext: &'a [u8],
}

impl<'a> Envelope<'a> {
    pub(crate) fn parse(bytes: &'a [u8]) -> Result<Envelope<'a>, MalformedEnvelope> {
        let mut reader = Reader { bytes, position: 0 };
        let version = reader.byte().ok_or(MalformedEnvelope::Empty)?;
        if version != VERSION && version != VERSION_ONE_WRAP_EACH {
            return Err(MalformedEnvelope::UnknownVersion(version));
        }
        let count = usize::from(
            reader
                .byte()
                .ok_or(MalformedEnvelope::Truncated("the recipient count"))?,
        );
        match count {
            0 => return Err(MalformedEnvelope::NoRecipients),
            count if count > MAX_WRAPS => {
                return Err(MalformedEnvelope::TooManyRecipients(count));
            }
            _ => {}
        }
        let mut wraps: Vec<Wrap<'a>> = Vec::with_capacity(count);
        for index in 0..count {
            let id_len = usize::from(
                reader
                    .byte()
                    .ok_or(MalformedEnvelope::Truncated("a recipient's agency id"))?,
            );
            if id_len == 0 || id_len > MAX_AGENCY_ID_LEN {
                return Err(MalformedEnvelope::InvalidAgency { index });
            }
            let id_bytes = reader.take(id_len, "a recipient's agency id")?;
            let agency = std::str::from_utf8(id_bytes)
                .ok()
                .and_then(|text| AgencyId::new(text).ok())
                .ok_or(MalformedEnvelope::InvalidAgency { index })?;
            let key_id = KeyId(*reader.array::<KEY_ID_LEN>("a recipient's key id")?);
            // Version 2: an agency's further wraps (another of its keys) follow its first one.
            let another_key_of_the_last = version == VERSION
                && wraps
                    .last()
                    .is_some_and(|last| last.agency == agency && last.key_id != key_id)
                && !wraps
                    .iter()
                    .any(|wrap| wrap.agency == agency && wrap.key_id == key_id);
            if !another_key_of_the_last && wraps.iter().any(|wrap| wrap.agency == agency) {
                return Err(MalformedEnvelope::DuplicateRecipient(agency));
            }
            let enc = reader.array::<ENC_LEN>("a recipient's encapsulated key")?;
            let wrapped_key = reader.array::<WRAPPED_KEY_LEN>("a recipient's wrapped key")?;
            wraps.push(Wrap {
                agency,
                key_id,
                enc,
                wrapped_key,
            });
        }
        let nonce = reader.array::<NONCE_LEN>("the nonce")?;
        let (header, ciphertext) = bytes.split_at(reader.position);
        if ciphertext.len() < TAG_LEN {
            return Err(MalformedEnvelope::Truncated("the ciphertext"));
        }
        Ok(Envelope {
            wraps,
            nonce,
            header,
            ciphertext,
        })
    }

    /// Checks that the envelope is sealed for exactly `claimed`, in that order: the list beside
    /// the envelope is what the core and the router check, so it must not differ from the truth.
    pub(crate) fn check_recipients(&self, claimed: &[AgencyId]) -> Result<(), MalformedEnvelope> {
        let actual = self.agencies();
        let same = actual.len() == claimed.len()
            && actual
                .iter()
                .zip(claimed)
                .all(|(wrapped, agency)| *wrapped == agency);
        if same {
            Ok(())
        } else {
            Err(MalformedEnvelope::RecipientsMismatch {
                claimed: join(claimed.iter()),
                actual: join(actual.into_iter()),
            })
        }
    }

    /// The agencies the envelope is sealed for, each once, in the order of their first wrap.
    pub(crate) fn agencies(&self) -> Vec<&AgencyId> {
        let mut agencies: Vec<&AgencyId> = Vec::with_capacity(self.wraps.len());
        for wrap in &self.wraps {
            // An agency's wraps are adjacent (checked by `parse`).
            if agencies.last() != Some(&&wrap.agency) {
                agencies.push(&wrap.agency);
            }
        }
        agencies
    }
}

fn join<'a>(agencies: impl Iterator<Item = &'a AgencyId>) -> String {
    agencies
        .map(AgencyId::as_str)
        .collect::<Vec<_>>()
        .join(", ")
}

/// A cursor that never reads past the end: each read either returns the bytes or says so.
struct Reader<'a> {
    bytes: &'a [u8],
    position: usize,
}

impl<'a> Reader<'a> {
    fn byte(&mut self) -> Option<u8> {
        let byte = *self.bytes.get(self.position)?;
        self.position += 1;
        Some(byte)
    }

    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], MalformedEnvelope> {
        let end = self
            .position
            .checked_add(len)
            .filter(|&end| end <= self.bytes.len())
            .ok_or(MalformedEnvelope::Truncated(what))?;
        let taken = &self.bytes[self.position..end];
        self.position = end;
        Ok(taken)
    }

    fn array<const N: usize>(
        &mut self,
        what: &'static str,
    ) -> Result<&'a [u8; N], MalformedEnvelope> {
        let taken = self.take(N, what)?;
        taken
            .try_into()
            .map_err(|_| MalformedEnvelope::Truncated(what))
    }
}

/// The length of the header for these recipients: the envelope's length is this plus the
/// plaintext's plus the tag's, so `seal` allocates once.
pub(crate) fn header_len<'a>(recipients: impl Iterator<Item = &'a AgencyId>) -> usize {
    let wraps: usize = recipients
        .map(|agency| 1 + agency.as_str().len() + KEY_ID_LEN + ENC_LEN + WRAPPED_KEY_LEN)
        .sum();
    2 + wraps + NONCE_LEN
}

/// Starts an envelope: version and wrap count. `count` must be 1..=MAX_WRAPS.
pub(crate) fn write_start(out: &mut Vec<u8>, count: usize) {
    debug_assert!((1..=MAX_WRAPS).contains(&count));
    out.push(VERSION);
    out.push(count as u8);
}

pub(crate) fn write_wrap(
    out: &mut Vec<u8>,
    agency: &AgencyId,
    key_id: KeyId,
    enc: &[u8; ENC_LEN],
    wrapped_key: &[u8; WRAPPED_KEY_LEN],
) {
    let id = agency.as_str().as_bytes();
    // Agency ids are at most 48 bytes by construction.
    out.push(id.len() as u8);
    out.extend_from_slice(id);
    out.extend_from_slice(key_id.as_bytes());
    out.extend_from_slice(enc);
    out.extend_from_slice(wrapped_key);
}

/// The agencies a payload's envelope is sealed for, read from the envelope itself.
pub fn envelope_recipients(envelope: &[u8]) -> Result<Vec<AgencyId>, MalformedEnvelope> {
    let envelope = Envelope::parse(envelope)?;
    Ok(envelope.agencies().into_iter().cloned().collect())
}

/// Every key an envelope is wrapped for: each agency with the key id of each of its wraps (its
/// online key, then its backup key, as refbus seals). Key ids are public fingerprints.
pub fn envelope_keys(envelope: &[u8]) -> Result<Vec<(AgencyId, KeyId)>, MalformedEnvelope> {
    let envelope = Envelope::parse(envelope)?;
    Ok(envelope
        .wraps
        .into_iter()
        .map(|wrap| (wrap.agency, wrap.key_id))
        .collect())
}

/// Checks, without any key, that a payload's envelope is well formed and sealed for exactly the
/// agencies the payload lists, in order. An adapter or the router can refuse a bad payload early;
/// only opening it proves that it is authentic.
pub fn check_envelope(payload: &SealedPayload) -> Result<(), MalformedEnvelope> {
    Envelope::parse(&payload.envelope)?.check_recipients(&payload.recipients)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agency(text: &str) -> AgencyId {
        AgencyId::new(text).unwrap()
    }

    fn sample(recipients: &[&AgencyId], content_len: usize) -> Vec<u8> {
        let mut out = Vec::new();
        write_start(&mut out, recipients.len());
        for (index, agency) in recipients.iter().enumerate() {
            let fill = index as u8;
            write_wrap(
                &mut out,
                agency,
                KeyId([fill; KEY_ID_LEN]),
                &[fill; ENC_LEN],
                &[fill; WRAPPED_KEY_LEN],
            );
        }
        out.extend_from_slice(&[0xaa; NONCE_LEN]);
        assert_eq!(out.len(), header_len(recipients.iter().copied()));
        out.extend(std::iter::repeat_n(0xbb, content_len + TAG_LEN));
        out
    }

    #[test]
    fn parse_reads_what_was_written() {
        let (dinsos, polres) = (agency("maros-dinsos"), agency("polres-maros"));
        let bytes = sample(&[&dinsos, &polres], 5);
        let envelope = Envelope::parse(&bytes).unwrap();
        assert_eq!(envelope.wraps.len(), 2);
        assert_eq!(envelope.wraps[1].agency, polres);
        assert_eq!(envelope.wraps[1].key_id, KeyId([1; KEY_ID_LEN]));
        assert_eq!(envelope.wraps[1].enc, &[1; ENC_LEN]);
        assert_eq!(envelope.nonce, &[0xaa; NONCE_LEN]);
        assert_eq!(envelope.ciphertext.len(), 5 + TAG_LEN);
        assert_eq!(
            envelope.header.len() + envelope.ciphertext.len(),
            bytes.len()
        );
        assert_eq!(envelope_recipients(&bytes).unwrap(), vec![dinsos, polres]);
    }

    #[test]
    fn every_truncation_is_reported_not_panicked() {
        let (dinsos, polres) = (agency("maros-dinsos"), agency("polres-maros"));
        let bytes = sample(&[&dinsos, &polres], 0);
        for len in 0..bytes.len() {
            assert!(
                Envelope::parse(&bytes[..len]).is_err(),
                "a {len}-byte prefix parsed"
            );
        }
        assert!(Envelope::parse(&bytes).is_ok());
    }

    #[test]
    fn structural_errors_are_precise() {
        let dinsos = agency("maros-dinsos");
        let parse_error = |bytes: &[u8]| Envelope::parse(bytes).err().unwrap();
        assert_eq!(parse_error(&[]), MalformedEnvelope::Empty);
        assert_eq!(parse_error(&[3, 1]), MalformedEnvelope::UnknownVersion(3));
        assert_eq!(parse_error(&[1, 0]), MalformedEnvelope::NoRecipients);
        assert_eq!(
            parse_error(&[1, 17]),
            MalformedEnvelope::TooManyRecipients(17)
        );
        assert_eq!(
            parse_error(&[1, 1, 3, b'A', b'B', b'C']),
            MalformedEnvelope::InvalidAgency { index: 0 }
        );
        assert_eq!(
            parse_error(&[1, 1, 49]),
            MalformedEnvelope::InvalidAgency { index: 0 }
        );
        // Version 2: an agency's wraps are adjacent and each for another key.
        let polres = agency("polres-maros");
        let twice = sample(&[&dinsos, &dinsos], 0);
        let envelope = Envelope::parse(&twice).unwrap();
        assert_eq!(envelope.agencies(), vec![&dinsos]);
        let mut same_key = twice.clone();
        let second_key_at = 2
            + (1 + dinsos.as_str().len() + KEY_ID_LEN + ENC_LEN + WRAPPED_KEY_LEN)
            + 1
            + dinsos.as_str().len();
        same_key[second_key_at..second_key_at + KEY_ID_LEN].fill(0);
        assert_eq!(
            parse_error(&same_key),
            MalformedEnvelope::DuplicateRecipient(dinsos.clone())
        );
        let apart = sample(&[&dinsos, &polres, &dinsos], 0);
        assert_eq!(
            parse_error(&apart),
            MalformedEnvelope::DuplicateRecipient(dinsos.clone())
        );
        // Version 1 allowed one wrap per agency.
        let mut version_one = twice.clone();
        version_one[0] = 1;
        assert_eq!(
            parse_error(&version_one),
            MalformedEnvelope::DuplicateRecipient(dinsos.clone())
        );
    }

    #[test]
    fn the_listed_recipients_must_match_the_envelope() {
        let (dinsos, polres, ppa) = (
            agency("maros-dinsos"),
            agency("polres-maros"),
            agency("maros-ppa"),
        );
        let envelope = sample(&[&dinsos, &polres], 3);
        let payload = |recipients: Vec<AgencyId>| SealedPayload {
            recipients,
            envelope: envelope.clone(),
        };
        assert!(check_envelope(&payload(vec![dinsos.clone(), polres.clone()])).is_ok());
        for wrong in [
            vec![polres.clone(), dinsos.clone()],
            vec![dinsos.clone(), ppa.clone()],
            vec![dinsos.clone()],
            vec![dinsos.clone(), polres.clone(), ppa.clone()],
        ] {
            let error = check_envelope(&payload(wrong)).unwrap_err();
            assert!(
                matches!(error, MalformedEnvelope::RecipientsMismatch { .. }),
                "{error}"
            );
        }
    }
}
