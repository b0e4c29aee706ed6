//! Retries, races and reconnections: a retried request has its original effect once; two
//! agencies' operators acting at once never fork a referral; an inbox resumed after an adapter
//! restart misses nothing and repeats nothing.

use std::collections::HashSet;

use futures::StreamExt;
use refbus_e2e::{System, create_request};
use refbus_proto::v1;

#[tokio::test]
async fn a_retried_request_returns_the_original_and_writes_nothing() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let uptd = system.agency("maros-uptd-ppa").await;

    let request = create_request("dinsos-retry-1", "maros-uptd-ppa", "shelter");
    let first = dinsos
        .client()
        .create_referral(dinsos.request(request.clone()))
        .await
        .unwrap()
        .into_inner();
    let stored = system.stored_messages().await;
    let retry = dinsos
        .client()
        .create_referral(dinsos.request(request))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        system.stored_messages().await,
        stored,
        "a retried create writes nothing"
    );
    assert_eq!(
        retry.event.as_ref().unwrap().event_id,
        first.event.as_ref().unwrap().event_id
    );
    assert_eq!(
        retry.referral.as_ref().unwrap().referral_id,
        first.referral.as_ref().unwrap().referral_id
    );
    let id = first.referral.unwrap().referral_id;

    let accept = v1::AcceptReferralRequest {
        request_id: "uptd-accept-1".into(),
        referral_id: id.clone(),
    };
    let accepted = uptd
        .client()
        .accept_referral(uptd.request(accept.clone()))
        .await
        .unwrap()
        .into_inner();
    let stored = system.stored_messages().await;
    // The retry comes while the acceptance is the latest event, and again after another event.
    let again = uptd
        .client()
        .accept_referral(uptd.request(accept.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.event, accepted.event);
    let note = v1::AddNoteRequest {
        request_id: "dinsos-note-1".into(),
        referral_id: id.clone(),
        note: "catatan".into(),
        sealed_note: None,
    };
    dinsos
        .client()
        .add_note(dinsos.request(note.clone()))
        .await
        .unwrap();
    let later = uptd
        .client()
        .accept_referral(uptd.request(accept))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        later.event.as_ref().unwrap().seq,
        accepted.event.as_ref().unwrap().seq
    );
    // A retried note, which the life cycle would allow again, is recognised by its request id.
    let note_again = dinsos
        .client()
        .add_note(dinsos.request(note))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(note_again.event.as_ref().unwrap().seq, 3);
    assert_eq!(
        system.stored_messages().await,
        stored + 1,
        "only the note was new"
    );

    // A request id reused for another referral is refused, not answered with the other one.
    let second = dinsos
        .client()
        .create_referral(dinsos.request(create_request(
            "dinsos-retry-2",
            "maros-uptd-ppa",
            "shelter",
        )))
        .await
        .unwrap()
        .into_inner();
    let reused = v1::AddNoteRequest {
        request_id: "dinsos-note-1".into(),
        referral_id: second.referral.unwrap().referral_id,
        note: "lain".into(),
        sealed_note: None,
    };
    let refused = dinsos
        .client()
        .add_note(dinsos.request(reused))
        .await
        .unwrap_err();
    assert_eq!(
        refused.code(),
        tonic::Code::AlreadyExists,
        "{}",
        refused.message()
    );

    // The same request id from another agency is another request.
    let police = system.agency("polres-maros").await;
    let own = police
        .client()
        .create_referral(police.request(create_request(
            "dinsos-retry-1",
            "maros-uptd-ppa",
            "shelter",
        )))
        .await
        .unwrap()
        .into_inner();
    assert_ne!(own.referral.unwrap().referral_id, id);
}

#[tokio::test]
async fn two_concurrent_accepts_of_one_referral_exactly_one_wins() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let uptd = system.agency("maros-uptd-ppa").await;
    for round in 0..10 {
        let created = dinsos
            .client()
            .create_referral(dinsos.request(create_request(
                &format!("race-{round}"),
                "maros-uptd-ppa",
                "shelter",
            )))
            .await
            .unwrap()
            .into_inner();
        let id = created.referral.unwrap().referral_id;
        let (ani, budi) = (uptd.as_operator("ani"), uptd.as_operator("budi"));
        let accept = |system: refbus_e2e::AgencySystem, request_id: &str| {
            let request = v1::AcceptReferralRequest {
                request_id: request_id.into(),
                referral_id: id.clone(),
            };
            async move {
                system
                    .client()
                    .accept_referral(system.request(request))
                    .await
            }
        };
        let (first, second) = tokio::join!(
            accept(ani, &format!("ani-{round}")),
            accept(budi, &format!("budi-{round}"))
        );
        let outcomes = [first, second];
        let winners: Vec<_> = outcomes.iter().filter_map(|o| o.as_ref().ok()).collect();
        assert_eq!(winners.len(), 1, "round {round}: {outcomes:?}");
        let loser = outcomes.iter().find_map(|o| o.as_ref().err()).unwrap();
        assert!(
            matches!(
                loser.code(),
                tonic::Code::FailedPrecondition | tonic::Code::Aborted
            ),
            "round {round}: {loser:?}"
        );
        let history = system
            .bus()
            .await
            .history(&refbus_bus::subjects::referral_pattern(
                &id.parse().unwrap(),
            ))
            .await
            .unwrap();
        assert_eq!(
            history.len(),
            2,
            "round {round}: one create and one acceptance"
        );
    }
}

#[tokio::test]
async fn an_inbox_resumed_after_an_adapter_restart_has_no_gap_and_no_duplicate() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let uptd = system.agency("maros-uptd-ppa").await;
    for n in 0..5 {
        dinsos
            .client()
            .create_referral(dinsos.request(create_request(
                &format!("before-{n}"),
                "maros-uptd-ppa",
                "shelter",
            )))
            .await
            .unwrap();
    }
    // UPTD PPA's system reads three items and remembers the last cursor.
    let mut stream = uptd
        .client()
        .watch_inbox(uptd.request(v1::WatchInboxRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let mut seen = Vec::new();
    for _ in 0..3 {
        seen.push(stream.next().await.unwrap().unwrap().item.unwrap());
    }
    let cursor = seen.last().unwrap().cursor.clone();
    drop(stream);

    // The adapter restarts; more referrals arrive meanwhile through Dinsos's adapter.
    let agency = uptd.agency.clone();
    system.stop_adapter(&agency).await;
    for n in 0..4 {
        dinsos
            .client()
            .create_referral(dinsos.request(create_request(
                &format!("during-{n}"),
                "maros-uptd-ppa",
                "shelter",
            )))
            .await
            .unwrap();
    }
    let uptd = system.agency("maros-uptd-ppa").await;
    let mut resumed = uptd
        .client()
        .watch_inbox(uptd.request(v1::WatchInboxRequest { cursor }))
        .await
        .unwrap()
        .into_inner();
    for _ in 0..6 {
        seen.push(resumed.next().await.unwrap().unwrap().item.unwrap());
    }
    let ids: Vec<String> = seen
        .iter()
        .map(|item| match &item.item {
            Some(v1::inbox_item::Item::Event(event)) => event.referral_id.clone(),
            other => panic!("{other:?}"),
        })
        .collect();
    let unique: HashSet<_> = ids.iter().collect();
    assert_eq!(unique.len(), 9, "nine referrals, each once: {ids:?}");
    let cursors: Vec<u64> = seen
        .iter()
        .map(|item| item.cursor.parse().unwrap())
        .collect();
    assert!(
        cursors.windows(2).all(|w| w[0] < w[1]),
        "in order: {cursors:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listing_thousands_of_referrals_page_by_page_sees_each_once_while_more_arrive() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let uptd = system.agency("maros-uptd-ppa").await;
    const TOTAL: usize = 2_000;
    // Created concurrently, a few hundred at a time.
    let mut created = HashSet::new();
    for chunk in 0..(TOTAL / 250) {
        let calls = (0..250).map(|n| {
            let dinsos = dinsos.clone();
            async move {
                let request =
                    create_request(&format!("bulk-{chunk}-{n}"), "maros-uptd-ppa", "shelter");
                dinsos.create(request).await
            }
        });
        created.extend(futures::future::join_all(calls).await);
    }
    assert_eq!(created.len(), TOTAL);

    // UPTD PPA pages through what it received; referrals arriving meanwhile (newer) never
    // shift the pages it has not read yet.
    let mut seen = Vec::new();
    let mut token = String::new();
    let mut pages = 0;
    loop {
        let page = uptd
            .client()
            .list_referrals(uptd.request(v1::ListReferralsRequest {
                side: v1::Party::Recipient.into(),
                page_size: 300,
                page_token: token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        seen.extend(page.referrals.into_iter().map(|r| r.referral_id));
        if pages == 1 {
            dinsos
                .client()
                .create_referral(dinsos.request(create_request(
                    "arrives-meanwhile",
                    "maros-uptd-ppa",
                    "shelter",
                )))
                .await
                .unwrap();
        }
        pages += 1;
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let unique: HashSet<_> = seen.iter().cloned().collect();
    assert_eq!(unique.len(), seen.len(), "no referral twice");
    assert_eq!(
        unique, created,
        "every referral once; the one that arrived later is on the first page of the next read"
    );
    assert_eq!(pages, 7);

    // Filters: the same list by status, after accepting a few.
    for id in seen.iter().take(5) {
        uptd.client()
            .accept_referral(uptd.request(v1::AcceptReferralRequest {
                request_id: format!("acc-{id}"),
                referral_id: id.clone(),
            }))
            .await
            .unwrap();
    }
    // A call examines a bounded number of referrals: a narrow filter may take several pages,
    // some with fewer referrals than asked for, until the token comes back empty.
    let mut accepted = Vec::new();
    let mut token = String::new();
    let mut calls = 0;
    loop {
        let page = uptd
            .client()
            .list_referrals(uptd.request(v1::ListReferralsRequest {
                statuses: vec![v1::ReferralStatus::Accepted.into()],
                page_token: token.clone(),
                ..Default::default()
            }))
            .await
            .unwrap()
            .into_inner();
        calls += 1;
        accepted.extend(page.referrals.into_iter().map(|r| r.referral_id));
        if page.next_page_token.is_empty() {
            break;
        }
        token = page.next_page_token;
    }
    let expected: Vec<String> = seen.iter().take(5).cloned().collect();
    assert_eq!(
        accepted, expected,
        "the five accepted, newest first, once each"
    );
    // 2,001 referrals, at most 500 examined per call.
    assert_eq!(calls, 5);
}

/// Finding 4 of docs/RELIABILITY.md: on a replicated stream a replica that is behind answers
/// reads from what it has. An agency's adapter never answers NOT_FOUND for a referral it wrote
/// or its inbox delivered, nor an older state than one it saw: UNAVAILABLE ("retry") at worst.
#[tokio::test]
async fn a_replica_behind_never_makes_a_referral_look_unknown_to_the_adapters_that_saw_it() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let uptd = system.agency("maros-uptd-ppa").await;
    let mut inbox = uptd
        .client()
        .watch_inbox(uptd.request(v1::WatchInboxRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let id = dinsos
        .create(create_request("behind-1", "maros-uptd-ppa", "shelter"))
        .await;
    let subject = format!("refbus.v1.ref.maros-uptd-ppa.maros-dinsos.{id}");
    refbus_testkit::hostile::replica_behind(
        &system.nats.url(),
        &system.nats.stream_settings().name,
        &subject,
    )
    .await
    .unwrap();
    // UPTD PPA's inbox delivers the new referral.
    let delivered = inbox.next().await.unwrap().unwrap().item.unwrap();
    match delivered.item {
        Some(v1::inbox_item::Item::Event(event)) => assert_eq!(event.referral_id, id),
        other => panic!("{other:?}"),
    }

    let get = |agency: &refbus_e2e::AgencySystem| {
        let (client, request) = (
            agency.client(),
            agency.request(v1::GetReferralRequest {
                referral_id: id.clone(),
            }),
        );
        async move { client.clone().get_referral(request).await }
    };
    let mut answered = 0;
    for _ in 0..10 {
        for agency in [&dinsos, &uptd] {
            match get(agency).await {
                Ok(found) => {
                    assert_eq!(found.into_inner().referral.unwrap().referral_id, id);
                    answered += 1;
                }
                Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
            }
        }
    }
    assert!(answered > 0, "every read was unavailable");

    // UPTD PPA accepts, retrying an UNAVAILABLE with the same request id as the contract says;
    // then neither party reads the referral as it was before.
    let accept = v1::AcceptReferralRequest {
        request_id: "uptd-behind-1".into(),
        referral_id: id.clone(),
    };
    let mut accepted = None;
    for _ in 0..20 {
        match uptd
            .client()
            .accept_referral(uptd.request(accept.clone()))
            .await
        {
            Ok(answer) => {
                accepted = Some(answer.into_inner());
                break;
            }
            Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
        }
    }
    let accepted = accepted.expect("twenty attempts unavailable");
    assert_eq!(
        accepted.referral.unwrap().status(),
        v1::ReferralStatus::Accepted
    );
    let acceptance = accepted.event.unwrap().event_id;
    // Dinsos's inbox delivers the acceptance; from then on its reads show it.
    let mut sender_inbox = dinsos
        .client()
        .watch_inbox(dinsos.request(v1::WatchInboxRequest::default()))
        .await
        .unwrap()
        .into_inner();
    loop {
        let item = sender_inbox.next().await.unwrap().unwrap().item.unwrap();
        if matches!(item.item, Some(v1::inbox_item::Item::Event(event)) if event.event_id == acceptance)
        {
            break;
        }
    }
    for _ in 0..10 {
        for agency in [&dinsos, &uptd] {
            match get(agency).await {
                Ok(found) => assert_eq!(
                    found.into_inner().referral.unwrap().status(),
                    v1::ReferralStatus::Accepted
                ),
                Err(status) => assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}"),
            }
        }
    }
}
