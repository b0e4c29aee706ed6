//! A small kabupaten for the core's tests: five agencies in WITA, two policy versions.
//!
//! Built in code (not from TOML) so the core's tests depend on nothing but the core.

#![allow(
    clippy::unwrap_in_result,
    reason = "a broken fixture should fail the test loudly"
)]
#![allow(
    dead_code,
    reason = "each test file uses a different part of the fixture"
)]
#![allow(
    unreachable_pub,
    reason = "a test helper module, shared by the test files"
)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use refbus_core::calendar::{Window, WorkingHours};
use refbus_core::clock::{Applicability, CalendarKind, ClockPolicy, ClockStart};
use refbus_core::command::{Command, Request};
use refbus_core::escalation::{Action, EscalationPolicy, Level, Role, Target, Trigger};
use refbus_core::event::Actor;
use refbus_core::ids::*;
use refbus_core::referral::{
    Consent, Creation, Milestone, Outcome, Party, Priority, Reason, Referral, SealedPayload, Status,
};
use refbus_core::registry::{Agency, PolicySet, Registry, RerouteRule, Service};
use refbus_core::{Decision, Rejection, Timestamp, decide, evolve};

pub const DINSOS: &str = "maros-dinsos";
pub const UPTD: &str = "maros-uptd-ppa";
pub const POLRES: &str = "polres-maros";
pub const HUKUM: &str = "maros-bagian-hukum";
pub const BAPPEDA: &str = "maros-bappeda";

pub fn agency(id: &str) -> AgencyId {
    AgencyId::new(id).unwrap()
}

pub fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

pub fn minutes(n: u64) -> Duration {
    Duration::from_secs(n * 60)
}

pub fn hours(n: u64) -> Duration {
    Duration::from_secs(n * 3600)
}

/// Monday-Thursday 08:00-16:00, Friday 08:00-11:30 and 13:00-16:30, WITA.
pub fn office_hours(holidays: &[&str]) -> WorkingHours {
    let day = vec![Window::new(8 * 60, 16 * 60).unwrap()];
    let friday = vec![
        Window::new(8 * 60, 11 * 60 + 30).unwrap(),
        Window::new(13 * 60, 16 * 60 + 30).unwrap(),
    ];
    WorkingHours {
        time_zone: chrono_tz::Asia::Makassar,
        week: [
            day.clone(),
            day.clone(),
            day.clone(),
            day,
            friday,
            vec![],
            vec![],
        ],
        holidays: holidays.iter().map(|d| d.parse().unwrap()).collect(),
    }
}

fn make_agency(id: &str, services: &[&str], alternates: &[(&str, &str)]) -> Agency {
    Agency {
        id: agency(id),
        name: id.to_owned(),
        region: "Kabupaten Maros".to_owned(),
        working_hours: office_hours(&["2026-03-19", "2026-03-20"]),
        services: services
            .iter()
            .map(|s| ServiceId::new(*s).unwrap())
            .collect(),
        alternates: alternates
            .iter()
            .map(|(s, a)| (ServiceId::new(*s).unwrap(), agency(a)))
            .collect(),
        contacts: BTreeMap::new(),
        signing_keys: Vec::new(),
        client_cas: Vec::new(),
        public_key: None,
        backup_public_key: None,
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "reads like a row of the policy table"
)]
fn clock(
    id: &str,
    applies_to: Applicability,
    start: ClockStart,
    stop: &[Milestone],
    target: Duration,
    calendar: CalendarKind,
    responsible: Party,
    escalation: Option<&str>,
) -> ClockPolicy {
    ClockPolicy {
        id: ClockId::new(id).unwrap(),
        title: id.replace('_', " "),
        basis: None,
        applies_to,
        start,
        stop: stop.to_vec(),
        pause_on_hold: true,
        target,
        calendar,
        responsible,
        warnings: vec![500, 750],
        escalation: escalation.map(|e| EscalationPolicyId::new(e).unwrap()),
    }
}

fn services(ids: &[&str]) -> Vec<ServiceId> {
    ids.iter().map(|s| ServiceId::new(*s).unwrap()).collect()
}

const ACKNOWLEDGED: &[Milestone] = &[
    Milestone::Entered(Status::Accepted),
    Milestone::Entered(Status::Rejected),
];

/// Policy version `v1` from 1 January 2026, `v2` (a stricter emergency acknowledge clock of
/// 30 minutes) from 1 June 2026.
pub fn policies() -> Vec<PolicySet> {
    let standard = EscalationPolicy {
        id: EscalationPolicyId::new("standard").unwrap(),
        title: "standard".to_owned(),
        levels: vec![
            Level {
                trigger: Trigger::Warning(750),
                targets: vec![Target::Party {
                    party: Party::Recipient,
                    role: Role::Supervisor,
                }],
                action: Action::Notify,
                repeat: 0,
                repeat_every: Duration::ZERO,
            },
            Level {
                trigger: Trigger::Breach,
                targets: vec![
                    Target::Responsible { role: Role::Head },
                    Target::Coordinator,
                ],
                action: Action::Notify,
                repeat: 2,
                repeat_every: minutes(30),
            },
            Level {
                trigger: Trigger::AfterBreach(hours(2)),
                targets: vec![],
                action: Action::Reroute,
                repeat: 0,
                repeat_every: Duration::ZERO,
            },
        ],
    };
    let escalations: BTreeMap<_, _> = [(standard.id.clone(), standard)].into_iter().collect();
    let emergency = |target| {
        clock(
            "acknowledge_emergency",
            Applicability {
                priorities: vec![Priority::Emergency],
                ..Default::default()
            },
            ClockStart::On(Milestone::Entered(Status::Requested)),
            ACKNOWLEDGED,
            target,
            CalendarKind::WallClock,
            Party::Recipient,
            Some("standard"),
        )
    };
    let common = vec![
        clock(
            "acknowledge_routine",
            Applicability {
                priorities: vec![Priority::Routine],
                ..Default::default()
            },
            ClockStart::On(Milestone::Entered(Status::Requested)),
            ACKNOWLEDGED,
            hours(8),
            CalendarKind::WorkingHours,
            Party::Recipient,
            Some("standard"),
        ),
        clock(
            "shelter_start",
            Applicability {
                services: services(&["shelter"]),
                ..Default::default()
            },
            ClockStart::On(Milestone::Entered(Status::Requested)),
            &[Milestone::Entered(Status::InProgress)],
            hours(2),
            CalendarKind::WallClock,
            Party::Recipient,
            None,
        ),
        ClockPolicy {
            pause_on_hold: false,
            ..clock(
                "tpks_pasal_41",
                Applicability {
                    services: services(&["police_report"]),
                    categories: vec![CategoryId::new("sexual_violence").unwrap()],
                    ..Default::default()
                },
                ClockStart::CaseReported,
                &[
                    Milestone::Entered(Status::Received),
                    Milestone::Entered(Status::Accepted),
                ],
                hours(72),
                CalendarKind::WallClock,
                Party::Sender,
                Some("standard"),
            )
        },
    ];
    let reroutes = vec![RerouteRule {
        on: Status::Rejected,
        services: vec![],
        delay: minutes(15),
    }];
    vec![
        PolicySet {
            version: PolicyVersion::new("v1").unwrap(),
            effective_from: at("2026-01-01T00:00:00+08:00"),
            clocks: [vec![emergency(hours(1))], common.clone()].concat(),
            escalations: escalations.clone(),
            reroutes: reroutes.clone(),
        },
        PolicySet {
            version: PolicyVersion::new("v2").unwrap(),
            effective_from: at("2026-06-01T00:00:00+08:00"),
            clocks: [vec![emergency(minutes(30))], common].concat(),
            escalations,
            reroutes,
        },
    ]
}

pub fn registry() -> Registry {
    let agencies = [
        make_agency(DINSOS, &["social_assistance", "shelter"], &[]),
        make_agency(
            UPTD,
            &["shelter", "counselling"],
            &[("shelter", DINSOS), ("counselling", HUKUM)],
        ),
        make_agency(POLRES, &["police_report"], &[]),
        make_agency(HUKUM, &["legal_aid", "counselling"], &[]),
        make_agency(BAPPEDA, &[], &[]),
    ];
    let named = |ids: &[&str]| -> BTreeMap<_, _> {
        ids.iter()
            .map(|id| (id.to_string(), format!("{id} (description)")))
            .collect()
    };
    Registry {
        agencies: agencies.into_iter().map(|a| (a.id.clone(), a)).collect(),
        services: [
            "social_assistance",
            "shelter",
            "counselling",
            "police_report",
            "legal_aid",
        ]
        .iter()
        .map(|s| {
            let id = ServiceId::new(*s).unwrap();
            (
                id.clone(),
                Service {
                    id,
                    name: s.to_string(),
                },
            )
        })
        .collect(),
        categories: named(&["sexual_violence", "domestic_violence", "child_abuse"])
            .into_iter()
            .map(|(k, v)| (CategoryId::new(k).unwrap(), v))
            .collect(),
        reasons: named(&[
            "no_capacity",
            "out_of_area",
            "client_unreachable",
            "duplicate",
            "client_declined",
        ])
        .into_iter()
        .map(|(k, v)| (ReasonCode::new(k).unwrap(), v))
        .collect(),
        outcomes: named(&["service_provided", "referred_onward"])
            .into_iter()
            .map(|(k, v)| (OutcomeCode::new(k).unwrap(), v))
            .collect(),
        coordinator: agency(BAPPEDA),
        router_signing_keys: Vec::new(),
        policies: policies(),
        holiday_years: [2026].into(),
    }
}

pub fn operator(agency_id: &str) -> Actor {
    Actor::Agency {
        agency: agency(agency_id),
        system: None,
        operator: OperatorId::new(format!("op@{agency_id}")).unwrap(),
    }
}

pub fn sealed_for(parties: &[&str]) -> SealedPayload {
    SealedPayload {
        recipients: parties.iter().map(|p| agency(p)).collect(),
        envelope: vec![1, 2, 3],
    }
}

pub fn reason(code: &str) -> Reason {
    Reason {
        code: ReasonCode::new(code).unwrap(),
        note: None,
    }
}

pub fn outcome(code: &str) -> Outcome {
    Outcome {
        code: OutcomeCode::new(code).unwrap(),
        note: None,
    }
}

/// A creation from `sender` to `recipient` with full consent, under policy `v1`.
pub fn creation(sender: &str, recipient: &str, service: &str, priority: Priority) -> Creation {
    Creation {
        case_id: CaseId::new("MRS-2026-0042").unwrap(),
        sender: agency(sender),
        recipient: agency(recipient),
        service: ServiceId::new(service).unwrap(),
        priority,
        categories: vec![],
        child: false,
        consent: Consent {
            services: true,
            disclose_to_agencies: true,
            override_justification: None,
        },
        case_reported_at: None,
        identity: Some(sealed_for(&[sender, recipient])),
        note: None,
        policy_version: PolicyVersion::new("v1").unwrap(),
        parent: None,
        sex: Default::default(),
        age_band: Default::default(),
    }
}

/// Runs `command` by `actor` at `now` and applies its events; the new state, or the rejection.
pub fn run(
    registry: &Registry,
    state: Option<&Referral>,
    command: Command,
    actor: &Actor,
    now: Timestamp,
) -> Result<Referral, Rejection> {
    let request = Request {
        command,
        actor: actor.clone(),
        request_id: Some(RequestId::new(format!("req-{}", now.as_millis())).unwrap()),
    };
    let decision: Decision = decide(registry, state, &request, now)?;
    let mut next = state.cloned();
    for event in &decision.events {
        next = Some(evolve(next, event).expect("decide's events apply"));
    }
    let next = next.expect("a decision has events");
    assert_eq!(
        next.status, decision.status,
        "decide and evolve disagree on the new status"
    );
    Ok(next)
}

/// A referral created by Dinsos for UPTD PPA at `now`.
pub fn created(registry: &Registry, creation: Creation, now: Timestamp) -> Referral {
    let sender = creation.sender.to_string();
    run(
        registry,
        None,
        Command::Create(Box::new(creation)),
        &operator(&sender),
        now,
    )
    .unwrap()
}

pub fn holidays(dates: &[&str]) -> BTreeSet<chrono::NaiveDate> {
    dates.iter().map(|d| d.parse().unwrap()).collect()
}
