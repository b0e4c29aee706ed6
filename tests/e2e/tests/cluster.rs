//! refbus on a 3-node JetStream cluster (R3 stream, `sync_interval: always`): a node killed in
//! the middle of ingest loses nothing and duplicates nothing. Agency systems create referrals
//! concurrently through a real adapter (connected with all three URLs) while the node leading
//! the events stream is killed with SIGKILL, a new leader is elected, and the node is started
//! again. The adapter rides through the failover: every call is answered OK, and every referral
//! is in the stream exactly once, those whose first attempt's outcome was unknown included;
//! the recipient's inbox, reopened from its cursor whenever it ends, delivers each once.
//! The router rides through the same: a clock that falls due after the stream leader's node
//! was killed is escalated, once. (The e2e core flows on a cluster are in `lifecycle.rs` and
//! `escalation.rs`.)

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use refbus_bus::subjects;
use refbus_core::{AgencyId, Change, ReferralId, RequestId, Timestamp};
use refbus_e2e::{System, create_request, demo_registry, recorded};
use refbus_proto::v1;
use refbus_router::{Activity, ManualClock};
use tokio::sync::Notify;

const WORKERS: usize = 8;
const PER_WORKER: usize = 25;
/// Creates answered OK before the leader is killed; the other workers' calls are in flight.
const KILL_AFTER: usize = 40;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_killed_mid_ingest_loses_nothing_and_duplicates_nothing() {
    let mut system = System::with_nats(refbus_e2e::cluster()).await;
    let dinsos = system.agency("maros-dinsos").await;
    let stream = system.nats.stream_settings().name;

    // The recipient's system follows its inbox all along, as an agency's system does: when
    // the stream ends it opens it again from its last cursor.
    let uptd = system.agency("maros-uptd-ppa").await;
    let inbox = tokio::spawn(follow_inbox(uptd, WORKERS * PER_WORKER));

    let succeeded = Arc::new(AtomicUsize::new(0));
    let enough = Arc::new(Notify::new());
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let dinsos = dinsos.clone();
        let succeeded = succeeded.clone();
        let enough = enough.clone();
        workers.push(tokio::spawn(async move {
            let mut outcomes = Vec::new();
            for n in 0..PER_WORKER {
                let request_id = format!("ingest-{worker}-{n}");
                let request = create_request(&request_id, "maros-uptd-ppa", "shelter");
                let result = dinsos
                    .client()
                    .create_referral(dinsos.request(request))
                    .await;
                if result.is_ok() && succeeded.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER {
                    enough.notify_one();
                }
                outcomes.push((
                    request_id,
                    result.map(|r| r.into_inner().referral.unwrap().referral_id),
                ));
            }
            outcomes
        }));
    }

    // Kill the stream leader's node while creates are in flight, wait until the survivors
    // lead every group, and start it again on its store: a leader change and a catch-up.
    enough.notified().await;
    let cluster = system.nats.cluster_mut().unwrap();
    let leader = cluster
        .stream_leader(&stream)
        .unwrap()
        .expect("the events stream has a leader");
    cluster.kill_node(leader).unwrap();
    let before_kill = succeeded.load(Ordering::SeqCst);
    tokio::task::block_in_place(|| cluster.wait_until_healthy()).unwrap();
    let new_leader = cluster.stream_leader(&stream).unwrap();
    assert!(
        new_leader.is_some_and(|node| node != leader),
        "a survivor leads the stream, not node {leader}: {new_leader:?}"
    );
    tokio::task::block_in_place(|| cluster.restart_node(leader)).unwrap();

    let mut outcomes = Vec::new();
    for worker in workers {
        outcomes.extend(worker.await.unwrap());
    }
    // No agency system heard of the failover: every call was answered OK.
    let failed: Vec<_> = outcomes
        .iter()
        .filter_map(|(request_id, result)| {
            let status = result.as_ref().err()?;
            Some(format!(
                "{request_id}: {:?} {}",
                status.code(),
                status.message()
            ))
        })
        .collect();
    assert!(failed.is_empty(), "calls failed:\n{}", failed.join("\n"));
    assert!(
        succeeded.load(Ordering::SeqCst) > before_kill,
        "creates went on after the kill"
    );

    // Every create answered OK is stored exactly once: retried attempts wrote nothing more.
    let bus = system.bus().await;
    let sender = AgencyId::new("maros-dinsos").unwrap();
    for (request_id, result) in &outcomes {
        let id = ReferralId::derive(&sender, &RequestId::new(request_id).unwrap());
        assert_eq!(&id.to_string(), result.as_ref().unwrap());
        let history = bus.history(&subjects::referral_pattern(&id)).await.unwrap();
        assert_eq!(history.len(), 1, "{request_id}: exactly one create");
    }
    // Each create and its index entry, once each, and nothing else.
    assert_eq!(
        bus.last_sequence().await.unwrap(),
        2 * (WORKERS * PER_WORKER) as u64
    );
    // The recipient's inbox delivered every creation once, across the failover.
    let seen = tokio::time::timeout(std::time::Duration::from_secs(120), inbox)
        .await
        .expect("the inbox delivered every creation")
        .unwrap();
    let mut expected: Vec<String> = outcomes
        .iter()
        .map(|(_, result)| result.as_ref().unwrap().clone())
        .collect();
    expected.sort();
    let mut delivered = seen.clone();
    delivered.sort();
    assert_eq!(delivered, expected, "each creation once in the inbox");
}

/// Follows `system`'s inbox from its start until `count` creations arrived, opening it again
/// from the last cursor whenever it ends or cannot be opened; the created referrals' ids in
/// the order received.
async fn follow_inbox(system: refbus_e2e::AgencySystem, count: usize) -> Vec<String> {
    let mut cursor = String::new();
    let mut created = Vec::new();
    loop {
        let opened = system
            .client()
            .watch_inbox(system.request(v1::WatchInboxRequest {
                cursor: cursor.clone(),
            }))
            .await;
        let Ok(stream) = opened else {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            continue;
        };
        let mut stream = stream.into_inner();
        while let Ok(Some(response)) = stream.message().await {
            let Some(item) = response.item else { continue };
            cursor = item.cursor;
            if let Some(v1::inbox_item::Item::Event(event)) = item.item
                && let Some(v1::event::Change::Created(_)) = event.change
            {
                created.push(event.referral_id);
                if created.len() == count {
                    return created;
                }
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_clock_due_after_the_stream_leaders_node_died_escalates_once() {
    let clock = ManualClock::new(Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap());
    let mut system = System::with_registry(refbus_e2e::cluster(), demo_registry()).await;
    system.use_clock(Arc::new(clock.clone()));
    let router = system.router(
        system.bus().await,
        Arc::new(clock.clone()),
        refbus_router::Options::default(),
    );
    let mut activity = router.activity();
    tokio::spawn(router.run(std::future::pending()));
    while !matches!(activity.recv().await.unwrap(), Activity::Ready { .. }) {}
    let dinsos = system.agency("maros-dinsos").await;
    let mut request = create_request("failover-1", "maros-uptd-ppa", "psychological_counselling");
    request.priority = v1::Priority::Emergency.into();
    let id = dinsos.create(request).await;

    // The node leading the events stream dies; the survivors elect new leaders for the stream
    // and the router's durable consumer.
    let stream = system.nats.stream_settings().name;
    let cluster = system.nats.cluster_mut().unwrap();
    let leader = cluster
        .stream_leader(&stream)
        .unwrap()
        .expect("the events stream has a leader");
    cluster.kill_node(leader).unwrap();
    tokio::task::block_in_place(|| cluster.wait_until_healthy()).unwrap();

    // Two minutes later the emergency acknowledge clock breaches and escalates to level 2.
    clock.advance_by(std::time::Duration::from_secs(120));
    // Then time goes on, as it does for a real router: one that could not read the referral
    // on the surviving replicas tries again a second later by its clock (`fire.rs`), which a
    // manual clock left standing would never reach. A second every 250 ms: the escalation's
    // repetition is 15 minutes away.
    let ticking = {
        let clock = clock.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                clock.advance_by(std::time::Duration::from_secs(1));
            }
        })
    };
    recorded(&mut activity, "acknowledge_emergency.level.2.0").await;
    ticking.abort();
    let cluster = system.nats.cluster_mut().unwrap();
    tokio::task::block_in_place(|| cluster.restart_node(leader)).unwrap();

    let bus = system.bus().await;
    let id = ReferralId::parse(&id).unwrap();
    let history = bus.history(&subjects::referral_pattern(&id)).await.unwrap();
    let level_2 = history
        .iter()
        .filter(|stored| {
            matches!(
                &stored.record.event.change,
                Change::Escalated { clock, level: 2, repetition: 0, .. }
                    if clock.to_string() == "acknowledge_emergency"
            )
        })
        .count();
    assert_eq!(level_2, 1, "{history:#?}");
}
