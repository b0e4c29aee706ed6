//! The clock check against the real router: what `refbus_router::Router` records on a manual
//! clock is exactly what the audit recomputes from the events (nothing missing, extra or
//! late), and once the router stops, what it no longer records is reported missing.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use refbus_audit::Problem;
use refbus_core::audit::ClockFinding;
use refbus_router::{Activity, ManualClock, Options, Router};
use refbus_testkit::NatsServer;

/// Waits until the router reports `count` recordings.
async fn recorded(activity: &mut tokio::sync::broadcast::Receiver<Activity>, count: usize) {
    let mut seen = 0;
    while seen < count {
        let next = tokio::time::timeout(Duration::from_secs(20), activity.recv())
            .await
            .expect("the router recorded too little")
            .unwrap();
        if let Activity::Recorded { .. } = next {
            seen += 1;
        }
    }
}

#[tokio::test]
async fn what_the_router_records_is_what_the_audit_recomputes() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    let created = create(&bus, "MRS-ROUTER-1", "router-1", t0_plus(0)).await;
    let clock = ManualClock::new(t0_plus(0));
    let router = Router::new(
        common::bus(&nats.url()).await,
        verifier(),
        keys().router(),
        Arc::new(clock.clone()),
        Options {
            replica: "audit".to_owned(),
            ..Options::default()
        },
    );
    let mut activity = router.activity();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        router
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    loop {
        if let Activity::Ready { .. } = activity.recv().await.unwrap() {
            break;
        }
    }
    // 30 min: warning 50 % and level 1; 45 min: warning 75 %; 60 min: breach and level 2;
    // 75 min: level 2 again.
    for (minutes, items) in [(30, 2), (45, 1), (60, 2), (75, 1)] {
        clock.advance_to(t0_plus(minutes));
        recorded(&mut activity, items).await;
    }
    let report = verify(&bus, t0_plus(76)).await;
    assert!(report.is_clean(), "{}", report.to_text());
    assert_eq!(report.records, 7);

    // The router stops; the reroute due at 90 min is never recorded.
    let _ = stop.send(());
    task.await.unwrap();
    let report = verify(&bus, t0_plus(100)).await;
    let findings: Vec<&ClockFinding> = report
        .problems
        .iter()
        .filter_map(|problem| match problem {
            Problem::Clock {
                finding, referral, ..
            } if *referral == created.record.state.id => Some(finding),
            _ => None,
        })
        .collect();
    assert_eq!(findings.len(), 1, "{}", report.to_text());
    assert!(
        matches!(findings[0], ClockFinding::Missing { due_at, .. } if *due_at == t0_plus(90)),
        "{}",
        report.to_text()
    );
}
