//! `decide`: whether a command is allowed, and the events it produces.
//!
//! The rules of DESIGN section 2: only the recipient accepts, rejects, starts, schedules,
//! completes, fails or confirms a cancellation; only the sender cancels, requests cancellation,
//! enters in error or reroutes; reasons and outcomes are required; consent gates sending;
//! terminal states are final. A refused command produces a typed [`Rejection`] and no event.

use crate::chain::EventHash;
use crate::command::{Command, Request};
use crate::escalation::evaluate;
use crate::event::{Actor, Change, Event};
use crate::evolve::evolve;
use crate::ids::{AgencyId, CategoryId, ReferralId};
use crate::referral::{Creation, Party, Reason, Referral, SealedPayload, Status};
use crate::registry::Registry;
use crate::time::Timestamp;

/// The shortest written justification accepted for referring without consent, in characters;
/// checked on the plaintext before it is sealed.
pub const MIN_JUSTIFICATION_CHARS: usize = 20;

/// Why a command was refused. Each kind maps to one gRPC status at the adapter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Rejection {
    /// The request itself is wrong, whatever the referral's state (`INVALID_ARGUMENT`).
    #[error("{field}: {message}")]
    Invalid {
        field: &'static str,
        message: String,
    },
    /// No such referral (`NOT_FOUND`).
    #[error("no such referral")]
    NotFound,
    /// The referral this create would make exists already (`ALREADY_EXISTS`).
    #[error("referral {referral} already exists")]
    AlreadyExists { referral: String },
    /// The actor is not allowed to do this to this referral (`PERMISSION_DENIED`).
    #[error("{0}")]
    PermissionDenied(String),
    /// The life cycle forbids it now (`FAILED_PRECONDITION`).
    #[error("cannot {verb} a referral that is {status}{hint}")]
    WrongState {
        verb: &'static str,
        status: Status,
        hint: &'static str,
    },
}

fn invalid(field: &'static str, message: impl Into<String>) -> Rejection {
    Rejection::Invalid {
        field,
        message: message.into(),
    }
}

/// What a command leads to.
#[derive(Debug, Clone, PartialEq)]
pub struct Decision {
    /// The events to append, in order, chained to the referral's last event.
    pub events: Vec<Event>,
    /// The state the referral will be in once the events are applied. `evolve` computes it
    /// independently; the two must agree (a property test holds them to it).
    pub status: Status,
}

/// Decides `request` against `state` (the referral's current state, or `None` if it does not
/// exist yet) at `now`.
pub fn decide(
    registry: &Registry,
    state: Option<&Referral>,
    request: &Request,
    now: Timestamp,
) -> Result<Decision, Rejection> {
    let (event, status) = match state {
        None => {
            let Command::Create(creation) = &request.command else {
                return Err(Rejection::NotFound);
            };
            check_creation(registry, creation, &request.actor, now)?;
            let Some(request_id) = &request.request_id else {
                return Err(invalid("request_id", "a create needs a request id"));
            };
            let event = Event {
                referral_id: ReferralId::derive(&creation.sender, request_id),
                case_id: creation.case_id.clone(),
                seq: 1,
                at: now,
                actor: request.actor.clone(),
                request_id: Some(request_id.clone()),
                change: Change::Created(creation.clone()),
                prev_hash: EventHash::GENESIS,
            };
            (event, Status::Requested)
        }
        Some(referral) => {
            // An event is never before its predecessor: a writer whose clock is a little behind
            // the last writer's stamps the predecessor's time (the record check refuses an
            // event stamped earlier, which only a back-dating writer would then produce).
            let now = now.max(referral.updated_at);
            let (change, status) =
                decide_on(registry, referral, &request.command, &request.actor, now)?;
            let event = Event {
                referral_id: referral.id,
                case_id: referral.creation.case_id.clone(),
                seq: referral.seq + 1,
                at: now,
                actor: request.actor.clone(),
                request_id: request.request_id.clone(),
                change,
                prev_hash: referral.last_hash,
            };
            (event, status)
        }
    };
    Ok(Decision {
        events: vec![event],
        status,
    })
}

/// A command recorded: the one event it makes and the referral's state after it.
#[derive(Debug, Clone)]
pub struct Recorded {
    pub event: Event,
    pub state: Referral,
}

/// Why a command cannot be recorded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error(transparent)]
    Rejected(#[from] Rejection),
    /// The core's own event does not apply to the state it was decided on: a bug.
    #[error("the core's event does not apply: {0}")]
    Inconsistent(crate::evolve::EvolveError),
    /// A sealed payload put into a decided creation is sealed for other agencies than the
    /// placeholder the decision was made on.
    #[error("the {0} was sealed for other agencies than the ones the decision checked")]
    SealedOtherwise(&'static str),
}

impl Recorded {
    /// Puts the sealed identity, note and consent justification into a creation that was decided with placeholders
    /// (payloads that name the agencies they will be sealed for, before any sealing): the
    /// adapter decides first so that bad input costs no sealing, and seals only what will be
    /// recorded. Each payload must name exactly the placeholder's agencies, which is what the
    /// decision checked; the state follows the completed event.
    pub fn with_sealed_creation(
        mut self,
        identity: Option<crate::referral::SealedPayload>,
        note: Option<crate::referral::SealedPayload>,
        justification: Option<crate::referral::SealedPayload>,
    ) -> Result<Recorded, RecordError> {
        let Change::Created(creation) = &mut self.event.change else {
            return Ok(self);
        };
        let same_parties =
            |placeholder: &Option<crate::referral::SealedPayload>,
             sealed: &Option<crate::referral::SealedPayload>| {
                placeholder.as_ref().map(|payload| &payload.recipients)
                    == sealed.as_ref().map(|payload| &payload.recipients)
            };
        if !same_parties(&creation.identity, &identity) {
            return Err(RecordError::SealedOtherwise("identity"));
        }
        if !same_parties(&creation.note, &note) {
            return Err(RecordError::SealedOtherwise("note"));
        }
        if !same_parties(&creation.consent.override_justification, &justification) {
            return Err(RecordError::SealedOtherwise("justification"));
        }
        if [&identity, &note, &justification]
            .into_iter()
            .flatten()
            .any(|payload| payload.is_placeholder())
        {
            return Err(RecordError::SealedOtherwise("placeholder"));
        }
        creation.identity = identity;
        creation.note = note;
        creation.consent.override_justification = justification;
        self.state = evolve(None, &self.event).map_err(RecordError::Inconsistent)?;
        Ok(self)
    }
}

/// The one write step every writer (adapter, router) takes: decide `request` against `state`
/// at `now`, and apply the event it makes.
pub fn record(
    registry: &Registry,
    state: Option<&Referral>,
    request: &Request,
    now: Timestamp,
) -> Result<Recorded, RecordError> {
    let decision = decide(registry, state, request, now)?;
    let Some(event) = decision.events.into_iter().next() else {
        return Err(RecordError::Rejected(Rejection::NotFound));
    };
    let state = evolve(state.cloned(), &event).map_err(RecordError::Inconsistent)?;
    Ok(Recorded { event, state })
}

/// Applies a decision's events to the state it was decided on.
pub fn apply(
    state: Option<Referral>,
    decision: &Decision,
) -> Result<Referral, crate::evolve::EvolveError> {
    let mut state = state;
    for event in &decision.events {
        state = Some(evolve(state, event)?);
    }
    state.ok_or(crate::evolve::EvolveError::NoEvents)
}

fn check_creation(
    registry: &Registry,
    creation: &Creation,
    actor: &Actor,
    now: Timestamp,
) -> Result<(), Rejection> {
    match actor {
        Actor::Agency { agency, .. } if agency == &creation.sender => {}
        Actor::Agency { agency, .. } => {
            return Err(Rejection::PermissionDenied(format!(
                "{agency} cannot send a referral as {}",
                creation.sender
            )));
        }
        Actor::Router => {
            return Err(Rejection::PermissionDenied(
                "the router cannot create referrals".to_owned(),
            ));
        }
    }
    if registry.agency(&creation.sender).is_none() {
        return Err(invalid(
            "sender",
            format!("unknown agency {}", creation.sender),
        ));
    }
    let Some(recipient) = registry.agency(&creation.recipient) else {
        return Err(invalid(
            "recipient",
            format!("unknown agency {}", creation.recipient),
        ));
    };
    if creation.recipient == creation.sender {
        return Err(invalid(
            "recipient",
            "an agency cannot refer a case to itself",
        ));
    }
    if !registry.services.contains_key(&creation.service) {
        return Err(invalid(
            "service",
            format!("unknown service {}", creation.service),
        ));
    }
    if !recipient.services.contains(&creation.service) {
        return Err(invalid(
            "service",
            format!("{} does not offer {}", creation.recipient, creation.service),
        ));
    }
    if let Some(unknown) = creation
        .categories
        .iter()
        .find(|category| !registry.categories.contains_key(*category))
    {
        return Err(invalid("categories", format!("unknown category {unknown}")));
    }
    if has_duplicates(&creation.categories) {
        return Err(invalid("categories", "a category is listed twice"));
    }
    check_consent(creation)?;
    // The band is statistics, the flag decides consent: a referral whose two disagree would
    // count a child as an adult (or ask an adult for a child's consent), so neither is believed.
    match creation.age_band.is_child() {
        Some(true) if !creation.child => {
            return Err(invalid(
                "age_band",
                format!(
                    "{} is a child's age band but `child` is not set; set `child` (consent to \
                     disclose is then required) or correct the band",
                    creation.age_band
                ),
            ));
        }
        Some(false) if creation.child => {
            return Err(invalid(
                "age_band",
                format!(
                    "{} is an adult's age band but `child` is set; correct one of them",
                    creation.age_band
                ),
            ));
        }
        _ => {}
    }
    if let Some(reported) = creation.case_reported_at
        && reported > now
    {
        return Err(invalid(
            "case_reported_at",
            format!("{reported} is in the future (now is {now})"),
        ));
    }
    let parties = [&creation.sender, &creation.recipient];
    // Field paths as the request spells them: only end-to-end sealed data can fail here.
    check_sealed("sealed_identity", creation.identity.as_ref(), &parties)?;
    check_sealed("sealed_note", creation.note.as_ref(), &parties)?;
    check_sealed(
        "consent.sealed_override_justification",
        creation.consent.override_justification.as_ref(),
        &parties,
    )?;
    if registry.policy(&creation.policy_version).is_none() {
        return Err(invalid(
            "policy_version",
            format!("unknown policy version {}", creation.policy_version),
        ));
    }
    Ok(())
}

fn has_duplicates(categories: &[CategoryId]) -> bool {
    categories
        .iter()
        .enumerate()
        .any(|(index, category)| categories[..index].contains(category))
}

/// Primero's rule: consent for services, and for a child consent to disclose to other
/// agencies, unless overridden with a written justification.
fn check_consent(creation: &Creation) -> Result<(), Rejection> {
    let consent = &creation.consent;
    let given = consent.services && (!creation.child || consent.disclose_to_agencies);
    if given {
        return Ok(());
    }
    // The justification is sealed: its length was checked on the plaintext, before sealing,
    // by the sender's adapter (`MIN_JUSTIFICATION_CHARS`); here it must be sealed for the parties.
    match &consent.override_justification {
        Some(_) => Ok(()),
        None if !consent.services => Err(invalid(
            "consent.services",
            "no consent for services was recorded; record it, or override with a written justification",
        )),
        None => Err(invalid(
            "consent.disclose_to_agencies",
            "the person is a child: consent to disclose to other agencies is required too, or an override with a written justification",
        )),
    }
}

fn check_sealed(
    field: &'static str,
    payload: Option<&SealedPayload>,
    parties: &[&AgencyId],
) -> Result<(), Rejection> {
    match payload {
        Some(payload) if !payload.is_sealed_for(parties) => Err(invalid(
            field,
            "sealed data must be sealed for exactly the sender and the recipient",
        )),
        Some(payload) if payload.envelope.is_empty() => Err(invalid(field, "sealed data is empty")),
        _ => Ok(()),
    }
}

/// A reason given in a request's `reason` field: errors name `reason.code` and
/// `reason.sealed_note`, the contract's paths.
fn check_reason(
    registry: &Registry,
    reason: &Reason,
    referral: &Referral,
) -> Result<(), Rejection> {
    if !registry.reasons.contains_key(&reason.code) {
        return Err(invalid(
            "reason.code",
            format!("unknown reason code {}", reason.code),
        ));
    }
    check_sealed(
        "reason.sealed_note",
        reason.note.as_ref(),
        &[referral.sender(), referral.recipient()],
    )
}

/// Who may issue a command, relative to the referral.
#[derive(Clone, Copy)]
enum Who {
    Sender,
    Recipient,
    EitherParty,
}

fn require(
    who: Who,
    referral: &Referral,
    actor: &Actor,
    verb: &'static str,
) -> Result<Party, Rejection> {
    let agency = match actor {
        Actor::Agency { agency, .. } => agency,
        Actor::Router => {
            return Err(Rejection::PermissionDenied(format!(
                "the router cannot {verb} a referral"
            )));
        }
    };
    let Some(party) = referral.party_of(agency) else {
        return Err(Rejection::PermissionDenied(format!(
            "{agency} is not a party to referral {}",
            referral.id
        )));
    };
    let allowed = match who {
        Who::Sender => party == Party::Sender,
        Who::Recipient => party == Party::Recipient,
        Who::EitherParty => true,
    };
    if allowed {
        Ok(party)
    } else {
        let only = match who {
            Who::Sender => "sender",
            _ => "recipient",
        };
        Err(Rejection::PermissionDenied(format!(
            "only the {only} may {verb} a referral; {agency} is its {}",
            party.as_str()
        )))
    }
}

fn in_state(
    referral: &Referral,
    allowed: &[Status],
    verb: &'static str,
    hint: &'static str,
) -> Result<(), Rejection> {
    if allowed.contains(&referral.status) {
        Ok(())
    } else {
        Err(Rejection::WrongState {
            verb,
            status: referral.status,
            hint,
        })
    }
}

const BEFORE_ACCEPTANCE: &[Status] = &[Status::Requested, Status::Received];
const ACCEPTED: &[Status] = &[Status::Accepted, Status::InProgress];
const HOLDABLE: &[Status] = &[
    Status::Requested,
    Status::Received,
    Status::Accepted,
    Status::InProgress,
];

fn decide_on(
    registry: &Registry,
    referral: &Referral,
    command: &Command,
    actor: &Actor,
    now: Timestamp,
) -> Result<(Change, Status), Rejection> {
    let verb = command.verb();
    let current = referral.status;
    // An integrity alert is recorded whatever the referral's state: a forged record on a
    // closed or erroneous referral must reach people too.
    if let Command::RecordIntegrityAlert {
        stream_seq,
        problem,
    } = command
    {
        if *actor != Actor::Router {
            return Err(Rejection::PermissionDenied(
                "only the router records integrity alerts".to_owned(),
            ));
        }
        let change = Change::IntegrityAlert {
            stream_seq: *stream_seq,
            problem: *problem,
        };
        return Ok((change, current));
    }
    if current == Status::EnteredInError {
        return Err(Rejection::WrongState {
            verb,
            status: current,
            hint: "",
        });
    }
    let reroute_pending = referral.reroute.as_ref().is_some_and(|r| r.child.is_none());
    if reroute_pending
        && matches!(
            command,
            Command::ConfirmReceipt | Command::Accept | Command::Reject { .. }
        )
    {
        // The router has given up on this recipient; the sender's adapter is moving the case.
        return Err(Rejection::WrongState {
            verb,
            status: current,
            hint: " and being rerouted to another agency",
        });
    }
    match command {
        Command::Create(_) => Err(Rejection::AlreadyExists {
            referral: referral.id.to_string(),
        }),
        Command::ConfirmReceipt => {
            require(Who::Recipient, referral, actor, verb)?;
            in_state(referral, &[Status::Requested], verb, "")?;
            Ok((Change::Received, Status::Received))
        }
        Command::Accept => {
            require(Who::Recipient, referral, actor, verb)?;
            in_state(referral, BEFORE_ACCEPTANCE, verb, "")?;
            Ok((Change::Accepted, Status::Accepted))
        }
        Command::Reject { reason } => {
            require(Who::Recipient, referral, actor, verb)?;
            in_state(
                referral,
                BEFORE_ACCEPTANCE,
                verb,
                "; after accepting, fail it with a reason instead",
            )?;
            check_reason(registry, reason, referral)?;
            Ok((
                Change::Rejected {
                    reason: reason.clone(),
                },
                Status::Rejected,
            ))
        }
        Command::Start => {
            require(Who::Recipient, referral, actor, verb)?;
            in_state(referral, &[Status::Accepted], verb, "")?;
            Ok((Change::Started, Status::InProgress))
        }
        Command::ScheduleAppointment { at, note } => {
            require(Who::Recipient, referral, actor, verb)?;
            in_state(referral, ACCEPTED, verb, "")?;
            check_sealed(
                "sealed_note",
                note.as_ref(),
                &[referral.sender(), referral.recipient()],
            )?;
            Ok((
                Change::AppointmentScheduled {
                    at: *at,
                    note: note.clone(),
                },
                current,
            ))
        }
        Command::RecordNoShow => {
            require(Who::Recipient, referral, actor, verb)?;
            in_state(referral, ACCEPTED, verb, "")?;
            match &referral.appointment {
                Some(appointment) if !appointment.no_show && appointment.at <= now => Ok((
                    Change::NoShowRecorded {
                        appointment_at: appointment.at,
                    },
                    current,
                )),
                Some(appointment) if appointment.no_show => Err(invalid(
                    "appointment",
                    "a no-show is already recorded for this appointment",
                )),
                Some(appointment) => Err(invalid(
                    "appointment",
                    format!("the appointment at {} has not happened yet", appointment.at),
                )),
                None => Err(invalid("appointment", "no appointment is scheduled")),
            }
        }
        Command::AddNote { note } => {
            require(Who::EitherParty, referral, actor, verb)?;
            check_sealed(
                "sealed_note",
                Some(note),
                &[referral.sender(), referral.recipient()],
            )?;
            Ok((Change::NoteAdded { note: note.clone() }, current))
        }
        Command::PutOnHold { reason } => {
            require(Who::EitherParty, referral, actor, verb)?;
            in_state(referral, HOLDABLE, verb, "")?;
            check_reason(registry, reason, referral)?;
            Ok((
                Change::PutOnHold {
                    reason: reason.clone(),
                },
                Status::OnHold,
            ))
        }
        Command::Resume => {
            require(Who::EitherParty, referral, actor, verb)?;
            in_state(referral, &[Status::OnHold], verb, "")?;
            Ok((
                Change::Resumed,
                referral.resume_to.unwrap_or(Status::Requested),
            ))
        }
        Command::RequestCancellation { reason } => {
            require(Who::Sender, referral, actor, verb)?;
            in_state(
                referral,
                ACCEPTED,
                verb,
                "; before acceptance, cancel it directly",
            )?;
            check_reason(registry, reason, referral)?;
            Ok((
                Change::CancellationRequested {
                    reason: reason.clone(),
                },
                Status::CancelRequested,
            ))
        }
        Command::ConfirmCancellation => {
            require(Who::Recipient, referral, actor, verb)?;
            in_state(referral, &[Status::CancelRequested], verb, "")?;
            Ok((Change::CancellationConfirmed, Status::Cancelled))
        }
        Command::DeclineCancellation { reason } => {
            require(Who::Recipient, referral, actor, verb)?;
            in_state(referral, &[Status::CancelRequested], verb, "")?;
            check_reason(registry, reason, referral)?;
            Ok((
                Change::CancellationDeclined {
                    reason: reason.clone(),
                },
                referral.resume_to.unwrap_or(Status::Accepted),
            ))
        }
        Command::Cancel { reason } => {
            require(Who::Sender, referral, actor, verb)?;
            let pre_acceptance_hold = current == Status::OnHold
                && referral
                    .resume_to
                    .is_some_and(|s| BEFORE_ACCEPTANCE.contains(&s));
            if !pre_acceptance_hold {
                in_state(
                    referral,
                    BEFORE_ACCEPTANCE,
                    verb,
                    "; after acceptance, request cancellation instead",
                )?;
            }
            check_reason(registry, reason, referral)?;
            Ok((
                Change::Cancelled {
                    reason: reason.clone(),
                },
                Status::Cancelled,
            ))
        }
        Command::Complete { outcome } => {
            require(Who::Recipient, referral, actor, verb)?;
            in_state(referral, ACCEPTED, verb, "")?;
            if !registry.outcomes.contains_key(&outcome.code) {
                return Err(invalid(
                    "outcome.code",
                    format!("unknown outcome code {}", outcome.code),
                ));
            }
            check_sealed(
                "outcome.sealed_note",
                outcome.note.as_ref(),
                &[referral.sender(), referral.recipient()],
            )?;
            Ok((
                Change::Completed {
                    outcome: outcome.clone(),
                },
                Status::Completed,
            ))
        }
        Command::Fail { reason } => {
            require(Who::Recipient, referral, actor, verb)?;
            in_state(
                referral,
                ACCEPTED,
                verb,
                "; before acceptance, reject it instead",
            )?;
            check_reason(registry, reason, referral)?;
            Ok((
                Change::Failed {
                    reason: reason.clone(),
                },
                Status::Failed,
            ))
        }
        Command::EnterInError { reason } => {
            require(Who::Sender, referral, actor, verb)?;
            if current.is_terminal() {
                return Err(Rejection::WrongState {
                    verb,
                    status: current,
                    hint: "",
                });
            }
            check_reason(registry, reason, referral)?;
            Ok((
                Change::EnteredInError {
                    reason: reason.clone(),
                },
                Status::EnteredInError,
            ))
        }
        Command::AcknowledgeEscalation { clock, level } => {
            let Some(agency) = actor.agency() else {
                return Err(Rejection::PermissionDenied(
                    "the router cannot acknowledge escalations".to_owned(),
                ));
            };
            let escalation = referral.marks.iter().find(|mark| {
                &mark.clock == clock
                    && matches!(mark.mark, crate::referral::Mark::Escalation { level: l, .. } if l == *level)
            });
            let Some(escalation) = escalation else {
                return Err(invalid(
                    "level",
                    format!("clock {clock} of this referral has no escalation at level {level}"),
                ));
            };
            if !escalation.notified.contains(agency) {
                return Err(Rejection::PermissionDenied(format!(
                    "{agency} was not notified of level {level} of clock {clock}; only its targets may acknowledge it"
                )));
            }
            if referral.has_mark(clock, crate::referral::Mark::Acknowledged { level: *level }) {
                return Err(invalid(
                    "level",
                    format!("level {level} of clock {clock} is already acknowledged"),
                ));
            }
            Ok((
                Change::EscalationAcknowledged {
                    clock: clock.clone(),
                    level: *level,
                },
                current,
            ))
        }
        Command::RecordReroute { child, to } => {
            require(Who::Sender, referral, actor, verb)?;
            let requested = referral
                .reroute
                .as_ref()
                .filter(|reroute| reroute.child.is_none());
            let reroutable = matches!(current, Status::Rejected | Status::Failed)
                || BEFORE_ACCEPTANCE.contains(&current)
                || (current == Status::OnHold
                    && referral
                        .resume_to
                        .is_some_and(|s| BEFORE_ACCEPTANCE.contains(&s)));
            if !reroutable {
                return Err(Rejection::WrongState {
                    verb,
                    status: current,
                    hint: "; reroute a referral before it is accepted, or after it was rejected or failed",
                });
            }
            // A rejected or failed referral keeps its status when rerouted: being rerouted
            // already is a state of the referral (FAILED_PRECONDITION), not a bad request.
            if requested.is_none() && !referral.children.is_empty() {
                return Err(Rejection::WrongState {
                    verb,
                    status: current,
                    hint: " and already rerouted (see child_referral_ids); a referral is \
                           rerouted once: reroute its child referral instead",
                });
            }
            if let Some(requested) = requested
                && &requested.to != to
            {
                return Err(invalid(
                    "to",
                    format!(
                        "the router asked for a reroute to {}, not {to}",
                        requested.to
                    ),
                ));
            }
            if to == referral.recipient() || to == referral.sender() {
                return Err(invalid("to", "a reroute goes to a third agency"));
            }
            if registry.agency(to).is_none() {
                return Err(invalid("to", format!("unknown agency {to}")));
            }
            if referral.children.contains(child) {
                return Err(invalid(
                    "child",
                    format!("{child} is already linked to this referral"),
                ));
            }
            let status = if current.is_terminal() {
                current
            } else {
                Status::Rerouted
            };
            Ok((
                Change::Rerouted {
                    child: *child,
                    to: to.clone(),
                },
                status,
            ))
        }
        // Decided before the state checks above.
        Command::RecordIntegrityAlert { .. } => Err(Rejection::PermissionDenied(
            "only the router records integrity alerts".to_owned(),
        )),
        Command::Record(due) => {
            if *actor != Actor::Router {
                return Err(Rejection::PermissionDenied(
                    "only the router records clock events".to_owned(),
                ));
            }
            if !evaluate(referral, registry, now).due.contains(due) {
                return Err(invalid(
                    "due",
                    format!("{} is not due on this referral at {now}", due.key()),
                ));
            }
            Ok((due.change(), current))
        }
    }
}
