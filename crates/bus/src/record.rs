//! What a message on the bus holds: an event with its hash and the referral's state after it,
//! or a notice.
//!
//! An event message is JSON:
//! `{"event":<canonical event>,"format":1,"hash":"<hex>","sig":<signature>,"state":<referral>}`,
//! where the signature (see `refbus_core::signature`) covers the subject and the event's exact
//! bytes. `format` is the record's format (`refbus_core::format`), checked before anything else
//! is believed; a record without one was written before formats were recorded and is format 1.
//! The format is bound to the signature through its domain (`refbus.v1.event-signature` is
//! format 1's: a future format signs under its own), so a changed `format` fails the check.
//! Notices, integrity notices and index entries carry `"format":1` first.
//! The event is written in its canonical encoding (see `refbus_core::chain`), byte for byte what
//! the hash covers, so an auditor can check it without trusting this code. The state is a
//! snapshot for readers: the current state of a referral is one read of the last message on its
//! subject. It omits the sealed identity and creation note, which stay in the `created` event
//! alone so they are stored once; auditors recompute the state from the events and compare.

use bytes::Bytes;
use refbus_core::format::RecordKind;
use refbus_core::signature::{Signature, SigningKey};
use refbus_core::{Event, EventHash, Notice, Referral, chain};
use serde::de::DeserializeOwned;
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
    #[serde(default)]
    format: Option<u64>,
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
        out.extend_from_slice(b",\"format\":");
        out.extend_from_slice(RecordKind::Event.written().to_string().as_bytes());
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

    /// The record in `payload`; an unknown format is an error (naming the format found and
    /// those known), whatever else the payload holds.
    pub fn decode(payload: &[u8]) -> Result<EventRecord, serde_json::Error> {
        let stored: Stored = serde_json::from_slice(payload).map_err(|err| {
            known_format::<serde_json::Error>(RecordKind::Event, format_of(payload))
                .err()
                .unwrap_or(err)
        })?;
        known_format(RecordKind::Event, stored.format)?;
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
    #[serde(default)]
    format: Option<u64>,
    state: Referral,
}

#[derive(Deserialize)]
struct FormatOnly {
    #[serde(default)]
    format: Option<u64>,
}

/// The format a JSON record says it is (`None`: no `format` field, or not a JSON object with
/// a numeric one). Read apart from the rest only when the rest does not decode: a record of
/// another format need not look like this build's.
pub fn format_of(payload: &[u8]) -> Option<u64> {
    serde_json::from_slice::<FormatOnly>(payload)
        .ok()
        .and_then(|only| only.format)
}

/// A decoding error unless this build reads `found` (`None`: format 1) for `kind`. For the
/// decoders whose callers name the record themselves (by sequence); the record check names it
/// in full (`refbus_core::integrity::check_format`).
fn known_format<E: serde::de::Error>(kind: RecordKind, found: Option<u64>) -> Result<u64, E> {
    refbus_core::format::check(kind, found, || "this record".to_owned()).map_err(E::custom)
}

/// A JSON record of `kind` that carries its format first: `{"format":1,...value's fields}`.
pub(crate) fn encode_versioned(kind: RecordKind, value: &impl Serialize) -> Vec<u8> {
    // Serializing our own types cannot fail; every versioned record is a JSON object.
    let body = serde_json::to_vec(value).unwrap_or_default();
    let fields = body
        .get(1..body.len().saturating_sub(1))
        .unwrap_or_default();
    let mut out = Vec::with_capacity(body.len() + 16);
    out.extend_from_slice(b"{\"format\":");
    out.extend_from_slice(kind.written().to_string().as_bytes());
    if !fields.is_empty() {
        out.push(b',');
        out.extend_from_slice(fields);
    }
    out.push(b'}');
    out
}

/// Why a JSON record was not decoded.
#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    /// Its format is not one this build reads (the refusal says where, what and what is known).
    #[error(transparent)]
    Format(refbus_core::format::UnknownFormat),
    #[error("{0}")]
    Json(#[from] serde_json::Error),
}

impl DecodeError {
    /// The record check's failure for it: `Problem::Format`, or `Problem::Unreadable`.
    pub fn failure(&self, what: &str) -> refbus_core::integrity::Failure {
        use refbus_core::integrity::{Failure, Problem};
        match self {
            DecodeError::Format(unknown) => Failure::from(unknown.clone()),
            DecodeError::Json(err) => Failure::new(Problem::Unreadable, format!("{what}: {err}")),
        }
    }
}

/// The record of `kind` in `payload`, stored at `subject` and `seq`: its format checked first
/// (`None`: format 1), then the rest decoded (`T` ignores the `format` field).
pub(crate) fn decode_versioned<T: DeserializeOwned>(
    kind: RecordKind,
    payload: &[u8],
    subject: &str,
    seq: u64,
) -> Result<T, DecodeError> {
    refbus_core::format::check(kind, format_of(payload), || {
        refbus_core::format::on_stream(subject, seq)
    })
    .map_err(DecodeError::Format)?;
    Ok(serde_json::from_slice(payload)?)
}

/// A state stored as JSON text, decoded.
pub fn decode_state_text(json: &str) -> Result<Referral, serde_json::Error> {
    serde_json::from_str(json)
}

/// The state alone of an event message: the event beside it is skipped, not decoded.
pub fn decode_state(payload: &[u8]) -> Result<Referral, serde_json::Error> {
    let stored = serde_json::from_slice::<StateOnly>(payload).map_err(|err| {
        known_format::<serde_json::Error>(RecordKind::Event, format_of(payload))
            .err()
            .unwrap_or(err)
    })?;
    known_format(RecordKind::Event, stored.format)?;
    Ok(stored.state)
}

/// An event message read for checking, without decoding what checking does not need: the
/// event, the hash of its exact stored bytes, and the stored state as JSON text.
#[derive(Debug, Clone, PartialEq)]
pub struct CheckedRecord {
    /// The format the record carries (`None`: written before formats were recorded).
    pub format: Option<u64>,
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
    #[serde(default)]
    format: Option<u64>,
    hash: EventHash,
    #[serde(default)]
    sig: Option<Signature>,
    #[serde(borrow)]
    state: &'a serde_json::value::RawValue,
}

impl CheckedRecord {
    /// The record stored at `subject` and `seq`, its format checked before its event is
    /// decoded (the record check's first step, `refbus_core::integrity::check_format`).
    pub fn decode(
        payload: &[u8],
        subject: &str,
        seq: u64,
    ) -> Result<CheckedRecord, refbus_core::integrity::Failure> {
        use refbus_core::integrity::{Failure, Problem, check_format};
        use sha2::{Digest, Sha256};
        let unreadable = |err: serde_json::Error| {
            // A record that does not decode may be of a format this build does not read: say
            // that rather than "not a refbus record".
            match check_format(RecordKind::Event, format_of(payload), subject, seq) {
                Err(failure) => failure,
                Ok(_) => Failure::new(Problem::Unreadable, format!("not a refbus record: {err}")),
            }
        };
        let parts: StoredParts<'_> = serde_json::from_slice(payload).map_err(unreadable)?;
        check_format(RecordKind::Event, parts.format, subject, seq)?;
        let event_text = parts.event.get();
        Ok(CheckedRecord {
            format: parts.format,
            event: serde_json::from_str(event_text).map_err(unreadable)?,
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
    Bytes::from(encode_versioned(RecordKind::Notice, notice))
}

/// The notice in `payload`, its format checked first (`subject` and `seq` name it if refused).
pub fn decode_notice(payload: &[u8], subject: &str, seq: u64) -> Result<Notice, DecodeError> {
    decode_versioned(RecordKind::Notice, payload, subject, seq)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Small {
        referral: String,
        prev: u64,
    }

    const REFUSAL: &str = "format 2 is unknown; this refbus reads format 1; upgrade this \
                           reader before the writers (docs/ARCHITECTURE.md, \"Record formats \
                           and versions\")";

    #[test]
    fn versioned_json_records_carry_their_format_first_and_read_without_one_as_format_1() {
        let small = Small {
            referral: "r".to_owned(),
            prev: 3,
        };
        let written = encode_versioned(RecordKind::IndexEntry, &small);
        assert_eq!(written, br#"{"format":1,"referral":"r","prev":3}"#);
        let read: Small = decode_versioned(RecordKind::IndexEntry, &written, "s", 1).unwrap();
        assert_eq!(read, small);
        // Written before formats were recorded: format 1.
        let legacy: Small = decode_versioned(
            RecordKind::IndexEntry,
            br#"{"referral":"r","prev":3}"#,
            "s",
            1,
        )
        .unwrap();
        assert_eq!(legacy, small);
    }

    #[test]
    fn a_json_record_of_an_unknown_format_is_refused_naming_it_whatever_it_holds() {
        for (kind, name) in [
            (RecordKind::IndexEntry, "index entry"),
            (RecordKind::Notice, "escalation notice"),
            (RecordKind::IntegrityNotice, "integrity notice"),
        ] {
            // Whether or not the rest would decode as this build's.
            for payload in [
                &br#"{"format":2,"referral":"r","prev":3}"#[..],
                br#"{"format":2,"entries":[1,2]}"#,
            ] {
                let err =
                    decode_versioned::<Small>(kind, payload, "refbus.v1.idx.a.b", 9).unwrap_err();
                let failure = err.failure("not an index entry");
                assert_eq!(failure.problem, refbus_core::integrity::Problem::Format);
                assert_eq!(
                    failure.detail,
                    format!("refbus.v1.idx.a.b (stream sequence 9): {name} {REFUSAL}")
                );
            }
        }
        let err = decode_notice(br#"{"format":2}"#, "refbus.v1.notice.a.x", 4).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("refbus.v1.notice.a.x (stream sequence 4): escalation notice {REFUSAL}")
        );
        // Not a record at all: unreadable, not a format problem.
        let err = decode_versioned::<Small>(RecordKind::IndexEntry, b"{not", "s", 1).unwrap_err();
        assert_eq!(
            err.failure("not an index entry").problem,
            refbus_core::integrity::Problem::Unreadable
        );
    }
}
