//! `refbus_adapter::run` as every deployment runs it: what it serves (reflection lists every
//! service, health included) and how it stops (open inbox streams end with UNAVAILABLE, and
//! `run` returns instead of waiting for them for ever).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use refbus_adapter::{Adapter, Options};
use refbus_bus::{Bus, StreamSettings};
use refbus_core::AgencyId;
use refbus_proto::v1;
use refbus_proto::v1::referral_service_client::ReferralServiceClient;
use refbus_seal::{KeyPair, Keyring, SecretKey};
use refbus_testkit::{NatsServer, Pki};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

struct Running {
    _nats: NatsServer,
    pki: Pki,
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    run: JoinHandle<Result<(), refbus_adapter::Error>>,
}

/// Dinsos's adapter over a fresh nats-server, with the shipped Maros registry.
async fn start() -> Running {
    let nats = NatsServer::start().unwrap();
    let mut registry = refbus_config::load(
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/refbus.toml"),
    )
    .unwrap();
    let pki = Pki::generate().unwrap();
    for agency in registry.agencies.values_mut() {
        agency.client_cas.push(pki.ca_der());
    }
    let agency = AgencyId::new("maros-dinsos").unwrap();
    let pair = KeyPair::generate();
    let secret = SecretKey::from_base64(&pair.secret().to_base64()).unwrap();
    let keyring = Keyring::new(
        agency.clone(),
        secret,
        [(agency.clone(), pair.public().clone())],
    )
    .unwrap();
    let registry = Arc::new(registry);
    let signing = refbus_seal::signing::SigningKeys::generate(&registry);
    // Connected as the router's start connects: the stream checked and the router's statement
    // of it stored, without which an adapter does not start.
    let bus = Bus::connect_attesting(&nats.url(), &StreamSettings::default(), &signing.router())
        .await
        .unwrap();
    let verifier = refbus_bus::Verifier::new(
        registry.clone(),
        Arc::new(signing.signers()),
        Some(refbus_core::integrity::DEFAULT_MAX_SKEW),
    );
    let adapter = Adapter::new(
        agency.clone(),
        verifier,
        bus,
        keyring,
        signing.agency(&agency),
        refbus_adapter::system_now(),
        Options::default(),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (stop, stopped) = oneshot::channel::<()>();
    let transport =
        refbus_adapter::Transport::mutual_tls(pki.server_tls().unwrap(), &registry).unwrap();
    let run = tokio::spawn(refbus_adapter::run(adapter, listener, transport, async {
        let _ = stopped.await;
    }));
    Running {
        _nats: nats,
        pki,
        addr,
        stop,
        run,
    }
}

/// A channel as dinsos's system opens it: mutual TLS.
async fn channel(running: &Running) -> Channel {
    use tonic::transport::{Certificate, ClientTlsConfig, Identity};
    let client = running.pki.client("maros-dinsos", "tester").unwrap();
    let tls = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(running.pki.ca_pem()))
        .domain_name("localhost")
        .identity(Identity::from_pem(
            &client.issued.certificate_pem,
            &client.issued.key_pem,
        ));
    Channel::from_shared(format!("https://{}", running.addr))
        .unwrap()
        .tls_config(tls)
        .unwrap()
        .connect()
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stopping_ends_an_open_inbox_stream_with_unavailable_and_run_returns() {
    let running = start().await;
    let mut client = ReferralServiceClient::new(channel(&running).await);
    let mut request = tonic::Request::new(v1::WatchInboxRequest::default());
    request
        .metadata_mut()
        .insert("x-refbus-operator", "tester".parse().unwrap());
    // The answer's headers have arrived: the stream is open on the adapter.
    let mut inbox = client.watch_inbox(request).await.unwrap().into_inner();

    running.stop.send(()).unwrap();
    // Bounds on waiting only (a hang fails the test instead of blocking it).
    let ended = tokio::time::timeout(Duration::from_secs(20), inbox.message())
        .await
        .expect("the inbox stream ends when the adapter stops");
    let status = ended.expect_err("it ends with a status saying why");
    assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
    assert_eq!(
        status.message(),
        "the adapter is shutting down; reconnect with your cursor"
    );
    tokio::time::timeout(Duration::from_secs(20), running.run)
        .await
        .expect("run returns once its streams have ended")
        .unwrap()
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reflection_lists_the_referral_service_and_grpc_health() {
    use tonic_reflection::pb::v1::ServerReflectionRequest;
    use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
    use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
    use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;

    let running = start().await;
    let mut reflection = ServerReflectionClient::new(channel(&running).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut responses = reflection
        .server_reflection_info(tokio_stream::once(request))
        .await
        .unwrap()
        .into_inner();
    let response = responses.message().await.unwrap().unwrap();
    let Some(MessageResponse::ListServicesResponse(list)) = response.message_response else {
        panic!("not a list of services: {response:?}");
    };
    let names: Vec<&str> = list.service.iter().map(|s| s.name.as_str()).collect();
    for expected in ["refbus.v1.ReferralService", "grpc.health.v1.Health"] {
        assert!(
            names.contains(&expected),
            "{expected} missing from {names:?}"
        );
    }
    running.stop.send(()).unwrap();
    running.run.await.unwrap().unwrap();
}
