//! Re-deciding recorded events: the genuine ones pass, forged ones are caught.

mod common;

use common::*;
use refbus_core::command::{Command, Request};
use refbus_core::referral::Priority;
use refbus_core::verify::{Unfounded, recheck};
use refbus_core::{Actor, Change, RequestId, decide, evaluate};

const START: &str = "2026-03-02T09:00:00+08:00";

fn request(command: Command, actor: Actor, id: &str) -> Request {
    Request {
        command,
        actor,
        request_id: Some(RequestId::new(id).unwrap()),
    }
}

#[test]
fn genuine_events_recheck_and_forged_ones_do_not() {
    let registry = registry();
    let creation = creation(DINSOS, UPTD, "counselling", Priority::Emergency);
    let create = decide(
        &registry,
        None,
        &request(Command::Create(Box::new(creation)), operator(DINSOS), "c1"),
        at(START),
    )
    .unwrap();
    let state = recheck(&registry, None, &create.events[0]).unwrap();

    let accept = decide(
        &registry,
        Some(&state),
        &request(Command::Accept, operator(UPTD), "a1"),
        at(START).plus(minutes(5)),
    )
    .unwrap();
    let accepted = recheck(&registry, Some(&state), &accept.events[0]).unwrap();
    assert_eq!(accepted.status, refbus_core::Status::Accepted);

    // The sender writing an acceptance under its own name: the core refuses it.
    let mut forged = accept.events[0].clone();
    forged.actor = operator(DINSOS);
    assert!(matches!(
        recheck(&registry, Some(&state), &forged),
        Err(Unfounded::Refused(_))
    ));

    // An event that skips the chain.
    let mut skipped = accept.events[0].clone();
    skipped.prev_hash = refbus_core::EventHash::GENESIS;
    assert_eq!(
        recheck(&registry, Some(&state), &skipped),
        Err(Unfounded::Different)
    );

    // A breach recorded before its deadline: refused, it is not due.
    let due = evaluate(&state, &registry, at(START).plus(hours(1))).due;
    let breach = due
        .iter()
        .find(|d| d.key() == "acknowledge_emergency.breach")
        .unwrap()
        .clone();
    let recorded = decide(
        &registry,
        Some(&state),
        &Request {
            command: Command::Record(breach),
            actor: Actor::Router,
            request_id: None,
        },
        at(START).plus(hours(1)),
    )
    .unwrap();
    assert!(recheck(&registry, Some(&state), &recorded.events[0]).is_ok());
    let mut early = recorded.events[0].clone();
    early.at = at(START).plus(minutes(30));
    assert!(matches!(
        recheck(&registry, Some(&state), &early),
        Err(Unfounded::Refused(_))
    ));

    // A router event whose content was altered (another deadline).
    let mut altered = recorded.events[0].clone();
    if let Change::ClockBreached { deadline, .. } = &mut altered.change {
        *deadline = deadline.plus(minutes(1));
    }
    assert!(recheck(&registry, Some(&state), &altered).is_err());
}
