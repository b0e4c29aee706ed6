//! Mutual TLS on every adapter: who may call an agency's adapter, and what is recorded about
//! them. Every refusal is the exact gRPC status the contract promises, and writes nothing.

use refbus_bus::subjects;
use refbus_core::AgencyId;
use refbus_e2e::{AgencySystem, System, create_request};
use refbus_proto::v1;
use refbus_tls::certs::Validity;
use tonic::Code;

const DINSOS: &str = "maros-dinsos";

/// Tries a create and a read as `client`; both must be refused with `code`, and nothing
/// stored.
async fn refused(system: &System, client: &AgencySystem, code: Code, says: &str, case: &str) {
    let before = system.stored_messages().await;
    let created = client
        .client()
        .create_referral(client.request(create_request(
            &format!("auth-{case}"),
            "maros-uptd-ppa",
            "shelter",
        )))
        .await
        .expect_err(case);
    assert_eq!(created.code(), code, "{case}: {created:?}");
    assert!(
        created.message().contains(says),
        "{case}: {:?} does not say {says:?}",
        created.message()
    );
    let listed = client
        .client()
        .list_referrals(client.request(v1::ListReferralsRequest::default()))
        .await
        .expect_err(case);
    assert_eq!(listed.code(), code, "{case}: {listed:?}");
    assert_eq!(
        system.stored_messages().await,
        before,
        "{case}: a refused call wrote"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_authentication_table_each_refusal_exact_and_nothing_written() {
    let mut system = System::start().await;
    let now = time::OffsetDateTime::now_utc();
    // Something on the bus, so that a refused read would have had something to show.
    let dinsos = system.agency(DINSOS).await;
    dinsos
        .create(create_request("auth-seed", "maros-uptd-ppa", "shelter"))
        .await;

    let none = system.client_presenting(DINSOS, None).await;
    refused(
        &system,
        &none,
        Code::Unauthenticated,
        "no client certificate",
        "none",
    )
    .await;

    let expired = system
        .pki
        .client_valid(
            DINSOS,
            "case-system",
            Validity {
                not_before: now - time::Duration::days(400),
                not_after: now - time::Duration::days(1),
            },
        )
        .unwrap();
    let expired = system.client_presenting(DINSOS, Some(&expired)).await;
    refused(
        &system,
        &expired,
        Code::Unauthenticated,
        "expired",
        "expired",
    )
    .await;

    // Valid, but of another agency: it must call its own adapter.
    let polres = system.pki.client("polres-maros", "case-system").unwrap();
    let polres = system.client_presenting(DINSOS, Some(&polres)).await;
    refused(
        &system,
        &polres,
        Code::PermissionDenied,
        "polres-maros",
        "another agency",
    )
    .await;

    // Names dinsos, but no CA the registry trusts issued it.
    let forged = system.pki.self_signed(DINSOS, "case-system").unwrap();
    let forged = system.client_presenting(DINSOS, Some(&forged)).await;
    refused(
        &system,
        &forged,
        Code::Unauthenticated,
        "not issued by a CA",
        "self-signed",
    )
    .await;

    let valid = system.pki.client(DINSOS, "case-system").unwrap();
    let valid = system.client_presenting(DINSOS, Some(&valid)).await;
    let before = system.stored_messages().await;
    valid
        .create(create_request("auth-valid", "maros-uptd-ppa", "shelter"))
        .await;
    // The creation and its creation index entry.
    assert_eq!(system.stored_messages().await, before + 2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_event_records_the_authenticated_system_beside_the_operator() {
    let mut system = System::start().await;
    let sikasus = system.pki.client(DINSOS, "sikasus").unwrap();
    let mut dinsos = system.client_presenting(DINSOS, Some(&sikasus)).await;
    dinsos.operator = "nurul".to_owned();
    let created = dinsos
        .client()
        .create_referral(dinsos.request(create_request("sys-1", "maros-uptd-ppa", "shelter")))
        .await
        .unwrap()
        .into_inner();
    let event = created.event.unwrap();
    assert_eq!(
        (
            event.author_agency.as_str(),
            event.author_operator.as_str(),
            event.author_system.as_str()
        ),
        (DINSOS, "nurul", "sikasus")
    );
    let id = created.referral.unwrap().referral_id;

    // The recipient's other system accepts: its own system is recorded.
    let simpus = system.pki.client("maros-uptd-ppa", "simpus").unwrap();
    let mut ppa = system
        .client_presenting("maros-uptd-ppa", Some(&simpus))
        .await;
    ppa.operator = "andi".to_owned();
    ppa.client()
        .accept_referral(ppa.request(v1::AcceptReferralRequest {
            request_id: "sys-2".to_owned(),
            referral_id: id.clone(),
        }))
        .await
        .unwrap();

    // On the bus, as the record check (signature included) passed it.
    let id = id.parse().unwrap();
    let bus = system.bus().await;
    let history = bus
        .checked_history(
            &system.verifier(),
            &subjects::referral(
                &AgencyId::new("maros-uptd-ppa").unwrap(),
                &AgencyId::new(DINSOS).unwrap(),
                &id,
            ),
        )
        .await
        .unwrap();
    let authors: Vec<(String, String, String)> = history
        .iter()
        .map(|stored| {
            let event = &stored.record.event;
            (
                event.actor.agency().unwrap().to_string(),
                event.operator().unwrap().to_string(),
                event.system().unwrap().to_string(),
            )
        })
        .collect();
    assert_eq!(
        authors,
        [
            (DINSOS.to_owned(), "nurul".to_owned(), "sikasus".to_owned()),
            (
                "maros-uptd-ppa".to_owned(),
                "andi".to_owned(),
                "simpus".to_owned()
            ),
        ]
    );
    // The canonical encoding carries the system, so the hash and the signature cover it.
    let stored = &history[0].record.event;
    let canonical = String::from_utf8(refbus_core::chain::canonical_bytes(stored)).unwrap();
    assert!(canonical.contains(r#""system":"sikasus""#), "{canonical}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_reroute_followers_operator_cannot_be_claimed() {
    let mut system = System::start().await;
    let dinsos = system
        .agency(DINSOS)
        .await
        .as_operator(refbus_adapter::AUTOMATIC_OPERATOR);
    refused(
        &system,
        &dinsos,
        Code::PermissionDenied,
        "reserved",
        "the follower's operator",
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plaintext_is_refused_off_loopback_and_an_expired_server_certificate_at_start() {
    let system = System::start().await;
    let agency = AgencyId::new(DINSOS).unwrap();
    let adapter = |bus| system.adapter(&agency, bus);
    let listener = tokio::net::TcpListener::bind("0.0.0.0:0").await.unwrap();
    let refused = refbus_adapter::run(
        adapter(system.bus().await),
        listener,
        refbus_adapter::Transport::InsecurePlaintext,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(
        matches!(refused, refbus_adapter::Error::PlaintextOffLoopback(_)),
        "{refused}"
    );

    let now = time::OffsetDateTime::now_utc();
    let ca = refbus_tls::certs::Ca::generate("ca", Validity::days_from(now, 365)).unwrap();
    let old = ca
        .issue_server(
            &["localhost".to_owned()],
            Validity {
                not_before: now - time::Duration::days(10),
                not_after: now - time::Duration::days(1),
            },
        )
        .unwrap();
    let chain = refbus_tls::certs::certificates_from_pem(&old.certificate_pem).unwrap();
    let dir = tempfile::tempdir().unwrap();
    old.write(&dir.path().join("s.pem"), &dir.path().join("s.key"))
        .unwrap();
    let key = refbus_tls::read_private_key(&dir.path().join("s.key")).unwrap();
    let tls = refbus_tls::ServerTls::new(chain, key).unwrap();
    let transport = refbus_adapter::Transport::mutual_tls(tls, &system.registry).unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let refused = refbus_adapter::run(
        adapter(system.bus().await),
        listener,
        transport,
        std::future::pending(),
    )
    .await
    .unwrap_err();
    assert!(refused.to_string().contains("expired"), "{refused}");
}
