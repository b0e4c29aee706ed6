//! The per-referral hash chain: a stable canonical encoding of events, and SHA-256 over it.
//!
//! The canonical encoding is JSON with object keys sorted by their UTF-8 bytes, no insignificant
//! whitespace, integers only (no floats anywhere in an event), strings escaped as `serde_json`
//! escapes them, and absent optional fields omitted. An auditor can recompute it in any language;
//! in Python: `json.dumps(event, sort_keys=True, separators=(",", ":"), ensure_ascii=False)`.
//!
//! `hash(event) = SHA-256(canonical(event))`, and every event carries the hash of the previous
//! event of its referral (`prev_hash`), so altering, removing or reordering any event of a
//! referral breaks every later link.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::event::Event;

/// A SHA-256 digest of an event's canonical encoding, written as 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct EventHash(pub [u8; 32]);

impl EventHash {
    /// The predecessor named by the first event of every referral.
    pub const GENESIS: EventHash = EventHash([0; 32]);

    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }

    pub fn from_hex(text: &str) -> Option<EventHash> {
        let mut bytes = [0u8; 32];
        hex::decode_to_slice(text, &mut bytes).ok()?;
        Some(EventHash(bytes))
    }
}

impl fmt::Debug for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "EventHash({})", &self.to_hex()[..12])
    }
}

impl fmt::Display for EventHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl Serialize for EventHash {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_hex())
    }
}

impl<'de> Deserialize<'de> for EventHash {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        EventHash::from_hex(&text)
            .ok_or_else(|| serde::de::Error::custom("a hash is 64 lower-case hex digits"))
    }
}

/// The canonical encoding of an event (see the module documentation).
pub fn canonical_bytes(event: &Event) -> Vec<u8> {
    // Serializing our own types to a `Value` cannot fail: every map key is a string.
    let value = serde_json::to_value(event).unwrap_or(Value::Null);
    let mut out = Vec::with_capacity(512);
    write_canonical(&value, &mut out);
    out
}

/// The hash that the next event of this referral must name as `prev_hash`.
pub fn hash(event: &Event) -> EventHash {
    hash_of_canonical(&canonical_bytes(event))
}

/// [`hash`] of an event whose [`canonical_bytes`] are already at hand: a writer that signs and
/// stores those bytes encodes the event once, not once per use.
pub fn hash_of_canonical(bytes: &[u8]) -> EventHash {
    EventHash(Sha256::digest(bytes).into())
}

/// Writes `value` with keys sorted explicitly, whatever map type `serde_json` was built with
/// (its `preserve_order` feature would otherwise change the encoding).
fn write_canonical(value: &Value, out: &mut Vec<u8>) {
    match value {
        Value::Object(map) => {
            let mut entries: Vec<_> = map.iter().collect();
            entries.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
            out.push(b'{');
            for (index, (key, item)) in entries.into_iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_scalar(&Value::String(key.clone()), out);
                out.push(b':');
                write_canonical(item, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (index, item) in items.iter().enumerate() {
                if index > 0 {
                    out.push(b',');
                }
                write_canonical(item, out);
            }
            out.push(b']');
        }
        scalar => write_scalar(scalar, out),
    }
}

fn write_scalar(value: &Value, out: &mut Vec<u8>) {
    // Scalars have exactly one serde_json rendering; writing to a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, value);
}

/// A break in a referral's chain, found by [`verify`].
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ChainError {
    #[error("event {seq} of referral {referral} belongs to referral {found}")]
    WrongReferral {
        referral: String,
        seq: u64,
        found: String,
    },
    #[error(
        "expected event {expected} of the referral, found event {found}: an event is missing or out of order"
    )]
    Gap { expected: u64, found: u64 },
    #[error(
        "event {seq} names {claimed} as its predecessor, but the previous event hashes to {actual}: an event was altered, removed or inserted"
    )]
    BrokenLink {
        seq: u64,
        claimed: EventHash,
        actual: EventHash,
    },
}

/// Checks that `events` are one referral's complete chain from its first event, in order.
/// Returns the hash of the last event.
pub fn verify<'a>(events: impl IntoIterator<Item = &'a Event>) -> Result<EventHash, ChainError> {
    let mut previous = EventHash::GENESIS;
    let mut referral = None;
    for (expected_seq, event) in (1..).zip(events) {
        let first = *referral.get_or_insert(event.referral_id);
        if event.referral_id != first {
            return Err(ChainError::WrongReferral {
                referral: first.to_string(),
                seq: event.seq,
                found: event.referral_id.to_string(),
            });
        }
        if event.seq != expected_seq {
            return Err(ChainError::Gap {
                expected: expected_seq,
                found: event.seq,
            });
        }
        if event.prev_hash != previous {
            return Err(ChainError::BrokenLink {
                seq: event.seq,
                claimed: event.prev_hash,
                actual: previous,
            });
        }
        previous = hash(event);
    }
    Ok(previous)
}
