//! One referral's state at any time, with its timeline; a case's referrals and whether it is
//! fully served. The records are read through `Bus::replay` (every one checked), and the state
//! at a time is the state the checked events up to that time make (the record check applies
//! each with the core's `evolve`): nothing here decides anything itself.

use futures::StreamExt;
use refbus_bus::{Bus, EventRecord, Replayed, Stored, Verifier, subjects};
use refbus_core::audit::{Service, case_served, service_of};
use refbus_core::integrity::Problem as IntegrityProblem;
use refbus_core::referral::{Mark, Priority};
use refbus_core::{Actor, AgencyId, CaseId, Referral, ReferralId, Status, Timestamp};
use serde::Serialize;

/// Why a replay could not answer.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error("no referral {0} on the bus (none whose creation passes the record check)")]
    UnknownReferral(ReferralId),
    #[error("no referral of case {0} on the bus")]
    UnknownCase(CaseId),
    #[error("reading the stream: {0}")]
    Bus(#[from] refbus_bus::ReadError),
}

/// A referral's metadata: what an audit shows and exports. No identity, no note, nothing
/// sealed: codes, agencies, times and counts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Summary {
    pub referral: ReferralId,
    pub case: CaseId,
    pub sender: AgencyId,
    pub recipient: AgencyId,
    pub service: String,
    pub priority: Priority,
    pub status: Status,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub outcome: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
    /// Events so far.
    pub events: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub parent: Option<ReferralId>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub children: Vec<ReferralId>,
    pub warnings: usize,
    pub breaches: usize,
    pub escalations: usize,
    pub service_state: Service,
}

impl Summary {
    pub fn of(state: &Referral) -> Summary {
        let count = |wanted: fn(&Mark) -> bool| {
            state.marks.iter().filter(|mark| wanted(&mark.mark)).count()
        };
        Summary {
            referral: state.id,
            case: state.creation.case_id.clone(),
            sender: state.sender().clone(),
            recipient: state.recipient().clone(),
            service: state.creation.service.to_string(),
            priority: state.creation.priority,
            status: state.status,
            reason: state.reason.as_ref().map(|reason| reason.code.to_string()),
            outcome: state
                .outcome
                .as_ref()
                .map(|outcome| outcome.code.to_string()),
            created_at: state.created_at,
            updated_at: state.updated_at,
            events: state.seq,
            parent: state.creation.parent,
            children: state.children.clone(),
            warnings: count(|mark| matches!(mark, Mark::Warning { .. })),
            breaches: count(|mark| matches!(mark, Mark::Breach)),
            escalations: count(|mark| matches!(mark, Mark::Escalation { .. })),
            service_state: service_of(state),
        }
    }
}

/// One line of a referral's timeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "entry", rename_all = "snake_case")]
pub enum Entry {
    /// A checked event.
    Event {
        seq: u64,
        event_seq: u64,
        at: Timestamp,
        /// `router`, or `<agency>/<operator>`.
        by: String,
        change: String,
        status_after: Status,
        /// Whether it is at or before the time asked for (part of the state shown).
        applied: bool,
    },
    /// A message on the referral's subject that fails the record check: not part of it.
    Refused {
        seq: u64,
        problem: IntegrityProblem,
        detail: String,
    },
}

/// A referral at a time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Timeline {
    pub subject: String,
    /// The time asked for; `None`: now (every event).
    pub at: Option<Timestamp>,
    /// The state at that time; `None` if it did not exist yet.
    pub state: Option<Summary>,
    pub entries: Vec<Entry>,
}

/// The state after the last of `records` (in order) whose event time is at or before `at`:
/// the state the checked events up to `at` make.
pub fn state_at(records: &[Stored<EventRecord>], at: Timestamp) -> Option<&Referral> {
    records
        .iter()
        .take_while(|stored| stored.record.event.at <= at)
        .last()
        .map(|stored| &stored.record.state)
}

fn by(actor: &Actor) -> String {
    match actor {
        Actor::Router => "router".to_owned(),
        Actor::Agency {
            agency, operator, ..
        } => format!("{agency}/{operator}"),
    }
}

/// Every message on `subject`, checked in order: the records that pass and the entries of
/// the timeline.
async fn read(
    bus: &Bus,
    verifier: &Verifier,
    subject: &str,
    at: Option<Timestamp>,
) -> Result<(Vec<Stored<EventRecord>>, Vec<Entry>), ReplayError> {
    let mut records = Vec::new();
    let mut entries = Vec::new();
    let mut replayed = bus.replay(verifier, vec![subject.to_owned()]).await?;
    while let Some(item) = replayed.next().await {
        match item? {
            Replayed::Record(stored) => {
                let event = &stored.record.event;
                entries.push(Entry::Event {
                    seq: stored.seq,
                    event_seq: event.seq,
                    at: event.at,
                    by: by(&event.actor),
                    change: event.change.kind().to_owned(),
                    status_after: stored.record.state.status,
                    applied: at.is_none_or(|at| event.at <= at),
                });
                records.push(*stored);
            }
            Replayed::Refused { seq, failure, .. } => entries.push(Entry::Refused {
                seq,
                problem: failure.problem,
                detail: failure.detail,
            }),
        }
    }
    Ok((records, entries))
}

/// Referral `id` at time `at` (`None`: with every event), with its timeline.
pub async fn referral(
    bus: &Bus,
    verifier: &Verifier,
    id: ReferralId,
    at: Option<Timestamp>,
) -> Result<Timeline, ReplayError> {
    let subject = bus
        .checked_subjects(verifier, &subjects::referral_pattern(&id))
        .await?
        .into_iter()
        .next()
        .ok_or(ReplayError::UnknownReferral(id))?;
    let (records, entries) = read(bus, verifier, &subject, at).await?;
    let state = match at {
        Some(at) => state_at(&records, at),
        None => records.last().map(|stored| &stored.record.state),
    };
    Ok(Timeline {
        subject,
        at,
        state: state.map(Summary::of),
        entries,
    })
}

/// Every referral of a case at a time, and whether the case is fully served then
/// (`refbus_core::audit::case_served`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CaseReport {
    pub case: CaseId,
    pub at: Option<Timestamp>,
    pub fully_served: bool,
    pub referrals: Vec<Timeline>,
}

/// Case `case` at time `at`: its referrals are found by reading every referral's creation
/// (there is no index by case: an audit reads the whole stream once).
pub async fn case(
    bus: &Bus,
    verifier: &Verifier,
    case: CaseId,
    at: Option<Timestamp>,
) -> Result<CaseReport, ReplayError> {
    let mut found: Vec<String> = Vec::new();
    let mut replayed = bus
        .replay(verifier, vec![subjects::ALL_REFERRALS.to_owned()])
        .await?;
    while let Some(item) = replayed.next().await {
        if let Replayed::Record(stored) = item?
            && stored.record.event.seq == 1
            && stored.record.state.creation.case_id == case
        {
            found.push(stored.subject);
        }
    }
    if found.is_empty() {
        return Err(ReplayError::UnknownCase(case));
    }
    let mut referrals = Vec::new();
    let mut states = Vec::new();
    for subject in found {
        let (records, entries) = read(bus, verifier, &subject, at).await?;
        let state = match at {
            Some(at) => state_at(&records, at),
            None => records.last().map(|stored| &stored.record.state),
        };
        if let Some(state) = state {
            states.push(state.clone());
        }
        referrals.push(Timeline {
            subject,
            at,
            state: state.map(Summary::of),
            entries,
        });
    }
    Ok(CaseReport {
        case,
        at,
        fully_served: case_served(&states),
        referrals,
    })
}

impl Timeline {
    /// The timeline for people.
    pub fn to_text(&self) -> String {
        let mut text = String::new();
        let at = self
            .at
            .map_or_else(|| "now".to_owned(), |at| at.to_rfc3339());
        match &self.state {
            Some(state) => text.push_str(&format!(
                "referral {} (case {}) at {at}: {} — {} -> {}, {} ({}), {} event(s), {} breach(es), {} escalation(s)\n",
                state.referral,
                state.case,
                state.status,
                state.sender,
                state.recipient,
                state.service,
                state.priority,
                state.events,
                state.breaches,
                state.escalations
            )),
            None => text.push_str(&format!("{} did not exist yet at {at}\n", self.subject)),
        }
        for entry in &self.entries {
            match entry {
                Entry::Event {
                    seq,
                    event_seq,
                    at,
                    by,
                    change,
                    status_after,
                    applied,
                } => text.push_str(&format!(
                    "  {} #{event_seq:<3} {at}  {change:<24} by {by:<32} -> {status_after}  (stream sequence {seq})\n",
                    if *applied { " " } else { ">" }
                )),
                Entry::Refused {
                    seq,
                    problem,
                    detail,
                } => text.push_str(&format!(
                    "  ! REFUSED at stream sequence {seq}: {problem}: {detail}\n"
                )),
            }
        }
        text
    }
}
