//! Record formats through the one record check: an event record of a format this build does
//! not read is refused (`Problem::Format`) with a sentence naming the record, the format found
//! and the formats known, whatever its body; one without a format is read as format 1.

use bytes::Bytes;
use refbus_bus::replay::{Replayed, StoredMessage};
use refbus_bus::{EventRecord, Replayer, subjects};
use refbus_core::event::Change;
use refbus_core::integrity::Problem;
use refbus_core::signature::Signer;
use refbus_core::{Event, Referral, Timestamp};

mod common;
use common::{actor, agency};

/// The referral every test here reads: Dinsos to UPTD PPA.
fn created() -> (Event, Referral) {
    common::created("maros-dinsos", "maros-uptd-ppa", "f-1")
}

fn keys() -> &'static refbus_seal::signing::SigningKeys {
    static KEYS: std::sync::OnceLock<refbus_seal::signing::SigningKeys> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| refbus_seal::signing::SigningKeys::generate(&registry()))
}

fn registry() -> refbus_core::Registry {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    refbus_config::load(root.join("deploy/config/refbus.toml")).unwrap()
}

fn verifier() -> refbus_bus::Verifier {
    refbus_bus::Verifier::new(
        std::sync::Arc::new(registry()),
        std::sync::Arc::new(keys().signers()),
        None,
    )
}

/// `event`, after `state`, signed by its author for `subject`: the payload as written.
fn payload(event: Event, after: &Referral, subject: &str) -> Bytes {
    let key = keys().key(&Signer::of(&event.actor));
    EventRecord::signed(event, after, subject, &key).1
}

fn message(seq: u64, subject: &str, prev_seq: u64, payload: impl Into<Bytes>) -> StoredMessage {
    StoredMessage {
        seq,
        subject: subject.to_owned(),
        stored_at: Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap(),
        headers: vec![("Refbus-Prev-Seq".to_owned(), prev_seq.to_string())],
        payload: payload.into(),
    }
}

fn replace(payload: &[u8], from: &str, to: &str) -> Vec<u8> {
    let text = std::str::from_utf8(payload).unwrap();
    assert!(text.contains(from), "{text}");
    text.replacen(from, to, 1).into_bytes()
}

fn refusal(subject: &str, seq: u64, found: u64) -> String {
    format!(
        "{subject} (stream sequence {seq}): event record format {found} is unknown; this \
         refbus reads format 1; upgrade this reader before the writers (docs/ARCHITECTURE.md, \
         \"Record formats and versions\")"
    )
}

#[test]
fn an_event_record_of_an_unknown_format_is_refused_and_one_without_a_format_is_format_1() {
    let (creation, state) = created();
    let subject = subjects::referral(state.recipient(), state.sender(), &state.id);
    let written = payload(creation, &state, &subject);
    // Every record is written with its format, right after the event (so a reader that takes
    // the event's bytes after `{"event":`, as verify_record.py does, is unchanged).
    assert!(
        std::str::from_utf8(&written)
            .unwrap()
            .contains("},\"format\":1,\"hash\":"),
    );
    // Written before formats were recorded: no `format`, read as format 1.
    let legacy = replace(&written, ",\"format\":1", "");
    let accepted = Event {
        referral_id: state.id,
        case_id: state.creation.case_id.clone(),
        seq: 2,
        at: state.updated_at.plus(std::time::Duration::from_secs(60)),
        actor: actor("maros-uptd-ppa"),
        request_id: None,
        change: Change::Accepted,
        prev_hash: state.last_hash,
    };
    let after = refbus_core::evolve(Some(state.clone()), &accepted).unwrap();
    let acceptance = payload(accepted, &after, &subject);
    // A newer writer's record: the same bytes under format 2 (which would decode here), and a
    // body this build cannot decode at all.
    let format_2 = replace(&acceptance, "\"format\":1", "\"format\":2");
    let format_3 = br#"{"format":3,"events":[{"kind":"accepted"}]}"#.to_vec();

    let verifier = verifier();
    let mut replayer = Replayer::new(&verifier);
    match replayer.check(&message(1, &subject, 0, legacy)) {
        Replayed::Record(stored) => assert_eq!(stored.record.state.id, state.id),
        other => panic!("a record without a format is format 1: {other:?}"),
    }
    for (seq, body, found) in [(2, format_2, 2), (3, format_3, 3)] {
        match replayer.check(&message(seq, &subject, 1, body)) {
            Replayed::Refused {
                seq: refused,
                failure,
                ..
            } => {
                assert_eq!(refused, seq);
                assert_eq!(failure.problem, Problem::Format);
                assert_eq!(failure.detail, refusal(&subject, seq, found));
            }
            other => panic!("format {found} must be refused: {other:?}"),
        }
    }
    assert_eq!(verifier.refused(), 2, "each refusal is reported");
    // The referral goes on from its last verified record.
    match replayer.check(&message(4, &subject, 1, acceptance)) {
        Replayed::Record(stored) => assert_eq!(stored.record.state.status, after.status),
        other => panic!("the format 1 acceptance follows the creation: {other:?}"),
    }
    // The unchecked decoders refuse it too, and say so.
    let err = EventRecord::decode(br#"{"format":2,"event":{}}"#).unwrap_err();
    assert!(
        err.to_string()
            .contains("event record format 2 is unknown; this refbus reads format 1"),
        "{err}"
    );
}

#[tokio::test]
async fn an_inbox_reports_a_notice_of_an_unknown_format_and_delivers_the_next() {
    use futures::StreamExt;
    use refbus_bus::{Bus, Item, StreamSettings};
    use refbus_core::IntegrityNotice;

    let server = refbus_testkit::NatsServer::start().unwrap();
    let bus = Bus::connect(&server.url(), &StreamSettings::default())
        .await
        .unwrap();
    let coordinator = agency("maros-bappeda");
    let subject = subjects::integrity_notices_for(&coordinator);
    let verifier = verifier();
    let mut inbox = bus
        .watch(&verifier, vec![subject.clone()], 0)
        .await
        .unwrap();
    // A newer writer's notice, then one of this build.
    let newer = refbus_testkit::hostile::publish_raw(
        &server.url(),
        &subject,
        br#"{"format":2,"notices":[]}"#.to_vec(),
    )
    .await
    .unwrap();
    let notice = IntegrityNotice {
        subject: "refbus.v1.ref.a.b.c".to_owned(),
        stream_seq: newer,
        referral_id: None,
        problem: Problem::Format,
        detail: "a newer writer".to_owned(),
        at: Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap(),
    };
    let written = bus
        .publish_integrity_notice(&coordinator, &notice)
        .await
        .unwrap();
    let item = tokio::time::timeout(std::time::Duration::from_secs(20), inbox.next())
        .await
        .expect("nothing came")
        .unwrap()
        .unwrap();
    match item {
        Item::Integrity(stored) => {
            assert_eq!(stored.seq, written.seq);
            assert_eq!(stored.record, notice);
        }
        other => panic!("expected the integrity notice, got {other:?}"),
    }
    // The one it could not read was reported (an ERROR line naming it, and the count).
    assert_eq!(verifier.refused(), 1);
}
