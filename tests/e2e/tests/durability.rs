//! Nothing acknowledged is lost: nats-server is killed (SIGKILL) in the middle of a burst of
//! creates and restarted; every create that was answered OK is stored, and retrying the others
//! with their request ids makes exactly one referral each.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use refbus_bus::subjects;
use refbus_core::{AgencyId, ReferralId, RequestId};
use refbus_e2e::{System, create_request};
use refbus_testkit::NatsServer;
use tokio::sync::Notify;

const WORKERS: usize = 8;
const PER_WORKER: usize = 40;
const KILL_AFTER: usize = 60;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_create_survives_a_nats_crash_and_retries_make_exactly_one_each() {
    let nats = NatsServer::builder().sync_always(true).start().unwrap();
    let mut system = System::with_nats(nats).await;
    // The server stays down until every worker is done: the calls caught by the crash answer
    // UNAVAILABLE at once instead of riding through the outage (tests/e2e/tests/cluster.rs),
    // and the agency's own retries are what this test checks.
    system.options.ride_through = std::time::Duration::ZERO;
    let dinsos = system.agency("maros-dinsos").await;

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
                let request_id = format!("burst-{worker}-{n}");
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

    // Crash the server once enough creates have been acknowledged, while others are in flight.
    enough.notified().await;
    system.nats.kill().unwrap();

    let mut outcomes = Vec::new();
    for worker in workers {
        outcomes.extend(worker.await.unwrap());
    }
    let acknowledged: Vec<_> = outcomes.iter().filter(|(_, r)| r.is_ok()).collect();
    let failed: Vec<_> = outcomes.iter().filter(|(_, r)| r.is_err()).collect();
    assert!(acknowledged.len() >= KILL_AFTER);
    assert!(
        !failed.is_empty(),
        "the crash came in the middle of the burst"
    );
    for (request_id, result) in &failed {
        let status = result.as_ref().unwrap_err();
        assert_eq!(
            status.code(),
            tonic::Code::Unavailable,
            "{request_id}: {status:?}"
        );
    }

    // Bring the same server back on its port and store; the adapter reconnects by itself,
    // and says so through its health service.
    system.nats.restart().unwrap();
    dinsos.wait_until_serving().await;

    let bus = system.bus().await;
    let sender = AgencyId::new("maros-dinsos").unwrap();
    for (request_id, result) in &acknowledged {
        let id = ReferralId::derive(&sender, &RequestId::new(request_id).unwrap());
        assert_eq!(&id.to_string(), result.as_ref().unwrap());
        let stored = bus.last(&subjects::referral_pattern(&id)).await.unwrap();
        assert!(
            stored.is_some(),
            "{request_id} was acknowledged but is not stored"
        );
    }

    // Retrying every failed create with its request id: each ends with exactly one referral.
    for (request_id, _) in &failed {
        let request = create_request(request_id, "maros-uptd-ppa", "shelter");
        let result = dinsos
            .client()
            .create_referral(dinsos.request(request))
            .await;
        result.unwrap();
    }
    for (request_id, _) in &outcomes {
        let id = ReferralId::derive(&sender, &RequestId::new(request_id).unwrap());
        let history = bus.history(&subjects::referral_pattern(&id)).await.unwrap();
        assert_eq!(history.len(), 1, "{request_id}: exactly one create");
    }
    // Each create and its index entry, once each: no retry wrote either twice.
    assert_eq!(
        bus.last_sequence().await.unwrap(),
        2 * (WORKERS * PER_WORKER) as u64
    );
}
