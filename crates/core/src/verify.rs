//! Re-deciding recorded events: would the core have produced exactly this event?
//!
//! The router runs every event it consumes through [`recheck`] before it lets the event move a
//! clock, and an audit replay does the same for a whole history: an event that an adapter (or
//! anyone with write access to the bus) recorded but the core would have refused is caught here,
//! never applied.

use crate::command::{Command, Request};
use crate::decide::{Rejection, decide};
use crate::escalation::Due;
use crate::event::{Change, Event};
use crate::evolve::EvolveError;
use crate::referral::Referral;
use crate::registry::Registry;

/// Why a recorded event is not what the core would have decided.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unfounded {
    /// The core refuses the command the event records.
    #[error("the core refuses it: {0}")]
    Refused(Rejection),
    /// The core allows the command but records something else (a different time, author,
    /// sequence, predecessor or content).
    #[error("the core would have recorded a different event")]
    Different,
    /// The event does not follow the state it claims to follow.
    #[error("it does not follow the referral's previous event: {0}")]
    OutOfChain(EvolveError),
}

/// The command an event records.
pub fn command_of(change: &Change) -> Command {
    match change.clone() {
        Change::Created(creation) => Command::Create(creation),
        Change::Received => Command::ConfirmReceipt,
        Change::Accepted => Command::Accept,
        Change::Rejected { reason } => Command::Reject { reason },
        Change::Started => Command::Start,
        Change::AppointmentScheduled { at, note } => Command::ScheduleAppointment { at, note },
        Change::NoShowRecorded { .. } => Command::RecordNoShow,
        Change::NoteAdded { note } => Command::AddNote { note },
        Change::PutOnHold { reason } => Command::PutOnHold { reason },
        Change::Resumed => Command::Resume,
        Change::CancellationRequested { reason } => Command::RequestCancellation { reason },
        Change::CancellationConfirmed => Command::ConfirmCancellation,
        Change::CancellationDeclined { reason } => Command::DeclineCancellation { reason },
        Change::Cancelled { reason } => Command::Cancel { reason },
        Change::Completed { outcome } => Command::Complete { outcome },
        Change::Failed { reason } => Command::Fail { reason },
        Change::EnteredInError { reason } => Command::EnterInError { reason },
        Change::EscalationAcknowledged { clock, level } => {
            Command::AcknowledgeEscalation { clock, level }
        }
        Change::Rerouted { child, to } => Command::RecordReroute { child, to },
        Change::ClockWarning { .. }
        | Change::ClockBreached { .. }
        | Change::Escalated { .. }
        | Change::RerouteRequested { .. } => {
            Command::Record(Due::recorded_as(change).expect("a clock item's change is one"))
        }
        Change::IntegrityAlert {
            stream_seq,
            problem,
        } => Command::RecordIntegrityAlert {
            stream_seq,
            problem,
        },
    }
}

/// Checks that `event`, recorded after `before` (`None` for a creation), is exactly what the
/// core decides for its command, its author and its time; returns the state after it.
pub fn recheck(
    registry: &Registry,
    before: Option<&Referral>,
    event: &Event,
) -> Result<Referral, Unfounded> {
    recheck_hashed(registry, before.cloned(), event, crate::chain::hash(event))
}

/// [`recheck`] with the event's hash already known (see [`crate::evolve::evolve_hashed`]), taking
/// the state before it by value: a consumer checking every event need not copy each state.
pub fn recheck_hashed(
    registry: &Registry,
    before: Option<Referral>,
    event: &Event,
    hash: crate::chain::EventHash,
) -> Result<Referral, Unfounded> {
    let request = Request {
        command: command_of(&event.change),
        actor: event.actor.clone(),
        request_id: event.request_id.clone(),
    };
    let decision =
        decide(registry, before.as_ref(), &request, event.at).map_err(Unfounded::Refused)?;
    if decision.events.as_slice() != std::slice::from_ref(event) {
        return Err(Unfounded::Different);
    }
    crate::evolve::evolve_hashed(before, event, hash).map_err(Unfounded::OutOfChain)
}
