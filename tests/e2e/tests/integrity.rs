//! Agencies' adapters believe only records that pass the integrity check: a copy of another
//! agency's referral on a look-alike subject, an unsigned or wrongly signed record, a back-dated
//! one and plain garbage are never shown to an agency's system, never written on, and never end
//! its inbox.

use futures::StreamExt;
use refbus_bus::replay::Replayed;
use refbus_bus::{Append, EventRecord, subjects};
use refbus_core::event::Actor;
use refbus_core::ids::OperatorId;
use refbus_core::signature::Signer;
use refbus_core::{AgencyId, Change, ReferralId, evolve};
use refbus_e2e::{System, create_request};
use refbus_proto::v1;
use refbus_testkit::hostile::publish_raw;

fn agency(id: &str) -> AgencyId {
    AgencyId::new(id).unwrap()
}

/// The referral's records as the bus holds them, oldest first (unchecked: what was written).
async fn stored(system: &System, id: &str) -> Vec<refbus_bus::Stored<EventRecord>> {
    let id = ReferralId::parse(id).unwrap();
    system
        .bus()
        .await
        .history(&subjects::referral_pattern(&id))
        .await
        .unwrap()
}

async fn get(system: &refbus_e2e::AgencySystem, id: &str) -> v1::Referral {
    system
        .client()
        .get_referral(system.request(v1::GetReferralRequest {
            referral_id: id.to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
}

#[tokio::test]
async fn a_shadow_copy_on_another_agencys_subject_is_never_taken_for_the_referral() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let id = dinsos
        .create(create_request("shadow-1", "maros-uptd-ppa", "shelter"))
        .await;

    // Polres copies Dinsos's creation, signature and all, onto a subject where Polres is the
    // recipient (its NATS permissions allow `ref.polres-maros.*.*`): the last message matching
    // Dinsos's lookup of the id is now the copy.
    let original = stored(&system, &id).await.remove(0);
    let shadow = format!("refbus.v1.ref.polres-maros.maros-dinsos.{id}");
    publish_raw(
        &system.nats.url(),
        &shadow,
        original.record.encode().to_vec(),
    )
    .await
    .unwrap();
    // And an acceptance Polres signs itself, on that subject, as if the referral were to it.
    let state = original.record.state.clone();
    let event = refbus_core::Event {
        referral_id: state.id,
        case_id: state.creation.case_id.clone(),
        seq: 2,
        at: (system.now)(),
        actor: Actor::Agency {
            agency: agency("polres-maros"),
            system: None,
            operator: OperatorId::new("op").unwrap(),
        },
        request_id: None,
        change: Change::Accepted,
        prev_hash: state.last_hash,
    };
    let mut claimed = state.clone();
    claimed.creation.recipient = agency("polres-maros");
    let claimed = evolve(Some(claimed), &event).unwrap();
    let polres = system.signing.agency(&agency("polres-maros"));
    let last = stored(&system, &id).await.last().unwrap().seq;
    system
        .bus()
        .await
        .append(
            &polres,
            Append {
                event,
                state_after: &claimed,
                expected_last_seq: last,
                prev_seq: original.seq,
                key: refbus_bus::Idempotency::Request {
                    agency: &agency("polres-maros"),
                    request_id: &refbus_core::RequestId::new("polres-forged").unwrap(),
                },
            },
        )
        .await
        .unwrap();

    // Dinsos still sees its referral to UPTD PPA, once.
    assert_eq!(get(&dinsos, &id).await.recipient, "maros-uptd-ppa");
    let listed = dinsos
        .client()
        .list_referrals(dinsos.request(v1::ListReferralsRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .referrals;
    assert_eq!(listed.len(), 1);
    assert_eq!(listed[0].recipient, "maros-uptd-ppa");

    // And a note Dinsos adds is written on the real referral, sealed for UPTD PPA, not Polres.
    dinsos
        .client()
        .add_note(dinsos.request(v1::AddNoteRequest {
            request_id: "shadow-note".into(),
            referral_id: id.clone(),
            note: "Korban dijemput pukul 14.00".into(),
            sealed_note: None,
        }))
        .await
        .unwrap();
    let records = stored(&system, &id).await;
    let note = records
        .iter()
        .find_map(|stored| match &stored.record.event.change {
            Change::NoteAdded { note } => Some((stored.subject.clone(), note.recipients.clone())),
            _ => None,
        })
        .unwrap();
    assert!(
        note.0
            .starts_with("refbus.v1.ref.maros-uptd-ppa.maros-dinsos.")
    );
    assert_eq!(note.1, [agency("maros-dinsos"), agency("maros-uptd-ppa")]);
}

#[tokio::test]
async fn unsigned_misattributed_and_back_dated_records_are_not_believed() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let id = dinsos
        .create(create_request("unsigned-1", "maros-uptd-ppa", "shelter"))
        .await;
    let created = stored(&system, &id).await.remove(0);
    let state = created.record.state.clone();
    let subject = created.subject.clone();
    // UPTD PPA's acceptance, as a system bypassing its adapter would write it.
    let acceptance = |minutes_ago: u64| {
        let now = (system.now)();
        let event = refbus_core::Event {
            referral_id: state.id,
            case_id: state.creation.case_id.clone(),
            seq: 2,
            at: now.minus(std::time::Duration::from_secs(60 * minutes_ago)),
            actor: Actor::Agency {
                agency: agency("maros-uptd-ppa"),
                system: None,
                operator: OperatorId::new("op").unwrap(),
            },
            request_id: None,
            change: Change::Accepted,
            prev_hash: state.last_hash,
        };
        let after = evolve(Some(state.clone()), &event).unwrap();
        (event, after)
    };

    // Unsigned.
    let (event, after) = acceptance(0);
    let unsigned = EventRecord {
        hash: refbus_core::chain::hash(&event),
        signature: None,
        event,
        state: after.into_snapshot(),
    };
    publish_raw(&system.nats.url(), &subject, unsigned.encode().to_vec())
        .await
        .unwrap();
    assert_eq!(
        get(&dinsos, &id).await.status,
        i32::from(v1::ReferralStatus::Requested)
    );

    // Signed by Polres, whose key it is not.
    let (event, after) = acceptance(0);
    let polres = system.signing.key(&Signer::Agency(agency("polres-maros")));
    let mut misattributed = EventRecord::new(event, &after, &subject, &polres);
    misattributed.signature.as_mut().unwrap().by = Signer::Agency(agency("maros-uptd-ppa"));
    publish_raw(
        &system.nats.url(),
        &subject,
        misattributed.encode().to_vec(),
    )
    .await
    .unwrap();
    assert_eq!(
        get(&dinsos, &id).await.status,
        i32::from(v1::ReferralStatus::Requested)
    );

    // Properly signed by UPTD PPA, but stamped an hour before the bus stored it.
    let (event, after) = acceptance(60);
    let uptd = system.signing.agency(&agency("maros-uptd-ppa"));
    let bus = system.bus().await;
    let last = stored(&system, &id).await.last().unwrap().seq;
    bus.append(
        &uptd,
        Append {
            event,
            state_after: &after,
            expected_last_seq: last,
            prev_seq: created.seq,
            key: refbus_bus::Idempotency::Request {
                agency: &agency("maros-uptd-ppa"),
                request_id: &refbus_core::RequestId::new("backdated").unwrap(),
            },
        },
    )
    .await
    .unwrap();
    assert_eq!(
        get(&dinsos, &id).await.status,
        i32::from(v1::ReferralStatus::Requested)
    );
    // Three records were written and none is believed.
    assert_eq!(stored(&system, &id).await.len(), 4);

    // UPTD PPA's real acceptance, through its adapter, follows the creation (the last record
    // that passes) and is what both agencies then see.
    let uptd_system = system.agency("maros-uptd-ppa").await;
    uptd_system
        .client()
        .accept_referral(uptd_system.request(v1::AcceptReferralRequest {
            request_id: "real-accept".into(),
            referral_id: id.clone(),
        }))
        .await
        .unwrap();
    assert_eq!(
        get(&dinsos, &id).await.status,
        i32::from(v1::ReferralStatus::Accepted)
    );
    let records = stored(&system, &id).await;
    assert_eq!(records.len(), 5);
    assert_eq!(records[4].record.event.seq, 2);
    assert_eq!(records[4].prev_seq, created.seq);

    // A replay, as an auditor reads the stream, shows the same: two records believed, three
    // refused, each with its reason.
    let replayed: Vec<String> = system
        .bus()
        .await
        .replay(&system.verifier(), vec![subjects::ALL_REFERRALS.to_owned()])
        .await
        .unwrap()
        .map(|item| match item.unwrap() {
            Replayed::Record(stored) => stored.record.event.change.kind().to_owned(),
            Replayed::Refused { failure, .. } => format!("refused: {}", failure.problem),
        })
        .collect()
        .await;
    assert_eq!(
        replayed,
        [
            "created",
            "refused: signature",
            "refused: signature",
            "refused: time",
            "accepted"
        ]
    );
}

#[tokio::test]
async fn two_records_in_a_row_claiming_an_acceptance_are_not_believed_by_the_other_agency() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let id = dinsos
        .create(create_request("claimed-1", "maros-uptd-ppa", "shelter"))
        .await;
    let created = stored(&system, &id).await.remove(0);
    let state = created.record.state.clone();
    let uptd = agency("maros-uptd-ppa");
    let event = |seq: u64, change: Change, prev_hash| refbus_core::Event {
        referral_id: state.id,
        case_id: state.creation.case_id.clone(),
        seq,
        at: (system.now)(),
        actor: Actor::Agency {
            agency: uptd.clone(),
            system: None,
            operator: OperatorId::new("op").unwrap(),
        },
        request_id: None,
        change,
        prev_hash,
    };

    // UPTD PPA, with its own signing key and no router running, straight onto the bus: a
    // receipt whose stored state claims an acceptance (no acceptance event exists), then a
    // start of the service following that claimed state. Each record passes a check against
    // the stored state of the record before it.
    let received = event(2, Change::Received, state.last_hash);
    let made = evolve(Some(state.clone()), &received).unwrap();
    let mut claimed = evolve(
        Some(made.clone()),
        &event(3, Change::Accepted, made.last_hash),
    )
    .unwrap();
    claimed.seq = made.seq;
    claimed.last_hash = made.last_hash;
    let started = event(3, Change::Started, claimed.last_hash);
    let after = evolve(Some(claimed.clone()), &started).unwrap();
    let (bus, key) = (system.bus().await, system.signing.agency(&uptd));
    let mut previous = created.seq;
    for (n, (event, stored_state)) in [(received, &claimed), (started, &after)]
        .into_iter()
        .enumerate()
    {
        let request_id = refbus_core::RequestId::new(format!("claimed-{n}")).unwrap();
        let append = Append {
            event,
            state_after: stored_state,
            expected_last_seq: previous,
            prev_seq: previous,
            key: refbus_bus::Idempotency::Request {
                agency: &uptd,
                request_id: &request_id,
            },
        };
        previous = bus.append(&key, append).await.unwrap().0.seq;
    }

    // Dinas Sosial's adapter believes neither: the referral is still only requested, so its
    // sender may cancel it outright, and the cancellation follows the creation.
    assert_eq!(
        get(&dinsos, &id).await.status,
        i32::from(v1::ReferralStatus::Requested)
    );
    let cancelled = dinsos
        .client()
        .cancel_referral(dinsos.request(v1::CancelReferralRequest {
            request_id: "cancel-claimed".into(),
            referral_id: id.clone(),
            reason: refbus_e2e::reason("duplicate", ""),
        }))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(cancelled.status, i32::from(v1::ReferralStatus::Cancelled));
    let records = stored(&system, &id).await;
    let last = records.last().unwrap();
    assert_eq!((last.record.event.seq, last.prev_seq), (2, created.seq));
    // UPTD PPA's own adapter reads the same now.
    let uptd_system = system.agency("maros-uptd-ppa").await;
    assert_eq!(
        get(&uptd_system, &id).await.status,
        i32::from(v1::ReferralStatus::Cancelled)
    );
}

#[tokio::test]
async fn garbage_on_an_agencys_subject_does_not_end_its_inbox() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let mut inbox = dinsos
        .client()
        .watch_inbox(dinsos.request(v1::WatchInboxRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let first = dinsos
        .create(create_request("inbox-1", "maros-uptd-ppa", "shelter"))
        .await;
    publish_raw(
        &system.nats.url(),
        &format!("refbus.v1.ref.maros-uptd-ppa.maros-dinsos.{first}"),
        b"\xffnot a record".to_vec(),
    )
    .await
    .unwrap();
    publish_raw(
        &system.nats.url(),
        "refbus.v1.ref.maros-uptd-ppa.maros-dinsos.junk",
        b"{\"event\":1}".to_vec(),
    )
    .await
    .unwrap();
    let second = dinsos
        .create(create_request("inbox-2", "maros-uptd-ppa", "shelter"))
        .await;
    let mut seen = Vec::new();
    while seen.len() < 2 {
        let item = inbox.next().await.unwrap().unwrap().item.unwrap();
        if let Some(v1::inbox_item::Item::Event(event)) = item.item {
            seen.push(event.referral_id);
        }
    }
    assert_eq!(seen, [first, second]);
}

#[tokio::test]
async fn an_auditor_verifies_a_records_signature_with_python_alone() {
    let python = refbus_e2e::repo_root().join(".tools/venv/bin/python");
    assert!(python.exists(), "run scripts/install-tools.sh first");
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let id = dinsos
        .create(create_request("python-1", "maros-uptd-ppa", "shelter"))
        .await;
    let created = stored(&system, &id).await.remove(0);

    // The message exactly as JetStream stores it.
    let client = async_nats::connect(system.nats.url()).await.unwrap();
    let stream = async_nats::jetstream::new(client)
        .get_stream("REFBUS_EVENTS")
        .await
        .unwrap();
    let message = stream.direct_get(created.seq).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.json");
    std::fs::write(&good, &message.payload).unwrap();
    let tampered = dir.path().join("tampered.json");
    let text = String::from_utf8(message.payload.to_vec()).unwrap();
    std::fs::write(&tampered, text.replacen("\"shelter\"", "\"legal_aid\"", 1)).unwrap();

    let key = system
        .signing
        .agency(&agency("maros-dinsos"))
        .verifying_key()
        .to_base64();
    let verify = |file: &std::path::Path, subject: &str| {
        std::process::Command::new(&python)
            .arg(refbus_e2e::repo_root().join("tests/python/verify_record.py"))
            .arg("--message")
            .arg(file)
            .args(["--subject", subject, "--key", &key])
            .output()
            .unwrap()
    };
    let ok = verify(&good, &created.subject);
    assert!(ok.status.success(), "{ok:?}");
    assert!(String::from_utf8_lossy(&ok.stdout).starts_with("OK: event 1 of referral"));
    // A changed byte, or the same record on another subject, is refused.
    let altered = verify(&tampered, &created.subject);
    assert!(!altered.status.success());
    let moved = verify(
        &good,
        &created.subject.replace("maros-uptd-ppa", "polres-maros"),
    );
    assert!(!moved.status.success());
    assert!(String::from_utf8_lossy(&moved.stdout).contains("signature does not match"));
}
