//! Bounded work per call: a GetReferral costs the same few bus reads however long the
//! referral's history; an adapter serves a limited number of inbox streams and ends idle ones
//! with a status; a bus that stops answering makes a call fail with UNAVAILABLE, never hang.

use std::time::Duration;

use refbus_adapter::Options;
use refbus_e2e::{AgencySystem, System, create_request};
use refbus_proto::v1;
use tonic::Code;

/// Longer than the bus's own bound on a request: a call that takes this long hangs.
const HANG: Duration = Duration::from_secs(20);

/// A referral sent by `dinsos` with `notes` notes after its creation (`notes + 1` events);
/// its id.
async fn referral_with_notes(dinsos: &AgencySystem, request_id: &str, notes: usize) -> String {
    let id = dinsos
        .create(create_request(request_id, "maros-uptd-ppa", "shelter"))
        .await;
    for n in 0..notes {
        dinsos
            .client()
            .add_note(dinsos.request(v1::AddNoteRequest {
                request_id: format!("{request_id}-note-{n}"),
                referral_id: id.clone(),
                note: format!("catatan {n}"),
                sealed_note: None,
            }))
            .await
            .unwrap();
    }
    id
}

async fn get(system: &AgencySystem, id: &str) -> Result<v1::Referral, tonic::Status> {
    system
        .client()
        .get_referral(system.request(v1::GetReferralRequest {
            referral_id: id.to_owned(),
        }))
        .await
        .map(|answer| answer.into_inner().referral.unwrap())
}

#[tokio::test]
async fn a_get_reads_the_same_few_records_whatever_the_history() {
    let mut system = System::start().await;
    // The adapter's own bus handle: its clones share the count of direct reads.
    let bus = system.bus().await;
    let dinsos = system.agency_on("maros-dinsos", bus.clone()).await;
    // Two events, not one: the last record of a longer referral is checked against its
    // predecessor, one more read than for a lone creation.
    let short = referral_with_notes(&dinsos, "short", 1).await;
    let long = referral_with_notes(&dinsos, "long", 199).await;

    let mut reads = Vec::new();
    for id in [&short, &long] {
        let before = bus.direct_reads();
        let referral = get(&dinsos, id).await.unwrap();
        reads.push(bus.direct_reads() - before);
        // The identity comes from the creation, which the get still reads and checks.
        assert_eq!(
            referral.identity.unwrap().nik,
            refbus_e2e::identity("").nik,
            "{id}"
        );
    }
    assert_eq!(
        reads[0], reads[1],
        "a referral of 200 events costs as many reads as one of 2: {reads:?}"
    );
    assert!(reads[1] <= 6, "a get is a handful of reads: {reads:?}");

    // The creation alone is one read, the first message on the subject.
    let subject = bus
        .last_subject(&refbus_bus::subjects::referral_pattern(
            &refbus_core::ReferralId::parse(&long).unwrap(),
        ))
        .await
        .unwrap()
        .unwrap();
    let before = bus.direct_reads();
    let creation = bus
        .checked_creation(&system.verifier(), &subject)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(bus.direct_reads() - before, 1);
    assert_eq!(creation.record.event.seq, 1);
    assert!(creation.record.state.creation.identity.is_some());
}

/// One page of `system`'s list, and the direct reads it cost on `bus`.
async fn list_page(
    system: &AgencySystem,
    bus: &refbus_bus::Bus,
    side: v1::Party,
    page_token: String,
) -> (v1::ListReferralsResponse, u64) {
    let before = bus.direct_reads();
    let page = system
        .client()
        .list_referrals(system.request(v1::ListReferralsRequest {
            side: side.into(),
            page_size: 3,
            page_token,
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    (page, bus.direct_reads() - before)
}

#[tokio::test]
async fn a_page_of_a_list_reads_the_same_few_records_however_many_referrals_the_agency_has() {
    let mut system = System::start().await;
    let bus = system.bus().await;
    let dinsos = system.agency_on("maros-dinsos", bus.clone()).await;
    let uptd = system.agency_on("maros-uptd-ppa", bus.clone()).await;
    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(
            dinsos
                .create(create_request(
                    &format!("few-{n}"),
                    "maros-uptd-ppa",
                    "shelter",
                ))
                .await,
        );
    }
    let mut reads = Vec::new();
    for (system, side) in [(&dinsos, v1::Party::Sender), (&uptd, v1::Party::Recipient)] {
        let (first, cost) = list_page(system, &bus, side, String::new()).await;
        let newest: Vec<&str> = ids.iter().rev().take(3).map(String::as_str).collect();
        let shown: Vec<&str> = first
            .referrals
            .iter()
            .map(|r| r.referral_id.as_str())
            .collect();
        assert_eq!(shown, newest, "newest first");
        let (second, second_cost) =
            list_page(system, &bus, side, first.next_page_token.clone()).await;
        assert_eq!(second.referrals.len(), 2);
        assert!(second.next_page_token.is_empty());
        assert!(second_cost < cost, "{second_cost} {cost}");
        reads.push(cost);
    }

    // Forty-five more referrals, some of them further back with notes: a page costs the same.
    for n in 0..45 {
        let id = dinsos
            .create(create_request(
                &format!("many-{n}"),
                "maros-uptd-ppa",
                "shelter",
            ))
            .await;
        ids.push(id);
    }
    for (index, (system, side)) in [(&dinsos, v1::Party::Sender), (&uptd, v1::Party::Recipient)]
        .into_iter()
        .enumerate()
    {
        let (first, cost) = list_page(system, &bus, side, String::new()).await;
        assert_eq!(first.referrals.len(), 3);
        assert_eq!(
            cost, reads[index],
            "a page of 3 among 50 referrals costs what it cost among 5 ({side:?})"
        );
        // Deep in the list, a page costs no more than the first.
        let mut token = first.next_page_token;
        let mut seen = first.referrals.len();
        while !token.is_empty() {
            let (page, page_cost) = list_page(system, &bus, side, token).await;
            assert!(page_cost <= cost, "{page_cost} > {cost} ({side:?})");
            seen += page.referrals.len();
            token = page.next_page_token;
        }
        assert_eq!(seen, 50, "every referral once ({side:?})");
    }
    let agencies = system.registry.agencies.len() as u64;
    // A head per index chain of the side, then a few reads per referral shown.
    assert!(
        reads.iter().all(|cost| *cost <= agencies + 4 * 3),
        "{reads:?}"
    );
}

/// Opens a watch of `system`'s inbox from the beginning.
async fn watch(
    system: &AgencySystem,
) -> Result<tonic::Streaming<v1::WatchInboxResponse>, tonic::Status> {
    system
        .client()
        .watch_inbox(system.request(v1::WatchInboxRequest::default()))
        .await
        .map(tonic::Response::into_inner)
}

/// How many consumers the events stream has: an inbox stream holds one.
async fn consumers(system: &System) -> usize {
    let js = async_nats::jetstream::new(async_nats::connect(system.nats.url()).await.unwrap());
    let mut stream = js
        .get_stream(refbus_bus::StreamSettings::default().name)
        .await
        .unwrap();
    stream.info().await.unwrap().state.consumer_count
}

#[tokio::test]
async fn inbox_streams_past_the_cap_are_refused_and_a_closed_one_frees_its_slot() {
    let mut system = System::start().await;
    system.options = Options {
        max_inbox_streams: 2,
        ..Options::default()
    };
    let uptd = system.agency("maros-uptd-ppa").await;
    let first = watch(&uptd).await.unwrap();
    let _second = watch(&uptd).await.unwrap();
    let open = consumers(&system).await;

    let refused = watch(&uptd).await.unwrap_err();
    assert_eq!(refused.code(), Code::ResourceExhausted, "{refused:?}");
    assert_eq!(
        refused.message(),
        "this adapter already serves 2 inbox streams; close one or retry later"
    );
    assert_eq!(
        consumers(&system).await,
        open,
        "a refused watch opens nothing"
    );

    // The client hangs up: the adapter notices when the connection tells it, so retry until
    // then (each try is a round trip, refused at once while the slot is taken).
    drop(first);
    let reopened = tokio::time::timeout(HANG, async {
        loop {
            match watch(&uptd).await {
                Ok(stream) => return stream,
                Err(status) => assert_eq!(status.code(), Code::ResourceExhausted),
            }
        }
    })
    .await
    .expect("the slot of a closed stream was never freed");
    drop(reopened);
}

#[tokio::test]
async fn an_idle_inbox_stream_ends_with_unavailable_and_frees_its_slot() {
    let mut system = System::start().await;
    system.options = Options {
        max_inbox_streams: 1,
        inbox_idle_timeout: Duration::from_millis(300),
        ..Options::default()
    };
    let uptd = system.agency("maros-uptd-ppa").await;
    let mut stream = watch(&uptd).await.unwrap();
    assert_eq!(
        watch(&uptd).await.unwrap_err().code(),
        Code::ResourceExhausted
    );

    let end = tokio::time::timeout(HANG, stream.message())
        .await
        .expect("an idle stream was never closed")
        .unwrap_err();
    assert_eq!(end.code(), Code::Unavailable, "{end:?}");
    assert!(
        end.message().contains("reconnect with your cursor"),
        "{}",
        end.message()
    );
    // The slot is given back before the status is sent: a new stream opens at once.
    let mut again = watch(&uptd).await.unwrap();
    assert_eq!(
        tokio::time::timeout(HANG, again.message())
            .await
            .unwrap()
            .unwrap_err()
            .code(),
        Code::Unavailable
    );
}

#[tokio::test]
async fn a_get_answers_unavailable_while_the_bus_does_not_answer() {
    let mut system = System::start().await;
    // A read rides through an outage for `ride_through` (30 s as deployed), then answers
    // UNAVAILABLE: shortened here so that the bound, not the ride, is what is tested.
    system.options.ride_through = Duration::from_secs(2);
    let dinsos = system.agency("maros-dinsos").await;
    let id = dinsos
        .create(create_request("paused-1", "maros-uptd-ppa", "shelter"))
        .await;

    system.nats.pause().unwrap();
    let answer = tokio::time::timeout(HANG, get(&dinsos, &id)).await;
    system.nats.resume().unwrap();
    let status = answer
        .expect("GetReferral hung while the server was paused")
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{status:?}");

    // Nothing is left stuck: once the server answers again, so does the adapter.
    let referral = tokio::time::timeout(HANG, get(&dinsos, &id))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(referral.referral_id, id);
}
