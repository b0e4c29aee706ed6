//! Escalation and reroute end to end, with the demonstration policy (clocks in minutes): agency
//! systems act through their adapters, the router runs the clocks, escalations reach the Tim
//! Terpadu coordinator's inbox, an acknowledgement stops them, and a referral nobody answers
//! moves to the alternate agency by the sender's adapter, even one that was down at the time.
//!
//! The adapters and the router share one manual clock, so minutes pass when the test says.
//! The escalation runs again on a 3-node JetStream cluster.

use std::sync::Arc;
use std::time::Duration;

use futures::StreamExt;
use refbus_core::Timestamp;
use refbus_e2e::{AgencySystem, Nats, System, create_request, demo_registry, recorded};
use refbus_proto::v1;
use refbus_proto::v1::inbox_item::Item;
use refbus_router::{Activity, ManualClock, Options};
use refbus_testkit::NatsServer;

/// A demo system on one server whose adapters and router read the same manual clock.
async fn demo_system() -> (
    System,
    ManualClock,
    tokio::sync::broadcast::Receiver<Activity>,
) {
    demo_system_on(NatsServer::start().unwrap().into()).await
}

/// [`demo_system`] on `nats` (a server or a cluster).
async fn demo_system_on(
    nats: Nats,
) -> (
    System,
    ManualClock,
    tokio::sync::broadcast::Receiver<Activity>,
) {
    let clock = ManualClock::new(Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap());
    let mut system = System::with_registry(nats, demo_registry()).await;
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
    (system, clock, activity)
}

async fn send(dinsos: &AgencySystem, request_id: &str) -> String {
    let mut request = create_request(request_id, "maros-uptd-ppa", "psychological_counselling");
    request.priority = v1::Priority::Emergency.into();
    dinsos.create(request).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_reaches_the_coordinator_and_its_acknowledgement_stops_later_levels() {
    Box::pin(escalation_and_acknowledgement(demo_system().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_a_cluster_an_escalation_reaches_the_coordinator_and_is_acknowledged() {
    Box::pin(escalation_and_acknowledgement(
        demo_system_on(refbus_e2e::cluster().into()).await,
    ))
    .await;
}

async fn escalation_and_acknowledgement(
    (mut system, clock, mut activity): (
        System,
        ManualClock,
        tokio::sync::broadcast::Receiver<Activity>,
    ),
) {
    let dinsos = system.agency("maros-dinsos").await;
    let bappeda = system.agency("maros-bappeda").await;
    let uptd = system.agency("maros-uptd-ppa").await;
    let id = send(&dinsos, "esc-1").await;

    // Two minutes: the emergency acknowledge clock breaches; level 2 notifies UPTD PPA's head
    // and the coordinator.
    clock.advance_by(Duration::from_secs(120));
    recorded(&mut activity, "acknowledge_emergency.level.2.0").await;
    let mut inbox = bappeda
        .client()
        .watch_inbox(bappeda.request(v1::WatchInboxRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let notice = match inbox
        .next()
        .await
        .unwrap()
        .unwrap()
        .item
        .unwrap()
        .item
        .unwrap()
    {
        Item::Notice(notice) => notice,
        other => panic!("Bappeda expected a notice, got {other:?}"),
    };
    assert_eq!(notice.referral_id, id);
    assert_eq!(
        (notice.clock_id.as_str(), notice.level),
        ("acknowledge_emergency", 2)
    );
    assert_eq!(notice.role(), v1::Role::Coordinator);

    // The coordinator acknowledges through its own adapter.
    let acknowledged = bappeda
        .client()
        .acknowledge_escalation(bappeda.request(v1::AcknowledgeEscalationRequest {
            request_id: "bappeda-ack-1".into(),
            referral_id: id.clone(),
            clock_id: "acknowledge_emergency".into(),
            level: 2,
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        acknowledged.referral.unwrap().status(),
        v1::ReferralStatus::Requested
    );

    // From the referral's state on the bus, nothing of that clock will ever be due again:
    // no router may record a repeat or the reroute.
    let bus = system.bus().await;
    let stored = bus
        .last(&refbus_bus::subjects::referral_pattern(
            &id.parse().unwrap(),
        ))
        .await
        .unwrap()
        .unwrap();
    let future = refbus_core::evaluate(&stored.record.state, &system.registry, Timestamp::MAX);
    assert!(
        future
            .due
            .iter()
            .all(|due| !due.key().starts_with("acknowledge_emergency.level")
                && !due.key().contains("reroute")),
        "{:?}",
        future.due
    );

    // Ten minutes later the referral is where the acknowledgement left it, and UPTD PPA's inbox
    // shows what happened on its referral.
    clock.advance_by(Duration::from_secs(600));
    let got = dinsos
        .client()
        .get_referral(dinsos.request(v1::GetReferralRequest {
            referral_id: id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    let referral = got.referral.unwrap();
    assert!(referral.child_referral_ids.is_empty());
    assert!(
        referral.reroute.is_none(),
        "an acknowledged escalation does not reroute"
    );
    let seen: Vec<_> = uptd
        .client()
        .watch_inbox(uptd.request(v1::WatchInboxRequest::default()))
        .await
        .unwrap()
        .into_inner()
        .take(referral.seq as usize)
        .map(|item| match item.unwrap().item.unwrap().item.unwrap() {
            Item::Event(event) => event.change.unwrap(),
            Item::Notice(_) | Item::IntegrityNotice(_) => {
                panic!("UPTD PPA is a party: it sees events, not notices")
            }
        })
        .collect()
        .await;
    assert!(
        seen.iter()
            .any(|change| matches!(change, v1::event::Change::Escalated(_)))
    );
    assert!(
        seen.iter()
            .any(|change| matches!(change, v1::event::Change::EscalationAcknowledged(_)))
    );
    assert!(
        !seen
            .iter()
            .any(|change| matches!(change, v1::event::Change::RerouteRequested(_)))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_referral_nobody_answers_is_rerouted_by_the_senders_adapter_even_after_it_was_down() {
    let (mut system, clock, mut activity) = demo_system().await;
    let dinsos = system.agency("maros-dinsos").await;
    let rsud = system.agency("maros-rsud").await;
    let id = send(&dinsos, "reroute-1").await;

    // The sender's adapter is down when the router asks for the reroute.
    system.stop_adapter(&dinsos.agency).await;
    clock.advance_by(Duration::from_secs(180));
    recorded(&mut activity, "acknowledge_emergency.reroute.3").await;
    // Nobody carries it out: the reroute itself escalates, to the coordinator among others.
    clock.advance_by(Duration::from_secs(120));
    recorded(&mut activity, "reroute_pending.level.1.0").await;

    // The adapter comes back and finds the pending reroute by itself.
    let dinsos = system.agency("maros-dinsos").await;
    let mut inbox = rsud
        .client()
        .watch_inbox(rsud.request(v1::WatchInboxRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let child = loop {
        let item = tokio::time::timeout(Duration::from_secs(20), inbox.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        if let Some(Item::Event(event)) = item.item.unwrap().item
            && let Some(v1::event::Change::Created(created)) = event.change
        {
            assert_eq!(created.parent_referral_id, id);
            break event.referral_id;
        }
    };
    // RSUD reads the identity the sender's adapter re-sealed for it.
    let at_rsud = rsud
        .client()
        .get_referral(rsud.request(v1::GetReferralRequest {
            referral_id: child.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(
        at_rsud.referral.unwrap().identity.unwrap().full_name,
        "Siti Contoh Korban"
    );
    let original = dinsos
        .client()
        .get_referral(dinsos.request(v1::GetReferralRequest { referral_id: id }))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(original.status(), v1::ReferralStatus::Rerouted);
    assert_eq!(original.child_referral_ids, vec![child]);
}
