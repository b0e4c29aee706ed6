//! `refbus audit replay`: a referral's state at a time is the state its checked events up to
//! that time make (compared with the core's `evolve` applied by hand), and a case is fully
//! served once each of its referrals is.

mod common;

use common::*;
use refbus_audit::replay::{Entry, ReplayError, Summary, case, referral};
use refbus_core::referral::Outcome;
use refbus_core::{Command, Referral, Status, evolve};
use refbus_testkit::NatsServer;

fn outcome() -> Outcome {
    Outcome {
        code: maros().outcomes.keys().next().unwrap().clone(),
        note: None,
    }
}

#[tokio::test]
async fn the_state_at_any_time_is_the_events_up_to_then_applied_in_order() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    let mut history = vec![create(&bus, "MRS-R-1", "replay-1", t0_plus(0)).await];
    let steps = [
        (Command::ConfirmReceipt, 1),
        (Command::Accept, 5),
        (Command::Start, 10),
        (Command::Complete { outcome: outcome() }, 40),
    ];
    for (command, minutes) in steps {
        let last = history.last().unwrap().clone();
        history.push(recipient_does(&bus, &last, command, t0_plus(minutes)).await);
    }
    let id = history[0].record.state.id;
    let events: Vec<_> = history
        .iter()
        .map(|stored| stored.record.event.clone())
        .collect();
    for minutes in [0, 2, 5, 7, 10, 39, 40, 600] {
        let at = t0_plus(minutes);
        let by_hand: Option<Referral> = events
            .iter()
            .filter(|event| event.at <= at)
            .fold(None, |state, event| Some(evolve(state, event).unwrap()));
        let timeline = referral(&bus, &verifier(), id, Some(at)).await.unwrap();
        assert_eq!(
            timeline.state,
            by_hand.as_ref().map(Summary::of),
            "at {minutes} min"
        );
        let applied = timeline
            .entries
            .iter()
            .filter(|entry| matches!(entry, Entry::Event { applied: true, .. }))
            .count();
        assert_eq!(
            applied,
            events.iter().filter(|event| event.at <= at).count()
        );
    }
    // Before its creation it did not exist.
    let before = referral(
        &bus,
        &verifier(),
        id,
        Some(t0_plus(0).minus(std::time::Duration::from_secs(1))),
    )
    .await
    .unwrap();
    assert_eq!(before.state, None);
    assert_eq!(before.entries.len(), 5);
    let now = referral(&bus, &verifier(), id, None).await.unwrap();
    assert_eq!(now.state.unwrap().status, Status::Completed);
    // The text names every event.
    let text = now_text(&bus, id).await;
    for kind in ["created", "received", "accepted", "started", "completed"] {
        assert!(text.contains(kind), "{kind} in {text}");
    }
}

async fn now_text(bus: &refbus_bus::Bus, id: refbus_core::ReferralId) -> String {
    referral(bus, &verifier(), id, None)
        .await
        .unwrap()
        .to_text()
}

#[tokio::test]
async fn an_unknown_referral_or_case_is_said_so() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    create(&bus, "MRS-R-2", "replay-2", t0_plus(0)).await;
    let unknown = refbus_core::ReferralId::from_bytes([7; 16]);
    assert!(matches!(
        referral(&bus, &verifier(), unknown, None).await,
        Err(ReplayError::UnknownReferral(id)) if id == unknown
    ));
    assert!(matches!(
        case(&bus, &verifier(), "MRS-NONE".parse().unwrap(), None).await,
        Err(ReplayError::UnknownCase(_))
    ));
}

#[tokio::test]
async fn a_case_is_fully_served_once_every_referral_is_completed() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    let first = create(&bus, "MRS-CASE-1", "case-1a", t0_plus(0)).await;
    let second = create(&bus, "MRS-CASE-1", "case-1b", t0_plus(1)).await;
    create(&bus, "MRS-OTHER", "case-2", t0_plus(1)).await;
    let mut last = first;
    for (command, minutes) in [
        (Command::Accept, 5),
        (Command::Start, 10),
        (Command::Complete { outcome: outcome() }, 20),
    ] {
        last = recipient_does(&bus, &last, command, t0_plus(minutes)).await;
    }
    let report = case(&bus, &verifier(), "MRS-CASE-1".parse().unwrap(), None)
        .await
        .unwrap();
    assert_eq!(report.referrals.len(), 2);
    assert!(!report.fully_served, "the second referral is still open");
    let mut last = second;
    for (command, minutes) in [
        (Command::Accept, 6),
        (Command::Start, 11),
        (Command::Complete { outcome: outcome() }, 30),
    ] {
        last = recipient_does(&bus, &last, command, t0_plus(minutes)).await;
    }
    let report = case(&bus, &verifier(), "MRS-CASE-1".parse().unwrap(), None)
        .await
        .unwrap();
    assert!(report.fully_served);
    // At 25 minutes only the first was completed.
    let report = case(
        &bus,
        &verifier(),
        "MRS-CASE-1".parse().unwrap(),
        Some(t0_plus(25)),
    )
    .await
    .unwrap();
    assert!(!report.fully_served);
}
