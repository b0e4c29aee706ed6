//! The referral life cycle: every transition and every role rule, allowed and refused.

mod common;

use common::*;
use refbus_core::command::Command;
use refbus_core::event::Actor;
use refbus_core::ids::{AgencyId, ClockId, ReferralId, RequestId};
use refbus_core::referral::{Consent, Priority, Referral, Status};
use refbus_core::registry::Registry;
use refbus_core::{Rejection, chain};

/// Who a command is meant for.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Who {
    Sender,
    Recipient,
    Either,
}

struct Rule {
    name: &'static str,
    command: fn() -> Command,
    who: Who,
    from: &'static [Status],
    /// The state after, or `None` for "unchanged" (notes, appointments, reroute of a closed one).
    to: Option<Status>,
}

fn reroute() -> Command {
    Command::RecordReroute {
        child: ReferralId::from_bytes([7; 16]),
        to: agency(HUKUM),
    }
}

use Status::*;

const RULES: &[Rule] = &[
    Rule {
        name: "confirm receipt",
        command: || Command::ConfirmReceipt,
        who: Who::Recipient,
        from: &[Requested],
        to: Some(Received),
    },
    Rule {
        name: "accept",
        command: || Command::Accept,
        who: Who::Recipient,
        from: &[Requested, Received],
        to: Some(Accepted),
    },
    Rule {
        name: "reject",
        command: || Command::Reject {
            reason: reason("no_capacity"),
        },
        who: Who::Recipient,
        from: &[Requested, Received],
        to: Some(Rejected),
    },
    Rule {
        name: "start",
        command: || Command::Start,
        who: Who::Recipient,
        from: &[Accepted],
        to: Some(InProgress),
    },
    Rule {
        name: "schedule appointment",
        command: || Command::ScheduleAppointment {
            at: at("2026-03-03T09:00:00+08:00"),
            note: None,
        },
        who: Who::Recipient,
        from: &[Accepted, InProgress],
        to: None,
    },
    Rule {
        name: "add note",
        command: || Command::AddNote {
            note: sealed_for(&[DINSOS, UPTD]),
        },
        who: Who::Either,
        from: &[
            Requested,
            Received,
            Accepted,
            InProgress,
            OnHold,
            CancelRequested,
            Completed,
            Rejected,
            Failed,
            Cancelled,
            Rerouted,
        ],
        to: None,
    },
    Rule {
        name: "put on hold",
        command: || Command::PutOnHold {
            reason: reason("client_unreachable"),
        },
        who: Who::Either,
        from: &[Requested, Received, Accepted, InProgress],
        to: Some(OnHold),
    },
    // The on-hold referral of this table was held while in progress, so it resumes there.
    Rule {
        name: "resume",
        command: || Command::Resume,
        who: Who::Either,
        from: &[OnHold],
        to: Some(InProgress),
    },
    Rule {
        name: "request cancellation",
        command: || Command::RequestCancellation {
            reason: reason("client_declined"),
        },
        who: Who::Sender,
        from: &[Accepted, InProgress],
        to: Some(CancelRequested),
    },
    Rule {
        name: "confirm cancellation",
        command: || Command::ConfirmCancellation,
        who: Who::Recipient,
        from: &[CancelRequested],
        to: Some(Cancelled),
    },
    // The cancel-requested referral of this table was accepted before, so a decline returns there.
    Rule {
        name: "decline cancellation",
        command: || Command::DeclineCancellation {
            reason: reason("client_declined"),
        },
        who: Who::Recipient,
        from: &[CancelRequested],
        to: Some(Accepted),
    },
    Rule {
        name: "cancel",
        command: || Command::Cancel {
            reason: reason("duplicate"),
        },
        who: Who::Sender,
        from: &[Requested, Received],
        to: Some(Cancelled),
    },
    Rule {
        name: "complete",
        command: || Command::Complete {
            outcome: outcome("service_provided"),
        },
        who: Who::Recipient,
        from: &[Accepted, InProgress],
        to: Some(Completed),
    },
    Rule {
        name: "fail",
        command: || Command::Fail {
            reason: reason("client_unreachable"),
        },
        who: Who::Recipient,
        from: &[Accepted, InProgress],
        to: Some(Failed),
    },
    Rule {
        name: "enter in error",
        command: || Command::EnterInError {
            reason: reason("duplicate"),
        },
        who: Who::Sender,
        from: &[
            Requested,
            Received,
            Accepted,
            InProgress,
            OnHold,
            CancelRequested,
        ],
        to: Some(EnteredInError),
    },
    Rule {
        name: "reroute",
        command: reroute,
        who: Who::Sender,
        from: &[Requested, Received, Rejected, Failed],
        to: Some(Rerouted),
    },
];

const START: &str = "2026-03-02T09:00:00+08:00";

/// A referral from Dinsos to UPTD PPA brought to `status` by the shortest path.
fn reach(registry: &Registry, status: Status) -> Referral {
    let sender = operator(DINSOS);
    let recipient = operator(UPTD);
    let mut minute = 0;
    let mut now = || {
        minute += 1;
        at(START).plus(minutes(minute))
    };
    let mut state = created(
        registry,
        creation(DINSOS, UPTD, "shelter", Priority::Urgent),
        at(START),
    );
    let mut step = |command: Command, actor: &Actor| {
        state = run(registry, Some(&state), command, actor, now()).unwrap();
    };
    let path: Vec<(Command, &Actor)> = match status {
        Requested => vec![],
        Received => vec![(Command::ConfirmReceipt, &recipient)],
        Accepted => vec![(Command::Accept, &recipient)],
        InProgress => vec![(Command::Accept, &recipient), (Command::Start, &recipient)],
        OnHold => vec![
            (Command::Accept, &recipient),
            (Command::Start, &recipient),
            (
                Command::PutOnHold {
                    reason: reason("client_unreachable"),
                },
                &recipient,
            ),
        ],
        CancelRequested => vec![
            (Command::Accept, &recipient),
            (
                Command::RequestCancellation {
                    reason: reason("client_declined"),
                },
                &sender,
            ),
        ],
        Completed => vec![
            (Command::Accept, &recipient),
            (
                Command::Complete {
                    outcome: outcome("service_provided"),
                },
                &recipient,
            ),
        ],
        Rejected => vec![(
            Command::Reject {
                reason: reason("no_capacity"),
            },
            &recipient,
        )],
        Failed => vec![
            (Command::Accept, &recipient),
            (
                Command::Fail {
                    reason: reason("client_unreachable"),
                },
                &recipient,
            ),
        ],
        Cancelled => vec![(
            Command::Cancel {
                reason: reason("duplicate"),
            },
            &sender,
        )],
        Rerouted => vec![(reroute(), &sender)],
        EnteredInError => vec![(
            Command::EnterInError {
                reason: reason("duplicate"),
            },
            &sender,
        )],
    };
    for (command, actor) in path {
        step(command, actor);
    }
    assert_eq!(state.status, status);
    state
}

#[test]
fn every_command_in_every_state_by_every_actor() {
    let registry = registry();
    let actors = [
        ("sender", operator(DINSOS)),
        ("recipient", operator(UPTD)),
        ("third party", operator(POLRES)),
        ("router", Actor::Router),
    ];
    let mut checked = 0;
    for rule in RULES {
        for status in Status::ALL {
            let state = reach(&registry, status);
            for (actor_name, actor) in &actors {
                let now = state.updated_at.plus(minutes(1));
                let result = run(&registry, Some(&state), (rule.command)(), actor, now);
                let is_party = matches!(
                    (*actor_name, rule.who),
                    ("sender", Who::Sender | Who::Either)
                        | ("recipient", Who::Recipient | Who::Either)
                );
                let context = format!("{} by the {actor_name} when {status}", rule.name);
                match result {
                    Ok(next) => {
                        assert!(
                            is_party && rule.from.contains(&status),
                            "{context}: allowed, but the rules forbid it"
                        );
                        let expected = rule.to.unwrap_or(status);
                        // Rerouting a closed referral only links the child.
                        let expected = if rule.name == "reroute" && status.is_terminal() {
                            status
                        } else {
                            expected
                        };
                        assert_eq!(next.status, expected, "{context}");
                        assert_eq!(next.seq, state.seq + 1, "{context}");
                    }
                    Err(Rejection::PermissionDenied(message)) => {
                        assert!(
                            !is_party && status != EnteredInError,
                            "{context}: refused as not permitted ({message}), but it is the actor's to do"
                        );
                    }
                    Err(Rejection::WrongState {
                        status: reported, ..
                    }) => {
                        assert_eq!(reported, status, "{context}");
                        assert!(
                            (is_party || status == EnteredInError) && !rule.from.contains(&status),
                            "{context}: refused for the state, but the state allows it"
                        );
                    }
                    Err(other) => panic!("{context}: unexpected rejection {other:?}"),
                }
                checked += 1;
            }
        }
    }
    assert_eq!(checked, RULES.len() * Status::ALL.len() * 4);
}

#[test]
fn refusals_explain_themselves() {
    let registry = registry();
    let completed = reach(&registry, Completed);
    let now = completed.updated_at.plus(minutes(1));
    let err = run(
        &registry,
        Some(&completed),
        Command::Accept,
        &operator(UPTD),
        now,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot accept a referral that is completed"
    );

    let accepted = reach(&registry, Accepted);
    let err = run(
        &registry,
        Some(&accepted),
        Command::Cancel {
            reason: reason("duplicate"),
        },
        &operator(DINSOS),
        now,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot cancel a referral that is accepted; after acceptance, request cancellation instead"
    );
    let err = run(
        &registry,
        Some(&accepted),
        Command::Complete {
            outcome: outcome("service_provided"),
        },
        &operator(DINSOS),
        now,
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        "only the recipient may complete a referral; maros-dinsos is its sender"
    );
    let err = run(
        &registry,
        Some(&accepted),
        Command::Start,
        &operator(POLRES),
        now,
    )
    .unwrap_err();
    assert!(
        err.to_string()
            .starts_with("polres-maros is not a party to referral"),
        "{err}"
    );
}

#[test]
fn on_hold_returns_to_the_state_it_left_and_a_pre_acceptance_hold_can_be_cancelled() {
    let registry = registry();
    let received = reach(&registry, Received);
    let t = received.updated_at;
    let held = run(
        &registry,
        Some(&received),
        Command::PutOnHold {
            reason: reason("client_unreachable"),
        },
        &operator(DINSOS),
        t.plus(minutes(1)),
    )
    .unwrap();
    assert_eq!(held.status, OnHold);
    assert_eq!(held.resume_to, Some(Received));
    let resumed = run(
        &registry,
        Some(&held),
        Command::Resume,
        &operator(UPTD),
        t.plus(minutes(2)),
    )
    .unwrap();
    assert_eq!(resumed.status, Received);
    let cancelled = run(
        &registry,
        Some(&held),
        Command::Cancel {
            reason: reason("duplicate"),
        },
        &operator(DINSOS),
        t.plus(minutes(2)),
    )
    .unwrap();
    assert_eq!(cancelled.status, Cancelled);
    // A hold cannot be held again, and a resume needs a hold.
    assert!(matches!(
        run(
            &registry,
            Some(&held),
            Command::PutOnHold {
                reason: reason("client_unreachable")
            },
            &operator(UPTD),
            t.plus(minutes(2))
        ),
        Err(Rejection::WrongState { status: OnHold, .. })
    ));
}

#[test]
fn reasons_and_outcomes_must_be_known_codes() {
    let registry = registry();
    let requested = reach(&registry, Requested);
    let now = requested.updated_at.plus(minutes(1));
    let err = run(
        &registry,
        Some(&requested),
        Command::Reject {
            reason: reason("because"),
        },
        &operator(UPTD),
        now,
    )
    .unwrap_err();
    assert_eq!(
        err,
        Rejection::Invalid {
            field: "reason.code",
            message: "unknown reason code because".into()
        }
    );
    let accepted = reach(&registry, Accepted);
    let err = run(
        &registry,
        Some(&accepted),
        Command::Complete {
            outcome: outcome("done"),
        },
        &operator(UPTD),
        now,
    )
    .unwrap_err();
    assert_eq!(
        err,
        Rejection::Invalid {
            field: "outcome.code",
            message: "unknown outcome code done".into()
        }
    );
}

#[test]
fn notes_must_be_sealed_for_exactly_both_parties() {
    let registry = registry();
    let requested = reach(&registry, Requested);
    let now = requested.updated_at.plus(minutes(1));
    for parties in [&[DINSOS][..], &[DINSOS, UPTD, POLRES], &[DINSOS, POLRES]] {
        let err = run(
            &registry,
            Some(&requested),
            Command::AddNote {
                note: sealed_for(parties),
            },
            &operator(DINSOS),
            now,
        )
        .unwrap_err();
        assert!(
            matches!(
                err,
                Rejection::Invalid {
                    field: "sealed_note",
                    ..
                }
            ),
            "{parties:?}: {err:?}"
        );
    }
    assert!(
        run(
            &registry,
            Some(&requested),
            Command::AddNote {
                note: sealed_for(&[UPTD, DINSOS])
            },
            &operator(DINSOS),
            now
        )
        .is_ok()
    );
}

#[test]
fn no_show_needs_a_past_appointment_and_does_not_change_the_state() {
    let registry = registry();
    let accepted = reach(&registry, Accepted);
    let t = accepted.updated_at;
    let no_appointment = run(
        &registry,
        Some(&accepted),
        Command::RecordNoShow,
        &operator(UPTD),
        t.plus(minutes(1)),
    );
    assert!(matches!(
        no_appointment,
        Err(Rejection::Invalid {
            field: "appointment",
            ..
        })
    ));

    let appointment = t.plus(hours(24));
    let scheduled = run(
        &registry,
        Some(&accepted),
        Command::ScheduleAppointment {
            at: appointment,
            note: None,
        },
        &operator(UPTD),
        t.plus(minutes(1)),
    )
    .unwrap();
    assert_eq!(scheduled.business_status(), Some("scheduled"));
    let too_early = run(
        &registry,
        Some(&scheduled),
        Command::RecordNoShow,
        &operator(UPTD),
        t.plus(hours(2)),
    );
    assert!(matches!(
        too_early,
        Err(Rejection::Invalid {
            field: "appointment",
            ..
        })
    ));
    let no_show = run(
        &registry,
        Some(&scheduled),
        Command::RecordNoShow,
        &operator(UPTD),
        appointment.plus(hours(1)),
    )
    .unwrap();
    assert_eq!(no_show.status, Accepted);
    assert_eq!(no_show.business_status(), Some("no_show"));
    let twice = run(
        &registry,
        Some(&no_show),
        Command::RecordNoShow,
        &operator(UPTD),
        appointment.plus(hours(2)),
    );
    assert!(matches!(
        twice,
        Err(Rejection::Invalid {
            field: "appointment",
            ..
        })
    ));
    let by_sender = run(
        &registry,
        Some(&scheduled),
        Command::RecordNoShow,
        &operator(DINSOS),
        appointment.plus(hours(1)),
    );
    assert!(matches!(by_sender, Err(Rejection::PermissionDenied(_))));
}

#[test]
fn a_referral_is_rerouted_once() {
    let registry = registry();
    let rejected = reach(&registry, Rejected);
    let now = rejected.updated_at.plus(minutes(1));
    let linked = run(
        &registry,
        Some(&rejected),
        reroute(),
        &operator(DINSOS),
        now,
    )
    .unwrap();
    assert_eq!(
        linked.status, Rejected,
        "a closed referral keeps its state and gains a link"
    );
    assert_eq!(linked.children, vec![ReferralId::from_bytes([7; 16])]);
    let again = Command::RecordReroute {
        child: ReferralId::from_bytes([8; 16]),
        to: agency(HUKUM),
    };
    // Being rerouted already is the referral's state, not a fault of the request.
    assert!(matches!(
        run(&registry, Some(&linked), again, &operator(DINSOS), now),
        Err(Rejection::WrongState {
            status: Rejected,
            ..
        })
    ));
    let back_to_recipient = Command::RecordReroute {
        child: ReferralId::from_bytes([9; 16]),
        to: agency(UPTD),
    };
    assert!(matches!(
        run(
            &registry,
            Some(&rejected),
            back_to_recipient,
            &operator(DINSOS),
            now
        ),
        Err(Rejection::Invalid { field: "to", .. })
    ));
}

// === creation ===

fn create(
    registry: &Registry,
    creation: refbus_core::referral::Creation,
    actor: &Actor,
) -> Result<Referral, Rejection> {
    run(
        registry,
        None,
        Command::Create(Box::new(creation)),
        actor,
        at(START),
    )
}

#[test]
fn creation_needs_consent_for_services() {
    let registry = registry();
    let mut without = creation(DINSOS, UPTD, "shelter", Priority::Urgent);
    without.consent = Consent {
        services: false,
        disclose_to_agencies: true,
        override_justification: None,
    };
    assert!(matches!(
        create(&registry, without.clone(), &operator(DINSOS)),
        Err(Rejection::Invalid {
            field: "consent.services",
            ..
        })
    ));

    // The justification is sealed (its length is checked on the plaintext, before sealing):
    // the core checks it is sealed for exactly the parties.
    without.consent.override_justification = Some(sealed_for(&[DINSOS, "maros-ppa"]));
    assert!(matches!(
        create(&registry, without.clone(), &operator(DINSOS)),
        Err(Rejection::Invalid {
            field: "consent.sealed_override_justification",
            ..
        })
    ));
    without.consent.override_justification = Some(sealed_for(&[DINSOS, UPTD]));
    let created = create(&registry, without, &operator(DINSOS)).unwrap();
    assert!(
        created.creation.consent.override_justification.is_some(),
        "the override is kept for audit"
    );
}

#[test]
fn a_child_also_needs_consent_to_disclose() {
    let registry = registry();
    let mut child = creation(DINSOS, UPTD, "shelter", Priority::Urgent);
    child.child = true;
    child.consent = Consent {
        services: true,
        disclose_to_agencies: false,
        override_justification: None,
    };
    assert!(matches!(
        create(&registry, child.clone(), &operator(DINSOS)),
        Err(Rejection::Invalid {
            field: "consent.disclose_to_agencies",
            ..
        })
    ));
    child.consent.disclose_to_agencies = true;
    assert!(create(&registry, child.clone(), &operator(DINSOS)).is_ok());
    // An adult does not need it.
    let mut adult = child;
    adult.child = false;
    adult.consent.disclose_to_agencies = false;
    assert!(create(&registry, adult, &operator(DINSOS)).is_ok());
}

#[test]
fn creation_refuses_bad_parties_services_and_data() {
    let registry = registry();
    let good = creation(DINSOS, UPTD, "shelter", Priority::Urgent);
    let cases: Vec<(&str, refbus_core::referral::Creation, &str)> = vec![
        (
            "unknown recipient",
            refbus_core::referral::Creation {
                recipient: agency("maros-nowhere"),
                ..good.clone()
            },
            "recipient",
        ),
        (
            "self referral",
            refbus_core::referral::Creation {
                recipient: agency(DINSOS),
                identity: Some(sealed_for(&[DINSOS, DINSOS])),
                ..good.clone()
            },
            "recipient",
        ),
        (
            "service not offered",
            refbus_core::referral::Creation {
                service: "legal_aid".parse().unwrap(),
                ..good.clone()
            },
            "service",
        ),
        (
            "unknown service",
            refbus_core::referral::Creation {
                service: "karaoke".parse().unwrap(),
                ..good.clone()
            },
            "service",
        ),
        (
            "unknown category",
            refbus_core::referral::Creation {
                categories: vec!["unknown".parse().unwrap()],
                ..good.clone()
            },
            "categories",
        ),
        (
            "repeated category",
            refbus_core::referral::Creation {
                categories: vec![
                    "child_abuse".parse().unwrap(),
                    "child_abuse".parse().unwrap(),
                ],
                ..good.clone()
            },
            "categories",
        ),
        (
            "identity sealed for the wrong agencies",
            refbus_core::referral::Creation {
                identity: Some(sealed_for(&[DINSOS, POLRES])),
                ..good.clone()
            },
            "sealed_identity",
        ),
        (
            "reported in the future",
            refbus_core::referral::Creation {
                case_reported_at: Some(at(START).plus(hours(1))),
                ..good.clone()
            },
            "case_reported_at",
        ),
        (
            "unknown policy",
            refbus_core::referral::Creation {
                policy_version: "v9".parse().unwrap(),
                ..good.clone()
            },
            "policy_version",
        ),
    ];
    for (name, creation, field) in cases {
        match create(&registry, creation, &operator(DINSOS)) {
            Err(Rejection::Invalid {
                field: reported, ..
            }) => assert_eq!(reported, field, "{name}"),
            other => panic!("{name}: expected an invalid {field}, got {other:?}"),
        }
    }
    assert!(matches!(
        create(&registry, good.clone(), &operator(UPTD)),
        Err(Rejection::PermissionDenied(_))
    ));
    assert!(matches!(
        create(&registry, good, &Actor::Router),
        Err(Rejection::PermissionDenied(_))
    ));
}

#[test]
fn the_same_request_derives_the_same_referral_and_a_second_create_is_refused() {
    let registry = registry();
    let first = created(
        &registry,
        creation(DINSOS, UPTD, "shelter", Priority::Urgent),
        at(START),
    );
    let request = RequestId::new(format!("req-{}", at(START).as_millis())).unwrap();
    assert_eq!(
        first.id,
        ReferralId::derive(&AgencyId::new(DINSOS).unwrap(), &request)
    );
    let again = run(
        &registry,
        Some(&first),
        Command::Create(Box::new(creation(
            DINSOS,
            UPTD,
            "shelter",
            Priority::Urgent,
        ))),
        &operator(DINSOS),
        at(START),
    );
    assert!(matches!(again, Err(Rejection::AlreadyExists { .. })));
    let missing = run(&registry, None, Command::Accept, &operator(UPTD), at(START));
    assert_eq!(missing.unwrap_err(), Rejection::NotFound);
}

#[test]
fn entered_in_error_is_final_even_for_notes() {
    let registry = registry();
    let voided = reach(&registry, EnteredInError);
    let now = voided.updated_at.plus(minutes(1));
    let note = run(
        &registry,
        Some(&voided),
        Command::AddNote {
            note: sealed_for(&[DINSOS, UPTD]),
        },
        &operator(DINSOS),
        now,
    );
    assert!(matches!(
        note,
        Err(Rejection::WrongState {
            status: EnteredInError,
            ..
        })
    ));
}

// === escalation acknowledgement and router-only changes ===

#[test]
fn only_notified_agencies_acknowledge_and_only_the_router_records_clock_events() {
    let registry = registry();
    let start = at(START);
    let referral = created(
        &registry,
        creation(DINSOS, UPTD, "shelter", Priority::Emergency),
        start,
    );
    // Nothing is due yet: a router record of a made-up breach is refused.
    let late = start.plus(hours(1));
    let evaluation = refbus_core::evaluate(&referral, &registry, late);
    let breach = evaluation
        .due
        .iter()
        .find(|due| matches!(due, refbus_core::Due::Breach { .. }))
        .cloned()
        .expect("the emergency acknowledge clock breaches after an hour");
    assert!(matches!(
        run(
            &registry,
            Some(&referral),
            Command::Record(breach.clone()),
            &Actor::Router,
            start.plus(minutes(10))
        ),
        Err(Rejection::Invalid { field: "due", .. })
    ));
    assert!(matches!(
        run(
            &registry,
            Some(&referral),
            Command::Record(breach.clone()),
            &operator(UPTD),
            late
        ),
        Err(Rejection::PermissionDenied(_))
    ));
    let mut state = referral;
    for due in evaluation.due {
        state = run(
            &registry,
            Some(&state),
            Command::Record(due),
            &Actor::Router,
            late,
        )
        .unwrap();
    }
    // Level 2 notified the recipient's head and the coordinator: Bappeda may acknowledge,
    // the police may not, and level 3 has not happened.
    let clock = ClockId::new("acknowledge_emergency").unwrap();
    let ack = |level| Command::AcknowledgeEscalation {
        clock: clock.clone(),
        level,
    };
    assert!(matches!(
        run(&registry, Some(&state), ack(2), &operator(POLRES), late),
        Err(Rejection::PermissionDenied(_))
    ));
    assert!(matches!(
        run(&registry, Some(&state), ack(3), &operator(BAPPEDA), late),
        Err(Rejection::Invalid { field: "level", .. })
    ));
    let acknowledged = run(&registry, Some(&state), ack(2), &operator(BAPPEDA), late).unwrap();
    assert!(acknowledged.is_acknowledged(&clock));
    assert!(matches!(
        run(
            &registry,
            Some(&acknowledged),
            ack(2),
            &operator(UPTD),
            late
        ),
        Err(Rejection::Invalid { field: "level", .. })
    ));
}

// === the hash chain ===

#[test]
fn the_chain_verifies_and_any_alteration_breaks_it() {
    let registry = registry();
    let sender = operator(DINSOS);
    let recipient = operator(UPTD);
    let start = at(START);
    let commands = [
        (
            Command::Create(Box::new(creation(
                DINSOS,
                UPTD,
                "shelter",
                Priority::Urgent,
            ))),
            &sender,
        ),
        (Command::ConfirmReceipt, &recipient),
        (Command::Accept, &recipient),
        (Command::Start, &recipient),
        (
            Command::Complete {
                outcome: outcome("service_provided"),
            },
            &recipient,
        ),
    ];
    let mut state: Option<Referral> = None;
    let mut events = Vec::new();
    for (index, (command, actor)) in commands.into_iter().enumerate() {
        let request = refbus_core::Request {
            command,
            actor: actor.clone(),
            request_id: Some(RequestId::new(format!("chain-{index}")).unwrap()),
        };
        let decision = refbus_core::decide(
            &registry,
            state.as_ref(),
            &request,
            start.plus(minutes(index as u64)),
        )
        .unwrap();
        for event in decision.events {
            state = Some(refbus_core::evolve(state, &event).unwrap());
            events.push(event);
        }
    }
    let last = chain::verify(&events).unwrap();
    assert_eq!(last, state.unwrap().last_hash);

    let mut altered = events.clone();
    altered[1].at = altered[1].at.plus(minutes(1));
    assert!(matches!(
        chain::verify(&altered),
        Err(chain::ChainError::BrokenLink { seq: 3, .. })
    ));

    let mut missing = events.clone();
    missing.remove(2);
    assert!(matches!(
        chain::verify(&missing),
        Err(chain::ChainError::Gap {
            expected: 3,
            found: 4
        })
    ));

    // Replaying an altered stream through evolve fails too, instead of producing a state.
    let mut replay = None;
    let failure = altered.iter().try_for_each(|event| {
        replay = Some(refbus_core::evolve(replay.take(), event)?);
        Ok::<_, refbus_core::EvolveError>(())
    });
    assert!(matches!(
        failure,
        Err(refbus_core::EvolveError::BrokenChain { seq: 3, .. })
    ));
}

#[test]
fn the_canonical_encoding_sorts_keys_and_is_stable() {
    let registry = registry();
    let referral = created(
        &registry,
        creation(DINSOS, UPTD, "shelter", Priority::Urgent),
        at(START),
    );
    let request = refbus_core::Request {
        command: Command::Accept,
        actor: operator(UPTD),
        request_id: Some(RequestId::new("accept-1").unwrap()),
    };
    let event = &refbus_core::decide(
        &registry,
        Some(&referral),
        &request,
        at("2026-03-02T09:05:00+08:00"),
    )
    .unwrap()
    .events[0];
    let text = String::from_utf8(chain::canonical_bytes(event)).unwrap();
    let expected = format!(
        concat!(
            r#"{{"actor":{{"agency":"maros-uptd-ppa","kind":"agency","operator":"op@maros-uptd-ppa"}},"#,
            r#""at":"2026-03-02T01:05:00.000Z","case_id":"MRS-2026-0042","change":{{"type":"accepted"}},"#,
            r#""prev_hash":"{}","referral_id":"{}","request_id":"accept-1","seq":2}}"#
        ),
        referral.last_hash, referral.id
    );
    assert_eq!(text, expected);
    // Decoding and re-encoding gives the same bytes, so an auditor's re-encoding verifies.
    let decoded: refbus_core::Event = serde_json::from_str(&text).unwrap();
    assert_eq!(chain::canonical_bytes(&decoded), text.as_bytes());
}

#[test]
fn a_creation_decided_on_placeholders_takes_only_payloads_sealed_for_the_same_parties() {
    use refbus_core::referral::SealedPayload;
    use refbus_core::{RecordError, record};
    let registry = registry();
    let mut creation = creation(DINSOS, UPTD, "shelter", Priority::Urgent);
    creation.identity = Some(SealedPayload::placeholder(vec![
        agency(DINSOS),
        agency(UPTD),
    ]));
    let request = refbus_core::Request {
        command: Command::Create(Box::new(creation)),
        actor: operator(DINSOS),
        request_id: Some(refbus_core::RequestId::new("placeholder-1").unwrap()),
    };
    let decided = record(&registry, None, &request, at("2026-03-02T09:00:00+08:00")).unwrap();
    // Sealed for another agency than the decision checked: refused.
    assert_eq!(
        decided
            .clone()
            .with_sealed_creation(Some(sealed_for(&[DINSOS, POLRES])), None, None)
            .unwrap_err(),
        RecordError::SealedOtherwise("identity")
    );
    // Left a placeholder: refused.
    assert!(
        decided
            .clone()
            .with_sealed_creation(
                Some(SealedPayload::placeholder(vec![
                    agency(DINSOS),
                    agency(UPTD)
                ])),
                None,
                None
            )
            .is_err()
    );
    // Sealed for the same parties: the event and the state carry it, chained to it.
    let sealed = sealed_for(&[DINSOS, UPTD]);
    let done = decided
        .with_sealed_creation(Some(sealed.clone()), None, None)
        .unwrap();
    assert_eq!(done.state.creation.identity, Some(sealed));
    assert_eq!(done.state.last_hash, refbus_core::chain::hash(&done.event));
}

#[test]
fn an_age_band_must_agree_with_the_child_flag() {
    use refbus_core::demographics::AgeBand;
    let registry = registry();
    let mut child = creation(DINSOS, UPTD, "shelter", Priority::Urgent);
    child.child = true;
    child.age_band = AgeBand::From25To59;
    assert!(matches!(
        create(&registry, child.clone(), &operator(DINSOS)),
        Err(Rejection::Invalid {
            field: "age_band",
            ..
        })
    ));
    child.age_band = AgeBand::From6To12;
    assert!(create(&registry, child.clone(), &operator(DINSOS)).is_ok());
    let mut adult = child;
    adult.child = false;
    assert!(matches!(
        create(&registry, adult.clone(), &operator(DINSOS)),
        Err(Rejection::Invalid {
            field: "age_band",
            ..
        })
    ));
    // Unknown fits either.
    adult.age_band = AgeBand::Unknown;
    assert!(create(&registry, adult, &operator(DINSOS)).is_ok());
}

#[test]
fn unknown_statistical_metadata_is_omitted_so_older_records_keep_their_bytes() {
    use refbus_core::demographics::{AgeBand, Sex};
    let registry = registry();
    let plain = created(
        &registry,
        creation(DINSOS, UPTD, "shelter", Priority::Urgent),
        at(START),
    );
    let json = serde_json::to_string(&plain).unwrap();
    assert!(!json.contains("\"sex\"") && !json.contains("\"age_band\""));
    // A state recorded before the fields existed (the same JSON) reads as unknown.
    let read: Referral = serde_json::from_str(&json).unwrap();
    assert_eq!(
        (read.creation.sex, read.creation.age_band),
        (Sex::Unknown, AgeBand::Unknown)
    );
    let mut known = creation(DINSOS, UPTD, "shelter", Priority::Urgent);
    known.sex = Sex::Female;
    known.age_band = AgeBand::From60;
    let known = created(&registry, known, at(START));
    let json = serde_json::to_string(&known).unwrap();
    assert!(json.contains("\"sex\":\"female\"") && json.contains("\"age_band\":\"60+\""));
}
