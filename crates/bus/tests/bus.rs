//! The bus against a real nats-server: appends with dedupe and optimistic concurrency, reads,
//! inbox watches that resume without gaps or duplicates, provisioning, headers.

use futures::StreamExt;
use refbus_bus::record::snapshot;
use refbus_bus::{Append, AppendErrorKind, Bus, Item, ReadErrorKind, StreamSettings, subjects};
use refbus_core::event::{Actor, Change};
use refbus_core::referral::Priority;
use refbus_core::{Event, Referral, ReferralId, RequestId, Timestamp, evolve};
use refbus_testkit::NatsServer;

mod common;
use common::{actor, agency, created};

fn next(state: &Referral, change: Change, by: &str) -> (Event, Referral) {
    let event = Event {
        referral_id: state.id,
        case_id: state.creation.case_id.clone(),
        seq: state.seq + 1,
        at: state.updated_at.plus(std::time::Duration::from_secs(60)),
        actor: actor(by),
        request_id: None,
        change,
        prev_hash: state.last_hash,
    };
    let after = evolve(Some(state.clone()), &event).unwrap();
    (event, after)
}

fn subject_of(state: &Referral) -> String {
    subjects::referral(state.recipient(), state.sender(), &state.id)
}

async fn append(
    bus: &Bus,
    event: Event,
    state: &Referral,
    expected: u64,
    id: &str,
) -> Result<refbus_bus::Appended, refbus_bus::AppendError> {
    let key = test_keys().key(&refbus_core::signature::Signer::of(&event.actor));
    // The writer's request `id`: appends with the same `id` by the same agency are one.
    let writer = event
        .actor
        .agency()
        .cloned()
        .unwrap_or_else(|| agency("test-router"));
    let request_id = RequestId::new(id).unwrap();
    let idempotency = refbus_bus::Idempotency::Request {
        agency: &writer,
        request_id: &request_id,
    };
    bus.append(&key, Append::after(event, state, expected, idempotency))
        .await
        .map(|(appended, _)| appended)
}

/// The record check, with this test binary's keys.
fn verifier() -> refbus_bus::Verifier {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let registry = refbus_config::load(root.join("deploy/config/refbus.toml")).unwrap();
    refbus_bus::Verifier::new(
        std::sync::Arc::new(registry),
        std::sync::Arc::new(test_keys().signers()),
        None,
    )
}

/// The signing keys of this test binary's writers.
fn test_keys() -> &'static refbus_seal::signing::SigningKeys {
    static KEYS: std::sync::OnceLock<refbus_seal::signing::SigningKeys> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
        let registry = refbus_config::load(root.join("deploy/config/refbus.toml")).unwrap();
        refbus_seal::signing::SigningKeys::generate(&registry)
    })
}

async fn bus(server: &NatsServer) -> Bus {
    Bus::connect(&server.url(), &StreamSettings::default())
        .await
        .unwrap()
}

#[tokio::test]
async fn appends_are_acknowledged_deduplicated_and_never_fork_a_referral() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let (event, state) = created("maros-dinsos", "maros-uptd-ppa", "req-1");
    let first = append(&bus, event.clone(), &state, 0, "maros-dinsos:req-1")
        .await
        .unwrap();
    assert!(!first.duplicate);

    // A second create of the same referral, whatever its message id, is refused: JetStream
    // checks the expected sequence before the message id, so even an exact retry is a conflict
    // (the adapter recognises its own retries from the referral's history).
    for id in ["maros-dinsos:req-1", "maros-dinsos:req-other"] {
        let fork = append(&bus, event.clone(), &state, 0, id)
            .await
            .unwrap_err();
        assert_eq!(fork.kind(), AppendErrorKind::Conflict);
    }

    // Two writers that read the same state: the first wins, the second is refused.
    let (accept, accepted) = next(&state, Change::Accepted, "maros-uptd-ppa");
    let (reject, rejected) = next(
        &state,
        Change::Rejected {
            reason: refbus_core::referral::Reason {
                code: "no_capacity".parse().unwrap(),
                note: None,
            },
        },
        "maros-uptd-ppa",
    );
    let won = append(&bus, accept, &accepted, first.seq, "maros-uptd-ppa:a")
        .await
        .unwrap();
    let lost = append(&bus, reject, &rejected, first.seq, "maros-uptd-ppa:b")
        .await
        .unwrap_err();
    assert_eq!(lost.kind(), AppendErrorKind::Conflict);

    // A retry that arrives after someone else appended names the new last sequence: then the
    // message id is what recognises it, and nothing is written twice.
    let (receipt, received) = next(&accepted, Change::Started, "maros-uptd-ppa");
    let stored = append(
        &bus,
        receipt.clone(),
        &received,
        won.seq,
        "maros-uptd-ppa:n",
    )
    .await
    .unwrap();
    let (later, after_later) = next(&received, Change::Resumed, "maros-dinsos");
    let later_seq = append(&bus, later, &after_later, stored.seq, "maros-dinsos:x")
        .await
        .unwrap();
    let (retry_event, _) = next(&after_later, Change::Started, "maros-uptd-ppa");
    let retry = append(
        &bus,
        retry_event,
        &after_later,
        later_seq.seq,
        "maros-uptd-ppa:n",
    )
    .await
    .unwrap();
    assert_eq!(
        retry,
        refbus_bus::Appended {
            seq: stored.seq,
            duplicate: true
        }
    );

    let history = bus.history(&subject_of(&state)).await.unwrap();
    assert_eq!(
        history.iter().map(|s| s.seq).collect::<Vec<_>>(),
        vec![first.seq, won.seq, stored.seq, later_seq.seq]
    );
    assert_eq!(history[1].prev_seq, first.seq);
    let events: Vec<Event> = history.iter().map(|s| s.record.event.clone()).collect();
    refbus_core::chain::verify(&events).unwrap();
    assert!(history.iter().all(|s| s.record.hash_matches()));

    // The current state is one read, by exact subject or by id.
    let last = bus.last(&subject_of(&state)).await.unwrap().unwrap();
    assert_eq!(last.record.state, snapshot(&after_later));
    let by_id = bus
        .last(&subjects::referral_patterns_for(&agency("maros-uptd-ppa"), &state.id)[0])
        .await
        .unwrap()
        .unwrap();
    assert_eq!(by_id.seq, later_seq.seq);
    assert!(
        bus.last(&subjects::referral_pattern(&ReferralId::from_bytes(
            [0; 16]
        )))
        .await
        .unwrap()
        .is_none()
    );
    assert_eq!(
        bus.event_at(first.seq)
            .await
            .unwrap()
            .unwrap()
            .record
            .event
            .seq,
        1
    );
}

#[tokio::test]
async fn an_inbox_resumes_from_its_cursor_without_gaps_or_duplicates() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let uptd = agency("maros-uptd-ppa");
    // To UPTD, from UPTD, and one UPTD is no party to.
    let (to_uptd, to_uptd_state) = created("maros-dinsos", "maros-uptd-ppa", "r1");
    let (from_uptd, from_uptd_state) = created("maros-uptd-ppa", "polres-maros", "r2");
    let (unrelated, unrelated_state) = created("maros-dinsos", "polres-maros", "r3");
    append(&bus, to_uptd, &to_uptd_state, 0, "a").await.unwrap();
    append(&bus, unrelated, &unrelated_state, 0, "b")
        .await
        .unwrap();
    let second = append(&bus, from_uptd, &from_uptd_state, 0, "c")
        .await
        .unwrap();
    let notice = refbus_bus::Notice {
        referral_id: unrelated_state.id,
        case_id: unrelated_state.creation.case_id.clone(),
        recipient: agency("polres-maros"),
        sender: agency("maros-dinsos"),
        service: "shelter".parse().unwrap(),
        priority: Priority::Urgent,
        clock: "acknowledge".parse().unwrap(),
        level: 2,
        repetition: 0,
        action: refbus_core::escalation::Action::Notify,
        notified: refbus_core::event::Notified {
            agency: uptd.clone(),
            role: refbus_core::escalation::Role::Head,
        },
        due_at: Timestamp::from_millis(0),
        at: Timestamp::from_millis(1),
        event_seq: 2,
    };
    bus.publish_notice(&notice).await.unwrap();

    let mut inbox = bus
        .watch(&verifier(), subjects::inbox(&uptd), 0)
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(inbox.next().await.unwrap().unwrap());
    }
    assert!(matches!(&seen[0], Item::Event(e) if e.record.event.referral_id == to_uptd_state.id));
    assert!(matches!(&seen[1], Item::Event(e) if e.record.event.referral_id == from_uptd_state.id));
    assert!(matches!(&seen[2], Item::Notice(n) if n.record == notice));
    drop(inbox);

    // Resume after the second item: exactly the third comes, then a new one live.
    let mut resumed = bus
        .watch(&verifier(), subjects::inbox(&uptd), second.seq)
        .await
        .unwrap();
    let first_again = resumed.next().await.unwrap().unwrap();
    assert_eq!(first_again.seq(), seen[2].seq());
    let (accept, accepted) = next(&to_uptd_state, Change::Accepted, "maros-uptd-ppa");
    let live = append(&bus, accept, &accepted, 1, "d").await.unwrap();
    let live_item = resumed.next().await.unwrap().unwrap();
    assert_eq!(live_item.seq(), live.seq);
}

#[tokio::test]
async fn an_inbox_delivers_no_record_written_around_its_referrals_history() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let dinsos = agency("maros-dinsos");
    let (create, created) = created("maros-dinsos", "maros-uptd-ppa", "around-1");
    let subject = subject_of(&created);
    let c = append(&bus, create.clone(), &created, 0, "c")
        .await
        .unwrap();
    let (receive, received) = next(&created, Change::Received, "maros-uptd-ppa");
    let r = append(&bus, receive.clone(), &received, c.seq, "r")
        .await
        .unwrap();

    // Around the history: UPTD's second "received" following the creation (stored after its
    // first, so JetStream's expected sequence is not the one it names), and Dinsos's second
    // creation, published without the expected sequence at all.
    let mut again = receive.clone();
    again.at = again.at.plus(std::time::Duration::from_secs(60));
    let again_state = evolve(Some(created.clone()), &again).unwrap();
    let key = test_keys().key(&refbus_core::signature::Signer::of(&again.actor));
    let request_id = RequestId::new("r-again").unwrap();
    let writer = agency("maros-uptd-ppa");
    let around = Append {
        event: again,
        state_after: &again_state,
        expected_last_seq: r.seq,
        prev_seq: c.seq,
        key: refbus_bus::Idempotency::Request {
            agency: &writer,
            request_id: &request_id,
        },
    };
    let forked = bus.append(&key, around).await.unwrap().0;
    let mut recreate = create.clone();
    recreate.at = recreate.at.plus(std::time::Duration::from_secs(600));
    let recreated = evolve(None, &recreate).unwrap();
    let key = test_keys().key(&refbus_core::signature::Signer::of(&recreate.actor));
    let (_, payload) = refbus_bus::EventRecord::signed(recreate, &recreated, &subject, &key);
    let second = refbus_testkit::hostile::publish_raw(&server.url(), &subject, payload.to_vec())
        .await
        .unwrap();

    // The acceptance that follows the real history (after the two, so without JetStream's
    // proof either) is delivered; the two are not.
    let (accept, accepted) = next(&received, Change::Accepted, "maros-uptd-ppa");
    let key = test_keys().key(&refbus_core::signature::Signer::of(&accept.actor));
    let request_id = RequestId::new("a").unwrap();
    let following = Append {
        event: accept,
        state_after: &accepted,
        expected_last_seq: second,
        prev_seq: r.seq,
        key: refbus_bus::Idempotency::Request {
            agency: &writer,
            request_id: &request_id,
        },
    };
    let a = bus.append(&key, following).await.unwrap().0;
    let mut inbox = bus
        .watch(&verifier(), subjects::inbox(&dinsos), 0)
        .await
        .unwrap();
    let mut seen = Vec::new();
    for _ in 0..3 {
        let item = tokio::time::timeout(std::time::Duration::from_secs(10), inbox.next())
            .await
            .expect("the inbox delivered too little")
            .unwrap()
            .unwrap();
        seen.push(item.seq());
    }
    assert_eq!(
        seen,
        [c.seq, r.seq, a.seq],
        "around: {} and {second}",
        forked.seq
    );
}

#[tokio::test]
async fn a_creation_whose_expected_sequence_was_checked_on_another_subject_is_not_taken_as_first() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let (create, created) = created("maros-dinsos", "maros-uptd-ppa", "elsewhere-1");
    let subject = subject_of(&created);
    let c = append(&bus, create.clone(), &created, 0, "c")
        .await
        .unwrap();

    // A second creation carrying "the subject's last sequence is 0", checked by JetStream on an
    // empty subject of the stream rather than its own: JetStream stores it on a subject that
    // holds the first creation.
    let mut again = create.clone();
    again.at = again.at.plus(std::time::Duration::from_secs(600));
    let recreated = evolve(None, &again).unwrap();
    let key = test_keys().key(&refbus_core::signature::Signer::of(&again.actor));
    let (_, payload) = refbus_bus::EventRecord::signed(again, &recreated, &subject, &key);
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(refbus_bus::headers::EXPECTED_LAST_SUBJECT_SEQ, "0");
    headers.insert(
        refbus_bus::headers::EXPECTED_LAST_SUBJECT_SEQ_SUBJECT,
        "refbus.v1.ref.maros-uptd-ppa.maros-dinsos.nothing-here",
    );
    let second = raw(&server)
        .await
        .publish_with_headers(subject.clone(), headers, payload)
        .await
        .unwrap()
        .await
        .expect("JetStream stores it: the check ran on the other subject")
        .sequence;
    assert!(second > c.seq);

    // Every reader keeps the first creation.
    let read = bus.referral(&verifier(), &subject).await.unwrap().unwrap();
    assert_eq!(read.seq, c.seq);
    let mut latest = bus
        .latest_checked(&verifier(), vec![subject.clone()])
        .await
        .unwrap();
    let only = latest.next().await.unwrap().unwrap();
    assert_eq!(only.seq, c.seq);
    assert!(latest.next().await.is_none());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latest_checked_yields_a_later_record_only_where_its_referrals_creation_passes() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    // More referrals past their creation than one batch of creation checks holds (512), some
    // only created: each comes out once, in stream order, with its last state.
    let mut expected = Vec::new();
    for n in 0..600 {
        let (event, state) = created("maros-dinsos", "maros-uptd-ppa", &format!("many-{n}"));
        let first = append(&bus, event, &state, 0, &format!("m{n}"))
            .await
            .unwrap();
        if n % 5 == 0 {
            expected.push((subject_of(&state), state));
            continue;
        }
        let (accept, accepted) = next(&state, Change::Accepted, "maros-uptd-ppa");
        append(&bus, accept, &accepted, first.seq, &format!("ma{n}"))
            .await
            .unwrap();
        expected.push((subject_of(&accepted), accepted));
    }
    // The recipient's acceptance of a referral the sender never created: signed, on a subject
    // naming both parties, and no creation before it.
    let (_, never_created) = created("maros-dinsos", "maros-uptd-ppa", "never-created");
    let (forged, forged_state) = next(&never_created, Change::Accepted, "maros-uptd-ppa");
    append(&bus, forged, &forged_state, 0, "forged")
        .await
        .unwrap();
    // A referral whose subject starts with a message that is no record (the creation and the
    // acceptance after it, stored without the creation's expected sequence): found past it.
    let (create, late) = created("maros-dinsos", "maros-uptd-ppa", "after-garbage");
    let subject = subject_of(&late);
    raw(&server)
        .await
        .publish(subject.clone(), "no record".into())
        .await
        .unwrap()
        .await
        .unwrap();
    let key = test_keys().key(&refbus_core::signature::Signer::of(&create.actor));
    let (_, payload) = refbus_bus::EventRecord::signed(create, &late, &subject, &key);
    let c = raw(&server)
        .await
        .publish(subject.clone(), payload)
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    let (accept, accepted) = next(&late, Change::Accepted, "maros-uptd-ppa");
    append(&bus, accept, &accepted, c, "late-accept")
        .await
        .unwrap();
    expected.push((subject.clone(), accepted));

    let read: Vec<_> = bus
        .latest_checked(
            &verifier(),
            vec![subjects::received_by(&agency("maros-uptd-ppa"))],
        )
        .await
        .unwrap()
        .map(|stored| {
            let stored = stored.unwrap();
            (stored.subject, stored.record.state)
        })
        .collect()
        .await;
    assert_eq!(read.len(), expected.len());
    for (read, expected) in read.iter().zip(&expected) {
        assert_eq!(read.0, expected.0);
        assert_eq!(snapshot(&read.1), snapshot(&expected.1), "{}", read.0);
    }
    assert!(!read.iter().any(|(_, state)| state.id == forged_state.id));
}

#[tokio::test]
async fn latest_gives_the_current_state_of_each_referral_once() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let mut expected = Vec::new();
    for n in 0..20 {
        let (event, state) = created("maros-dinsos", "maros-uptd-ppa", &format!("req-{n}"));
        let first = append(&bus, event, &state, 0, &format!("c{n}"))
            .await
            .unwrap();
        let (accept, accepted) = next(&state, Change::Accepted, "maros-uptd-ppa");
        append(&bus, accept, &accepted, first.seq, &format!("a{n}"))
            .await
            .unwrap();
        expected.push(snapshot(&accepted));
    }
    let latest: Vec<_> = bus
        .latest(vec![subjects::received_by(&agency("maros-uptd-ppa"))])
        .await
        .unwrap()
        .map(|stored| stored.unwrap().record.state)
        .collect()
        .await;
    assert_eq!(latest.len(), 20);
    for state in &expected {
        assert!(latest.contains(state));
    }
    // The states alone (as the router rebuilds its timers), and one referral's by subject.
    let states: Vec<_> = bus
        .latest_states(vec![subjects::received_by(&agency("maros-uptd-ppa"))])
        .await
        .unwrap()
        .map(|stored| stored.unwrap())
        .collect()
        .await;
    assert_eq!(states.len(), 20);
    for stored in &states {
        assert!(expected.contains(&stored.record));
        let last = bus.last_state(&stored.subject).await.unwrap().unwrap();
        assert_eq!((last.seq, &last.record), (stored.seq, &stored.record));
    }
    assert_eq!(bus.last_state("refbus.v1.ref.a.b.c").await.unwrap(), None);
    let none: Vec<_> = bus
        .latest(vec![subjects::received_by(&agency("polres-maros"))])
        .await
        .unwrap()
        .collect()
        .await;
    assert!(none.is_empty());
}

#[tokio::test]
async fn what_changed_after_a_point_is_read_to_the_streams_end_or_is_unavailable() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let mut written = Vec::new();
    for n in 0..3 {
        let (event, state) = created("maros-dinsos", "maros-uptd-ppa", &format!("req-{n}"));
        let stored = append(&bus, event, &state, 0, &format!("c{n}"))
            .await
            .unwrap();
        let subject =
            subjects::referral(&state.creation.recipient, &state.creation.sender, &state.id);
        written.push((stored.seq, subject));
    }
    let all = bus.referral_subjects_after(0).await.unwrap();
    assert_eq!(
        all,
        written
            .iter()
            .map(|(_, subject)| subject.clone())
            .collect::<Vec<_>>()
    );
    let after_first = bus.referral_subjects_after(written[0].0).await.unwrap();
    assert_eq!(
        after_first,
        vec![written[1].1.clone(), written[2].1.clone()]
    );
    // A read that cannot reach the stream's end as its leader stated it (what a replica behind
    // answers) is no answer: never a short list, from which a taken-over partition would miss
    // a referral whose creation another router already acknowledged.
    let last = bus.last_sequence().await.unwrap();
    let short = bus
        .referral_subjects_between(0, last + 2)
        .await
        .unwrap_err();
    assert_eq!(short.kind(), ReadErrorKind::Unavailable, "{short}");
    assert!(
        short.to_string().contains(&format!("up to {last}")),
        "{short}"
    );
}

#[tokio::test]
async fn messages_carry_cloudevents_and_trace_context() {
    use opentelemetry::trace::{TraceContextExt, TracerProvider};
    use tracing_subscriber::layer::SubscriberExt;

    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
    let subscriber = tracing_subscriber::registry()
        .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
    let _guard = tracing::subscriber::set_default(subscriber);

    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let (event, state) = created("maros-dinsos", "maros-uptd-ppa", "traced");
    let span = tracing::info_span!("create referral");
    let trace_id = {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        span.context().span().span_context().trace_id()
    };
    let appended = {
        let _entered = span.enter();
        append(&bus, event.clone(), &state, 0, "t1").await.unwrap()
    };
    // The raw message, headers and all, through a connection of the test's own: the bus
    // gives no access to NATS types.
    let raw = async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap());
    let message = raw
        .get_stream(StreamSettings::default().name)
        .await
        .unwrap()
        .direct_get(appended.seq)
        .await
        .unwrap();
    let header = |name: &str| message.headers.get(name).map(|v| v.as_str().to_owned());
    assert_eq!(header("ce-specversion").as_deref(), Some("1.0"));
    assert_eq!(
        header("ce-type").as_deref(),
        Some("org.refbus.referral.created.v1")
    );
    assert_eq!(
        header("ce-source").as_deref(),
        Some("/refbus/agencies/maros-dinsos")
    );
    assert_eq!(header("ce-id"), Some(event.id()));
    assert_eq!(
        header("ce-datacontenttype").as_deref(),
        Some("application/json")
    );
    let traceparent = header("traceparent").expect("a traceparent header");
    assert!(
        traceparent.contains(&trace_id.to_string()),
        "{traceparent} names trace {trace_id}"
    );
    let extracted = refbus_bus::headers::extract_trace_context(&message.headers);
    assert_eq!(extracted.span().span_context().trace_id(), trace_id);

    // JetStream keeps the expected subject sequence it enforced on the stored message: the
    // proof readers take for "nothing lies between a record and its predecessor"
    // (`Unchecked::follows_its_predecessor`). A nats-server that dropped it would send every
    // rebuild to each referral's history: this is where that would show.
    let stored_after = |message: &async_nats::jetstream::message::StreamMessage| {
        refbus_bus::headers::stored_after_in(Some(&message.headers))
    };
    assert_eq!(stored_after(&message), Some(0));
    let (receive, received) = next(&state, Change::Received, "maros-uptd-ppa");
    let second = append(&bus, receive, &received, appended.seq, "t2")
        .await
        .unwrap();
    let message = raw
        .get_stream(StreamSettings::default().name)
        .await
        .unwrap()
        .direct_get(second.seq)
        .await
        .unwrap();
    assert_eq!(stored_after(&message), Some(appended.seq));
}

#[tokio::test]
async fn provisioning_is_idempotent_and_refuses_an_unsafe_stream() {
    let server = NatsServer::start().unwrap();
    let settings = StreamSettings::default();
    Bus::connect(&server.url(), &settings).await.unwrap();
    Bus::connect(&server.url(), &settings).await.unwrap();

    let js = raw(&server).await;
    js.create_stream(async_nats::jetstream::stream::Config {
        name: "UNSAFE".into(),
        subjects: vec!["other.>".into()],
        ..Default::default()
    })
    .await
    .unwrap();
    let unsafe_settings = StreamSettings {
        name: "UNSAFE".into(),
        ..StreamSettings::default()
    };
    let err = Bus::connect(&server.url(), &unsafe_settings)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), refbus_bus::ConnectErrorKind::Misconfigured);
    let message = err.to_string();
    for expected in [
        "stream UNSAFE: ",
        "discard is old, refbus needs new",
        "deny_delete is false, refbus needs true",
        "deny_purge is false, refbus needs true",
        "subjects are [other.>], refbus needs [refbus.v1.idx.>, refbus.v1.notice.>, refbus.v1.ref.>]",
    ] {
        assert!(message.contains(expected), "{expected:?} in {message}");
    }
}

/// A JetStream context of the test's own, to set a stream up as an operator (or an attacker)
/// might have.
async fn raw(server: &NatsServer) -> async_nats::jetstream::Context {
    async_nats::jetstream::new(async_nats::connect(server.url()).await.unwrap())
}

/// The stream as refbus creates it with `StreamSettings::default()`, changed by `change`.
fn refbus_stream(
    change: impl FnOnce(&mut async_nats::jetstream::stream::Config),
) -> async_nats::jetstream::stream::Config {
    use async_nats::jetstream::stream;
    let settings = StreamSettings::default();
    let mut config = stream::Config {
        name: settings.name,
        subjects: vec![
            subjects::ALL_REFERRALS.to_owned(),
            subjects::ALL_NOTICES.to_owned(),
        ],
        storage: stream::StorageType::File,
        retention: stream::RetentionPolicy::Limits,
        discard: stream::DiscardPolicy::New,
        deny_delete: true,
        deny_purge: true,
        allow_direct: true,
        duplicate_window: settings.duplicate_window,
        num_replicas: settings.replicas,
        max_message_size: settings.max_message_bytes,
        ..Default::default()
    };
    change(&mut config);
    config
}

/// Connecting to a stream created beforehand with `change` fails, naming the difference, and
/// leaves the stream as it was.
async fn refused(
    change: impl FnOnce(&mut async_nats::jetstream::stream::Config),
    settings: &StreamSettings,
    expected: &str,
) {
    let server = NatsServer::start().unwrap();
    let js = raw(&server).await;
    let created = refbus_stream(change);
    js.create_stream(created.clone()).await.unwrap();
    let before = js
        .get_stream(&created.name)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();

    let err = Bus::connect(&server.url(), settings).await.unwrap_err();
    assert_eq!(err.kind(), refbus_bus::ConnectErrorKind::Misconfigured);
    let message = err.to_string();
    assert!(
        message.contains(&format!("stream {}: {expected}", settings.name)),
        "{expected:?} in {message}"
    );
    let after = js
        .get_stream(&created.name)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    assert_eq!(before, after, "a refused stream is not touched");
}

#[tokio::test]
async fn a_stream_that_keeps_one_event_per_referral_is_refused() {
    refused(
        |config| config.max_messages_per_subject = 1,
        &StreamSettings::default(),
        "max_msgs_per_subject is 1, refbus needs -1 (unlimited: every event of a referral is kept)",
    )
    .await;
}

#[tokio::test]
async fn a_stream_that_ages_events_out_is_refused() {
    refused(
        |config| config.max_age = std::time::Duration::from_secs(30 * 24 * 3600),
        &StreamSettings::default(),
        "max_age is 2592000s, refbus needs 0 (no age limit: events are kept forever)",
    )
    .await;
}

#[tokio::test]
async fn a_stream_with_fewer_replicas_than_configured_is_refused_not_changed() {
    // A single server holds the R1 stream; asking for 3 must refuse without trying to
    // change it (which a single server could not do anyway).
    refused(
        |_| {},
        &StreamSettings {
            replicas: 3,
            ..StreamSettings::default()
        },
        "replicas is 1, the configuration says 3",
    )
    .await;
}

#[tokio::test]
async fn a_stream_in_memory_is_refused() {
    refused(
        |config| config.storage = async_nats::jetstream::stream::StorageType::Memory,
        &StreamSettings::default(),
        "storage is memory, refbus needs file (events survive a server restart)",
    )
    .await;
}

#[tokio::test]
async fn every_difference_is_named_in_one_message() {
    refused(
        |config| {
            config.max_messages_per_subject = 1;
            config.deny_purge = false;
        },
        &StreamSettings {
            replicas: 3,
            ..StreamSettings::default()
        },
        "max_msgs_per_subject is 1, refbus needs -1 (unlimited: every event of a referral is \
         kept); deny_purge is false, refbus needs true (nobody removes an event); replicas is \
         1, the configuration says 3",
    )
    .await;
}

#[tokio::test]
async fn safe_settings_of_an_existing_stream_follow_the_configuration() {
    let server = NatsServer::start().unwrap();
    let js = raw(&server).await;
    js.create_stream(refbus_stream(|config| {
        config.duplicate_window = std::time::Duration::from_secs(120);
        config.allow_direct = false;
    }))
    .await
    .unwrap();
    let bus = bus(&server).await;
    let settings = StreamSettings::default();
    let config = js
        .get_stream(&settings.name)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    assert_eq!(config.duplicate_window, settings.duplicate_window);
    assert!(config.allow_direct);
    // Direct reads work on it.
    assert!(bus.last("refbus.v1.ref.a.b.c").await.unwrap().is_none());
    assert_eq!(bus.last_sequence().await.unwrap(), 0);
}

/// The router's consumer, created by refbus, then as someone changed it.
#[tokio::test]
async fn an_altered_durable_is_refused_naming_the_difference_and_an_untouched_one_resumes() {
    use async_nats::jetstream::consumer::{AckPolicy, pull};
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let name = "refbus-router-main";
    let (event, state) = created("maros-dinsos", "maros-uptd-ppa", "durable-1");
    let first = append(&bus, event, &state, 0, "d1").await.unwrap();

    // Created by refbus, the first event processed, then resumed: the next event comes.
    {
        let mut deliveries = bus.durable(name).await.unwrap();
        let delivery = deliveries.next().await.unwrap().unwrap();
        assert_eq!(delivery.seq, first.seq);
        delivery.ack().await.unwrap();
    }
    let (accept, accepted) = next(&state, Change::Accepted, "maros-uptd-ppa");
    let second = append(&bus, accept, &accepted, first.seq, "d2")
        .await
        .unwrap();
    {
        let mut resumed = bus.durable(name).await.unwrap();
        let delivery = resumed.next().await.unwrap().unwrap();
        assert_eq!(delivery.seq, second.seq, "resumed where it stopped");
    }

    // Someone deletes it and creates it anew narrower, acknowledging nothing and giving up
    // after one delivery.
    let stream = raw(&server)
        .await
        .get_stream(StreamSettings::default().name)
        .await
        .unwrap();
    stream.delete_consumer(name).await.unwrap();
    stream
        .create_consumer(pull::Config {
            durable_name: Some(name.to_owned()),
            filter_subject: "refbus.v1.ref.a.>".to_owned(),
            ack_policy: AckPolicy::None,
            max_deliver: 1,
            ..Default::default()
        })
        .await
        .unwrap();
    let err = match bus.durable(name).await {
        Ok(_) => panic!("an altered durable must be refused"),
        Err(err) => err,
    };
    assert_eq!(err.kind(), refbus_bus::ConsumerErrorKind::Misconfigured);
    let message = err.to_string();
    for expected in [
        "consumer refbus-router-main on stream REFBUS_EVENTS: ",
        "filter is refbus.v1.ref.a.>, refbus needs refbus.v1.ref.>",
        "ack_policy is none, refbus needs explicit",
        "max_deliver is 1, refbus needs -1",
        "nats consumer rm REFBUS_EVENTS refbus-router-main",
    ] {
        assert!(message.contains(expected), "{expected:?} in {message}");
    }
    // Nothing was changed: the altered consumer is still there as it was.
    let info = stream.consumer_info(name).await.unwrap();
    assert_eq!(info.config.filter_subject, "refbus.v1.ref.a.>");

    // Once the operator deletes it, the router's consumer is created anew from the first event.
    stream.delete_consumer(name).await.unwrap();
    let mut anew = bus.durable(name).await.unwrap();
    assert_eq!(anew.next().await.unwrap().unwrap().seq, first.seq);
}

#[tokio::test]
async fn an_append_while_nats_is_down_is_refused_as_unavailable() {
    let mut server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    // The bus's own view of the connection tells the test when it has noticed, instead of a
    // timer.
    let mut connection = bus.connection();
    server.kill().unwrap();
    connection.wait_for(|up| !up).await.unwrap();

    let (event, state) = created("maros-dinsos", "maros-uptd-ppa", "down");
    let err = append(&bus, event, &state, 0, "x").await.unwrap_err();
    assert_eq!(err.kind(), AppendErrorKind::Unavailable);

    server.restart().unwrap();
    connection.wait_for(|up| *up).await.unwrap();
    let (event, state) = created("maros-dinsos", "maros-uptd-ppa", "up-again");
    append(&bus, event, &state, 0, "y").await.unwrap();
    // What was refused while down was never written.
    let refused = ReferralId::derive(&agency("maros-dinsos"), &RequestId::new("down").unwrap());
    assert!(
        bus.last(&subjects::referral_pattern(&refused))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn connect_options_carry_credentials() {
    use refbus_bus::{ConnectErrorKind, ConnectOptions, Credentials};
    let server = NatsServer::start().unwrap();
    // The test server asks for no credentials: a user and password are accepted as given, and
    // the connection's name is the one configured.
    let options = ConnectOptions::new([server.url()])
        .with_credentials(Credentials::UserPassword {
            user: "router".to_owned(),
            password: "secret".to_owned(),
        })
        .with_name("refbus-test");
    let bus = Bus::connect(&options, &StreamSettings::default())
        .await
        .unwrap();
    assert!(bus.is_connected());
    let missing = ConnectOptions::new([server.url()])
        .with_credentials(Credentials::File("/nonexistent/refbus.creds".into()));
    let err = Bus::connect(&missing, &StreamSettings::default())
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ConnectErrorKind::Options);
}

/// `consume` follows the stream live through the record check: records come with their
/// state, a garbage message is reported as refused and does not end the stream, and a
/// consumption that starts in the middle of a referral checks its first record against the
/// predecessor it reads.
#[tokio::test]
async fn consume_follows_live_reports_garbage_and_goes_on() {
    use refbus_bus::consume::{ConsumeSpec, Start};
    use refbus_bus::replay::Replayed;

    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let verifier = verifier();
    let (event, state) = created("maros-dinsos", "maros-uptd-ppa", "consume-1");
    let first = append(&bus, event, &state, 0, "consume-1").await.unwrap();

    let mut items = Box::pin(
        bus.consume(&verifier, ConsumeSpec::all_referrals(Start::Beginning))
            .await
            .unwrap(),
    );
    match next_consumed(&mut items).await {
        Replayed::Record(stored) => {
            assert_eq!(stored.seq, first.seq);
            assert_eq!(stored.record.state.id, state.id);
        }
        other => panic!("expected the creation, got {other:?}"),
    }

    // Garbage on the referral's subject, then a real event: both arrive, in order, live.
    let garbage =
        refbus_testkit::hostile::publish_raw(&server.url(), &subject_of(&state), b"{not".to_vec())
            .await
            .unwrap();
    let refused_before = verifier.refused();
    match next_consumed(&mut items).await {
        Replayed::Refused { seq, subject, .. } => {
            assert_eq!(seq, garbage);
            assert_eq!(subject, subject_of(&state));
        }
        other => panic!("expected the garbage refused, got {other:?}"),
    }
    assert!(verifier.refused() > refused_before, "reported");
    let (accepted, after) = next(&state, Change::Accepted, "maros-uptd-ppa");
    let key = test_keys().key(&refbus_core::signature::Signer::of(&accepted.actor));
    let (appended, _) = bus
        .append(
            &key,
            Append {
                event: accepted,
                state_after: &after,
                expected_last_seq: garbage,
                prev_seq: first.seq,
                key: refbus_bus::Idempotency::Request {
                    agency: &agency("maros-uptd-ppa"),
                    request_id: &RequestId::new("consume-accept").unwrap(),
                },
            },
        )
        .await
        .unwrap();
    match next_consumed(&mut items).await {
        Replayed::Record(stored) => {
            assert_eq!(stored.seq, appended.seq);
            assert_eq!(stored.record.state.status, after.status);
        }
        other => panic!("expected the acceptance, got {other:?}"),
    }

    // From the middle: the acceptance is checked against the creation it reads.
    let mut late = Box::pin(
        bus.consume(&verifier, ConsumeSpec::all_referrals(Start::After(garbage)))
            .await
            .unwrap(),
    );
    match next_consumed(&mut late).await {
        Replayed::Record(stored) => assert_eq!(stored.seq, appended.seq),
        other => panic!("expected the acceptance, got {other:?}"),
    }
    // From now: only what comes next.
    let mut from_now = Box::pin(
        bus.consume(&verifier, ConsumeSpec::all_referrals(Start::Now))
            .await
            .unwrap(),
    );
    let (other, other_state) = created("maros-dinsos", "maros-uptd-ppa", "consume-2");
    let second = append(&bus, other, &other_state, 0, "consume-2")
        .await
        .unwrap();
    match next_consumed(&mut from_now).await {
        Replayed::Record(stored) => assert_eq!(stored.seq, second.seq),
        other => panic!("expected the new creation, got {other:?}"),
    }
}

/// The next item of a consumption. Bounded only so that a stream that stopped fails the test
/// instead of hanging it.
async fn next_consumed(
    items: &mut (
             impl futures::Stream<Item = Result<refbus_bus::replay::Replayed, refbus_bus::ReadError>>
             + Unpin
         ),
) -> refbus_bus::replay::Replayed {
    tokio::time::timeout(std::time::Duration::from_secs(20), items.next())
        .await
        .expect("nothing came")
        .expect("the stream ended")
        .expect("a read error")
}

#[test]
fn a_signed_records_payload_is_its_encoding_and_the_record_is_the_same() {
    let (event, state) = created("maros-dinsos", "maros-uptd-ppa", "s1");
    let subject = subject_of(&state);
    let key = test_keys().key(&refbus_core::signature::Signer::of(&event.actor));
    let (record, payload) = refbus_bus::EventRecord::signed(event.clone(), &state, &subject, &key);
    // One encoding of the event serves the hash, the signature and the payload: the same
    // bytes as encoding the record anew (Ed25519 signatures are deterministic).
    assert_eq!(payload, record.encode());
    assert_eq!(
        record,
        refbus_bus::EventRecord::new(event, &state, &subject, &key)
    );
    let decoded = refbus_bus::EventRecord::decode(&payload).unwrap();
    assert!(decoded.hash_matches());
    assert_eq!(decoded, record);
}

#[tokio::test]
async fn watching_one_kind_of_change_skips_others_unread_and_checks_what_it_keeps() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let js = raw(&server).await;
    let dinsos = agency("maros-dinsos");
    let verifier = verifier();
    let mut requests = bus
        .watch_changes(
            &verifier,
            vec![subjects::sent_by(&dinsos)],
            0,
            "reroute_requested",
        )
        .await
        .unwrap();
    let (create, state) = created("maros-dinsos", "maros-uptd-ppa", "w1");
    let subject = subject_of(&state);
    append(&bus, create, &state, 0, "w-a").await.unwrap();
    // Not a refbus record, and no type: skipped before it is read (nothing reported).
    js.publish(subject.clone(), "garbage".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // Not a refbus record, but typed as a reroute request: read, refused and reported.
    let mut typed = async_nats::HeaderMap::new();
    typed.insert("ce-type", "org.refbus.referral.reroute_requested.v1");
    let last = js
        .publish_with_headers(subject.clone(), typed, "garbage".into())
        .await
        .unwrap()
        .await
        .unwrap()
        .sequence;
    // The router's request: yielded, checked.
    let event = Event {
        referral_id: state.id,
        case_id: state.creation.case_id.clone(),
        seq: 2,
        at: state.updated_at.plus(std::time::Duration::from_secs(60)),
        actor: Actor::Router,
        request_id: None,
        change: Change::RerouteRequested {
            to: agency("maros-rsud"),
            cause: refbus_core::event::RerouteCause::Status {
                status: refbus_core::referral::Status::Rejected,
            },
            due_at: state.updated_at,
        },
        prev_hash: state.last_hash,
    };
    let after = evolve(Some(state.clone()), &event).unwrap();
    let stored = append(&bus, event, &after, last, "w-b").await.unwrap();
    let item = requests.next().await.unwrap().unwrap();
    assert_eq!(item.seq(), stored.seq);
    assert!(matches!(
        &item,
        Item::Event(e) if matches!(e.record.event.change, Change::RerouteRequested { .. })
    ));
    assert_eq!(verifier.refused(), 1);
}

#[tokio::test]
async fn an_inbox_of_several_filters_comes_in_stream_order_while_they_are_written_at_once() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let uptd = agency("maros-uptd-ppa");
    let (old, old_state) = created("maros-dinsos", "maros-uptd-ppa", "before");
    append(&bus, old, &old_state, 0, "before").await.unwrap();
    let end = bus.last_sequence().await.unwrap();
    let mut inbox = bus
        .watch(&verifier(), subjects::inbox(&uptd), end)
        .await
        .unwrap();
    // Referrals to UPTD and from it (two of the inbox's filters, one consumer each), and
    // others UPTD is no party to, all written at once: their sequences interleave.
    let writes: Vec<_> = (0..24)
        .map(|n| {
            let (sender, recipient) = match n % 3 {
                0 => ("maros-dinsos", "maros-uptd-ppa"),
                1 => ("maros-uptd-ppa", "polres-maros"),
                _ => ("maros-dinsos", "polres-maros"),
            };
            let (event, state) = created(sender, recipient, &format!("live-{n}"));
            let bus = bus.clone();
            async move {
                let appended = append(&bus, event, &state, 0, &format!("live-{n}"))
                    .await
                    .unwrap();
                (n % 3 != 2).then_some(appended.seq)
            }
        })
        .collect();
    let mut wanted: Vec<u64> = futures::future::join_all(writes)
        .await
        .into_iter()
        .flatten()
        .collect();
    wanted.sort_unstable();
    let mut seen = Vec::new();
    while seen.len() < wanted.len() {
        seen.push(inbox.next().await.unwrap().unwrap().seq());
    }
    assert_eq!(seen, wanted, "every item once, in stream order");
}

#[tokio::test]
async fn a_connection_confined_to_an_agency_reads_by_sequence_only_among_its_referrals() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let (own, own_state) = created("maros-dinsos", "maros-uptd-ppa", "own");
    let (other, other_state) = created("maros-uptd-ppa", "polres-maros", "other");
    let own_seq = append(&bus, own, &own_state, 0, "own").await.unwrap().seq;
    let other_seq = append(&bus, other, &other_state, 0, "other")
        .await
        .unwrap()
        .seq;
    let confined = Bus::connect(
        &refbus_bus::ConnectOptions::from(server.url()).confined_to(agency("maros-dinsos")),
        &StreamSettings::default(),
    )
    .await
    .unwrap();
    // The stream's end, learnt without the stream's information.
    // (Past `other_seq`: each creation is followed by its creation index entry.)
    assert_eq!(
        confined.last_sequence().await.unwrap(),
        bus.last_sequence().await.unwrap()
    );
    let read = confined.event_at(own_seq).await.unwrap().unwrap();
    assert_eq!(read.record.event.referral_id, own_state.id);
    // Another agency's referral is not there for it, though the stream holds it.
    assert!(confined.event_at(other_seq).await.unwrap().is_none());
    assert!(bus.event_at(other_seq).await.unwrap().is_some());
    // A history and a creation are read through consumers on the subject.
    let history = confined.history(&subject_of(&own_state)).await.unwrap();
    assert_eq!(history.len(), 1);
    assert_eq!(history[0].seq, own_seq);
}

/// The router's lag metric: the referral events its durable consumer holds and has not
/// acknowledged, delivered or not (index entries are not referral events).
#[tokio::test]
async fn a_durables_backlog_counts_the_referral_events_it_has_not_acknowledged() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let name = "refbus-router-backlog";
    let mut deliveries = bus.durable(name).await.unwrap();
    assert_eq!(bus.durable_backlog(name).await.unwrap(), 0);
    let (event, state) = created("maros-dinsos", "maros-uptd-ppa", "backlog-1");
    let first = append(&bus, event, &state, 0, "b1").await.unwrap();
    let (accept, accepted) = next(&state, Change::Accepted, "maros-uptd-ppa");
    append(&bus, accept, &accepted, first.seq, "b2")
        .await
        .unwrap();
    assert!(
        bus.last_sequence().await.unwrap() > 2,
        "the index entry too"
    );
    // Delivered or not, neither is acknowledged yet.
    let delivered = deliveries.next().await.unwrap().unwrap();
    assert_eq!(delivered.seq, first.seq);
    assert_eq!(bus.durable_backlog(name).await.unwrap(), 2);
    assert!(bus.durable_backlog("no-such-consumer").await.is_err());
}

/// How far a router's durable consumer was acknowledged: where a router opening it counts its
/// consumer's checks from (nothing for a consumer not created yet).
#[tokio::test]
async fn a_durables_acknowledged_position_is_what_was_acknowledged_in_order() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let name = "refbus-router-main";
    assert_eq!(bus.durable_acknowledged(name).await.unwrap(), 0);
    let (event, state) = created("maros-dinsos", "maros-uptd-ppa", "floor-1");
    let first = append(&bus, event, &state, 0, "f1").await.unwrap();
    let (accept, accepted) = next(&state, Change::Accepted, "maros-uptd-ppa");
    let second = append(&bus, accept, &accepted, first.seq, "f2")
        .await
        .unwrap();
    let mut deliveries = bus.durable(name).await.unwrap();
    assert_eq!(bus.durable_acknowledged(name).await.unwrap(), 0);
    let delivery = deliveries.next().await.unwrap().unwrap();
    assert_eq!(delivery.seq, first.seq);
    delivery.ack().await.unwrap();
    // An acknowledgement is sent without waiting for the server's word: looked at until seen.
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while bus.durable_acknowledged(name).await.unwrap() < first.seq {
        assert!(tokio::time::Instant::now() < deadline, "never acknowledged");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    // Past the creation's index entry that follows it, which is not the consumer's to
    // deliver: every message up to the position is acknowledged or not the consumer's.
    let acknowledged = bus.durable_acknowledged(name).await.unwrap();
    assert!(
        (first.seq..second.seq).contains(&acknowledged),
        "{acknowledged}"
    );
    drop(deliveries);
    // Moved past every event, as `refbus bench clocks` leaves a consumer that processed them.
    let stream = raw(&server)
        .await
        .get_stream(StreamSettings::default().name)
        .await
        .unwrap();
    stream
        .reset_consumer(name, Some(second.seq + 1))
        .await
        .unwrap();
    assert!(bus.durable_acknowledged(name).await.unwrap() >= second.seq);
}

/// A router giving a partition up stops its consumer at once: the events the client had
/// pulled ahead of the router come back out (for the router to hand back), the deliveries end,
/// and a new reader of the consumer gets them handed back at once, not after the minute's
/// acknowledgement timeout they would wait for if dropped unacknowledged.
#[tokio::test]
async fn a_stopped_durable_returns_what_it_had_buffered_and_ends() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let name = "refbus-router-stopped";
    let mut seqs = Vec::new();
    for n in 0..6 {
        let (event, state) = created("maros-dinsos", "maros-uptd-ppa", &format!("stop-{n}"));
        seqs.push(
            append(&bus, event, &state, 0, &format!("s{n}"))
                .await
                .unwrap()
                .seq,
        );
    }
    let mut deliveries = bus.durable(name).await.unwrap();
    let stop = deliveries.stopper();
    let first = deliveries.next().await.unwrap().unwrap();
    assert_eq!(first.seq, seqs[0]);
    first.ack().await.unwrap();
    // Every event sent to this reader (delivered, not acknowledged), then received by its
    // client: the five others wait in its buffer, the router not having taken them.
    let stream = raw(&server)
        .await
        .get_stream(StreamSettings::default().name)
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
    while stream.consumer_info(name).await.unwrap().num_ack_pending < 5 {
        assert!(tokio::time::Instant::now() < deadline, "never delivered");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;

    let buffered = stop.stop();
    let buffered_seqs: Vec<u64> = buffered.iter().map(|delivery| delivery.seq).collect();
    assert_eq!(
        buffered_seqs,
        seqs[1..],
        "the buffered deliveries, in order"
    );
    assert!(deliveries.next().await.is_none(), "stopped deliveries end");
    assert!(stop.stop().is_empty(), "stopping again returns nothing");
    for delivery in &buffered {
        delivery
            .hand_back(std::time::Duration::from_millis(0))
            .await
            .unwrap();
    }

    // Half the acknowledgement timeout: without the hand-backs, nothing would come before it.
    let mut resumed = bus.durable(name).await.unwrap();
    let mut again = Vec::new();
    while again.len() < 5 {
        let delivery = tokio::time::timeout(std::time::Duration::from_secs(30), resumed.next())
            .await
            .expect("handed-back events delivered again at once")
            .unwrap()
            .unwrap();
        again.push(delivery.seq);
    }
    assert_eq!(again, seqs[1..]);
}

/// `state` with `change` by `by`, appended right after `previous` (the subject's last record).
async fn appended_next(
    bus: &Bus,
    previous: &refbus_bus::Appended,
    state: &Referral,
    change: Change,
    by: &str,
) -> (refbus_bus::Appended, Referral) {
    let (mut event, _) = next(state, change, by);
    // As an adapter writes it: the request id in the event, and its message id.
    let id = format!("{by}-{}", event.seq);
    event.request_id = Some(RequestId::new(&id).unwrap());
    let after = evolve(Some(state.clone()), &event).unwrap();
    let appended = append(bus, event, &after, previous.seq, &id).await.unwrap();
    (appended, after)
}

fn on_hold() -> Change {
    Change::PutOnHold {
        reason: refbus_core::referral::Reason {
            code: refbus_core::ids::ReasonCode::new("no_capacity").unwrap(),
            note: None,
        },
    }
}

#[tokio::test]
async fn a_reader_goes_on_only_from_a_state_a_checked_writer_built_on() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let (create, created) = created("maros-dinsos", "maros-uptd-ppa", "claimed-1");
    let subject = subject_of(&created);
    let c = append(&bus, create, &created, 0, "c").await.unwrap();

    // UPTD PPA, the recipient, with its own key and straight onto the bus: a receipt whose
    // stored state claims an acceptance (no acceptance event exists), then a start of the
    // service that follows that claimed state. Each record is valid against the one before it,
    // and each is stored under the message id its adapter would give it.
    let requested = |(mut event, _): (Event, Referral), id: &str, before: &Referral| {
        event.request_id = Some(RequestId::new(id).unwrap());
        let after = evolve(Some(before.clone()), &event).unwrap();
        (event, after)
    };
    let (received, made) = requested(
        next(&created, Change::Received, "maros-uptd-ppa"),
        "r",
        &created,
    );
    let (_, accepted) = next(&made, Change::Accepted, "maros-uptd-ppa");
    let mut claimed = accepted;
    claimed.seq = made.seq;
    claimed.last_hash = made.last_hash;
    let r = append(&bus, received, &claimed, c.seq, "r").await.unwrap();
    let (started, after) = requested(
        next(&claimed, Change::Started, "maros-uptd-ppa"),
        "s",
        &claimed,
    );
    append(&bus, started, &after, r.seq, "s").await.unwrap();

    // Dinas Sosial's adapter, the router and the dashboard read the referral as the sender
    // created it: the pair is refused (reported) and nothing it claims is believed.
    let dinsos = verifier().writing_as(&agency("maros-dinsos"));
    for reader in [verifier(), dinsos.clone()] {
        let read = bus.referral(&reader, &subject).await.unwrap().unwrap();
        assert_eq!(read.seq, c.seq, "the last verified record is the creation");
        assert_eq!(read.record.state.status, refbus_core::Status::Requested);
        assert!(reader.refused() > 0, "the refusal is reported");
    }
    // What a one-step read that takes any predecessor's stored state believes (the router's,
    // which reads in full whatever its consumer has not checked): the claimed pair.
    let believed = bus
        .referral(&verifier().believing_every_writer(), &subject)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        believed.record.state.status,
        refbus_core::Status::InProgress
    );
}

#[tokio::test]
async fn a_read_walks_back_a_few_records_to_one_a_checked_writer_built_on() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let (create, created) = created("maros-dinsos", "maros-uptd-ppa", "walk-1");
    let subject = subject_of(&created);
    let c = append(&bus, create, &created, 0, "c").await.unwrap();
    let uptd = "maros-uptd-ppa";
    let (r, received) = appended_next(&bus, &c, &created, Change::Received, uptd).await;
    let (a, accepted) = appended_next(&bus, &r, &received, Change::Accepted, uptd).await;
    let (mut last, mut state) = appended_next(&bus, &a, &accepted, Change::Started, uptd).await;

    // The sender's adapter: three records by the recipient, then its own creation. One read of
    // the last record and one per record back to the creation.
    let dinsos = verifier().writing_as(&agency("maros-dinsos"));
    let before = bus.direct_reads();
    let read = bus.referral(&dinsos, &subject).await.unwrap().unwrap();
    assert_eq!((read.seq, read.record.state.seq), (last.seq, 4));
    assert_eq!(bus.direct_reads() - before, 4);
    // The recipient's adapter: its own last record vouches for the state before it.
    let own = verifier().writing_as(&agency(uptd));
    let before = bus.direct_reads();
    let read = bus.referral(&own, &subject).await.unwrap().unwrap();
    assert_eq!(read.seq, last.seq);
    assert_eq!(bus.direct_reads() - before, 2);

    // A longer run by the recipient than a walk goes back: the history, read in full, gives
    // the same state, and nothing is refused.
    for n in 0..refbus_bus::WALK_BACK {
        let change = if n % 2 == 0 {
            on_hold()
        } else {
            Change::Resumed
        };
        (last, state) = appended_next(&bus, &last, &state, change, uptd).await;
    }
    let read = bus.referral(&dinsos, &subject).await.unwrap().unwrap();
    assert_eq!(read.seq, last.seq);
    assert_eq!(read.record.state, state.into_snapshot());
    assert_eq!(dinsos.refused(), 0);
}

/// `message`'s stored bytes published again at the end of its subject, as a party can: after
/// the subject's last message `last`, claiming to follow `follows`, under `message_id`.
async fn copy_onto_the_end(
    server: &NatsServer,
    message: &async_nats::jetstream::message::StreamMessage,
    last: u64,
    follows: u64,
    message_id: &str,
) -> async_nats::jetstream::publish::PublishAck {
    let mut headers = async_nats::HeaderMap::new();
    headers.insert(
        refbus_bus::headers::EXPECTED_LAST_SUBJECT_SEQ,
        last.to_string().as_str(),
    );
    headers.insert(refbus_bus::headers::PREV_SEQ, follows.to_string().as_str());
    headers.insert(async_nats::header::NATS_MESSAGE_ID, message_id);
    raw(server)
        .await
        .publish_with_headers(
            message.subject.to_string(),
            headers,
            message.payload.clone(),
        )
        .await
        .unwrap()
        .await
        .unwrap()
}

#[tokio::test]
async fn a_copy_of_a_checked_writers_record_placed_later_vouches_for_nothing() {
    let server = NatsServer::start().unwrap();
    let bus = bus(&server).await;
    let (create, created) = created("maros-dinsos", "maros-uptd-ppa", "copied-1");
    let subject = subject_of(&created);
    let c = append(&bus, create, &created, 0, "c").await.unwrap();
    let (dinsos, uptd) = ("maros-dinsos", "maros-uptd-ppa");
    let (r, state) = appended_next(&bus, &c, &created, Change::Received, uptd).await;
    let (a, state) = appended_next(&bus, &r, &state, Change::Accepted, uptd).await;
    let (started, state) = appended_next(&bus, &a, &state, Change::Started, uptd).await;
    // Dinas Sosial puts the service on hold; UPTD PPA resumes it, then holds it again.
    let (held, state) = appended_next(&bus, &started, &state, on_hold(), dinsos).await;
    let (resumed, state) = appended_next(&bus, &held, &state, Change::Resumed, uptd).await;
    let (last, state) = appended_next(&bus, &resumed, &state, on_hold(), uptd).await;
    let truth = state.into_snapshot();
    assert_eq!(truth.status, refbus_core::Status::OnHold);

    // UPTD PPA copies its start and Dinas Sosial's hold, bytes and signatures, onto the end of
    // the subject, each claiming to follow the message before it (JetStream agrees), then
    // resumes the copied hold with its own key: a reader that took the copied hold as Dinas
    // Sosial's would go on from the copied start, as if the last hold never happened.
    let stream = raw(&server)
        .await
        .get_stream("REFBUS_EVENTS")
        .await
        .unwrap();
    let original_start = stream.get_raw_message(started.seq).await.unwrap();
    let original_hold = stream.get_raw_message(held.seq).await.unwrap();
    let start_copy =
        copy_onto_the_end(&server, &original_start, last.seq, last.seq, "copy-1").await;
    // Under its writer's message id, JetStream stores nothing: the id was used.
    let original_id = format!("{dinsos}:{dinsos}-{}", 5);
    let refused = copy_onto_the_end(
        &server,
        &original_hold,
        start_copy.sequence,
        start_copy.sequence,
        &original_id,
    )
    .await;
    assert!(
        refused.duplicate,
        "JetStream stores nothing twice under one id"
    );
    let hold_copy = copy_onto_the_end(
        &server,
        &original_hold,
        start_copy.sequence,
        start_copy.sequence,
        "copy-2",
    )
    .await;
    let copied_state = {
        let read = bus.event_at(hold_copy.sequence).await.unwrap().unwrap();
        read.record.state
    };
    let (mut resume, _) = next(&copied_state, Change::Resumed, uptd);
    resume.request_id = Some(RequestId::new("uptd-resume-copy").unwrap());
    let after = evolve(Some(copied_state), &resume).unwrap();
    append(&bus, resume, &after, hold_copy.sequence, "uptd-resume-copy")
        .await
        .unwrap();

    // Dinas Sosial's adapter, the dashboard and the router's full reads keep the truth.
    let reader = verifier().writing_as(&agency(dinsos));
    let read = bus.referral(&reader, &subject).await.unwrap().unwrap();
    assert_eq!((read.seq, &read.record.state), (last.seq, &truth));
    assert!(
        reader.refused() > 0,
        "the copies and what follows them are reported"
    );
}

#[tokio::test]
async fn a_replica_behind_never_answers_less_than_this_process_saw() {
    let server = NatsServer::start().unwrap();
    let writer = bus(&server).await;
    let (create, created) = created("maros-dinsos", "maros-uptd-ppa", "behind-1");
    let subject = subject_of(&created);
    let c = append(&writer, create, &created, 0, "c").await.unwrap();
    let (received, _) =
        appended_next(&writer, &c, &created, Change::Received, "maros-uptd-ppa").await;
    refbus_testkit::hostile::replica_behind(
        &server.url(),
        &StreamSettings::default().name,
        &subject,
    )
    .await
    .unwrap();

    // A process that never saw the referral hears "none" from the replica behind about every
    // other time (until one of its reads found it): what the process that wrote it must never
    // answer.
    let dinsos = verifier().writing_as(&agency("maros-dinsos"));
    let mut told_none = 0;
    // Sixteen processes: all sixteen first reads answered by the stream itself would be a
    // one in 65,536 chance.
    for _ in 0..16 {
        let stranger = bus(&server).await;
        if let Ok(None) = stranger.referral(&dinsos, &subject).await {
            told_none += 1;
        }
    }
    assert!(told_none > 0, "the replica behind answered no read");

    // The writer: its reads, by subject or by the pattern a GetReferral uses, give the last
    // record it wrote, or UNAVAILABLE when the replica behind answered every attempt: never
    // none.
    let pattern = subjects::referral_sent_pattern(&agency("maros-dinsos"), &created.id);
    let (mut found, mut unavailable) = (0, 0);
    let before = writer.direct_reads();
    for _ in 0..20 {
        match writer.referral(&dinsos, &subject).await {
            Ok(Some(read)) => {
                assert_eq!(read.seq, received.seq);
                found += 1;
            }
            Ok(None) => panic!("a referral this process wrote was read as unknown"),
            Err(err) => {
                assert_eq!(err.kind(), ReadErrorKind::Unavailable, "{err}");
                assert!(err.to_string().contains("behind"), "{err}");
                unavailable += 1;
            }
        }
        match writer.last_subject(&pattern).await {
            Ok(found) => assert_eq!(found.as_deref(), Some(subject.as_str())),
            Err(err) => assert_eq!(err.kind(), ReadErrorKind::Unavailable, "{err}"),
        }
    }
    assert!(found > 0, "{unavailable} reads unavailable, none found");
    // Three direct reads a round (the last record, its predecessor, the pattern) where no
    // replica is behind; each read answered by the replica behind was made again.
    assert!(writer.direct_reads() - before > 3 * 20);

    // What an inbox delivered counts as seen: a process whose watch delivered the receipt
    // reads it too.
    let stranger = bus(&server).await;
    let mut inbox = stranger
        .watch(&verifier(), vec![subject.clone()], 0)
        .await
        .unwrap();
    for _ in 0..2 {
        inbox.next().await.unwrap().unwrap();
    }
    for _ in 0..10 {
        match stranger.referral(&dinsos, &subject).await {
            Ok(found) => assert_eq!(found.map(|read| read.seq), Some(received.seq)),
            Err(err) => assert_eq!(err.kind(), ReadErrorKind::Unavailable, "{err}"),
        }
    }

    // So does what a listing of the referrals changed since a point named: a router catching
    // up from its snapshot reads each of them next, never "none" (unguarded, sixteen such
    // first reads all answered by the stream itself would be a one in 65,536 chance).
    for _ in 0..16 {
        let router = bus(&server).await;
        let changed = router.referral_subjects_after(0).await.unwrap();
        assert_eq!(changed, vec![subject.clone()]);
        match router.referral(&dinsos, &subject).await {
            Ok(found) => assert_eq!(found.map(|read| read.seq), Some(received.seq)),
            Err(err) => assert_eq!(err.kind(), ReadErrorKind::Unavailable, "{err}"),
        }
    }
}
