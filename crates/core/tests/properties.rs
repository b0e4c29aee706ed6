//! Property tests: no sequence of commands leaves the life cycle, terminal states stay terminal,
//! `evolve` agrees with `decide`, the chain always verifies, and clock items are never recorded
//! twice however the router's wake-ups fall.

mod common;

use std::collections::HashSet;
use std::time::Duration;

use common::*;
use proptest::prelude::*;
use refbus_core::calendar::Calendar;
use refbus_core::command::{Command, Request};
use refbus_core::event::Actor;
use refbus_core::ids::{ClockId, ReferralId, RequestId};
use refbus_core::referral::{Priority, Referral, Status};
use refbus_core::{Event, chain, decide, evaluate, evolve};

use Status::*;

/// The life cycle of DESIGN section 2, written out edge by edge, independently of `decide`.
fn allowed(from: Status, to: Status) -> bool {
    match from {
        Requested => matches!(
            to,
            Received | Accepted | Rejected | OnHold | Cancelled | Rerouted | EnteredInError
        ),
        Received => matches!(
            to,
            Accepted | Rejected | OnHold | Cancelled | Rerouted | EnteredInError
        ),
        Accepted => matches!(
            to,
            InProgress | OnHold | CancelRequested | Completed | Failed | EnteredInError
        ),
        InProgress => matches!(
            to,
            OnHold | CancelRequested | Completed | Failed | EnteredInError
        ),
        OnHold => matches!(
            to,
            Requested | Received | Accepted | InProgress | Cancelled | Rerouted | EnteredInError
        ),
        CancelRequested => matches!(to, Cancelled | Accepted | InProgress | EnteredInError),
        Completed | Rejected | Failed | Cancelled | Rerouted | EnteredInError => false,
    }
}

fn any_command() -> impl Strategy<Value = Command> {
    prop_oneof![
        Just(Command::ConfirmReceipt),
        Just(Command::Accept),
        Just(Command::Reject {
            reason: reason("no_capacity")
        }),
        Just(Command::Start),
        Just(Command::ScheduleAppointment {
            at: at("2026-03-02T11:00:00+08:00"),
            note: None
        }),
        Just(Command::RecordNoShow),
        Just(Command::AddNote {
            note: sealed_for(&[DINSOS, UPTD])
        }),
        Just(Command::PutOnHold {
            reason: reason("client_unreachable")
        }),
        Just(Command::Resume),
        Just(Command::RequestCancellation {
            reason: reason("client_declined")
        }),
        Just(Command::ConfirmCancellation),
        Just(Command::DeclineCancellation {
            reason: reason("client_declined")
        }),
        Just(Command::Cancel {
            reason: reason("duplicate")
        }),
        Just(Command::Complete {
            outcome: outcome("service_provided")
        }),
        Just(Command::Fail {
            reason: reason("client_unreachable")
        }),
        Just(Command::EnterInError {
            reason: reason("duplicate")
        }),
        Just(Command::AcknowledgeEscalation {
            clock: ClockId::new("acknowledge_emergency").unwrap(),
            level: 2
        }),
        Just(Command::RecordReroute {
            child: ReferralId::from_bytes([3; 16]),
            to: agency(HUKUM)
        }),
    ]
}

fn any_actor() -> impl Strategy<Value = Actor> {
    prop_oneof![
        Just(operator(DINSOS)),
        Just(operator(UPTD)),
        Just(operator(POLRES)),
        Just(operator(BAPPEDA)),
        Just(Actor::Router),
    ]
}

/// A step of a scenario: an agency command, or the router recording what is due.
#[derive(Debug, Clone)]
enum Step {
    Act(Command, Actor),
    RouterWakes,
}

fn any_step() -> impl Strategy<Value = (Step, u64)> {
    let step = prop_oneof![
        4 => (any_command(), any_actor()).prop_map(|(c, a)| Step::Act(c, a)),
        1 => Just(Step::RouterWakes),
    ];
    // Minutes until the step: from the same instant to a day later.
    (step, prop_oneof![Just(0u64), 1u64..90, 60u64..1440])
}

fn any_priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Emergency),
        Just(Priority::Urgent),
        Just(Priority::Routine)
    ]
}

struct Outcome {
    states: Vec<Referral>,
    events: Vec<Event>,
}

fn play(priority: Priority, service: &str, steps: &[(Step, u64)]) -> Outcome {
    let registry = registry();
    let mut now = at("2026-03-02T09:00:00+08:00");
    let first = created(&registry, creation(DINSOS, UPTD, service, priority), now);
    let mut states = vec![first.clone()];
    let mut state = first;
    let request = Request {
        command: Command::Create(Box::new(creation(DINSOS, UPTD, service, priority))),
        actor: operator(DINSOS),
        request_id: Some(RequestId::new(format!("req-{}", now.as_millis())).unwrap()),
    };
    let mut events = decide(&registry, None, &request, now).unwrap().events;
    for (index, (step, minutes_later)) in steps.iter().enumerate() {
        now = now.plus(minutes(*minutes_later));
        let requests: Vec<Request> = match step {
            Step::Act(command, actor) => vec![Request {
                command: command.clone(),
                actor: actor.clone(),
                request_id: Some(RequestId::new(format!("step-{index}")).unwrap()),
            }],
            Step::RouterWakes => evaluate(&state, &registry, now)
                .due
                .into_iter()
                .map(|due| Request {
                    command: Command::Record(due),
                    actor: Actor::Router,
                    request_id: None,
                })
                .collect(),
        };
        for request in requests {
            let Ok(decision) = decide(&registry, Some(&state), &request, now) else {
                continue;
            };
            for event in &decision.events {
                state = evolve(Some(state), event).expect("decide's events apply to the state");
                events.push(event.clone());
            }
            assert_eq!(
                state.status, decision.status,
                "evolve disagrees with decide on {request:?}"
            );
            states.push(state.clone());
        }
    }
    Outcome { states, events }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn no_sequence_of_commands_leaves_the_life_cycle(
        priority in any_priority(),
        service in prop_oneof![Just("shelter"), Just("counselling")],
        steps in prop::collection::vec(any_step(), 0..40),
    ) {
        let outcome = play(priority, service, &steps);
        for pair in outcome.states.windows(2) {
            let (before, after) = (&pair[0], &pair[1]);
            prop_assert_eq!(after.seq, before.seq + 1);
            if before.status != after.status {
                prop_assert!(allowed(before.status, after.status), "{} -> {} is not in the life cycle", before.status, after.status);
                if before.status == OnHold && !after.status.is_terminal() && after.status != Cancelled && after.status != Rerouted {
                    prop_assert_eq!(Some(after.status), before.resume_to, "a hold resumes where it left");
                }
            }
            if before.status.is_terminal() {
                prop_assert_eq!(after.status, before.status, "terminal states stay terminal");
            }
        }
        // The chain of everything decided verifies, and ends at the state's last hash.
        let last = chain::verify(&outcome.events).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(last, outcome.states.last().unwrap().last_hash);
        // The state as stored on the bus survives a JSON round trip unchanged.
        let state = outcome.states.last().unwrap();
        let json = serde_json::to_string(state).unwrap();
        let back: Referral = serde_json::from_str(&json).unwrap();
        prop_assert_eq!(&back, state);
    }

    #[test]
    fn clock_items_are_recorded_at_most_once_however_wake_ups_fall(
        priority in any_priority(),
        steps in prop::collection::vec(any_step(), 0..40),
    ) {
        let outcome = play(priority, "counselling", &steps);
        let mut seen = HashSet::new();
        for event in &outcome.events {
            use refbus_core::Change::*;
            let key = match &event.change {
                ClockWarning { clock, permille, .. } => format!("{clock}.warning.{permille}"),
                ClockBreached { clock, .. } => format!("{clock}.breach"),
                Escalated { clock, level, repetition, .. } => format!("{clock}.level.{level}.{repetition}"),
                RerouteRequested { .. } => "reroute".to_owned(),
                _ => continue,
            };
            prop_assert!(seen.insert(key.clone()), "{} recorded twice", key);
        }
    }

    #[test]
    fn catching_up_late_records_the_same_items_as_waking_on_time(
        wakes in prop::collection::vec(1u64..400, 1..30),
    ) {
        // With no agency acting, a router that wakes often and one that wakes once at the end
        // record the same items with the same due instants.
        let registry = registry();
        let start = at("2026-03-02T09:00:00+08:00");
        let referral = created(&registry, creation(DINSOS, UPTD, "counselling", Priority::Emergency), start);
        let end = start.plus(minutes(wakes.iter().sum::<u64>()));
        let record_all = |mut state: Referral, instants: &[refbus_core::Timestamp]| {
            let mut recorded = Vec::new();
            for &now in instants {
                for due in evaluate(&state, &registry, now).due {
                    let request = Request { command: Command::Record(due.clone()), actor: Actor::Router, request_id: None };
                    let decision = decide(&registry, Some(&state), &request, now).unwrap();
                    state = evolve(Some(state), &decision.events[0]).unwrap();
                    recorded.push((due.key(), due.due_at()));
                }
            }
            recorded.sort();
            recorded
        };
        let mut instants = Vec::new();
        let mut now = start;
        for wake in &wakes {
            now = now.plus(minutes(*wake));
            instants.push(now);
        }
        prop_assert_eq!(record_all(referral.clone(), &instants), record_all(referral, &[end]));
    }

    #[test]
    fn working_time_advance_and_elapsed_agree(
        start_minutes in 0i64..(60 * 24 * 60),
        amount_minutes in 0u64..(60 * 40),
    ) {
        let hours = office_hours(&["2026-03-19", "2026-03-20"]);
        let calendar = Calendar::WorkingHours(&hours);
        let start = at("2026-03-01T00:00:00+08:00").plus(Duration::from_secs(start_minutes as u64 * 60));
        let amount = minutes(amount_minutes);
        let due = calendar.advance(start, amount).unwrap();
        prop_assert!(due >= start);
        prop_assert_eq!(calendar.elapsed(start, due), amount);
        // One minute less of work is reached no later.
        if amount_minutes > 0 {
            prop_assert!(calendar.advance(start, minutes(amount_minutes - 1)).unwrap() <= due);
        }
    }
}
