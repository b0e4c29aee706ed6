//! A leaf of the log: one stream message as the Merkle tree holds it (encoding version 1).
//!
//! ```text
//! entry = version (0x01)
//!      || kind (0x00 a stored message, 0x01 a sequence the stream skipped)
//!      || stream sequence (u64, big-endian)
//!      || subject length (u16, big-endian) || subject (UTF-8)
//!      || SHA-256 of the exact stored payload bytes (32 bytes; zeros for a skipped sequence)
//! leaf hash = SHA-256(0x00 || entry)            (RFC 6962 leaf hash)
//! ```
//!
//! Leaf index `i` always holds stream sequence `i + 1`: a sequence the stream skipped (a message
//! deleted before the notary read it) is recorded as a `missing` leaf, never renumbered over, so
//! the gap stays in the signed log for ever. The payload enters as its digest so that every
//! entry is small (entry bundles limit an entry to 65535 bytes) and the log does not copy the
//! stream; an auditor recomputes the digest from the bytes the stream holds.

use refbus_core::format::RecordKind;
use sha2::{Digest, Sha256};
use tlog_tiles::Hash;

/// The encoding's version byte: the format this build writes (`RecordKind::LogEntry`).
pub const VERSION: u8 = 1;
const KIND_MESSAGE: u8 = 0;
const KIND_MISSING: u8 = 1;

/// One leaf, decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leaf {
    /// The stream sequence the leaf stands for.
    pub seq: u64,
    /// The message's subject; empty for a missing message.
    pub subject: String,
    /// SHA-256 of the stored payload; `None` for a missing message.
    pub digest: Option<[u8; 32]>,
}

/// Why bytes are not a leaf this build reads.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeafError {
    #[error("not a refbus log entry: {0}")]
    Malformed(&'static str),
    /// A version byte this build does not read (`refbus_core::format`, `RecordKind::LogEntry`).
    #[error("{}", .0.sentence())]
    Format(refbus_core::format::UnknownFormat),
}

impl Leaf {
    /// The leaf of a stored message.
    pub fn message(seq: u64, subject: &str, payload: &[u8]) -> Leaf {
        Leaf {
            seq,
            subject: subject.to_owned(),
            digest: Some(Sha256::digest(payload).into()),
        }
    }

    /// The leaf of a sequence the stream skipped.
    pub fn missing(seq: u64) -> Leaf {
        Leaf {
            seq,
            subject: String::new(),
            digest: None,
        }
    }

    /// Whether the leaf records a skipped sequence.
    pub fn is_missing(&self) -> bool {
        self.digest.is_none()
    }

    /// The entry bytes (see the module's documentation).
    pub fn encode(&self) -> Vec<u8> {
        let subject = self.subject.as_bytes();
        // Subjects are NATS subjects (short); one longer than a u16 cannot be stored anyway.
        let len = u16::try_from(subject.len()).unwrap_or(u16::MAX);
        let mut out = Vec::with_capacity(1 + 1 + 8 + 2 + subject.len() + 32);
        out.push(VERSION);
        out.push(if self.is_missing() {
            KIND_MISSING
        } else {
            KIND_MESSAGE
        });
        out.extend_from_slice(&self.seq.to_be_bytes());
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&subject[..usize::from(len)]);
        out.extend_from_slice(&self.digest.unwrap_or([0; 32]));
        out
    }

    /// Decodes an entry.
    pub fn decode(bytes: &[u8]) -> Result<Leaf, LeafError> {
        let take = |at: usize, n: usize| {
            bytes
                .get(at..at + n)
                .ok_or(LeafError::Malformed("too short"))
        };
        let version = take(0, 1)?[0];
        refbus_core::format::check(RecordKind::LogEntry, Some(u64::from(version)), || {
            "this log entry".to_owned()
        })
        .map_err(LeafError::Format)?;
        let kind = take(1, 1)?[0];
        let seq = u64::from_be_bytes(
            take(2, 8)?
                .try_into()
                .map_err(|_| LeafError::Malformed("seq"))?,
        );
        let len = usize::from(u16::from_be_bytes(
            take(10, 2)?
                .try_into()
                .map_err(|_| LeafError::Malformed("length"))?,
        ));
        let subject = std::str::from_utf8(take(12, len)?)
            .map_err(|_| LeafError::Malformed("subject is not UTF-8"))?
            .to_owned();
        let digest: [u8; 32] = take(12 + len, 32)?
            .try_into()
            .map_err(|_| LeafError::Malformed("digest"))?;
        if bytes.len() != 12 + len + 32 {
            return Err(LeafError::Malformed("trailing bytes"));
        }
        match kind {
            KIND_MESSAGE => Ok(Leaf {
                seq,
                subject,
                digest: Some(digest),
            }),
            KIND_MISSING if subject.is_empty() && digest == [0; 32] => Ok(Leaf::missing(seq)),
            _ => Err(LeafError::Malformed("unknown kind")),
        }
    }

    /// The RFC 6962 leaf hash of the entry.
    pub fn hash(&self) -> Hash {
        tlog_tiles::record_hash(&self.encode())
    }
}

impl std::fmt::Display for Leaf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.digest {
            None => write!(f, "seq {} (missing: the stream skipped it)", self.seq),
            Some(digest) => write!(
                f,
                "seq {} subject {} payload sha256 {}",
                self.seq,
                self.subject,
                data_encoding::HEXLOWER.encode(digest)
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_leaf_round_trips_and_its_layout_is_the_documented_one() {
        let leaf = Leaf::message(7, "refbus.v1.ref.a.b.c", b"payload");
        let bytes = leaf.encode();
        assert_eq!(bytes[0], 1);
        assert_eq!(bytes[1], 0);
        assert_eq!(&bytes[2..10], &7u64.to_be_bytes());
        assert_eq!(&bytes[10..12], &19u16.to_be_bytes());
        assert_eq!(Leaf::decode(&bytes), Ok(leaf));
        let missing = Leaf::missing(9);
        assert_eq!(Leaf::decode(&missing.encode()), Ok(missing));
        assert!(Leaf::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn an_entry_of_an_unknown_version_is_refused_saying_so() {
        let mut bytes = Leaf::message(7, "refbus.v1.ref.a.b.c", b"payload").encode();
        bytes[0] = 2;
        assert_eq!(
            Leaf::decode(&bytes).unwrap_err().to_string(),
            "log entry format 2 is unknown; this refbus reads format 1; upgrade this reader \
             before the writers (docs/ARCHITECTURE.md, \"Record formats and versions\")"
        );
    }
}
