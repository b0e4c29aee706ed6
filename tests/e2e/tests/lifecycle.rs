//! The life cycle through gRPC between agencies' adapters over a real nats-server: a referral
//! sent, received, accepted, served and completed; a rejection rerouted by the sender; a case
//! with parallel referrals. The first two run again on a 3-node JetStream cluster.

use futures::StreamExt;
use refbus_e2e::{AgencySystem, System, create_request, reason};
use refbus_proto::v1;
use refbus_proto::v1::inbox_item::Item;

fn status_of(referral: &Option<v1::Referral>) -> v1::ReferralStatus {
    referral.as_ref().unwrap().status()
}

fn change_kind(event: &v1::Event) -> &'static str {
    use v1::event::Change::*;
    match event.change.as_ref().unwrap() {
        Created(_) => "created",
        Received(_) => "received",
        Accepted(_) => "accepted",
        Rejected(_) => "rejected",
        Started(_) => "started",
        AppointmentScheduled(_) => "appointment_scheduled",
        NoteAdded(_) => "note_added",
        Completed(_) => "completed",
        Rerouted(_) => "rerouted",
        _ => "other",
    }
}

/// Reads `count` items of an agency's inbox from the beginning.
async fn inbox(system: &AgencySystem, from: &str, count: usize) -> Vec<v1::InboxItem> {
    let stream = system
        .client()
        .watch_inbox(system.request(v1::WatchInboxRequest {
            cursor: from.to_owned(),
        }))
        .await
        .unwrap()
        .into_inner();
    stream
        .take(count)
        .map(|item| item.unwrap().item.unwrap())
        .collect()
        .await
}

#[tokio::test]
async fn a_referral_goes_from_request_to_completion_and_both_sides_see_each_step() {
    Box::pin(request_to_completion(System::start().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_referral_goes_from_request_to_completion() {
    Box::pin(request_to_completion(
        System::with_nats(refbus_e2e::cluster()).await,
    ))
    .await;
}

async fn request_to_completion(mut system: System) {
    let dinsos = system.agency("maros-dinsos").await;
    let uptd = system.agency("maros-uptd-ppa").await;

    let created = dinsos
        .client()
        .create_referral(dinsos.request(create_request("dinsos-0001", "maros-uptd-ppa", "shelter")))
        .await
        .unwrap()
        .into_inner();
    let referral = created.referral.unwrap();
    let id = referral.referral_id.clone();
    assert_eq!(referral.status(), v1::ReferralStatus::Requested);
    assert_eq!(
        referral.identity.as_ref().unwrap().full_name,
        "Siti Contoh Korban"
    );
    assert!(
        referral
            .clocks
            .iter()
            .any(|clock| clock.clock_id == "shelter_start"),
        "{:?}",
        referral.clocks
    );

    // UPTD PPA's system finds it in its inbox, identity readable.
    let items = inbox(&uptd, "", 1).await;
    let Some(Item::Event(event)) = &items[0].item else {
        panic!("expected an event")
    };
    assert_eq!(event.referral_id, id);
    let Some(v1::event::Change::Created(created_change)) = &event.change else {
        panic!()
    };
    assert_eq!(
        created_change.identity.as_ref().unwrap().nik,
        "7309014503120001"
    );

    let id_request = |request_id: &str| (request_id.to_owned(), id.clone());
    let (r, i) = id_request("uptd-1");
    let received = uptd
        .client()
        .confirm_receipt(uptd.request(v1::ConfirmReceiptRequest {
            request_id: r,
            referral_id: i,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status_of(&received.referral), v1::ReferralStatus::Received);
    let (r, i) = id_request("uptd-2");
    let accepted = uptd
        .client()
        .accept_referral(uptd.request(v1::AcceptReferralRequest {
            request_id: r,
            referral_id: i,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(status_of(&accepted.referral), v1::ReferralStatus::Accepted);
    let (r, i) = id_request("uptd-3");
    uptd.client()
        .start_referral(uptd.request(v1::StartReferralRequest {
            request_id: r,
            referral_id: i,
        }))
        .await
        .unwrap();
    let (r, i) = id_request("uptd-4");
    let scheduled = uptd
        .client()
        .schedule_appointment(uptd.request(v1::ScheduleAppointmentRequest {
            request_id: r,
            referral_id: i,
            time: Some(prost_types_timestamp(1_900_000_000)),
            note: "Konseling pertama di UPTD PPA".to_owned(),
            sealed_note: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        scheduled.referral.as_ref().unwrap().business_status,
        "scheduled"
    );
    assert_eq!(
        status_of(&scheduled.referral),
        v1::ReferralStatus::InProgress
    );
    let (r, i) = id_request("dinsos-note");
    dinsos
        .client()
        .add_note(dinsos.request(v1::AddNoteRequest {
            request_id: r,
            referral_id: i,
            note: "Nenek bisa dihubungi sore hari".to_owned(),
            sealed_note: None,
        }))
        .await
        .unwrap();
    let (r, i) = id_request("uptd-5");
    let completed = uptd
        .client()
        .complete_referral(uptd.request(v1::CompleteReferralRequest {
            request_id: r,
            referral_id: i,
            outcome: Some(v1::Outcome {
                code: "service_provided".to_owned(),
                note: "Sudah di rumah aman".to_owned(),
                sealed_note: None,
            }),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        status_of(&completed.referral),
        v1::ReferralStatus::Completed
    );
    let outcome = completed.referral.unwrap().outcome.unwrap();
    assert_eq!(
        outcome.note, "Sudah di rumah aman",
        "the recipient reads its own sealed note"
    );

    // The sender saw every step, in order, with the notes opened for it.
    let sender_view = inbox(&dinsos, "", 7).await;
    let kinds: Vec<&str> = sender_view
        .iter()
        .map(|item| match &item.item {
            Some(Item::Event(event)) => change_kind(event),
            _ => "notice",
        })
        .collect();
    assert_eq!(
        kinds,
        [
            "created",
            "received",
            "accepted",
            "started",
            "appointment_scheduled",
            "note_added",
            "completed"
        ]
    );
    let Some(Item::Event(last)) = &sender_view[6].item else {
        panic!()
    };
    let Some(v1::event::Change::Completed(done)) = &last.change else {
        panic!()
    };
    assert_eq!(done.outcome.as_ref().unwrap().note, "Sudah di rumah aman");
    assert_eq!(
        last.author_operator, "operator@maros-uptd-ppa",
        "the operator is recorded on the event"
    );

    // Get shows the final state with the identity, to both parties only.
    let got = dinsos
        .client()
        .get_referral(dinsos.request(v1::GetReferralRequest {
            referral_id: id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let got = got.referral.unwrap();
    assert_eq!(got.seq, 7);
    assert_eq!(got.identity.unwrap().full_name, "Siti Contoh Korban");
    let police = system.agency("polres-maros").await;
    let hidden = police
        .client()
        .get_referral(police.request(v1::GetReferralRequest { referral_id: id }))
        .await
        .unwrap_err();
    // Answered as an unknown id: a non-party must not learn that the referral exists.
    assert_eq!(hidden.code(), tonic::Code::NotFound);
}

fn prost_types_timestamp(seconds: i64) -> prost_types::Timestamp {
    prost_types::Timestamp { seconds, nanos: 0 }
}

#[tokio::test]
async fn a_rejected_referral_is_rerouted_by_the_sender_to_a_linked_child() {
    Box::pin(rejected_and_rerouted(System::start().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_a_rejected_referral_is_rerouted_to_a_linked_child() {
    Box::pin(rejected_and_rerouted(
        System::with_nats(refbus_e2e::cluster()).await,
    ))
    .await;
}

async fn rejected_and_rerouted(mut system: System) {
    let dinsos = system.agency("maros-dinsos").await;
    let uptd = system.agency("maros-uptd-ppa").await;
    let hukum = system.agency("maros-bagian-hukum").await;

    let created = dinsos
        .client()
        .create_referral(dinsos.request(create_request(
            "dinsos-legal-1",
            "maros-uptd-ppa",
            "legal_aid",
        )))
        .await
        .unwrap()
        .into_inner();
    let id = created.referral.unwrap().referral_id;
    uptd.client()
        .reject_referral(uptd.request(v1::RejectReferralRequest {
            request_id: "uptd-r1".into(),
            referral_id: id.clone(),
            reason: reason("no_capacity", "Paralegal sedang cuti"),
        }))
        .await
        .unwrap();

    let rerouted = dinsos
        .client()
        .reroute_referral(dinsos.request(v1::RerouteReferralRequest {
            request_id: "dinsos-reroute-1".into(),
            referral_id: id.clone(),
            to: "maros-bagian-hukum".into(),
            note: "Ditolak UPTD PPA, mohon bantuan hukum".into(),
            sealed_note: None,
            sealed_identity: None,
        }))
        .await
        .unwrap()
        .into_inner();
    let original = rerouted.referral.unwrap();
    let child = rerouted.child_referral.unwrap();
    assert_eq!(
        original.status(),
        v1::ReferralStatus::Rejected,
        "a closed referral keeps its status"
    );
    assert_eq!(original.child_referral_ids, vec![child.referral_id.clone()]);
    assert_eq!(child.parent_referral_id, id);
    assert_eq!(child.recipient, "maros-bagian-hukum");
    assert_eq!(child.case_id, "MRS-2026-0042");

    // Bagian Hukum can read the re-sealed identity; UPTD PPA, no longer a party, cannot see it.
    let at_hukum = hukum
        .client()
        .get_referral(hukum.request(v1::GetReferralRequest {
            referral_id: child.referral_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(at_hukum.identity.unwrap().full_name, "Siti Contoh Korban");
    assert_eq!(at_hukum.note, "Ditolak UPTD PPA, mohon bantuan hukum");
    let at_uptd = uptd
        .client()
        .get_referral(uptd.request(v1::GetReferralRequest {
            referral_id: child.referral_id.clone(),
        }))
        .await;
    assert_eq!(at_uptd.unwrap_err().code(), tonic::Code::NotFound);

    // Retrying the reroute returns the same child and writes nothing.
    let before = system.stored_messages().await;
    let again = dinsos
        .client()
        .reroute_referral(dinsos.request(v1::RerouteReferralRequest {
            request_id: "dinsos-reroute-1".into(),
            referral_id: id.clone(),
            to: "maros-bagian-hukum".into(),
            note: "Ditolak UPTD PPA, mohon bantuan hukum".into(),
            sealed_note: None,
            sealed_identity: None,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(again.child_referral.unwrap().referral_id, child.referral_id);
    assert_eq!(system.stored_messages().await, before);
}

#[tokio::test]
async fn one_case_fans_out_to_parallel_referrals_each_with_its_own_clocks() {
    let mut system = System::start().await;
    let uptd = system.agency("maros-uptd-ppa").await;
    let targets = [
        ("polres-maros", "police_report"),
        ("maros-bagian-hukum", "legal_aid"),
        ("maros-rsud", "visum_et_repertum"),
    ];
    for (index, (recipient, service)) in targets.iter().enumerate() {
        let request = create_request(&format!("uptd-case42-{index}"), recipient, service);
        uptd.client()
            .create_referral(uptd.request(request))
            .await
            .unwrap();
    }
    let listed = uptd
        .client()
        .list_referrals(uptd.request(v1::ListReferralsRequest {
            case_id: "MRS-2026-0042".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.referrals.len(), 3);
    let police = listed
        .referrals
        .iter()
        .find(|r| r.service == "police_report")
        .unwrap();
    assert!(
        police
            .clocks
            .iter()
            .any(|clock| clock.clock_id == "tpks_pasal_41"),
        "{:?}",
        police.clocks
    );
    let legal = listed
        .referrals
        .iter()
        .find(|r| r.service == "legal_aid")
        .unwrap();
    assert!(
        !legal
            .clocks
            .iter()
            .any(|clock| clock.clock_id == "tpks_pasal_41")
    );

    // Police accepting its referral moves no other referral of the case.
    let police_system = system.agency("polres-maros").await;
    police_system
        .client()
        .accept_referral(police_system.request(v1::AcceptReferralRequest {
            request_id: "p-1".into(),
            referral_id: police.referral_id.clone(),
        }))
        .await
        .unwrap();
    let after = uptd
        .client()
        .list_referrals(uptd.request(v1::ListReferralsRequest {
            case_id: "MRS-2026-0042".into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let statuses: Vec<(String, v1::ReferralStatus)> = after
        .referrals
        .iter()
        .map(|r| (r.service.clone(), r.status()))
        .collect();
    assert!(statuses.contains(&("police_report".into(), v1::ReferralStatus::Accepted)));
    assert!(statuses.contains(&("legal_aid".into(), v1::ReferralStatus::Requested)));
    assert!(statuses.contains(&("visum_et_repertum".into(), v1::ReferralStatus::Requested)));
}
