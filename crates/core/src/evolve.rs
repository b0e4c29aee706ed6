//! `evolve`: the referral's state after one more event.
//!
//! `evolve` trusts that `decide` allowed the event; it checks only that the event belongs to
//! this referral, comes next, and names the right predecessor, so a replay of a stream with a
//! lost, duplicated or altered event fails loudly instead of producing a wrong state.

use crate::chain::{self, EventHash};
use crate::event::{Change, Event, RerouteCause};
use crate::referral::{ClockMark, Mark, Milestone, Referral, Reroute, Status, Step};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvolveError {
    #[error("a decision without events")]
    NoEvents,
    #[error("the first event of referral {referral} is `{kind}`, not `created`")]
    NotCreated {
        referral: String,
        kind: &'static str,
    },
    #[error("referral {referral} was already created")]
    CreatedTwice { referral: String },
    #[error("event for referral {found} applied to referral {expected}")]
    WrongReferral { expected: String, found: String },
    #[error("referral {referral}: expected event {expected}, got event {found}")]
    OutOfOrder {
        referral: String,
        expected: u64,
        found: u64,
    },
    #[error("referral {referral}: event {seq} does not chain to the previous event")]
    BrokenChain { referral: String, seq: u64 },
}

/// Applies `event` to `state` (`None` before the first event).
pub fn evolve(state: Option<Referral>, event: &Event) -> Result<Referral, EvolveError> {
    evolve_hashed(state, event, chain::hash(event))
}

/// [`evolve`] for a reader that already has the event's hash (the hash of the exact bytes it
/// read, which the next event must name): saves encoding the event again.
pub fn evolve_hashed(
    state: Option<Referral>,
    event: &Event,
    hash: EventHash,
) -> Result<Referral, EvolveError> {
    let referral_text = || event.referral_id.to_string();
    let mut referral = match (state, &event.change) {
        (None, Change::Created(creation)) => {
            check_position(EventHash::GENESIS, 1, event)?;
            return Ok(Referral {
                id: event.referral_id,
                creation: (**creation).clone(),
                status: Status::Requested,
                resume_to: None,
                reason: None,
                outcome: None,
                appointment: None,
                children: Vec::new(),
                reroute: None,
                created_at: event.at,
                updated_at: event.at,
                last_operator: event.operator().cloned(),
                seq: 1,
                last_hash: hash,
                steps: vec![Step {
                    at: event.at,
                    milestone: Milestone::Entered(Status::Requested),
                }],
                marks: Vec::new(),
            });
        }
        (None, change) => {
            return Err(EvolveError::NotCreated {
                referral: referral_text(),
                kind: change.kind(),
            });
        }
        (Some(_), Change::Created(_)) => {
            return Err(EvolveError::CreatedTwice {
                referral: referral_text(),
            });
        }
        (Some(referral), _) => referral,
    };
    if referral.id != event.referral_id {
        return Err(EvolveError::WrongReferral {
            expected: referral.id.to_string(),
            found: referral_text(),
        });
    }
    check_position(referral.last_hash, referral.seq + 1, event)?;

    apply_change(&mut referral, event);
    referral.seq = event.seq;
    referral.last_hash = hash;
    referral.updated_at = referral.updated_at.max(event.at);
    if let Some(operator) = event.operator() {
        referral.last_operator = Some(operator.clone());
    }
    Ok(referral)
}

fn check_position(
    last_hash: EventHash,
    expected_seq: u64,
    event: &Event,
) -> Result<(), EvolveError> {
    if event.seq != expected_seq {
        return Err(EvolveError::OutOfOrder {
            referral: event.referral_id.to_string(),
            expected: expected_seq,
            found: event.seq,
        });
    }
    if event.prev_hash != last_hash {
        return Err(EvolveError::BrokenChain {
            referral: event.referral_id.to_string(),
            seq: event.seq,
        });
    }
    Ok(())
}

fn enter(referral: &mut Referral, status: Status, event: &Event) {
    referral.status = status;
    referral.steps.push(Step {
        at: event.at,
        milestone: Milestone::Entered(status),
    });
}

fn mark(referral: &mut Referral, clock: &crate::ids::ClockId, mark: Mark) {
    referral.marks.push(ClockMark {
        clock: clock.clone(),
        mark,
        notified: Vec::new(),
    });
}

fn apply_change(referral: &mut Referral, event: &Event) {
    match &event.change {
        Change::Created(_) => {}
        Change::Received => enter(referral, Status::Received, event),
        Change::Accepted => enter(referral, Status::Accepted, event),
        Change::Rejected { reason } => {
            referral.reason = Some(reason.clone());
            enter(referral, Status::Rejected, event);
        }
        Change::Started => enter(referral, Status::InProgress, event),
        Change::AppointmentScheduled { at, .. } => {
            referral.appointment = Some(crate::referral::Appointment {
                at: *at,
                no_show: false,
            });
        }
        Change::NoShowRecorded { .. } => {
            if let Some(appointment) = &mut referral.appointment {
                appointment.no_show = true;
            }
        }
        Change::NoteAdded { .. } => {}
        Change::PutOnHold { reason } => {
            referral.reason = Some(reason.clone());
            referral.resume_to = Some(referral.status);
            enter(referral, Status::OnHold, event);
        }
        Change::Resumed => {
            let back = referral.resume_to.take().unwrap_or(Status::Requested);
            enter(referral, back, event);
        }
        Change::CancellationRequested { reason } => {
            referral.reason = Some(reason.clone());
            referral.resume_to = Some(referral.status);
            enter(referral, Status::CancelRequested, event);
        }
        Change::CancellationConfirmed => {
            referral.resume_to = None;
            enter(referral, Status::Cancelled, event);
        }
        Change::CancellationDeclined { reason } => {
            referral.reason = Some(reason.clone());
            let back = referral.resume_to.take().unwrap_or(Status::Accepted);
            enter(referral, back, event);
        }
        Change::Cancelled { reason } => {
            referral.reason = Some(reason.clone());
            referral.resume_to = None;
            enter(referral, Status::Cancelled, event);
        }
        Change::Completed { outcome } => {
            referral.outcome = Some(outcome.clone());
            enter(referral, Status::Completed, event);
        }
        Change::Failed { reason } => {
            referral.reason = Some(reason.clone());
            enter(referral, Status::Failed, event);
        }
        Change::EnteredInError { reason } => {
            referral.reason = Some(reason.clone());
            referral.resume_to = None;
            enter(referral, Status::EnteredInError, event);
        }
        Change::ClockWarning {
            clock, permille, ..
        } => {
            mark(
                referral,
                clock,
                Mark::Warning {
                    permille: *permille,
                },
            );
        }
        Change::ClockBreached { clock, .. } => mark(referral, clock, Mark::Breach),
        Change::Escalated {
            clock,
            level,
            repetition,
            notified,
            ..
        } => {
            let mut agencies: Vec<_> = notified.iter().map(|n| n.agency.clone()).collect();
            agencies.dedup();
            referral.marks.push(ClockMark {
                clock: clock.clone(),
                mark: Mark::Escalation {
                    level: *level,
                    repetition: *repetition,
                },
                notified: agencies,
            });
        }
        Change::EscalationAcknowledged { clock, level } => {
            mark(referral, clock, Mark::Acknowledged { level: *level });
        }
        Change::RerouteRequested { to, cause, .. } => {
            if let RerouteCause::Escalation { clock, level } = cause {
                mark(referral, clock, Mark::RerouteRequested { level: *level });
            }
            referral.reroute = Some(Reroute {
                to: to.clone(),
                requested_at: event.at,
                child: None,
            });
            referral.steps.push(Step {
                at: event.at,
                milestone: Milestone::RerouteRequested,
            });
        }
        Change::Rerouted { child, to } => {
            referral.children.push(*child);
            match &mut referral.reroute {
                Some(reroute) if reroute.child.is_none() => reroute.child = Some(*child),
                _ => {
                    referral.reroute = Some(Reroute {
                        to: to.clone(),
                        requested_at: event.at,
                        child: Some(*child),
                    })
                }
            }
            referral.steps.push(Step {
                at: event.at,
                milestone: Milestone::Rerouted,
            });
            if !referral.status.is_terminal() {
                referral.resume_to = None;
                enter(referral, Status::Rerouted, event);
            }
        }
        // The refused record changed nothing: the referral goes on from its last good event.
        Change::IntegrityAlert { .. } => {}
    }
}
