//! What an auditor decides from a referral's events alone: whether the router recorded exactly
//! the warnings, breaches, escalations and reroute requests the core says were due (none
//! missing, none extra, none late), and whether a case is fully served.
//!
//! The clock comparison runs the same [`evaluate`] the router runs: before each event of a
//! referral, every item due at that event's time is owed; a router record pays the item with
//! its key. An item is **late** when recorded more than a tolerance after it fell due, and
//! **missing** when it was never recorded although it fell due more than the tolerance before
//! the audit's horizon. The tolerance exists because the router records an item after its
//! instant, never at it (a timer, a read, an append); an item that stopped being due (the
//! referral moved on) before the router had the tolerance to record it is not owed.
//!
//! Pure: the caller passes the events in order and the horizon (`now`).

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::command::Command;
use crate::escalation::evaluate;
use crate::event::{Actor, Event};
use crate::referral::{Referral, Status};
use crate::registry::Registry;
use crate::time::Timestamp;
use crate::verify::command_of;

/// How long after an item falls due the router may take to record it, by default: a timer's
/// delay, a read and an append take milliseconds; a restarted router rebuilds its timers in
/// seconds. A minute tells those apart from a router that was down or missed the item.
pub const DEFAULT_TOLERANCE: Duration = Duration::from_secs(60);

/// A difference between what the router recorded and what the core decides from the events.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "finding", rename_all = "snake_case")]
pub enum ClockFinding {
    /// Due, and never recorded.
    Missing {
        /// The item's key (`acknowledge.level.1.0`, `acknowledge.breach`...).
        key: String,
        due_at: Timestamp,
        /// When it should have been recorded at the latest (due + tolerance).
        expected_by: Timestamp,
    },
    /// Recorded more than the tolerance after it fell due.
    Late {
        key: String,
        /// The stream sequence of the record.
        seq: u64,
        due_at: Timestamp,
        recorded_at: Timestamp,
        lateness_ms: u64,
    },
    /// Recorded, but not due when recorded (the record check refuses such a record; reported
    /// here too so the comparison stands on its own).
    Extra {
        key: String,
        seq: u64,
        recorded_at: Timestamp,
    },
}

impl ClockFinding {
    pub fn key(&self) -> &str {
        match self {
            ClockFinding::Missing { key, .. }
            | ClockFinding::Late { key, .. }
            | ClockFinding::Extra { key, .. } => key,
        }
    }
}

/// An item owed by the router: due since `due_at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Owed {
    due_at: Timestamp,
}

/// One referral's comparison, fed its events in order. Serializable, so an interrupted audit
/// resumes with it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClockAudit {
    owed: BTreeMap<String, Owed>,
}

impl ClockAudit {
    /// Whether nothing is owed: an audit that keeps nothing for such referrals stays small.
    pub fn is_empty(&self) -> bool {
        self.owed.is_empty()
    }

    /// Takes `event` (stored at stream sequence `seq`), which followed `before` (`None` for a
    /// creation) and led to `after`; the findings it settles.
    pub fn observe(
        &mut self,
        registry: &Registry,
        before: Option<&Referral>,
        event: &Event,
        after: &Referral,
        seq: u64,
        tolerance: Duration,
    ) -> Vec<ClockFinding> {
        if let Some(before) = before {
            self.owe(registry, before, event.at);
        }
        let mut findings = Vec::new();
        if event.actor == Actor::Router
            && let Command::Record(due) = command_of(&event.change)
        {
            let key = due.key();
            match self.owed.remove(&key) {
                Some(owed) => {
                    let lateness = event.at.since(owed.due_at);
                    if lateness > tolerance {
                        findings.push(ClockFinding::Late {
                            key,
                            seq,
                            due_at: owed.due_at,
                            recorded_at: event.at,
                            lateness_ms: u64::try_from(lateness.as_millis()).unwrap_or(u64::MAX),
                        });
                    }
                }
                None => findings.push(ClockFinding::Extra {
                    key,
                    seq,
                    recorded_at: event.at,
                }),
            }
        } else if !self.owed.is_empty() {
            // The event may have stopped or paused a clock: an item no longer due that the
            // router had not had the tolerance to record is forgiven; one it had is still owed
            // (and missing unless recorded later, which a breach may be).
            let still: BTreeSet<String> = evaluate(after, registry, event.at)
                .due
                .iter()
                .map(crate::escalation::Due::key)
                .collect();
            self.owed
                .retain(|key, owed| still.contains(key) || owed.due_at.plus(tolerance) <= event.at);
        }
        findings
    }

    /// At the audit's horizon `now`, with the referral's last verified state: everything owed
    /// that fell due more than the tolerance before `now` and was never recorded. Items due
    /// within the tolerance of `now` are pending, not missing.
    pub fn finish(
        &mut self,
        registry: &Registry,
        state: &Referral,
        now: Timestamp,
        tolerance: Duration,
    ) -> Vec<ClockFinding> {
        self.owe(registry, state, now);
        let owed = std::mem::take(&mut self.owed);
        owed.into_iter()
            .filter(|(_, owed)| owed.due_at.plus(tolerance) <= now)
            .map(|(key, owed)| ClockFinding::Missing {
                key,
                due_at: owed.due_at,
                expected_by: owed.due_at.plus(tolerance),
            })
            .collect()
    }

    fn owe(&mut self, registry: &Registry, state: &Referral, at: Timestamp) {
        for due in evaluate(state, registry, at).due {
            self.owed.entry(due.key()).or_insert(Owed {
                due_at: due.due_at(),
            });
        }
    }
}

/// Where one referral stands in serving its case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    /// Completed (with its outcome).
    Served,
    /// Still open.
    Open,
    /// Rejected or failed, and not rerouted: nobody serves it.
    Unserved,
    /// Rerouted, or rejected or failed with a reroute: its children carry the service.
    Superseded,
    /// Cancelled by its sender or entered in error: no longer asked for.
    Withdrawn,
}

pub fn service_of(referral: &Referral) -> Service {
    match referral.status {
        Status::Completed => Service::Served,
        Status::Cancelled | Status::EnteredInError => Service::Withdrawn,
        Status::Rerouted => Service::Superseded,
        Status::Rejected | Status::Failed if !referral.children.is_empty() => Service::Superseded,
        Status::Rejected | Status::Failed => Service::Unserved,
        Status::Requested
        | Status::Received
        | Status::Accepted
        | Status::InProgress
        | Status::OnHold
        | Status::CancelRequested => Service::Open,
    }
}

/// Whether a case is fully served by `referrals` (all of its referrals): at least one was
/// completed, none is open or unserved, and every superseded one's children are among them
/// (each judged the same way). Withdrawn referrals do not count either way.
pub fn case_served(referrals: &[Referral]) -> bool {
    let ids: BTreeSet<_> = referrals.iter().map(|referral| referral.id).collect();
    let mut served = false;
    for referral in referrals {
        match service_of(referral) {
            Service::Served => served = true,
            Service::Withdrawn => {}
            Service::Open | Service::Unserved => return false,
            Service::Superseded => {
                if referral.children.is_empty()
                    || !referral.children.iter().all(|child| ids.contains(child))
                {
                    return false;
                }
            }
        }
    }
    served
}
