//! Clocks and escalation, checked by hand against the fixture's policies (times in WITA).
//!
//! The emergency acknowledge clock is 1 h on the wall clock with warnings at 50% and 75%; the
//! "standard" escalation notifies the recipient's supervisor at 75%, the responsible head and
//! the coordinator at the breach (repeated twice, every 30 min), and reroutes 2 h after it.

mod common;

use common::*;
use refbus_core::clock::{ClockView, Phase};
use refbus_core::command::Command;
use refbus_core::escalation::{Action, Role};
use refbus_core::event::{Actor, Notified, RerouteCause};
use refbus_core::ids::ClockId;
use refbus_core::referral::{Priority, Referral, Status};
use refbus_core::registry::Registry;
use refbus_core::{Due, Timestamp, evaluate};

const MONDAY_9: &str = "2026-03-02T09:00:00+08:00";

fn clock(id: &str) -> ClockId {
    ClockId::new(id).unwrap()
}

/// Records everything due at `now`, as the router would; returns what was recorded.
fn record_due(registry: &Registry, state: &mut Referral, now: Timestamp) -> Vec<Due> {
    let due = evaluate(state, registry, now).due;
    for item in &due {
        *state = run(
            registry,
            Some(state),
            Command::Record(item.clone()),
            &Actor::Router,
            now,
        )
        .unwrap();
    }
    due
}

fn keys(due: &[Due]) -> Vec<String> {
    due.iter().map(Due::key).collect()
}

fn emergency_counselling(registry: &Registry) -> Referral {
    created(
        registry,
        creation(DINSOS, UPTD, "counselling", Priority::Emergency),
        at(MONDAY_9),
    )
}

#[test]
fn warnings_breach_and_each_level_fire_once_at_their_time() {
    let registry = registry();
    let mut referral = emergency_counselling(&registry);

    let quiet = evaluate(&referral, &registry, at("2026-03-02T09:10:00+08:00"));
    assert!(quiet.due.is_empty());
    assert_eq!(quiet.next_wake, Some(at("2026-03-02T09:30:00+08:00")));

    let at_0950 = at("2026-03-02T09:50:00+08:00");
    let recorded = record_due(&registry, &mut referral, at_0950);
    assert_eq!(
        keys(&recorded),
        [
            "acknowledge_emergency.warning.500",
            "acknowledge_emergency.warning.750",
            "acknowledge_emergency.level.1.0"
        ]
    );
    assert_eq!(recorded[0].due_at(), at("2026-03-02T09:30:00+08:00"));
    assert_eq!(recorded[1].due_at(), at("2026-03-02T09:45:00+08:00"));
    match &recorded[2] {
        Due::Escalation {
            notified, action, ..
        } => {
            assert_eq!(*action, Action::Notify);
            assert_eq!(
                notified,
                &vec![Notified {
                    agency: agency(UPTD),
                    role: Role::Supervisor
                }]
            );
        }
        other => panic!("expected level 1, got {other:?}"),
    }
    // Each item once: the same instant, evaluated again, owes nothing.
    let again = evaluate(&referral, &registry, at_0950);
    assert!(again.due.is_empty());
    assert_eq!(again.next_wake, Some(at("2026-03-02T10:00:00+08:00")));

    let recorded = record_due(&registry, &mut referral, at("2026-03-02T10:00:00+08:00"));
    assert_eq!(
        keys(&recorded),
        [
            "acknowledge_emergency.breach",
            "acknowledge_emergency.level.2.0"
        ]
    );
    match &recorded[1] {
        Due::Escalation { notified, .. } => assert_eq!(
            notified,
            &vec![
                Notified {
                    agency: agency(BAPPEDA),
                    role: Role::Coordinator
                },
                Notified {
                    agency: agency(UPTD),
                    role: Role::Head
                },
            ]
        ),
        other => panic!("expected level 2, got {other:?}"),
    }

    let recorded = record_due(&registry, &mut referral, at("2026-03-02T11:00:00+08:00"));
    assert_eq!(
        keys(&recorded),
        [
            "acknowledge_emergency.level.2.1",
            "acknowledge_emergency.level.2.2"
        ]
    );
    assert_eq!(recorded[1].due_at(), at("2026-03-02T11:00:00+08:00"));

    // Two hours after the breach the case moves to UPTD PPA's alternate for counselling.
    let recorded = record_due(&registry, &mut referral, at("2026-03-02T12:00:00+08:00"));
    assert_eq!(
        recorded,
        vec![Due::Reroute {
            to: agency(HUKUM),
            cause: RerouteCause::Escalation {
                clock: clock("acknowledge_emergency"),
                level: 3
            },
            due_at: at("2026-03-02T12:00:00+08:00"),
        }]
    );
    assert_eq!(
        referral.reroute.as_ref().map(|r| r.to.clone()),
        Some(agency(HUKUM))
    );
    // UPTD PPA answering now is too late: the case is on its way to Bagian Hukum.
    let late_accept = run(
        &registry,
        Some(&referral),
        Command::Accept,
        &operator(UPTD),
        at("2026-03-02T12:01:00+08:00"),
    );
    assert_eq!(
        late_accept.unwrap_err().to_string(),
        "cannot accept a referral that is requested and being rerouted to another agency"
    );
    let after = evaluate(&referral, &registry, at("2026-03-03T12:00:00+08:00"));
    assert!(
        after.due.is_empty(),
        "nothing is due twice: {:?}",
        after.due
    );
}

#[test]
fn a_router_back_after_downtime_records_everything_owed_at_once() {
    let registry = registry();
    let mut referral = emergency_counselling(&registry);
    let recorded = record_due(&registry, &mut referral, at("2026-03-02T10:40:00+08:00"));
    assert_eq!(
        keys(&recorded),
        [
            "acknowledge_emergency.warning.500",
            "acknowledge_emergency.warning.750",
            "acknowledge_emergency.level.1.0",
            "acknowledge_emergency.breach",
            "acknowledge_emergency.level.2.0",
            "acknowledge_emergency.level.2.1",
        ]
    );
    assert_eq!(
        evaluate(&referral, &registry, at("2026-03-02T10:40:00+08:00")).next_wake,
        Some(at("2026-03-02T11:00:00+08:00"))
    );
}

#[test]
fn acknowledgement_stops_later_levels_of_that_clock() {
    let registry = registry();
    let mut referral = emergency_counselling(&registry);
    record_due(&registry, &mut referral, at("2026-03-02T10:00:00+08:00"));
    referral = run(
        &registry,
        Some(&referral),
        Command::AcknowledgeEscalation {
            clock: clock("acknowledge_emergency"),
            level: 2,
        },
        &operator(UPTD),
        at("2026-03-02T10:05:00+08:00"),
    )
    .unwrap();
    let later = evaluate(&referral, &registry, at("2026-03-02T13:00:00+08:00"));
    assert!(
        later.due.is_empty(),
        "no repeats and no reroute after the acknowledgement: {:?}",
        later.due
    );
    assert_eq!(later.next_wake, None);
}

#[test]
fn a_stopped_clock_cancels_what_is_pending() {
    let registry = registry();
    let mut referral = emergency_counselling(&registry);
    record_due(&registry, &mut referral, at("2026-03-02T09:35:00+08:00"));
    referral = run(
        &registry,
        Some(&referral),
        Command::Accept,
        &operator(UPTD),
        at("2026-03-02T09:40:00+08:00"),
    )
    .unwrap();
    let later = evaluate(&referral, &registry, at("2026-03-02T13:00:00+08:00"));
    assert!(later.due.is_empty(), "{:?}", later.due);
    assert_eq!(later.next_wake, None);
    let view = view(
        &registry,
        &referral,
        "acknowledge_emergency",
        at("2026-03-02T13:00:00+08:00"),
    );
    assert_eq!(view.phase, Phase::Stopped(at("2026-03-02T09:40:00+08:00")));
    assert!(!view.breached);
}

#[test]
fn a_breach_passed_before_the_stop_is_still_recorded_but_nothing_else() {
    let registry = registry();
    // Nobody recorded anything (the router was down); UPTD accepted 30 min late.
    let referral = emergency_counselling(&registry);
    let referral = run(
        &registry,
        Some(&referral),
        Command::Accept,
        &operator(UPTD),
        at("2026-03-02T10:30:00+08:00"),
    )
    .unwrap();
    let due = evaluate(&referral, &registry, at("2026-03-02T11:00:00+08:00")).due;
    assert_eq!(keys(&due), ["acknowledge_emergency.breach"]);
    assert!(
        view(
            &registry,
            &referral,
            "acknowledge_emergency",
            at("2026-03-02T11:00:00+08:00")
        )
        .breached
    );
}

fn view(registry: &Registry, referral: &Referral, id: &str, now: Timestamp) -> ClockView {
    let policy = registry
        .policy(&referral.creation.policy_version)
        .unwrap()
        .clocks
        .iter()
        .find(|c| c.id.as_str() == id)
        .unwrap();
    let calendar = registry.calendar(policy.calendar, policy.responsible, referral);
    ClockView::of(policy, referral, &calendar, now)
}

#[test]
fn on_hold_pauses_a_pausable_clock_and_the_deadline_moves_by_the_pause() {
    let registry = registry();
    // Shelter must start within 2 h; held from 09:30 to 13:30, so due at 15:00 instead of 11:00.
    let referral = created(
        &registry,
        creation(DINSOS, UPTD, "shelter", Priority::Urgent),
        at(MONDAY_9),
    );
    let held = run(
        &registry,
        Some(&referral),
        Command::PutOnHold {
            reason: reason("client_unreachable"),
        },
        &operator(UPTD),
        at("2026-03-02T09:30:00+08:00"),
    )
    .unwrap();
    let paused = view(
        &registry,
        &held,
        "shelter_start",
        at("2026-03-02T12:00:00+08:00"),
    );
    assert_eq!(paused.phase, Phase::Paused);
    assert_eq!(
        paused.deadline, None,
        "while paused the deadline is unknown"
    );
    assert_eq!(paused.elapsed, minutes(30));
    assert_eq!(
        evaluate(&held, &registry, at("2026-03-02T12:00:00+08:00"))
            .due
            .len(),
        0
    );

    let resumed = run(
        &registry,
        Some(&held),
        Command::Resume,
        &operator(UPTD),
        at("2026-03-02T13:30:00+08:00"),
    )
    .unwrap();
    let running = view(
        &registry,
        &resumed,
        "shelter_start",
        at("2026-03-02T14:00:00+08:00"),
    );
    assert_eq!(running.phase, Phase::Running);
    assert_eq!(running.deadline, Some(at("2026-03-02T15:00:00+08:00")));
    assert_eq!(running.elapsed, minutes(60));
    // The warnings moved with it: 50% is at 14:00 (30 min before the hold, 30 after).
    let due = evaluate(&resumed, &registry, at("2026-03-02T14:00:00+08:00")).due;
    assert!(
        due.iter().any(|d| d.key() == "shelter_start.warning.500"
            && d.due_at() == at("2026-03-02T14:00:00+08:00"))
    );
}

#[test]
fn a_routine_referral_on_friday_afternoon_is_due_monday() {
    let registry = registry();
    // 8 working hours from Friday 6 March 15:00 WITA: 1.5 h on Friday, 6.5 h on Monday.
    let referral = created(
        &registry,
        creation(DINSOS, UPTD, "counselling", Priority::Routine),
        at("2026-03-06T15:00:00+08:00"),
    );
    let clock = view(
        &registry,
        &referral,
        "acknowledge_routine",
        at("2026-03-07T10:00:00+08:00"),
    );
    assert_eq!(clock.deadline, Some(at("2026-03-09T14:30:00+08:00")));
    assert_eq!(clock.elapsed, minutes(90), "Saturday does not count");
    // The 50% warning (4 working hours) falls on Monday at 10:30.
    let wake = evaluate(&referral, &registry, at("2026-03-07T10:00:00+08:00")).next_wake;
    assert_eq!(wake, Some(at("2026-03-09T10:30:00+08:00")));
}

#[test]
fn a_routine_referral_before_nyepi_skips_the_holidays() {
    let registry = registry();
    // Wednesday 18 March 10:00: 6 h that day, Nyepi (19th) and cuti bersama (20th) and the
    // weekend are skipped, 2 h on Monday 23 March: due 10:00 WITA.
    let referral = created(
        &registry,
        creation(DINSOS, UPTD, "counselling", Priority::Routine),
        at("2026-03-18T10:00:00+08:00"),
    );
    let clock = view(
        &registry,
        &referral,
        "acknowledge_routine",
        at("2026-03-18T10:00:00+08:00"),
    );
    assert_eq!(clock.deadline, Some(at("2026-03-23T10:00:00+08:00")));
}

#[test]
fn the_tpks_clock_runs_from_the_report_and_never_pauses() {
    let registry = registry();
    let mut police = creation(UPTD, POLRES, "police_report", Priority::Urgent);
    police.categories = vec!["sexual_violence".parse().unwrap()];
    police.case_reported_at = Some(at("2026-03-01T08:00:00+08:00"));
    let referral = created(&registry, police.clone(), at(MONDAY_9));
    let tpks = view(&registry, &referral, "tpks_pasal_41", at(MONDAY_9));
    assert_eq!(tpks.started_at, Some(at("2026-03-01T08:00:00+08:00")));
    assert_eq!(tpks.deadline, Some(at("2026-03-04T08:00:00+08:00")));

    let held = run(
        &registry,
        Some(&referral),
        Command::PutOnHold {
            reason: reason("client_unreachable"),
        },
        &operator(POLRES),
        at("2026-03-02T10:00:00+08:00"),
    )
    .unwrap();
    let still = view(
        &registry,
        &held,
        "tpks_pasal_41",
        at("2026-03-03T10:00:00+08:00"),
    );
    assert_eq!(
        still.phase,
        Phase::Running,
        "a statutory clock does not stop for a hold"
    );
    assert_eq!(still.deadline, Some(at("2026-03-04T08:00:00+08:00")));

    // Reported four days ago: the breach is owed the moment the referral is created.
    police.case_reported_at = Some(at("2026-02-26T08:00:00+08:00"));
    let late = created(&registry, police, at(MONDAY_9));
    let due = evaluate(&late, &registry, at(MONDAY_9)).due;
    assert!(
        due.iter().any(|d| d.key() == "tpks_pasal_41.breach"),
        "{:?}",
        keys(&due)
    );

    // The police receiving the report stops it.
    let received = run(
        &registry,
        Some(&referral),
        Command::ConfirmReceipt,
        &operator(POLRES),
        at("2026-03-02T09:05:00+08:00"),
    )
    .unwrap();
    let stopped = view(
        &registry,
        &received,
        "tpks_pasal_41",
        at("2026-03-05T09:00:00+08:00"),
    );
    assert_eq!(
        stopped.phase,
        Phase::Stopped(at("2026-03-02T09:05:00+08:00"))
    );
    assert!(!stopped.breached);
}

#[test]
fn a_referral_keeps_the_policy_version_it_was_created_with() {
    let registry = registry();
    // Created in May under v1: the emergency acknowledge clock is 1 h, even when evaluated in
    // July when v2 (30 min) is in force.
    let may = created(
        &registry,
        creation(DINSOS, UPTD, "counselling", Priority::Emergency),
        at("2026-05-04T09:00:00+08:00"),
    );
    assert_eq!(may.creation.policy_version.as_str(), "v1");
    assert_eq!(
        view(
            &registry,
            &may,
            "acknowledge_emergency",
            at("2026-07-01T09:00:00+08:00")
        )
        .deadline,
        Some(at("2026-05-04T10:00:00+08:00"))
    );

    let mut july_creation = creation(DINSOS, UPTD, "counselling", Priority::Emergency);
    july_creation.policy_version = registry
        .policy_in_force(at("2026-07-01T09:00:00+08:00"))
        .unwrap()
        .version
        .clone();
    let july = created(&registry, july_creation, at("2026-07-01T09:00:00+08:00"));
    assert_eq!(july.creation.policy_version.as_str(), "v2");
    assert_eq!(
        view(
            &registry,
            &july,
            "acknowledge_emergency",
            at("2026-07-01T09:00:00+08:00")
        )
        .deadline,
        Some(at("2026-07-01T09:30:00+08:00"))
    );

    // Changing v2 changes nothing for the May referral.
    let mut changed = registry.clone();
    for clock in &mut changed.policies[1].clocks {
        clock.target = minutes(5);
    }
    assert_eq!(
        evaluate(&may, &changed, at("2026-05-04T09:40:00+08:00")),
        evaluate(&may, &registry, at("2026-05-04T09:40:00+08:00"))
    );
    assert_ne!(
        evaluate(&july, &changed, at("2026-07-01T09:10:00+08:00")),
        evaluate(&july, &registry, at("2026-07-01T09:10:00+08:00"))
    );
}

#[test]
fn a_rejection_is_rerouted_to_the_alternate_after_the_grace_period() {
    let registry = registry();
    let referral = created(
        &registry,
        creation(DINSOS, UPTD, "counselling", Priority::Routine),
        at(MONDAY_9),
    );
    let rejected = run(
        &registry,
        Some(&referral),
        Command::Reject {
            reason: reason("no_capacity"),
        },
        &operator(UPTD),
        at("2026-03-02T09:20:00+08:00"),
    )
    .unwrap();
    let soon = evaluate(&rejected, &registry, at("2026-03-02T09:30:00+08:00"));
    assert!(soon.due.is_empty());
    assert_eq!(soon.next_wake, Some(at("2026-03-02T09:35:00+08:00")));
    let due = evaluate(&rejected, &registry, at("2026-03-02T09:35:00+08:00")).due;
    assert_eq!(
        due,
        vec![Due::Reroute {
            to: agency(HUKUM),
            cause: RerouteCause::Status {
                status: Status::Rejected
            },
            due_at: at("2026-03-02T09:35:00+08:00"),
        }]
    );
    // A sender that reroutes by hand first leaves nothing for the router.
    let by_hand = run(
        &registry,
        Some(&rejected),
        Command::RecordReroute {
            child: refbus_core::ReferralId::from_bytes([1; 16]),
            to: agency(HUKUM),
        },
        &operator(DINSOS),
        at("2026-03-02T09:25:00+08:00"),
    )
    .unwrap();
    assert!(
        evaluate(&by_hand, &registry, at("2026-03-02T10:00:00+08:00"))
            .due
            .is_empty()
    );
}

#[test]
fn without_an_alternate_the_reroute_level_notifies_the_coordinator() {
    let registry = registry();
    // Shelter's alternate at UPTD PPA is Dinsos, the sender itself: nowhere to reroute.
    let mut referral = created(
        &registry,
        creation(DINSOS, UPTD, "shelter", Priority::Emergency),
        at(MONDAY_9),
    );
    let due = record_due(&registry, &mut referral, at("2026-03-02T12:00:00+08:00"));
    let level3 = due
        .iter()
        .find(|d| d.key() == "acknowledge_emergency.level.3.0")
        .expect("level 3 fires");
    match level3 {
        Due::Escalation {
            action, notified, ..
        } => {
            assert_eq!(*action, Action::Reroute);
            assert!(notified.contains(&Notified {
                agency: agency(BAPPEDA),
                role: Role::Coordinator
            }));
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn a_clock_that_never_started_is_stopped_once_the_referral_is_closed() {
    use refbus_core::clock::ClockStart;
    use refbus_core::referral::Milestone;
    let registry = registry();
    // A clock of the service itself: it starts when the recipient starts the service.
    let mut policy = registry
        .policy(&"v1".parse().unwrap())
        .unwrap()
        .clocks
        .iter()
        .find(|c| c.id.as_str() == "acknowledge_emergency")
        .unwrap()
        .clone();
    policy.start = ClockStart::On(Milestone::Entered(Status::InProgress));
    policy.stop = vec![Milestone::Entered(Status::Completed)];
    let referral = emergency_counselling(&registry);
    let show = |referral: &Referral| {
        let calendar = registry.calendar(policy.calendar, policy.responsible, referral);
        ClockView::of(
            &policy,
            referral,
            &calendar,
            at("2026-03-02T12:00:00+08:00"),
        )
    };
    assert_eq!(show(&referral).phase, Phase::NotStarted);

    let rejected = run(
        &registry,
        Some(&referral),
        Command::Reject {
            reason: reason("no_capacity"),
        },
        &operator(UPTD),
        at("2026-03-02T09:20:00+08:00"),
    )
    .unwrap();
    let view = show(&rejected);
    // It can never start now: stopped when the referral closed, never having run.
    assert_eq!(view.phase, Phase::Stopped(at("2026-03-02T09:20:00+08:00")));
    assert_eq!(view.started_at, None);
    assert_eq!(view.deadline, None);
    assert_eq!(view.elapsed, std::time::Duration::ZERO);
    assert!(!view.breached);
}
