//! The router's signed word on the events stream, which adapters start on since they may not
//! read the stream's settings: a stream altered under a running router is reported at its next
//! check while its clocks keep running, a running adapter reports it and goes on serving, an
//! adapter starting then refuses, and one started on a
//! statement the router did not sign refuses too. (The refusal at a start of `refbus router` and
//! `refbus adapter` as processes: crates/cli/tests/stream_check.rs.)

use std::sync::Arc;
use std::time::Duration;

use refbus_bus::statement::{SIGNATURE_HEADER, StreamStatement, subject};
use refbus_core::{AgencyId, Timestamp};
use refbus_e2e::System;
use refbus_router::{Activity, ManualClock};

fn agency(id: &str) -> AgencyId {
    AgencyId::new(id).unwrap()
}

/// `refbus_adapter::run` for `agency` on its own confined connection, as `refbus adapter`
/// runs it, without the harness's stand-in for the router's start: what its start says.
async fn start_adapter(system: &System, id: &str) -> Result<(), refbus_adapter::Error> {
    let agency = agency(id);
    let bus = refbus_bus::Bus::connect(
        system.nats.connect_options().confined_to(agency.clone()),
        &system.nats.stream_settings(),
    )
    .await
    .unwrap();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    // Stopped as soon as it serves: only whether it starts matters here.
    refbus_adapter::run(
        system.adapter(&agency, bus),
        listener,
        refbus_adapter::Transport::InsecurePlaintext,
        std::future::ready(()),
    )
    .await
}

/// Why the agency's adapter refuses to start.
async fn refusal(system: &System, id: &str) -> String {
    start_adapter(system, id)
        .await
        .expect_err("the adapter must refuse to start")
        .to_string()
}

/// The stream's age limit changed by hand, as an administrator with JetStream's rights would.
async fn alter_stream(system: &System, max_age: Duration) {
    let name = system.nats.stream_settings().name;
    refbus_testkit::hostile::alter_stream(&system.nats.urls()[0], &name, |config| {
        config.max_age = max_age;
    })
    .await
    .unwrap();
}

/// Whether the metrics served at `address` come to hold `line` within 30 s (scraped every 50 ms).
async fn scrape_until(address: std::net::SocketAddr, line: &str) -> bool {
    let mut every = tokio::time::interval(Duration::from_millis(50));
    for _ in 0..600 {
        every.tick().await;
        if refbus_metrics::scrape(address)
            .await
            .is_ok_and(|scraped| scraped.body.contains(line))
        {
            return true;
        }
    }
    false
}

/// The next check of the stream the router reports.
async fn next_check(activity: &mut tokio::sync::broadcast::Receiver<Activity>) -> Vec<String> {
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            if let Activity::StreamChecked { differences } = activity.recv().await.unwrap() {
                return differences;
            }
        }
    })
    .await
    .expect("the router checks the stream again within 30 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stream_altered_under_a_running_router_is_reported_and_keeps_new_adapters_from_starting()
{
    let system = System::start().await;
    let clock = ManualClock::new(Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap());
    // The router's start: the stream checked, its statement stored (as `refbus router` does).
    let bus = refbus_bus::Bus::connect_attesting(
        system.nats.connect_options(),
        &system.nats.stream_settings(),
        &system.signing.router(),
    )
    .await
    .unwrap();
    let metrics = refbus_metrics::Endpoint::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let scraped = metrics.address().unwrap();
    let router = system.router(
        bus,
        Arc::new(clock.clone()),
        refbus_router::Options {
            stream_recheck_every: Duration::from_millis(200),
            metrics: Some(metrics),
            ..refbus_router::Options::default()
        },
    );
    let mut activity = router.activity();
    let running = tokio::spawn(router.run(std::future::pending()));
    start_adapter(&system, "maros-dinsos")
        .await
        .expect("an adapter starts on the router's word that the stream is as configured");
    // An adapter that keeps running (reading the router's statement often) and shows what it
    // reads in its metrics.
    let dinsos = agency("maros-dinsos");
    let adapter_metrics = refbus_metrics::Endpoint::bind(([127, 0, 0, 1], 0).into()).unwrap();
    let adapter_scraped = adapter_metrics.address().unwrap();
    let adapter = refbus_adapter::Adapter::new(
        dinsos.clone(),
        system.verifier(),
        refbus_bus::Bus::connect(
            system.nats.connect_options().confined_to(dinsos.clone()),
            &system.nats.stream_settings(),
        )
        .await
        .unwrap(),
        system.keyring(&dinsos),
        system.signing.agency(&dinsos),
        refbus_adapter::system_now(),
        refbus_adapter::Options {
            metrics: Some(adapter_metrics),
            stream_recheck_every: Duration::from_millis(200),
            ..refbus_adapter::Options::default()
        },
    );
    let (stop_adapter, adapter_stopped) = tokio::sync::oneshot::channel::<()>();
    let serving = tokio::spawn(refbus_adapter::run(
        adapter,
        tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap(),
        refbus_adapter::Transport::InsecurePlaintext,
        async {
            let _ = adapter_stopped.await;
        },
    ));
    let unvouched =
        |value: u8| format!("refbus_adapter_stream_unvouched{{agency=\"maros-dinsos\"}} {value}\n");
    assert!(scrape_until(adapter_scraped, &unvouched(0)).await);
    assert_eq!(next_check(&mut activity).await, Vec::<String>::new());

    // An administrator adds an age limit to save disk: events older than 30 days would go.
    alter_stream(&system, Duration::from_secs(30 * 24 * 3600)).await;
    let differences = loop {
        let differences = next_check(&mut activity).await;
        if !differences.is_empty() {
            break differences;
        }
    };
    assert!(
        differences
            .iter()
            .any(|text| text.starts_with("max_age is 2592000s")),
        "{differences:?}"
    );
    // Counted for the operators' alerts (docs/OPERATIONS.md, RefbusStreamAltered).
    let exposed = refbus_metrics::scrape(scraped).await.unwrap().body;
    assert!(
        exposed.contains("refbus_router_stream_differences 1\n"),
        "{exposed}"
    );
    // The running adapter goes on serving, and says so to the agency's IT staff.
    assert!(scrape_until(adapter_scraped, &unvouched(1)).await);
    assert!(
        !serving.is_finished(),
        "the running adapter goes on serving"
    );
    // The router goes on (its clocks matter more than its refusal)...
    assert!(!running.is_finished(), "the router keeps running");
    // ...and an adapter starting now refuses, naming the difference.
    let said = refusal(&system, "maros-uptd-ppa").await;
    assert!(
        said.contains("the router's check of the stream REFBUS_EVENTS at ")
            && said.contains("max_age is 2592000s"),
        "{said}"
    );

    // Put right, the next check says so and adapters start again.
    alter_stream(&system, Duration::ZERO).await;
    while !next_check(&mut activity).await.is_empty() {}
    start_adapter(&system, "maros-uptd-ppa")
        .await
        .expect("an adapter starts once the stream is as configured again");
    assert!(scrape_until(adapter_scraped, &unvouched(0)).await);
    let _ = stop_adapter.send(());
    serving.await.unwrap().unwrap();
    running.abort();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_adapter_does_not_start_on_a_statement_the_router_did_not_sign() {
    let system = System::start().await;
    let settings = system.nats.stream_settings();
    // No router has started: nothing says the stream was checked.
    refbus_bus::Bus::connect(system.nats.connect_options(), &settings)
        .await
        .unwrap();
    let said = refusal(&system, "maros-dinsos").await;
    assert!(said.contains("start the router first"), "{said}");

    // Someone with the right to write the bucket but without the router's key (an
    // administrator, a stolen router password) states the stream is fine, signing with an
    // agency's key the registry lists, then with no signature at all.
    refbus_bus::Bus::connect_attesting(
        system.nats.connect_options(),
        &settings,
        &system.signing.router(),
    )
    .await
    .unwrap();
    let statement = StreamStatement {
        stream: settings.name.clone(),
        replicas: settings.replicas,
        // Now: the statement is not refused for its age or as a replay, only for its signature.
        checked_at: refbus_core::Timestamp::from_millis(
            i64::try_from(std::time::UNIX_EPOCH.elapsed().unwrap().as_millis()).unwrap(),
        ),
        differences: Vec::new(),
    };
    let payload = serde_json::to_vec(&statement).unwrap();
    let forger = system.signing.agency(&agency("polres-maros"));
    let forged = forger.sign(&subject(&settings.name), &payload);
    let client = async_nats::connect(system.nats.urls()[0].as_str())
        .await
        .unwrap();
    let js = async_nats::jetstream::new(client);
    for signature in [Some(serde_json::to_string(&forged).unwrap()), None] {
        let mut headers = async_nats::HeaderMap::new();
        if let Some(signature) = &signature {
            headers.insert(SIGNATURE_HEADER, signature.as_str());
        }
        js.publish_with_headers(subject(&settings.name), headers, payload.clone().into())
            .await
            .unwrap()
            .await
            .unwrap();
        let said = refusal(&system, "maros-dinsos").await;
        assert!(
            said.contains("is not the router's"),
            "{signature:?}: {said}"
        );
    }
}
