//! Operations metrics end to end: adapters and the router started through their `run`, each
//! serving its own registry on `/metrics`; gRPC calls (one accepted, refused ones), a breach
//! and escalation on the router's manual clock, and a record that fails the integrity check;
//! then `/metrics` scraped over HTTP as Prometheus would, and every counter checked with its
//! labels. Nothing is timed: the test waits for the router's reports, the inbox's items, and
//! for gauges to settle.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use refbus_core::Timestamp;
use refbus_e2e::{System, create_request, demo_registry, identity, recorded};
use refbus_metrics::{Endpoint, sample, scrape};
use refbus_proto::v1;
use refbus_proto::v1::inbox_item::Item;
use refbus_router::{Activity, ManualClock, Options};
use refbus_testkit::NatsServer;
use refbus_testkit::hostile::publish_raw;

fn endpoint() -> Endpoint {
    Endpoint::bind(SocketAddr::from(([127, 0, 0, 1], 0))).unwrap()
}

/// Scrapes until `settled` holds for the body (a gauge that follows the system's activity),
/// and returns that body. No time limit is asserted: a body that never settles fails after
/// many attempts with the last body shown.
async fn scrape_until(address: SocketAddr, settled: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..2_000 {
        last = scrape(address).await.unwrap().body;
        if settled(&last) {
            return last;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the metrics never settled; last scrape:\n{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adapters_and_the_router_count_calls_appends_clock_items_and_integrity_failures() {
    let clock = ManualClock::new(Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap());
    let mut system = System::with_registry(NatsServer::start().unwrap(), demo_registry()).await;
    system.use_clock(Arc::new(clock.clone()));

    // The router, through its production `run`, serving its metrics.
    let router_metrics = endpoint();
    let router = system.router(
        system.bus().await,
        Arc::new(clock.clone()),
        Options {
            metrics: Some(router_metrics.clone()),
            ..Options::default()
        },
    );
    let mut activity = router.activity();
    let router_task = tokio::spawn(router.run(std::future::pending()));
    loop {
        if let Activity::Ready { .. } = activity.recv().await.unwrap() {
            break;
        }
    }

    // Each adapter its own endpoint (one registry per component).
    let dinsos_metrics = endpoint();
    system.options.metrics = Some(dinsos_metrics.clone());
    let dinsos = system.agency("maros-dinsos").await;
    let uptd_metrics = endpoint();
    system.options.metrics = Some(uptd_metrics.clone());
    let uptd = system.agency("maros-uptd-ppa").await;
    system.options.metrics = None;

    // UPTD PPA watches its inbox from the beginning.
    let mut inbox = uptd
        .client()
        .watch_inbox(uptd.request(v1::WatchInboxRequest::default()))
        .await
        .unwrap()
        .into_inner();

    // A load balancer's health watch, closed once the adapter serves.
    dinsos.wait_until_serving().await;

    // One accepted create, one call refused by the adapter, one refused before it.
    let mut request = create_request("metrics-1", "maros-uptd-ppa", "psychological_counselling");
    request.priority = v1::Priority::Emergency.into();
    let id = dinsos.create(request).await;
    let refused = dinsos
        .client()
        .get_referral(dinsos.request(v1::GetReferralRequest {
            referral_id: "not-an-id".into(),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);
    let anonymous = system.client_presenting("maros-dinsos", None).await;
    let unauthenticated = anonymous
        .client()
        .get_referral(anonymous.request(v1::GetReferralRequest {
            referral_id: id.clone(),
        }))
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), tonic::Code::Unauthenticated);

    // Two minutes on the router's clock: the emergency acknowledge clock breaches and
    // escalates to level 2.
    clock.advance_by(Duration::from_secs(120));
    recorded(&mut activity, "acknowledge_emergency.level.2.0").await;

    // A record that is not a refbus record, on the referral's subject: the router flags it
    // (and records an integrity alert on the referral), UPTD PPA's inbox refuses it.
    publish_raw(
        &system.nats.url(),
        &format!("refbus.v1.ref.maros-uptd-ppa.maros-dinsos.{id}"),
        b"\xffnot a record".to_vec(),
    )
    .await
    .unwrap();
    loop {
        if let Activity::Flagged { .. } = activity.recv().await.unwrap() {
            break;
        }
    }
    // The inbox reads in stream order: once the alert arrives, the adapter has checked (and
    // refused) the garbage before it.
    loop {
        let item = inbox
            .next()
            .await
            .unwrap()
            .unwrap()
            .item
            .and_then(|item| item.item);
        if let Some(Item::Event(event)) = item
            && matches!(event.change, Some(v1::event::Change::IntegrityAlert(_)))
        {
            break;
        }
    }

    // === the adapters ===
    let dinsos_scrape = scrape(dinsos_metrics.address().unwrap()).await.unwrap();
    assert_eq!(dinsos_scrape.status, 200);
    assert_eq!(
        dinsos_scrape.content_type,
        "text/plain; version=0.0.4; charset=utf-8"
    );
    let body = &dinsos_scrape.body;
    let requests = "refbus_adapter_grpc_requests_total";
    let call = |method: &'static str, code: &'static str| {
        sample(
            body,
            requests,
            &[
                ("agency", "maros-dinsos"),
                ("service", "refbus.v1.ReferralService"),
                ("method", method),
                ("code", code),
            ],
        )
    };
    assert_eq!(call("CreateReferral", "OK"), Some(1.0), "{body}");
    assert_eq!(call("GetReferral", "INVALID_ARGUMENT"), Some(1.0), "{body}");
    assert_eq!(call("GetReferral", "UNAUTHENTICATED"), Some(1.0), "{body}");
    assert_eq!(call("GetReferral", "OK"), None, "{body}");
    // The create appended once (its index entry is part of the same `Bus::append`).
    assert_eq!(
        sample(
            body,
            "refbus_adapter_append_duration_seconds_count",
            &[("agency", "maros-dinsos")]
        ),
        Some(1.0),
        "{body}"
    );
    assert_eq!(
        sample(body, "refbus_adapter_inbox_streams_open", &[]),
        Some(0.0),
        "{body}"
    );

    let uptd_body = scrape(uptd_metrics.address().unwrap()).await.unwrap().body;
    assert_eq!(
        sample(
            &uptd_body,
            "refbus_adapter_inbox_streams_open",
            &[("agency", "maros-uptd-ppa")]
        ),
        Some(1.0),
        "{uptd_body}"
    );
    assert!(
        sample(
            &uptd_body,
            "refbus_adapter_integrity_failures_total",
            &[("problem", "unreadable")]
        )
        .is_some_and(|count| count >= 1.0),
        "{uptd_body}"
    );
    // The inbox is still open: its call is counted when it ends.
    assert_eq!(
        sample(&uptd_body, requests, &[("method", "WatchInbox")]),
        None,
        "{uptd_body}"
    );
    // Dinsos's adapter refused nothing it read (every problem has its series, at zero).
    assert_eq!(
        sample(body, "refbus_adapter_integrity_failures_total", &[]),
        Some(0.0),
        "{body}"
    );

    // === the router ===
    // Once everything is applied, nothing is left for the router in its durable consumer
    // (notices and index entries, which it does not consume, do not count), and the referral
    // has one timer pending (its later escalation levels).
    let router_body = scrape_until(router_metrics.address().unwrap(), |body| {
        sample(body, "refbus_router_lag_events", &[]) == Some(0.0)
            && sample(body, "refbus_router_timers_pending", &[]) == Some(1.0)
    })
    .await;
    let item = |item: &'static str, level: &'static str| {
        sample(
            &router_body,
            "refbus_router_items_recorded_total",
            &[
                ("item", item),
                ("clock", "acknowledge_emergency"),
                ("level", level),
            ],
        )
    };
    assert_eq!(item("breach", ""), Some(1.0), "{router_body}");
    assert_eq!(item("escalation", "2"), Some(1.0), "{router_body}");
    assert_eq!(item("escalation", "3"), None, "{router_body}");
    // Every clock's breach has its series from the start, at zero until it happens.
    assert_eq!(
        sample(
            &router_body,
            "refbus_router_items_recorded_total",
            &[("item", "breach"), ("clock", "acknowledge_routine")]
        ),
        Some(0.0),
        "{router_body}"
    );
    let consumed = sample(&router_body, "refbus_router_events_consumed_total", &[]);
    assert!(
        consumed.is_some_and(|consumed| consumed >= 3.0),
        "{router_body}"
    );
    // The router's own appends applied without a second check are among the events consumed
    // (how many depends on whether each acknowledgement reached the router before its
    // delivery; the rest were checked in full).
    assert!(
        sample(&router_body, "refbus_router_own_appends_applied_total", &[])
            .is_some_and(|own| consumed.is_some_and(|consumed| own <= consumed)),
        "{router_body}"
    );
    // Flagged once, however often the router read it afterwards.
    assert_eq!(
        sample(
            &router_body,
            "refbus_router_integrity_failures_total",
            &[("problem", "unreadable")]
        ),
        Some(1.0),
        "{router_body}"
    );
    assert_eq!(
        sample(&router_body, "refbus_router_integrity_failures_total", &[]),
        Some(1.0),
        "{router_body}"
    );

    // No scrape holds anything of the person's identity or the case worker's note.
    let person = identity("Siti Contoh Korban");
    let secrets = [
        person.full_name.as_str(),
        person.nik.as_str(),
        person.address.as_str(),
        person.phone.as_str(),
        person.narrative.as_str(),
        person.guardian_name.as_str(),
        "Siti",
        "7309014503120001",
        "Anak perlu rumah aman",
        "MRS-2026-0042",
    ];
    for scraped in [body.as_str(), uptd_body.as_str(), router_body.as_str()] {
        for secret in secrets {
            assert!(
                !scraped
                    .as_bytes()
                    .windows(secret.len())
                    .any(|w| w == secret.as_bytes()),
                "a scrape holds {secret:?}"
            );
        }
    }

    // Closing the inbox ends its call, counted with the status the client saw (cancelled).
    drop(inbox);
    let uptd_address = uptd_metrics.address().unwrap();
    let settled = scrape_until(uptd_address, |body| {
        sample(body, "refbus_adapter_inbox_streams_open", &[]) == Some(0.0)
            && sample(body, requests, &[("method", "WatchInbox")]).is_some()
    })
    .await;
    assert_eq!(
        sample(
            &settled,
            requests,
            &[("method", "WatchInbox"), ("code", "CANCELLED")]
        ),
        Some(1.0),
        "{settled}"
    );

    // The health watch is counted under gRPC health, ended by its client.
    let dinsos_address = dinsos_metrics.address().unwrap();
    scrape_until(dinsos_address, |body| {
        sample(
            body,
            requests,
            &[
                ("service", "grpc.health.v1.Health"),
                ("method", "Watch"),
                ("code", "CANCELLED"),
            ],
        ) == Some(1.0)
    })
    .await;

    // The metrics servers stop with their components.
    system
        .stop_adapter(&refbus_core::AgencyId::new("maros-dinsos").unwrap())
        .await;
    router_task.abort();
    let _ = router_task.await;
}
