//! The OTLP trace test: one trace from an agency system's call to the escalation notice in
//! another agency's inbox, exported over OTLP/gRPC to an in-process collector (a tonic server
//! implementing the collector's `TraceService`), with refbus's own telemetry setup
//! (`refbus_telemetry::init`, as every `refbus` command runs it) and the production entry
//! points of the adapters and the router.
//!
//! The trace: Dinsos's system calls CreateReferral with a W3C `traceparent`; the adapter's span
//! is its child; the append to JetStream carries the context in its headers; the router's
//! consumption descends from the append; when the clock (manual, shared) falls due the router's
//! firing descends from that consumption and appends the escalation; consuming it, the router
//! sends the coordinator's notice, whose delivery by Bappeda's adapter closes the trace. No span
//! carries the person's identity.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use refbus_core::Timestamp;
use refbus_e2e::{System, create_request, demo_registry, identity, recorded};
use refbus_proto::v1;
use refbus_proto::v1::inbox_item::Item;
use refbus_router::{Activity, ManualClock, Options};
use refbus_testkit::NatsServer;
use refbus_testkit::otlp::{Collector, Received, contains, descends, of_trace, only};

/// The agency system's own trace and span, as it sends them in `traceparent`.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_trace_from_an_agency_call_to_the_escalation_notice_in_another_inbox() {
    let (collector, addr) = Collector::start().await.unwrap();
    let telemetry = refbus_telemetry::init(refbus_telemetry::Settings {
        service_name: "refbus-e2e".to_owned(),
        otlp: Some(format!("http://{addr}")),
        default_log_filter: "warn".to_owned(),
    })
    .unwrap();
    assert!(telemetry.exporting());

    // The adapters and the router share a manual clock (as in the escalation tests).
    let clock = ManualClock::new(Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap());
    let mut system = System::with_registry(NatsServer::start().unwrap(), demo_registry()).await;
    system.use_clock(Arc::new(clock.clone()));
    let router = system.router(
        system.bus().await,
        Arc::new(clock.clone()),
        Options::default(),
    );
    let mut activity = router.activity();
    tokio::spawn(router.run(std::future::pending()));
    loop {
        if let Activity::Ready { .. } = activity.recv().await.unwrap() {
            break;
        }
    }
    let dinsos = system.agency("maros-dinsos").await;
    let bappeda = system.agency("maros-bappeda").await;

    // Dinsos's system sends its own trace context with the create.
    let mut create = create_request("trace-1", "maros-uptd-ppa", "psychological_counselling");
    create.priority = v1::Priority::Emergency.into();
    let mut request = dinsos.request(create);
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
            .parse()
            .unwrap(),
    );
    let id = dinsos
        .client()
        .create_referral(request)
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
        .referral_id;

    // Two minutes: the emergency acknowledge clock breaches; level 2 notifies the coordinator
    // (Bappeda), whose adapter delivers the notice.
    clock.advance_by(Duration::from_secs(120));
    recorded(&mut activity, "acknowledge_emergency.level.2.0").await;
    let mut inbox = bappeda
        .client()
        .watch_inbox(bappeda.request(v1::WatchInboxRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let delivered = inbox.next().await.unwrap().unwrap().item.unwrap().item;
    let Some(Item::Notice(notice)) = delivered else {
        panic!("Bappeda expected a notice, got {delivered:?}");
    };
    assert_eq!(notice.referral_id, id);

    // Whatever has ended goes out now; what ends later, with the exporter's next batch.
    let flushing = tokio::task::spawn_blocking(move || {
        telemetry.flush();
        telemetry
    });
    let telemetry = flushing.await.unwrap();
    let spans = collector
        .wait_for(|spans| {
            let trace = of_trace(spans, CALLER_TRACE);
            let delivered = trace.values().any(|span| {
                span.name() == "adapter.deliver"
                    && span.attribute("refbus.item").as_deref() == Some("notice")
            });
            let escalation_consumed = trace.values().any(|span| {
                span.name() == "router.consume"
                    && trace.values().any(|child| {
                        child.name() == "bus.notice" && child.parent_id() == span.span_id()
                    })
            });
            delivered && escalation_consumed
        })
        .await
        .unwrap_or_else(|| {
            let names: Vec<String> = collector
                .spans()
                .iter()
                .map(|span| format!("{} {}", span.name(), span.trace_id()))
                .collect();
            panic!("the expected spans never arrived; received: {names:#?}")
        });
    let trace = of_trace(&spans, CALLER_TRACE);

    // The adapter's span of the call: the caller's span is its parent.
    let call = only(&trace, "refbus.v1.ReferralService/CreateReferral", |_| true);
    assert_eq!(call.parent_id(), CALLER_SPAN);
    assert_eq!(call.service, "refbus-e2e");
    assert_eq!(
        call.attribute("rpc.method").as_deref(),
        Some("CreateReferral")
    );

    // The append of the creation, inside the call; its context travelled in the headers.
    let created = only(&trace, "bus.append", |span| {
        span.attribute("refbus.change").as_deref() == Some("created")
    });
    assert_eq!(created.parent_id(), call.span_id());
    assert_eq!(
        created.attribute("refbus.referral_id").as_deref(),
        Some(id.as_str())
    );

    // The router's consumption of the creation: a child of the append.
    let consumed = only(&trace, "router.consume", |span| {
        span.parent_id() == created.span_id()
    });

    // The firing when the clock fell due descends from that consumption, and appends the
    // escalation.
    let fire = only(&trace, "router.fire", |span| {
        span.parent_id() == consumed.span_id()
    });
    assert_eq!(
        fire.attribute("refbus.referral_id").as_deref(),
        Some(id.as_str())
    );
    let escalated: Vec<&&Received> = trace
        .values()
        .filter(|span| {
            span.name() == "bus.append"
                && span.attribute("refbus.change").as_deref() == Some("escalated")
        })
        .collect();
    assert!(
        !escalated.is_empty(),
        "no escalation was appended in the trace"
    );
    assert!(
        escalated.iter().all(|span| descends(&trace, span, fire)),
        "every escalation appended descends from the firing"
    );

    // Consuming an escalation, the router sends the coordinator's notice: the notice's span is
    // a child of that consumption, which is a child of the escalation's append.
    let notice_span = only(&trace, "bus.notice", |span| {
        span.attribute("refbus.notified").as_deref() == Some("maros-bappeda")
    });
    let escalation_consumed = trace
        .get(&notice_span.parent_id())
        .expect("the notice's parent span is in the trace");
    assert_eq!(escalation_consumed.name(), "router.consume");
    let escalation_append = trace
        .get(&escalation_consumed.parent_id())
        .expect("the consumption's parent span is in the trace");
    assert_eq!(escalation_append.name(), "bus.append");
    assert_eq!(
        escalation_append.attribute("refbus.change").as_deref(),
        Some("escalated")
    );

    // Bappeda's adapter delivering the notice: a child of the notice's span.
    let delivery = only(&trace, "adapter.deliver", |span| {
        span.attribute("refbus.item").as_deref() == Some("notice")
    });
    assert_eq!(delivery.parent_id(), notice_span.span_id());
    assert!(descends(&trace, delivery, call));

    // No identity in anything exported: the scan reads the attributes (the referral id is
    // there), and finds none of the person's data.
    let exported = collector.bytes();
    assert!(contains(&exported, &id));
    let person = identity("Siti Contoh Korban");
    for secret in [
        person.full_name.as_str(),
        person.nik.as_str(),
        person.address.as_str(),
        person.phone.as_str(),
        person.guardian_name.as_str(),
        "Anak perlu rumah aman malam ini.",
    ] {
        assert!(
            !contains(&exported, secret),
            "the exported spans hold {secret:?}"
        );
    }

    tokio::task::spawn_blocking(move || telemetry.shutdown())
        .await
        .unwrap();
}
