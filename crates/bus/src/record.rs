//! What a message on the bus holds: an event with its hash and the referral's state after it,
//! or a notice.
//!
//! An event message is JSON:
//! `{"event":<canonical event>,"hash":"<hex>","sig":<signature>,"state":<referral>}`, where the
//! signature (see `refbus_core::signature`) covers the subject and the event's exact bytes.
//! The event is written in its canonical encoding (see `refbus_core::chain`), byte for byte what
//! the hash covers, so an auditor can check it without trusting this code. The state is a
//! snapshot for readers: the current state of a referral is one read of the last message on its
//! subject. It omits the sealed identity and creation note, which stay in the `created` event
//! alone so they are stored once; auditors recompute the state from the events and compare.

use bytes::Bytes;
use refbus_core::signature::{Signature, SigningKey};
use refbus_core::{Event, EventHash, Notice, Referral, chain};
use serde::{Deserialize, Serialize};

/// An event as stored, with the state it led to.
#[derive(Debug, Clone, PartialEq)]
pub struct EventRecord {
    pub event: Event,
    /// The hash of the event, as its writer computed it.
    pub hash: EventHash,
    /// The writer's signature over the subject and the event.
    pub signature: Option<Signature>,
    /// The referral after the event, without its sealed creation payloads.
    pub state: Referral,
}

#[derive(Deserialize)]
struct Stored {
    event: Event,
    hash: EventHash,
    #[serde(default)]
    sig: Option<Signature>,
    state: Referral,
}

#[derive(Serialize)]
struct StoredState<'a> {
    state: &'a Referral,
}

impl EventRecord {
    /// Builds the record for `event`, which led to `state_after`, signed by `key` for storage
    /// on `subject`.
    pub fn new(
        event: Event,
        state_after: &Referral,
        subject: &str,
        key: &SigningKey,
    ) -> EventRecord {
        EventRecord::signed(event, state_after, subject, key).0
    }

    /// [`EventRecord::new`] with its payload ([`EventRecord::encode`]), the event's canonical
    /// bytes computed once for the hash, the signature and the payload (each encoding of an
    /// event builds a JSON tree: a writer's largest cost after signing).
    pub fn signed(
        event: Event,
        state_after: &Referral,
        subject: &str,
        key: &SigningKey,
    ) -> (EventRecord, Bytes) {
        let bytes = chain::canonical_bytes(&event);
        let record = EventRecord {
            hash: chain::hash_of_canonical(&bytes),
            signature: Some(key.sign(subject, &bytes)),
            event,
            state: snapshot(state_after),
        };
        let payload = record.encode_with(&bytes);
        (record, payload)
    }

    /// The message payload.
    pub fn encode(&self) -> Bytes {
        self.encode_with(&chain::canonical_bytes(&self.event))
    }

    /// The payload, `event` being the canonical bytes of the record's event.
    fn encode_with(&self, event: &[u8]) -> Bytes {
        // Serializing our own types cannot fail.
        let state = serde_json::to_vec(&StoredState { state: &self.state }).unwrap_or_default();
        let mut out = Vec::with_capacity(event.len() + state.len() + 96);
        out.extend_from_slice(b"{\"event\":");
        out.extend_from_slice(event);
        out.extend_from_slice(b",\"hash\":\"");
        out.extend_from_slice(self.hash.to_hex().as_bytes());
        out.extend_from_slice(b"\",");
        if let Some(signature) = &self.signature {
            out.extend_from_slice(b"\"sig\":");
            // Serializing our own types cannot fail.
            out.extend_from_slice(&serde_json::to_vec(signature).unwrap_or_default());
            out.push(b',');
        }
        // `{"state":...}` without its opening brace.
        out.extend_from_slice(state.get(1..).unwrap_or_default());
        Bytes::from(out)
    }

    pub fn decode(payload: &[u8]) -> Result<EventRecord, serde_json::Error> {
        let stored: Stored = serde_json::from_slice(payload)?;
        Ok(EventRecord {
            event: stored.event,
            hash: stored.hash,
            signature: stored.sig,
            state: stored.state,
        })
    }

    /// Whether the stored hash is the hash of the stored event.
    pub fn hash_matches(&self) -> bool {
        chain::hash(&self.event) == self.hash
    }
}

#[derive(Deserialize)]
struct StateOnly {
    state: Referral,
}

/// A state stored as JSON text, decoded.
pub fn decode_state_text(json: &str) -> Result<Referral, serde_json::Error> {
    serde_json::from_str(json)
}

/// The state alone of an event message: the event beside it is skipped, not decoded.
pub fn decode_state(payload: &[u8]) -> Result<Referral, serde_json::Error> {
    serde_json::from_slice::<StateOnly>(payload).map(|stored| stored.state)
}

/// An event message read for checking, without decoding what checking does not need: the
/// event, the hash of its exact stored bytes, and the stored state as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedRecord {
    pub event: Event,
    /// The hash the writer stored beside the event.
    pub stored_hash: EventHash,
    /// SHA-256 of the event exactly as stored: what the next event must name, and what a
    /// tampered byte would change.
    pub bytes_hash: EventHash,
    pub signature: Option<Signature>,
    /// The event exactly as stored (what the hash and the signature cover).
    pub event_json: Box<str>,
    pub state_json: Box<str>,
}

#[derive(Deserialize)]
struct StoredParts<'a> {
    #[serde(borrow)]
    event: &'a serde_json::value::RawValue,
    hash: EventHash,
    #[serde(default)]
    sig: Option<Signature>,
    #[serde(borrow)]
    state: &'a serde_json::value::RawValue,
}

impl CheckedRecord {
    pub fn decode(payload: &[u8]) -> Result<CheckedRecord, serde_json::Error> {
        use sha2::{Digest, Sha256};
        let parts: StoredParts<'_> = serde_json::from_slice(payload)?;
        let event_text = parts.event.get();
        Ok(CheckedRecord {
            event: serde_json::from_str(event_text)?,
            stored_hash: parts.hash,
            bytes_hash: EventHash(Sha256::digest(event_text.as_bytes()).into()),
            signature: parts.sig,
            event_json: event_text.into(),
            state_json: parts.state.get().into(),
        })
    }

    /// Whether the stored state is exactly `snapshot` (a state made by [`into_snapshot`]).
    pub fn state_is(&self, snapshot: &Referral) -> bool {
        serde_json::to_string(snapshot).is_ok_and(|json| *json == *self.state_json)
    }
}

/// The state as stored in snapshots: sealed creation payloads removed (they stay in the
/// `created` event).
pub fn snapshot(state: &Referral) -> Referral {
    into_snapshot(state.clone())
}

/// [`snapshot`] without copying the state.
pub fn into_snapshot(state: Referral) -> Referral {
    state.into_snapshot()
}

/// A notice as stored: JSON.
pub fn encode_notice(notice: &Notice) -> Bytes {
    Bytes::from(serde_json::to_vec(notice).unwrap_or_default())
}

pub fn decode_notice(payload: &[u8]) -> Result<Notice, serde_json::Error> {
    serde_json::from_slice(payload)
}
