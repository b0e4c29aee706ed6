//! Clocks: how long a referral has been waiting for something, and when it will be late.
//!
//! A clock (ServiceNow SLA semantics) starts on a milestone, stops on another, may pause while
//! the referral is on hold, and has a target duration measured on a calendar. Its state is
//! computed from the referral's steps alone, so the router, the adapter and the audit replay
//! always agree on every deadline.

use std::time::Duration;

use crate::calendar::Calendar;
use crate::ids::{CategoryId, ClockId, EscalationPolicyId, ServiceId};
use crate::referral::{Milestone, Party, Priority, Referral, Status};
use crate::time::Timestamp;

/// When a clock starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClockStart {
    /// The first time the referral reaches this milestone.
    On(Milestone),
    /// When the person reported to the sending agency (`case_reported_at`), or at creation if
    /// the sender did not say: statutory clocks run from the report, not from data entry.
    CaseReported,
}

/// Which calendar a clock runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CalendarKind {
    /// 24x7: statutory and emergency clocks.
    WallClock,
    /// The working hours of the responsible party's agency.
    WorkingHours,
}

/// Which referrals a clock applies to. An empty list matches everything.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Applicability {
    pub services: Vec<ServiceId>,
    pub priorities: Vec<Priority>,
    /// The referral must carry at least one of these categories.
    pub categories: Vec<CategoryId>,
}

impl Applicability {
    pub fn matches(&self, referral: &Referral) -> bool {
        let creation = &referral.creation;
        (self.services.is_empty() || self.services.contains(&creation.service))
            && (self.priorities.is_empty() || self.priorities.contains(&creation.priority))
            && (self.categories.is_empty()
                || creation
                    .categories
                    .iter()
                    .any(|c| self.categories.contains(c)))
    }
}

/// A clock definition, part of a versioned policy set.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockPolicy {
    pub id: ClockId,
    /// What the clock measures, for people: "Acknowledge an emergency referral".
    pub title: String,
    /// The legal or local basis, e.g. "UU 12/2022 (TPKS) Pasal 41".
    pub basis: Option<String>,
    pub applies_to: Applicability,
    pub start: ClockStart,
    /// The clock stops at the first of these milestones after it started. Entering any terminal
    /// status after the start stops it too.
    pub stop: Vec<Milestone>,
    /// Whether time on hold does not count (statutory clocks never pause).
    pub pause_on_hold: bool,
    pub target: Duration,
    pub calendar: CalendarKind,
    /// The party that must act in time: whose working hours count and who is escalated.
    pub responsible: Party,
    /// Warning points as thousandths of the target (500 = 50%), ascending, each below 1000.
    pub warnings: Vec<u16>,
    pub escalation: Option<EscalationPolicyId>,
}

/// Where a clock stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Its start milestone has not happened.
    NotStarted,
    Running,
    Paused,
    /// Stopped at this instant; nothing more fires except a breach already passed.
    Stopped(Timestamp),
}

/// A clock applied to one referral: when it started, and the stretches of time that count.
#[derive(Debug, Clone, PartialEq)]
pub struct Track {
    pub phase: Phase,
    pub started_at: Option<Timestamp>,
    /// Intervals during which the clock runs; the last one is open while the clock runs.
    active: Vec<(Timestamp, Option<Timestamp>)>,
}

impl Track {
    /// Computes where `policy`'s clock stands for `referral`, from its steps alone.
    pub fn of(policy: &ClockPolicy, referral: &Referral) -> Track {
        let steps = &referral.steps;
        let (start_index, started_at) = match policy.start {
            ClockStart::On(milestone) => {
                match steps.iter().position(|s| s.milestone == milestone) {
                    Some(index) => (index + 1, steps[index].at),
                    None => return Track::not_started(),
                }
            }
            ClockStart::CaseReported => (
                1,
                referral
                    .creation
                    .case_reported_at
                    .unwrap_or(referral.created_at),
            ),
        };

        let mut active = Vec::new();
        let mut running_since = Some(started_at);
        let mut phase = Phase::Running;
        for step in steps.iter().skip(start_index) {
            let stops = policy.stop.contains(&step.milestone)
                || matches!(step.milestone, Milestone::Entered(status) if status.is_terminal());
            if stops {
                if let Some(since) = running_since.take() {
                    active.push((since, Some(step.at.max(since))));
                }
                phase = Phase::Stopped(step.at.max(started_at));
                break;
            }
            if !policy.pause_on_hold {
                continue;
            }
            match step.milestone {
                Milestone::Entered(Status::OnHold) => {
                    if let Some(since) = running_since.take() {
                        active.push((since, Some(step.at.max(since))));
                    }
                    phase = Phase::Paused;
                }
                Milestone::Entered(_) if running_since.is_none() => {
                    running_since = Some(step.at.max(started_at));
                    phase = Phase::Running;
                }
                _ => {}
            }
        }
        if let Some(since) = running_since
            && phase == Phase::Running
        {
            active.push((since, None));
        }
        Track {
            phase,
            started_at: Some(started_at),
            active,
        }
    }

    fn not_started() -> Track {
        Track {
            phase: Phase::NotStarted,
            started_at: None,
            active: Vec::new(),
        }
    }

    /// The instant at which `amount` of clock time has run, if the clock runs that long:
    /// `None` if it stopped or paused before, or has not started.
    pub fn instant_at(&self, calendar: &Calendar<'_>, amount: Duration) -> Option<Timestamp> {
        let mut remaining = amount;
        for &(from, to) in &self.active {
            match to {
                Some(to) => {
                    let available = calendar.elapsed(from, to);
                    if remaining <= available {
                        return calendar.advance(from, remaining);
                    }
                    remaining -= available;
                }
                None => return calendar.advance(from, remaining),
            }
        }
        None
    }

    /// Clock time that has run up to `now`.
    pub fn elapsed(&self, calendar: &Calendar<'_>, now: Timestamp) -> Duration {
        self.active
            .iter()
            .map(|&(from, to)| calendar.elapsed(from, to.map_or(now, |to| to.min(now))))
            .sum()
    }
}

/// A fraction of a duration given in thousandths.
pub fn fraction(duration: Duration, permille: u16) -> Duration {
    Duration::from_millis(
        u64::try_from(duration.as_millis() * u128::from(permille) / 1000).unwrap_or(u64::MAX),
    )
}

/// A clock as operators and agencies see it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClockView {
    pub clock: ClockId,
    pub title: String,
    pub phase: Phase,
    pub started_at: Option<Timestamp>,
    pub target: Duration,
    pub elapsed: Duration,
    /// When the target is reached, if the clock keeps running (None while paused).
    pub deadline: Option<Timestamp>,
    /// Whether the target was reached before the clock stopped (or before `now`).
    pub breached: bool,
}

impl ClockView {
    pub fn of(
        policy: &ClockPolicy,
        referral: &Referral,
        calendar: &Calendar<'_>,
        now: Timestamp,
    ) -> ClockView {
        let track = Track::of(policy, referral);
        // A clock whose start never came will never run once the referral is closed: showing it
        // as not started would tell people it may still start. It is stopped, when the
        // referral closed, never having run (no start, no deadline, nothing elapsed).
        let phase = match track.phase {
            Phase::NotStarted if referral.status.is_terminal() => {
                Phase::Stopped(closed_at(referral))
            }
            phase => phase,
        };
        let deadline = track.instant_at(calendar, policy.target);
        let elapsed = track.elapsed(calendar, now);
        ClockView {
            clock: policy.id.clone(),
            title: policy.title.clone(),
            phase,
            started_at: track.started_at,
            target: policy.target,
            elapsed,
            deadline,
            breached: deadline.is_some_and(|deadline| deadline <= now),
        }
    }
}

/// Every clock of `referral`'s policy version that applies to it, as it stands at `now`, with
/// its policy: what an agency's system and an operator's board show. Empty if the registry no
/// longer holds the referral's policy version.
pub fn views(
    registry: &crate::registry::Registry,
    referral: &Referral,
    now: Timestamp,
) -> Vec<(ClockView, ClockPolicy)> {
    registry
        .policy(&referral.creation.policy_version)
        .map(|policy| {
            policy
                .clocks
                .iter()
                .filter(|clock| clock.applies_to.matches(referral))
                .map(|clock| {
                    let calendar = registry.calendar(clock.calendar, clock.responsible, referral);
                    (
                        ClockView::of(clock, referral, &calendar, now),
                        clock.clone(),
                    )
                })
                .collect()
        })
        .unwrap_or_default()
}

/// When `referral` reached its final status: the first step into one (a referral keeps its
/// final status, except that a rerouted one may have been rejected or failed first).
fn closed_at(referral: &Referral) -> Timestamp {
    referral
        .steps
        .iter()
        .find(|step| matches!(step.milestone, Milestone::Entered(status) if status.is_terminal()))
        .map_or(referral.updated_at, |step| step.at)
}
