//! Escalation: what is due for a referral at a given instant, and when to look again.
//!
//! An escalation policy (PagerDuty/Opsgenie semantics) is an ordered list of levels. A level
//! triggers at a warning fraction of its clock, at the breach, or some time after the breach;
//! it notifies targets or reroutes the referral; it may repeat. [`evaluate`] turns a referral,
//! its policy version and `now` into the list of things due and the next wake-up instant.
//!
//! Every offset (warnings, breach, delays after breach, repeats) is measured in the clock's own
//! time: wall-clock time for 24x7 clocks, working time for working-hours clocks, and time on
//! hold never counts for clocks that pause. Each item is due exactly once: the referral's marks
//! record what was done, and an item already marked is never due again.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::clock::{ClockPolicy, Phase, Track, fraction};
use crate::event::{Change, Notified, RerouteCause};
use crate::ids::{AgencyId, ClockId, EscalationPolicyId};
use crate::referral::{Mark, Party, Referral};
use crate::registry::{PolicySet, Registry};
use crate::time::Timestamp;

/// A role at an agency that an escalation can reach.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Whoever handles referrals at the agency (its inbox).
    HandlingOperator,
    Supervisor,
    Head,
    /// The Tim Terpadu coordinator.
    Coordinator,
}

impl Role {
    pub const ALL: [Role; 4] = [
        Role::HandlingOperator,
        Role::Supervisor,
        Role::Head,
        Role::Coordinator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::HandlingOperator => "handling_operator",
            Role::Supervisor => "supervisor",
            Role::Head => "head",
            Role::Coordinator => "coordinator",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Who a level notifies, resolved against each referral.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    /// A role at the sender's or the recipient's agency.
    Party { party: Party, role: Role },
    /// A role at the clock's responsible agency (the party that must act).
    Responsible { role: Role },
    /// The Tim Terpadu coordinator.
    Coordinator,
    /// A role at a named agency.
    Agency { agency: AgencyId, role: Role },
    /// The handling operator at the responsible agency's alternate for this service: a warning
    /// that the case may come their way.
    Alternate,
}

/// When a level triggers, in the clock's own time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trigger {
    /// At this fraction of the target, in thousandths (500 = 50%).
    Warning(u16),
    Breach,
    AfterBreach(Duration),
}

/// What a level does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Action {
    Notify,
    /// Move the case to the responsible agency's alternate for the service.
    Reroute,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Level {
    pub trigger: Trigger,
    pub targets: Vec<Target>,
    pub action: Action,
    /// How many more times to notify while nobody acknowledges.
    pub repeat: u16,
    pub repeat_every: Duration,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EscalationPolicy {
    pub id: EscalationPolicyId,
    pub title: String,
    pub levels: Vec<Level>,
}

/// Something the router must record now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    Warning {
        clock: ClockId,
        permille: u16,
        due_at: Timestamp,
        deadline: Timestamp,
    },
    Breach {
        clock: ClockId,
        deadline: Timestamp,
    },
    Escalation {
        clock: ClockId,
        /// Levels are numbered from 1, as people count them.
        level: u16,
        repetition: u16,
        due_at: Timestamp,
        action: crate::escalation::Action,
        notified: Vec<Notified>,
    },
    Reroute {
        to: AgencyId,
        cause: RerouteCause,
        due_at: Timestamp,
    },
}

impl Due {
    pub fn due_at(&self) -> Timestamp {
        match self {
            Due::Warning { due_at, .. }
            | Due::Escalation { due_at, .. }
            | Due::Reroute { due_at, .. } => *due_at,
            Due::Breach { deadline, .. } => *deadline,
        }
    }

    /// The change the router records for this item.
    pub fn change(&self) -> Change {
        match self.clone() {
            Due::Warning {
                clock,
                permille,
                due_at,
                deadline,
            } => Change::ClockWarning {
                clock,
                permille,
                due_at,
                deadline,
            },
            Due::Breach { clock, deadline } => Change::ClockBreached { clock, deadline },
            Due::Escalation {
                clock,
                level,
                repetition,
                due_at,
                action,
                notified,
            } => Change::Escalated {
                clock,
                level,
                repetition,
                due_at,
                action,
                notified,
            },
            Due::Reroute { to, cause, due_at } => Change::RerouteRequested { to, cause, due_at },
        }
    }

    /// The item a recorded `change` is ([`Due::change`] read back); `None` for a change that
    /// is not a clock item.
    pub fn recorded_as(change: &Change) -> Option<Due> {
        Some(match change.clone() {
            Change::ClockWarning {
                clock,
                permille,
                due_at,
                deadline,
            } => Due::Warning {
                clock,
                permille,
                due_at,
                deadline,
            },
            Change::ClockBreached { clock, deadline } => Due::Breach { clock, deadline },
            Change::Escalated {
                clock,
                level,
                repetition,
                due_at,
                action,
                notified,
            } => Due::Escalation {
                clock,
                level,
                repetition,
                due_at,
                action,
                notified,
            },
            Change::RerouteRequested { to, cause, due_at } => Due::Reroute { to, cause, due_at },
            _ => return None,
        })
    }

    /// A stable key naming this item of this referral: the same item always has the same key,
    /// so two routers recording it at once are deduplicated by the bus.
    pub fn key(&self) -> String {
        match self {
            Due::Warning {
                clock, permille, ..
            } => format!("{clock}.warning.{permille}"),
            Due::Breach { clock, .. } => format!("{clock}.breach"),
            Due::Escalation {
                clock,
                level,
                repetition,
                ..
            } => {
                format!("{clock}.level.{level}.{repetition}")
            }
            Due::Reroute {
                cause: RerouteCause::Escalation { clock, level },
                ..
            } => {
                format!("{clock}.reroute.{level}")
            }
            Due::Reroute {
                cause: RerouteCause::Status { status },
                ..
            } => format!("reroute.{status}"),
        }
    }
}

/// What is due for a referral at `now`, and when something next falls due.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Evaluation {
    /// Items due at or before `now`, oldest first.
    pub due: Vec<Due>,
    /// The earliest instant after `now` at which an item falls due, if the referral's clocks
    /// keep running as they are. `None` when nothing is pending (or every clock is paused).
    pub next_wake: Option<Timestamp>,
}

impl Evaluation {
    fn consider(&mut self, at: Option<Timestamp>, now: Timestamp, item: impl FnOnce() -> Due) {
        match at {
            Some(at) if at <= now => self.due.push(item()),
            Some(at) => self.next_wake = Some(self.next_wake.map_or(at, |wake| wake.min(at))),
            None => {}
        }
    }
}

/// Computes what is due for `referral` at `now` under the policy version it was created with.
///
/// A referral whose policy version the registry does not know has nothing due: the router flags
/// such referrals instead of guessing.
pub fn evaluate(referral: &Referral, registry: &Registry, now: Timestamp) -> Evaluation {
    let mut evaluation = Evaluation::default();
    let Some(policies) = registry.policy(&referral.creation.policy_version) else {
        return evaluation;
    };
    for clock in &policies.clocks {
        if clock.applies_to.matches(referral) {
            evaluate_clock(&mut evaluation, clock, policies, referral, registry, now);
        }
    }
    evaluate_reroute_rules(&mut evaluation, policies, referral, registry, now);
    evaluation.due.sort_by_key(Due::due_at);
    evaluation
}

fn evaluate_clock(
    evaluation: &mut Evaluation,
    clock: &ClockPolicy,
    policies: &PolicySet,
    referral: &Referral,
    registry: &Registry,
    now: Timestamp,
) {
    let track = Track::of(clock, referral);
    if track.phase == Phase::NotStarted {
        return;
    }
    let calendar = registry.calendar(clock.calendar, clock.responsible, referral);
    let Some(deadline) = track.instant_at(&calendar, clock.target) else {
        // Stopped before its target (nothing more is owed), or paused: while paused the
        // deadline is unknown and nothing falls due; resuming brings the clock back here.
        return;
    };
    let stopped = matches!(track.phase, Phase::Stopped(_));
    if !referral.has_mark(&clock.id, Mark::Breach) {
        // A breach is a fact even if the clock stopped later: it is recorded late, never lost.
        evaluation.consider(Some(deadline), now, || Due::Breach {
            clock: clock.id.clone(),
            deadline,
        });
    }
    if stopped {
        return;
    }
    consider_warnings(
        evaluation, clock, &track, &calendar, referral, now, deadline,
    );

    let Some(policy) = clock
        .escalation
        .as_ref()
        .and_then(|id| policies.escalations.get(id))
    else {
        return;
    };
    if referral.is_acknowledged(&clock.id) {
        return;
    }
    for (index, level) in policy.levels.iter().enumerate() {
        let number = u16::try_from(index + 1).unwrap_or(u16::MAX);
        let offset = match level.trigger {
            Trigger::Warning(permille) => fraction(clock.target, permille),
            Trigger::Breach => clock.target,
            Trigger::AfterBreach(delay) => clock.target + delay,
        };
        if level.action == Action::Reroute {
            consider_reroute_level(
                evaluation, clock, number, level, offset, &track, &calendar, referral, registry,
                now,
            );
            continue;
        }
        for repetition in 0..=level.repeat {
            if referral.has_mark(
                &clock.id,
                Mark::Escalation {
                    level: number,
                    repetition,
                },
            ) {
                continue;
            }
            let at = track.instant_at(
                &calendar,
                offset + level.repeat_every * u32::from(repetition),
            );
            evaluation.consider(at, now, || Due::Escalation {
                clock: clock.id.clone(),
                level: number,
                repetition,
                due_at: at.unwrap_or(now),
                action: Action::Notify,
                notified: resolve_targets(&level.targets, clock.responsible, referral, registry),
            });
        }
    }
}

fn consider_warnings(
    evaluation: &mut Evaluation,
    clock: &ClockPolicy,
    track: &Track,
    calendar: &crate::calendar::Calendar<'_>,
    referral: &Referral,
    now: Timestamp,
    deadline: Timestamp,
) {
    for &permille in &clock.warnings {
        if referral.has_mark(&clock.id, Mark::Warning { permille }) {
            continue;
        }
        let at = track.instant_at(calendar, fraction(clock.target, permille));
        evaluation.consider(at, now, || Due::Warning {
            clock: clock.id.clone(),
            permille,
            due_at: at.unwrap_or(now),
            deadline,
        });
    }
}

#[allow(
    clippy::too_many_arguments,
    reason = "one call site; the arguments are the evaluation's context"
)]
fn consider_reroute_level(
    evaluation: &mut Evaluation,
    clock: &ClockPolicy,
    number: u16,
    level: &Level,
    offset: Duration,
    track: &Track,
    calendar: &crate::calendar::Calendar<'_>,
    referral: &Referral,
    registry: &Registry,
    now: Timestamp,
) {
    let already = referral.has_mark(&clock.id, Mark::RerouteRequested { level: number })
        || referral.has_mark(
            &clock.id,
            Mark::Escalation {
                level: number,
                repetition: 0,
            },
        );
    if already {
        return;
    }
    let at = track.instant_at(calendar, offset);
    match reroute_destination(referral, registry) {
        Some(to) if referral.reroute.is_none() => evaluation.consider(at, now, || Due::Reroute {
            to: to.clone(),
            cause: RerouteCause::Escalation {
                clock: clock.id.clone(),
                level: number,
            },
            due_at: at.unwrap_or(now),
        }),
        // Nowhere to reroute (or a reroute already under way): the coordinator must hear of it
        // instead, so the level still does something visible.
        _ => evaluation.consider(at, now, || Due::Escalation {
            clock: clock.id.clone(),
            level: number,
            repetition: 0,
            due_at: at.unwrap_or(now),
            action: Action::Reroute,
            notified: resolve_targets(
                &[level.targets.as_slice(), &[Target::Coordinator]].concat(),
                clock.responsible,
                referral,
                registry,
            ),
        }),
    }
}

fn evaluate_reroute_rules(
    evaluation: &mut Evaluation,
    policies: &PolicySet,
    referral: &Referral,
    registry: &Registry,
    now: Timestamp,
) {
    if referral.reroute.is_some() || !referral.children.is_empty() {
        return;
    }
    for rule in &policies.reroutes {
        let applies = referral.status == rule.on
            && (rule.services.is_empty() || rule.services.contains(&referral.creation.service));
        if !applies {
            continue;
        }
        let Some(to) = reroute_destination(referral, registry) else {
            continue;
        };
        let entered = referral
            .steps
            .iter()
            .rev()
            .find(|step| step.milestone == crate::referral::Milestone::Entered(rule.on))
            .map(|step| step.at.plus(rule.delay));
        evaluation.consider(entered, now, || Due::Reroute {
            to: to.clone(),
            cause: RerouteCause::Status { status: rule.on },
            due_at: entered.unwrap_or(now),
        });
        return;
    }
}

/// The recipient's alternate for the referral's service, unless that would send the case back
/// to one of its own parties.
fn reroute_destination<'r>(referral: &Referral, registry: &'r Registry) -> Option<&'r AgencyId> {
    registry
        .alternate(referral.recipient(), &referral.creation.service)
        .filter(|to| *to != referral.recipient() && *to != referral.sender())
}

/// Resolves targets to agencies and roles, deduplicated and sorted (stable for comparison).
pub fn resolve_targets(
    targets: &[Target],
    responsible: Party,
    referral: &Referral,
    registry: &Registry,
) -> Vec<Notified> {
    let party_agency = |party: Party| match party {
        Party::Sender => referral.sender().clone(),
        Party::Recipient => referral.recipient().clone(),
    };
    let mut notified: Vec<Notified> = targets
        .iter()
        .filter_map(|target| match target {
            Target::Party { party, role } => Some(Notified {
                agency: party_agency(*party),
                role: *role,
            }),
            Target::Responsible { role } => Some(Notified {
                agency: party_agency(responsible),
                role: *role,
            }),
            Target::Coordinator => Some(Notified {
                agency: registry.coordinator.clone(),
                role: Role::Coordinator,
            }),
            Target::Agency { agency, role } => Some(Notified {
                agency: agency.clone(),
                role: *role,
            }),
            Target::Alternate => registry
                .alternate(&party_agency(responsible), &referral.creation.service)
                .map(|agency| Notified {
                    agency: agency.clone(),
                    role: Role::HandlingOperator,
                }),
        })
        .collect();
    notified.sort();
    notified.dedup();
    notified
}
