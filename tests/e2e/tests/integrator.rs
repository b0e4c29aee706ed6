//! The contract as an integrator in another language reads it: each test is a promise of the
//! protos (codes, field paths, filters, cursors) that an integrator found broken, with the exact
//! gRPC status and, where the call is refused, proof that nothing was written.

use std::time::Duration;

use futures::future::LocalBoxFuture;
use refbus_e2e::{AgencySystem, System, create_request, identity, reason};
use refbus_proto::v1;
use tonic::Code;

/// Runs `call`, which must be refused with `code` and a message containing every one of
/// `parts`, and must write nothing to the bus. Boxed: a gRPC call's future is large.
fn refused<'a, T: std::fmt::Debug + 'a>(
    system: &'a System,
    what: &'a str,
    code: Code,
    parts: &'a [&'a str],
    call: impl std::future::Future<Output = Result<T, tonic::Status>> + 'a,
) -> LocalBoxFuture<'a, tonic::Status> {
    Box::pin(async move {
        let before = system.stored_messages().await;
        let status = call
            .await
            .expect_err(&format!("{what}: expected {code:?}, got an answer"));
        let after = system.stored_messages().await;
        assert_eq!(status.code(), code, "{what}: {}", status.message());
        for part in parts {
            assert!(
                status.message().contains(part),
                "{what}: `{}` does not say {part:?}",
                status.message()
            );
        }
        assert_eq!(after, before, "{what}: a refused call wrote to the bus");
        status
    })
}

async fn create(system: &AgencySystem, request: v1::CreateReferralRequest) -> v1::Referral {
    system
        .client()
        .create_referral(system.request(request))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
}

async fn reject(uptd: &AgencySystem, request_id: &str, referral: &str) {
    uptd.client()
        .reject_referral(uptd.request(v1::RejectReferralRequest {
            request_id: request_id.into(),
            referral_id: referral.into(),
            reason: reason("no_capacity", ""),
        }))
        .await
        .unwrap();
}

fn reroute(request_id: &str, referral: &str) -> v1::RerouteReferralRequest {
    v1::RerouteReferralRequest {
        request_id: request_id.into(),
        referral_id: referral.into(),
        to: "maros-bagian-hukum".into(),
        note: String::new(),
        sealed_note: None,
        sealed_identity: None,
    }
}

#[tokio::test]
async fn a_request_id_reused_with_other_content_is_already_exists_whatever_differs() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let original = create_request("reused-1", "maros-uptd-ppa", "legal_aid");
    let first = create(&dinsos, original.clone()).await;

    let variants: Vec<(&str, v1::CreateReferralRequest)> = vec![
        (
            "another recipient",
            v1::CreateReferralRequest {
                recipient: "maros-bagian-hukum".into(),
                ..original.clone()
            },
        ),
        (
            "another note",
            v1::CreateReferralRequest {
                note: "Catatan lain untuk penerima.".into(),
                ..original.clone()
            },
        ),
        (
            "no note",
            v1::CreateReferralRequest {
                note: String::new(),
                ..original.clone()
            },
        ),
        (
            "another identity",
            v1::CreateReferralRequest {
                person: Some(v1::create_referral_request::Person::Identity(identity(
                    "Orang Lain",
                ))),
                ..original.clone()
            },
        ),
        (
            "no identity",
            v1::CreateReferralRequest {
                person: None,
                ..original.clone()
            },
        ),
    ];
    for (what, request) in variants {
        refused(
            &system,
            what,
            Code::AlreadyExists,
            &[
                &first.referral_id,
                "already exists with other content",
                "use a new request_id",
            ],
            dinsos.client().create_referral(dinsos.request(request)),
        )
        .await;
    }

    // The same content again (sealed afresh) is a retry: the original answer, nothing written.
    let before = system.stored_messages().await;
    let again = create(&dinsos, original).await;
    assert_eq!(again.referral_id, first.referral_id);
    assert_eq!(again.identity.unwrap().full_name, "Siti Contoh Korban");
    assert_eq!(system.stored_messages().await, before);
}

#[tokio::test]
async fn an_identity_sealed_end_to_end_is_compared_envelope_for_envelope() {
    use prost::Message;
    use refbus_core::{AgencyId, ReferralId, RequestId};
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let sender = AgencyId::new("maros-dinsos").unwrap();
    let recipient = AgencyId::new("maros-uptd-ppa").unwrap();
    let id = ReferralId::derive(&sender, &RequestId::new("sealed-1").unwrap());
    // The agency's own system seals, with its key, for itself and the recipient.
    let keyring = system.keyring(&sender);
    let seal = || {
        let sealed = keyring
            .seal_for(
                &[&sender, &recipient],
                &identity("Siti Contoh Korban").encode_to_vec(),
                refbus_seal::Context::Identity(&id),
            )
            .unwrap();
        v1::SealedPayload {
            recipients: sealed.recipients.iter().map(ToString::to_string).collect(),
            envelope: sealed.envelope,
        }
    };
    let original = v1::CreateReferralRequest {
        person: Some(v1::create_referral_request::Person::SealedIdentity(seal())),
        ..create_request("sealed-1", "maros-uptd-ppa", "shelter")
    };
    let first = create(&dinsos, original.clone()).await;
    assert_eq!(first.referral_id, id.to_string());

    // Sealed again, even from the same plaintext, it is other content: the adapter never looks
    // inside what a client sealed end to end.
    refused(
        &system,
        "another envelope",
        Code::AlreadyExists,
        &["already exists with other content"],
        dinsos
            .client()
            .create_referral(dinsos.request(v1::CreateReferralRequest {
                person: Some(v1::create_referral_request::Person::SealedIdentity(seal())),
                ..original.clone()
            })),
    )
    .await;

    let before = system.stored_messages().await;
    assert_eq!(
        create(&dinsos, original).await.referral_id,
        first.referral_id
    );
    assert_eq!(system.stored_messages().await, before);
}

#[tokio::test]
async fn a_second_reroute_is_failed_precondition() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let uptd = system.agency("maros-uptd-ppa").await;
    let id = create(
        &dinsos,
        create_request("twice-1", "maros-uptd-ppa", "legal_aid"),
    )
    .await
    .referral_id;
    reject(&uptd, "twice-reject", &id).await;
    dinsos
        .client()
        .reroute_referral(dinsos.request(reroute("twice-reroute-1", &id)))
        .await
        .unwrap();

    refused(
        &system,
        "a second reroute",
        Code::FailedPrecondition,
        &[
            "cannot reroute a referral that is rejected",
            "already rerouted",
        ],
        dinsos
            .client()
            .reroute_referral(dinsos.request(reroute("twice-reroute-2", &id))),
    )
    .await;
}

#[tokio::test]
async fn a_non_party_cannot_tell_a_referral_from_an_unknown_id() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let police = system.agency("polres-maros").await;
    let id = create(
        &dinsos,
        create_request("hidden-1", "maros-uptd-ppa", "shelter"),
    )
    .await
    .referral_id;
    let unknown = "00000000000000000000000000";

    let mut answers = Vec::new();
    for referral_id in [id.as_str(), unknown] {
        let get = refused(
            &system,
            "GetReferral",
            Code::NotFound,
            &[&format!("referral {referral_id} does not exist")],
            police
                .client()
                .get_referral(police.request(v1::GetReferralRequest {
                    referral_id: referral_id.into(),
                })),
        )
        .await;
        let accept = refused(
            &system,
            "AcceptReferral",
            Code::NotFound,
            &[&format!("referral {referral_id} does not exist")],
            police
                .client()
                .accept_referral(police.request(v1::AcceptReferralRequest {
                    request_id: format!("accept-{referral_id}"),
                    referral_id: referral_id.into(),
                })),
        )
        .await;
        let moved = refused(
            &system,
            "RerouteReferral",
            Code::NotFound,
            &[&format!("referral {referral_id} does not exist")],
            police.client().reroute_referral(
                police.request(reroute(&format!("move-{referral_id}"), referral_id)),
            ),
        )
        .await;
        answers.push(
            [get, accept, moved]
                .map(|status| status.message().replace(referral_id, "<id>"))
                .to_vec(),
        );
    }
    assert_eq!(
        answers[0], answers[1],
        "the answers must not tell them apart"
    );
}

#[tokio::test]
async fn a_page_token_used_with_other_filters_is_refused() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    for n in 0..3 {
        create(
            &dinsos,
            create_request(&format!("page-{n}"), "maros-uptd-ppa", "shelter"),
        )
        .await;
    }
    let query = v1::ListReferralsRequest {
        service: "shelter".into(),
        page_size: 1,
        ..Default::default()
    };
    let first = dinsos
        .client()
        .list_referrals(dinsos.request(query.clone()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(first.referrals.len(), 1);
    let token = first.next_page_token;
    assert!(!token.is_empty());

    for (what, other) in [
        (
            "another service",
            v1::ListReferralsRequest {
                service: "legal_aid".into(),
                ..query.clone()
            },
        ),
        (
            "another case",
            v1::ListReferralsRequest {
                case_id: "MRS-2026-9999".into(),
                ..query.clone()
            },
        ),
        (
            "a status filter",
            v1::ListReferralsRequest {
                statuses: vec![v1::ReferralStatus::Completed.into()],
                ..query.clone()
            },
        ),
    ] {
        refused(
            &system,
            what,
            Code::InvalidArgument,
            &["page_token: it was given for other filters; start from the first page"],
            dinsos
                .client()
                .list_referrals(dinsos.request(v1::ListReferralsRequest {
                    page_token: token.clone(),
                    ..other
                })),
        )
        .await;
    }

    // With its own filters (another page size is fine) it reads on.
    let second = dinsos
        .client()
        .list_referrals(dinsos.request(v1::ListReferralsRequest {
            page_token: token,
            page_size: 5,
            ..query
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(second.referrals.len(), 2);
}

#[tokio::test]
async fn errors_state_the_contracts_lengths_and_field_paths() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let uptd = system.agency("maros-uptd-ppa").await;
    refused(
        &system,
        "a 65-character case id",
        Code::InvalidArgument,
        &["case_id: ", "use 1 to 64 printable ASCII characters"],
        dinsos
            .client()
            .create_referral(dinsos.request(v1::CreateReferralRequest {
                case_id: "C".repeat(65),
                ..create_request("long-case", "maros-uptd-ppa", "shelter")
            })),
    )
    .await;
    // 64 is allowed, as the proto says.
    let id = create(
        &dinsos,
        v1::CreateReferralRequest {
            case_id: "C".repeat(64),
            ..create_request("case-64", "maros-uptd-ppa", "shelter")
        },
    )
    .await
    .referral_id;

    refused(
        &system,
        "an unknown reason code",
        Code::InvalidArgument,
        &["reason.code: unknown reason code busy"],
        uptd.client()
            .reject_referral(uptd.request(v1::RejectReferralRequest {
                request_id: "reject-busy".into(),
                referral_id: id.clone(),
                reason: reason("busy", ""),
            })),
    )
    .await;
    uptd.client()
        .accept_referral(uptd.request(v1::AcceptReferralRequest {
            request_id: "accept-1".into(),
            referral_id: id.clone(),
        }))
        .await
        .unwrap();
    refused(
        &system,
        "an unknown outcome code",
        Code::InvalidArgument,
        &["outcome.code: unknown outcome code done"],
        uptd.client()
            .complete_referral(uptd.request(v1::CompleteReferralRequest {
                request_id: "complete-done".into(),
                referral_id: id,
                outcome: Some(v1::Outcome {
                    code: "done".into(),
                    note: String::new(),
                    sealed_note: None,
                }),
            })),
    )
    .await;
}

#[tokio::test]
async fn a_rejected_then_rerouted_referral_is_found_by_the_rerouted_filter() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let uptd = system.agency("maros-uptd-ppa").await;
    let id = create(
        &dinsos,
        create_request("filter-1", "maros-uptd-ppa", "legal_aid"),
    )
    .await
    .referral_id;
    reject(&uptd, "filter-reject", &id).await;
    let rerouted = dinsos
        .client()
        .reroute_referral(dinsos.request(reroute("filter-reroute", &id)))
        .await
        .unwrap()
        .into_inner();
    let child = rerouted.child_referral.unwrap().referral_id;

    let listed = |side: v1::Party| {
        let dinsos = dinsos.clone();
        async move {
            dinsos
                .client()
                .list_referrals(dinsos.request(v1::ListReferralsRequest {
                    side: side.into(),
                    statuses: vec![v1::ReferralStatus::Rerouted.into()],
                    ..Default::default()
                }))
                .await
                .unwrap()
                .into_inner()
                .referrals
        }
    };
    let found = listed(v1::Party::Sender).await;
    assert_eq!(
        found
            .iter()
            .map(|referral| referral.referral_id.as_str())
            .collect::<Vec<_>>(),
        [id.as_str()],
        "the child ({child}) is requested, the original rejected and rerouted"
    );
    assert_eq!(found[0].status(), v1::ReferralStatus::Rejected);
    assert_eq!(found[0].child_referral_ids, [child]);
    // The rejected filter still finds it too: it is both.
    let rejected = dinsos
        .client()
        .list_referrals(dinsos.request(v1::ListReferralsRequest {
            statuses: vec![v1::ReferralStatus::Rejected.into()],
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner()
        .referrals;
    assert_eq!(rejected.len(), 1);
}

#[tokio::test]
async fn a_closed_referral_shows_no_clock_as_not_started() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let uptd = system.agency("maros-uptd-ppa").await;
    let id = create(
        &dinsos,
        create_request("closed-1", "maros-uptd-ppa", "shelter"),
    )
    .await
    .referral_id;
    for (n, step) in ["accept", "start", "complete"].into_iter().enumerate() {
        let request_id = format!("closed-{n}");
        let mut client = uptd.client();
        match step {
            "accept" => drop(
                client
                    .accept_referral(uptd.request(v1::AcceptReferralRequest {
                        request_id,
                        referral_id: id.clone(),
                    }))
                    .await
                    .unwrap(),
            ),
            "start" => drop(
                client
                    .start_referral(uptd.request(v1::StartReferralRequest {
                        request_id,
                        referral_id: id.clone(),
                    }))
                    .await
                    .unwrap(),
            ),
            _ => drop(
                client
                    .complete_referral(uptd.request(v1::CompleteReferralRequest {
                        request_id,
                        referral_id: id.clone(),
                        outcome: Some(v1::Outcome {
                            code: "service_provided".into(),
                            note: String::new(),
                            sealed_note: None,
                        }),
                    }))
                    .await
                    .unwrap(),
            ),
        }
    }
    let referral = dinsos
        .client()
        .get_referral(dinsos.request(v1::GetReferralRequest {
            referral_id: id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(referral.status(), v1::ReferralStatus::Completed);
    // The reroute clock never started (nobody asked for a reroute) and never will.
    let pending = referral
        .clocks
        .iter()
        .find(|clock| clock.clock_id == "reroute_pending")
        .expect("the reroute_pending clock applies to every referral");
    assert_eq!(pending.phase(), v1::ClockPhase::Stopped);
    assert_eq!(pending.started_at, None);
    assert!(pending.stopped_at.is_some());
    assert!(!pending.breached);
    for clock in &referral.clocks {
        assert_ne!(
            clock.phase(),
            v1::ClockPhase::NotStarted,
            "{} on a completed referral",
            clock.clock_id
        );
    }
}

#[tokio::test]
async fn the_inbox_can_start_from_now() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let uptd = system.agency("maros-uptd-ppa").await;
    let old = create(
        &dinsos,
        create_request("before-1", "maros-uptd-ppa", "shelter"),
    )
    .await;

    let mut inbox = uptd
        .client()
        .watch_inbox(uptd.request(v1::WatchInboxRequest {
            cursor: "now".into(),
        }))
        .await
        .unwrap()
        .into_inner();
    let new = create(
        &dinsos,
        create_request("after-1", "maros-uptd-ppa", "shelter"),
    )
    .await;
    let first = tokio::time::timeout(Duration::from_secs(20), inbox.message())
        .await
        .expect("the inbox sent nothing stored after the call")
        .unwrap()
        .unwrap()
        .item
        .unwrap();
    let Some(v1::inbox_item::Item::Event(event)) = first.item else {
        panic!("expected an event, got {:?}", first.item);
    };
    assert_ne!(event.referral_id, old.referral_id, "history was replayed");
    assert_eq!(event.referral_id, new.referral_id);
    assert!(matches!(event.change, Some(v1::event::Change::Created(_))));
    // Its cursor resumes like any other.
    assert!(first.cursor.parse::<u64>().is_ok());

    refused(
        &system,
        "a cursor that is neither",
        Code::InvalidArgument,
        &["cursor: ", "`now` to start from now"],
        uptd.client()
            .watch_inbox(uptd.request(v1::WatchInboxRequest {
                cursor: "later".into(),
            })),
    )
    .await;
}

/// A create that reuses a request id with another recipient after the bus's duplicate window
/// has passed (7 days in production) is still ALREADY_EXISTS: the referral's id derives from
/// the sender and the request id, and the create finds it on the other recipient's subject.
/// The window is made short here (100 ms) and waited out on the server's own terms: a probe
/// message id published after the first create is forgotten first.
#[tokio::test]
async fn a_request_id_reused_with_another_recipient_after_the_duplicate_window_is_already_exists() {
    let mut system = System::start().await;
    let short_window = refbus_bus::StreamSettings {
        duplicate_window: Duration::from_millis(100),
        ..refbus_bus::StreamSettings::default()
    };
    let bus = refbus_bus::Bus::connect(&system.nats.url(), &short_window)
        .await
        .unwrap();
    let dinsos = system.agency_on("maros-dinsos", bus).await;
    let original = create_request("reused-late", "maros-uptd-ppa", "legal_aid");
    let first = create(&dinsos, original.clone()).await;

    // Wait until the server forgot a message id published after the create.
    let js = async_nats::jetstream::new(async_nats::connect(system.nats.url()).await.unwrap());
    let probe = || async {
        let message = async_nats::jetstream::message::PublishMessage::build()
            .payload("probe".into())
            .message_id("window-probe");
        js.send_publish("refbus.v1.idx.window-probe.window-probe", message)
            .await
            .unwrap()
            .await
            .unwrap()
    };
    probe().await;
    while probe().await.duplicate {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    refused(
        &system,
        "another recipient after the window",
        Code::AlreadyExists,
        &[&first.referral_id, "already exists with other content"],
        dinsos
            .client()
            .create_referral(dinsos.request(v1::CreateReferralRequest {
                recipient: "maros-bagian-hukum".into(),
                ..original.clone()
            })),
    )
    .await;
    // The same request again is still a retry: the original, nothing written.
    let before = system.stored_messages().await;
    let again = create(&dinsos, original).await;
    assert_eq!(again.referral_id, first.referral_id);
    assert_eq!(system.stored_messages().await, before);
}
