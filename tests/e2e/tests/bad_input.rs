//! Bad input gets a precise gRPC status and changes nothing: a table of invalid requests, each
//! with its exact code and message, each checked against the number of messages on the bus.

use refbus_e2e::{AgencySystem, System, create_request, identity, reason};
use refbus_proto::v1;
use tonic::Code;

/// One bad request: who sends it, what it is, and what must come back.
struct Case {
    name: &'static str,
    code: Code,
    message: &'static str,
    call: Box<dyn Fn(Ctx) -> futures::future::BoxFuture<'static, tonic::Status>>,
}

/// What a case needs: the agencies' systems and a referral from Dinsos to UPTD PPA.
#[derive(Clone)]
struct Ctx {
    dinsos: AgencySystem,
    uptd: AgencySystem,
    police: AgencySystem,
    referral: String,
}

macro_rules! case {
    ($name:expr, $code:expr, $message:expr, |$ctx:ident| $body:expr) => {
        Case {
            name: $name,
            code: $code,
            message: $message,
            call: Box::new(|$ctx: Ctx| {
                Box::pin(async move {
                    let result = $body.await;
                    match result {
                        Ok(_) => panic!("{}: expected an error, got a response", $name),
                        Err(status) => status,
                    }
                })
            }),
        }
    };
}

fn create_with(edit: impl FnOnce(&mut v1::CreateReferralRequest)) -> v1::CreateReferralRequest {
    let mut request = create_request("bad-create", "maros-uptd-ppa", "shelter");
    edit(&mut request);
    request
}

fn cases() -> Vec<Case> {
    vec![
        case!(
            "no operator header",
            Code::InvalidArgument,
            "x-refbus-operator",
            |c| c
                .dinsos
                .client()
                .create_referral(tonic::Request::new(create_with(|_| {})))
        ),
        case!(
            "operator with a space",
            Code::InvalidArgument,
            "x-refbus-operator",
            |c| c
                .dinsos
                .as_operator("ibu ani")
                .client()
                .create_referral(c.dinsos.as_operator("ibu ani").request(create_with(|_| {})))
        ),
        // Statistical metadata (sex, age band): out of range, or contradicting the sealed
        // identity (born 2012-03-05: 13-17 in 2026) or the child flag. The messages never quote
        // the birth date.
        case!(
            "age band out of range",
            Code::InvalidArgument,
            "age_band: unknown value 9",
            |c| c
                .dinsos
                .client()
                .create_referral(c.dinsos.request(create_with(|r| r.age_band = 9)))
        ),
        case!(
            "sex out of range",
            Code::InvalidArgument,
            "sex: unknown value 4",
            |c| c
                .dinsos
                .client()
                .create_referral(c.dinsos.request(create_with(|r| r.sex = 4)))
        ),
        case!(
            "age band the birth date contradicts",
            Code::InvalidArgument,
            "age_band: 6-12 differs from the band identity.birth_date gives on the day the case \
             was reported (13-17)",
            |c| c
                .dinsos
                .client()
                .create_referral(c.dinsos.request(create_with(|r| {
                    r.age_band = v1::AgeBand::AgeBand6To12.into()
                })))
        ),
        case!(
            "sex the identity contradicts",
            Code::InvalidArgument,
            "sex: male differs from identity.sex (female)",
            |c| c.dinsos.client().create_referral(
                c.dinsos
                    .request(create_with(|r| r.sex = v1::Sex::Male.into()))
            )
        ),
        case!(
            "birth date after the report",
            Code::InvalidArgument,
            "identity.birth_date: is after the day the case was reported",
            |c| c
                .dinsos
                .client()
                .create_referral(c.dinsos.request(create_with(|r| {
                    if let Some(v1::create_referral_request::Person::Identity(person)) =
                        &mut r.person
                    {
                        person.birth_date = "2099-01-01".into();
                    }
                })))
        ),
        case!(
            "adult age band on a child",
            Code::InvalidArgument,
            "age_band: 25-59 is an adult's age band but `child` is set",
            |c| c
                .dinsos
                .client()
                .create_referral(c.dinsos.request(create_with(|r| {
                    r.person = None;
                    r.age_band = v1::AgeBand::AgeBand25To59.into();
                })))
        ),
        case!(
            "child's age band derived for an adult referral",
            Code::InvalidArgument,
            "age_band: 13-17 is a child's age band but `child` is not set",
            |c| c
                .dinsos
                .client()
                .create_referral(c.dinsos.request(create_with(|r| r.child = false)))
        ),
        case!("no request id", Code::InvalidArgument, "request_id", |c| c
            .dinsos
            .client()
            .create_referral(
                c.dinsos.request(create_with(|r| r.request_id.clear()))
            )),
        case!(
            "unknown recipient",
            Code::InvalidArgument,
            "recipient: unknown agency maros-dinkes",
            |c| c.dinsos.client().create_referral(
                c.dinsos
                    .request(create_with(|r| r.recipient = "maros-dinkes".into()))
            )
        ),
        case!(
            "malformed recipient",
            Code::InvalidArgument,
            "recipient",
            |c| c.dinsos.client().create_referral(
                c.dinsos
                    .request(create_with(|r| r.recipient = "Polres Maros".into()))
            )
        ),
        case!(
            "referral to itself",
            Code::InvalidArgument,
            "recipient: an agency cannot refer a case to itself",
            |c| c
                .dinsos
                .client()
                .create_referral(c.dinsos.request(create_with(|r| {
                    r.recipient = "maros-dinsos".into();
                    r.service = "social_assistance".into();
                })))
        ),
        case!(
            "service the recipient does not offer",
            Code::InvalidArgument,
            "service: maros-uptd-ppa does not offer police_report",
            |c| c.dinsos.client().create_referral(
                c.dinsos
                    .request(create_with(|r| r.service = "police_report".into()))
            )
        ),
        case!(
            "priority unspecified",
            Code::InvalidArgument,
            "priority",
            |c| c
                .dinsos
                .client()
                .create_referral(c.dinsos.request(create_with(|r| r.priority = 0)))
        ),
        case!(
            "unknown category",
            Code::InvalidArgument,
            "categories",
            |c| c.dinsos.client().create_referral(
                c.dinsos
                    .request(create_with(|r| r.categories = vec!["gossip".into()]))
            )
        ),
        case!(
            "no consent for services",
            Code::InvalidArgument,
            "consent.services",
            |c| c.dinsos.client().create_referral(
                c.dinsos
                    .request(create_with(|r| r.consent.as_mut().unwrap().services = false))
            )
        ),
        case!(
            "a child without consent to disclose",
            Code::InvalidArgument,
            "consent.disclose_to_agencies",
            |c| c
                .dinsos
                .client()
                .create_referral(c.dinsos.request(create_with(|r| {
                    r.consent.as_mut().unwrap().disclose_to_agencies = false
                })))
        ),
        case!(
            "an override without a real justification",
            Code::InvalidArgument,
            "consent.override_justification",
            |c| c
                .dinsos
                .client()
                .create_referral(c.dinsos.request(create_with(|r| {
                    let consent = r.consent.as_mut().unwrap();
                    consent.services = false;
                    consent.override_justification = "urgent".into();
                })))
        ),
        case!(
            "a case id shaped like a NIK",
            Code::InvalidArgument,
            "case_id: `(withheld)` is not a valid case id: it looks like a NIK",
            |c| c
                .dinsos
                .client()
                .create_referral(c.dinsos.request(create_with(|r| {
                    r.case_id = "7309-0145-0690-0001".into();
                })))
        ),
        case!(
            "a malformed NIK",
            Code::InvalidArgument,
            "identity.nik",
            |c| c
                .dinsos
                .client()
                .create_referral(c.dinsos.request(create_with(|r| {
                    let mut person = identity("Siti");
                    person.nik = "12345".into();
                    r.person = Some(v1::create_referral_request::Person::Identity(person));
                })))
        ),
        case!("an oversized request", Code::ResourceExhausted, "", |c| c
            .dinsos
            .client()
            .create_referral(c.dinsos.request(create_with(|r| {
                let mut person = identity("Siti");
                person.narrative = "x".repeat(300 * 1024);
                r.person = Some(v1::create_referral_request::Person::Identity(person));
            })))),
        case!(
            "the same request id for a different referral",
            Code::AlreadyExists,
            "already exists with other content",
            |c| c
                .dinsos
                .client()
                .create_referral(c.dinsos.request(create_with(|r| {
                    r.request_id = "setup-create".into();
                    r.service = "psychological_counselling".into();
                })))
        ),
        case!(
            "a malformed referral id",
            Code::InvalidArgument,
            "referral_id",
            |c| c
                .uptd
                .client()
                .accept_referral(c.uptd.request(v1::AcceptReferralRequest {
                    request_id: "a-1".into(),
                    referral_id: "MRS-42".into()
                }))
        ),
        case!(
            "an unknown referral",
            Code::NotFound,
            "does not exist",
            |c| c
                .uptd
                .client()
                .accept_referral(c.uptd.request(v1::AcceptReferralRequest {
                    request_id: "a-2".into(),
                    referral_id: "00000000000000000000000000".into(),
                }))
        ),
        case!(
            "the sender accepting",
            Code::PermissionDenied,
            "only the recipient may accept a referral; maros-dinsos is its sender",
            |c| c
                .dinsos
                .client()
                .accept_referral(c.dinsos.request(v1::AcceptReferralRequest {
                    request_id: "a-3".into(),
                    referral_id: c.referral.clone()
                }))
        ),
        case!(
            "an agency with no part in it",
            // Answered as an unknown id: a non-party must not learn that the referral exists.
            Code::NotFound,
            "does not exist",
            |c| c
                .police
                .client()
                .accept_referral(c.police.request(v1::AcceptReferralRequest {
                    request_id: "a-4".into(),
                    referral_id: c.referral.clone()
                }))
        ),
        case!(
            "reading a referral of others",
            // Answered as an unknown id: a non-party must not learn that the referral exists.
            Code::NotFound,
            "does not exist",
            |c| c
                .police
                .client()
                .get_referral(c.police.request(v1::GetReferralRequest {
                    referral_id: c.referral.clone()
                }))
        ),
        case!(
            "the recipient cancelling",
            Code::PermissionDenied,
            "only the sender may cancel",
            |c| c
                .uptd
                .client()
                .cancel_referral(c.uptd.request(v1::CancelReferralRequest {
                    request_id: "c-1".into(),
                    referral_id: c.referral.clone(),
                    reason: reason("duplicate", ""),
                }))
        ),
        case!(
            "completing before accepting",
            Code::FailedPrecondition,
            "cannot complete a referral that is requested",
            |c| c
                .uptd
                .client()
                .complete_referral(c.uptd.request(v1::CompleteReferralRequest {
                    request_id: "d-1".into(),
                    referral_id: c.referral.clone(),
                    outcome: Some(v1::Outcome {
                        code: "service_provided".into(),
                        note: String::new(),
                        sealed_note: None
                    }),
                }))
        ),
        case!(
            "resuming what is not on hold",
            Code::FailedPrecondition,
            "cannot resume a referral that is requested",
            |c| c
                .uptd
                .client()
                .resume_referral(c.uptd.request(v1::ResumeReferralRequest {
                    request_id: "e-1".into(),
                    referral_id: c.referral.clone()
                }))
        ),
        case!(
            "rejecting without a reason",
            Code::InvalidArgument,
            "reason",
            |c| c
                .uptd
                .client()
                .reject_referral(c.uptd.request(v1::RejectReferralRequest {
                    request_id: "f-1".into(),
                    referral_id: c.referral.clone(),
                    reason: None
                }))
        ),
        case!(
            "rejecting with an unknown reason code",
            Code::InvalidArgument,
            "reason.code: unknown reason code busy",
            |c| c
                .uptd
                .client()
                .reject_referral(c.uptd.request(v1::RejectReferralRequest {
                    request_id: "f-2".into(),
                    referral_id: c.referral.clone(),
                    reason: reason("busy", ""),
                }))
        ),
        case!("an empty note", Code::InvalidArgument, "note", |c| c
            .uptd
            .client()
            .add_note(c.uptd.request(v1::AddNoteRequest {
                request_id: "g-1".into(),
                referral_id: c.referral.clone(),
                note: String::new(),
                sealed_note: None
            }))),
        case!(
            "acknowledging level 0",
            Code::InvalidArgument,
            "level",
            |c| c.uptd.client().acknowledge_escalation(c.uptd.request(
                v1::AcknowledgeEscalationRequest {
                    request_id: "h-1".into(),
                    referral_id: c.referral.clone(),
                    clock_id: "acknowledge_urgent".into(),
                    level: 0,
                }
            ))
        ),
        case!(
            "acknowledging an escalation that never happened",
            Code::InvalidArgument,
            "level",
            |c| c.uptd.client().acknowledge_escalation(c.uptd.request(
                v1::AcknowledgeEscalationRequest {
                    request_id: "h-2".into(),
                    referral_id: c.referral.clone(),
                    clock_id: "acknowledge_urgent".into(),
                    level: 1,
                }
            ))
        ),
        case!(
            "rerouting to an unknown agency",
            Code::InvalidArgument,
            "to",
            |c| c
                .dinsos
                .client()
                .reroute_referral(c.dinsos.request(v1::RerouteReferralRequest {
                    request_id: "i-1".into(),
                    referral_id: c.referral.clone(),
                    to: "maros-nowhere".into(),
                    ..Default::default()
                }))
        ),
        case!(
            "a cursor this adapter never gave",
            Code::InvalidArgument,
            "cursor",
            |c| c
                .uptd
                .client()
                .watch_inbox(c.uptd.request(v1::WatchInboxRequest {
                    cursor: "yesterday".into()
                }))
        ),
        case!(
            "a forged page token",
            Code::InvalidArgument,
            "page_token",
            |c| c
                .uptd
                .client()
                .list_referrals(c.uptd.request(v1::ListReferralsRequest {
                    page_token: "abc".into(),
                    ..Default::default()
                }))
        ),
    ]
}

#[tokio::test]
async fn every_bad_request_gets_its_exact_status_and_writes_nothing() {
    let mut system = System::start().await;
    let ctx = Ctx {
        dinsos: system.agency("maros-dinsos").await,
        uptd: system.agency("maros-uptd-ppa").await,
        police: system.agency("polres-maros").await,
        referral: String::new(),
    };
    let setup = create_request("setup-create", "maros-uptd-ppa", "shelter");
    let created = ctx
        .dinsos
        .client()
        .create_referral(ctx.dinsos.request(setup))
        .await
        .unwrap()
        .into_inner();
    let ctx = Ctx {
        referral: created.referral.unwrap().referral_id,
        ..ctx
    };

    let mut failures = Vec::new();
    for case in cases() {
        let before = system.stored_messages().await;
        let status = (case.call)(ctx.clone()).await;
        let after = system.stored_messages().await;
        if status.code() != case.code || !status.message().contains(case.message) {
            failures.push(format!(
                "{}: expected {:?} containing {:?}, got {:?}: {}",
                case.name,
                case.code,
                case.message,
                status.code(),
                status.message()
            ));
        }
        if after != before {
            failures.push(format!(
                "{}: wrote {} message(s)",
                case.name,
                after - before
            ));
        }
    }
    assert!(failures.is_empty(), "\n{}", failures.join("\n"));
}

#[tokio::test]
async fn a_request_while_nats_is_down_is_unavailable_and_writes_nothing() {
    let mut system = System::start().await;
    // What the agency hears once the bus stays down, at once rather than after the adapter
    // rode through the outage (tests/e2e/tests/cluster.rs tests the riding through).
    system.options.ride_through = std::time::Duration::ZERO;
    let dinsos = system.agency("maros-dinsos").await;
    system.nats.kill().unwrap();
    let status = dinsos
        .client()
        .create_referral(dinsos.request(create_request("while-down", "maros-uptd-ppa", "shelter")))
        .await
        .unwrap_err();
    assert_eq!(status.code(), Code::Unavailable, "{}", status.message());
    // A create reads the bus before it appends (is the referral already someone else's?):
    // that read fails, so the adapter knows that nothing was recorded, and says so. (After a
    // publish it saw no answer to, it would say the referral may have been recorded, and to
    // retry with the same request_id.)
    assert!(
        status
            .message()
            .contains("nothing was recorded by this call")
            && status.message().contains("retry"),
        "{}",
        status.message()
    );
    system.nats.restart().unwrap();
    // Nothing of the refused create reached the bus.
    let bus = system.bus().await;
    let id = refbus_core::ReferralId::derive(
        &refbus_core::AgencyId::new("maros-dinsos").unwrap(),
        &refbus_core::RequestId::new("while-down").unwrap(),
    );
    assert!(
        bus.last(&refbus_bus::subjects::referral_pattern(&id))
            .await
            .unwrap()
            .is_none()
    );
}
