//! Proto -> core for the views of [`super::view`]: an event or a referral read back.
//!
//! Only the sealed forms are read back (plaintext fields are the caller's agency's openings of
//! them), so an event read back is byte for byte the event refbus recorded: its hash is
//! recomputed and must match the one the view carries.

use refbus_core::chain::{self, EventHash};
use refbus_core::event::{Actor, Change, Event, Notified, RerouteCause};
use refbus_core::ids::{
    AgencyId, CaseId, CategoryId, ClockId, OperatorId, OutcomeCode, PolicyVersion, ReasonCode,
    ReferralId, RequestId, ServiceId, SystemId,
};
use refbus_core::referral::{Appointment, Consent, Creation, Outcome, Reason, Referral, Reroute};

use super::FieldError;
use super::fields::{
    action, id, optional_id, optional_sealed_from_proto, optional_status, optional_timestamp,
    priority, required_timestamp, role, small_count, status,
};
use crate::v1;
use crate::v1::event::Change as ChangeView;

/// The event a view shows, checked against the view's `event_id` and `hash`.
pub fn event_from_view(view: &v1::Event) -> Result<Event, FieldError> {
    let referral_id = id("referral_id", &view.referral_id, ReferralId::parse)?;
    let case_id = id("case_id", &view.case_id, CaseId::new)?;
    if view.seq == 0 {
        return Err(FieldError::new("seq", "events are numbered from 1"));
    }
    let actor = if view.author_is_router {
        if !view.author_agency.is_empty()
            || !view.author_operator.is_empty()
            || !view.author_system.is_empty()
        {
            return Err(FieldError::new(
                "author_agency",
                "the router acts for no agency: author_agency, author_operator and \
                 author_system must be empty",
            ));
        }
        Actor::Router
    } else {
        Actor::Agency {
            agency: id("author_agency", &view.author_agency, AgencyId::new)?,
            operator: id("author_operator", &view.author_operator, OperatorId::new)?,
            system: optional_id("author_system", &view.author_system, SystemId::new)?,
        }
    };
    let change = view
        .change
        .as_ref()
        .ok_or_else(|| FieldError::new("change", "required"))?;
    let event = Event {
        referral_id,
        case_id,
        seq: view.seq,
        at: required_timestamp("time", view.time.as_ref())?,
        actor,
        request_id: optional_id("request_id", &view.request_id, RequestId::new)?,
        change: change_from_view(&view.case_id, change)?,
        prev_hash: hash("prev_hash", &view.prev_hash)?,
    };
    if !view.event_id.is_empty() && view.event_id != event.id() {
        return Err(FieldError::new(
            "event_id",
            format!("{} does not match the event, {}", view.event_id, event.id()),
        ));
    }
    if !view.hash.is_empty() && hash("hash", &view.hash)? != chain::hash(&event) {
        return Err(FieldError::new(
            "hash",
            "does not match the event's content: the view does not carry the event as recorded",
        ));
    }
    Ok(event)
}

/// The referral a view shows. A view carries no clock history, so the result's `steps` and
/// `marks` are empty: fold the referral's events to get them.
pub fn referral_from_view(view: &v1::Referral) -> Result<Referral, FieldError> {
    let creation = Creation {
        case_id: id("case_id", &view.case_id, CaseId::new)?,
        sender: id("sender", &view.sender, AgencyId::new)?,
        recipient: id("recipient", &view.recipient, AgencyId::new)?,
        service: id("service", &view.service, ServiceId::new)?,
        priority: priority("priority", view.priority)?,
        categories: categories(&view.categories)?,
        child: view.child,
        consent: consent(view.consent.as_ref())?,
        case_reported_at: optional_timestamp("case_reported_at", view.case_reported_at.as_ref())?,
        identity: optional_sealed_from_proto("sealed_identity", view.sealed_identity.as_ref())?,
        note: optional_sealed_from_proto("sealed_note", view.sealed_note.as_ref())?,
        policy_version: id("policy_version", &view.policy_version, PolicyVersion::new)?,
        parent: optional_id(
            "parent_referral_id",
            &view.parent_referral_id,
            ReferralId::parse,
        )?,
        sex: super::request::sex("sex", view.sex)?,
        age_band: super::request::age_band("age_band", view.age_band)?,
    };
    let appointment_at = optional_timestamp("appointment_time", view.appointment_time.as_ref())?;
    let appointment = match (view.business_status.as_str(), appointment_at) {
        ("", None) => None,
        ("scheduled", Some(at)) => Some(Appointment { at, no_show: false }),
        ("no_show", Some(at)) => Some(Appointment { at, no_show: true }),
        (other, _) => {
            return Err(FieldError::new(
                "business_status",
                format!(
                    "`{other}` does not fit the appointment time: \"\" without one, \"scheduled\" or \"no_show\" with one"
                ),
            ));
        }
    };
    let children = view
        .child_referral_ids
        .iter()
        .enumerate()
        .map(|(index, text)| {
            id(
                &format!("child_referral_ids[{index}]"),
                text,
                ReferralId::parse,
            )
        })
        .collect::<Result<_, _>>()?;
    let reroute = match &view.reroute {
        None => None,
        Some(reroute) => Some(Reroute {
            to: id("reroute.to", &reroute.to, AgencyId::new)?,
            requested_at: required_timestamp(
                "reroute.requested_at",
                reroute.requested_at.as_ref(),
            )?,
            child: optional_id(
                "reroute.child_referral_id",
                &reroute.child_referral_id,
                ReferralId::parse,
            )?,
        }),
    };
    Ok(Referral {
        id: id("referral_id", &view.referral_id, ReferralId::parse)?,
        creation,
        status: status("status", view.status)?,
        resume_to: optional_status("resume_status", view.resume_status)?,
        reason: view
            .reason
            .as_ref()
            .map(|reason| reason_from_view("reason", Some(reason)))
            .transpose()?,
        outcome: view
            .outcome
            .as_ref()
            .map(|outcome| outcome_from_view("outcome", Some(outcome)))
            .transpose()?,
        appointment,
        children,
        reroute,
        created_at: required_timestamp("created_at", view.created_at.as_ref())?,
        updated_at: required_timestamp("updated_at", view.updated_at.as_ref())?,
        last_operator: optional_id("last_operator", &view.last_operator, OperatorId::new)?,
        seq: view.seq,
        last_hash: hash("last_event_hash", &view.last_event_hash)?,
        steps: Vec::new(),
        marks: Vec::new(),
    })
}

// Every proto change has a core counterpart; a new oneof field does not compile until it has one.
fn change_from_view(case_id: &str, change: &ChangeView) -> Result<Change, FieldError> {
    Ok(match change {
        ChangeView::Created(created) => Change::Created(Box::new(
            creation_from_view(case_id, created).map_err(|error| error.within("created"))?,
        )),
        ChangeView::Received(_) => Change::Received,
        ChangeView::Accepted(_) => Change::Accepted,
        ChangeView::Rejected(rejected) => Change::Rejected {
            reason: reason_from_view("rejected.reason", rejected.reason.as_ref())?,
        },
        ChangeView::Started(_) => Change::Started,
        ChangeView::AppointmentScheduled(scheduled) => Change::AppointmentScheduled {
            at: required_timestamp("appointment_scheduled.time", scheduled.time.as_ref())?,
            note: optional_sealed_from_proto(
                "appointment_scheduled.sealed_note",
                scheduled.sealed_note.as_ref(),
            )?,
        },
        ChangeView::NoShowRecorded(no_show) => Change::NoShowRecorded {
            appointment_at: required_timestamp(
                "no_show_recorded.appointment_time",
                no_show.appointment_time.as_ref(),
            )?,
        },
        ChangeView::NoteAdded(added) => Change::NoteAdded {
            note: optional_sealed_from_proto("note_added.sealed_note", added.sealed_note.as_ref())?
                .ok_or_else(|| FieldError::new("note_added.sealed_note", "required"))?,
        },
        ChangeView::PutOnHold(hold) => Change::PutOnHold {
            reason: reason_from_view("put_on_hold.reason", hold.reason.as_ref())?,
        },
        ChangeView::Resumed(_) => Change::Resumed,
        ChangeView::CancellationRequested(requested) => Change::CancellationRequested {
            reason: reason_from_view("cancellation_requested.reason", requested.reason.as_ref())?,
        },
        ChangeView::CancellationConfirmed(_) => Change::CancellationConfirmed,
        ChangeView::CancellationDeclined(declined) => Change::CancellationDeclined {
            reason: reason_from_view("cancellation_declined.reason", declined.reason.as_ref())?,
        },
        ChangeView::Cancelled(cancelled) => Change::Cancelled {
            reason: reason_from_view("cancelled.reason", cancelled.reason.as_ref())?,
        },
        ChangeView::Completed(completed) => Change::Completed {
            outcome: outcome_from_view("completed.outcome", completed.outcome.as_ref())?,
        },
        ChangeView::Failed(failed) => Change::Failed {
            reason: reason_from_view("failed.reason", failed.reason.as_ref())?,
        },
        ChangeView::EnteredInError(entered) => Change::EnteredInError {
            reason: reason_from_view("entered_in_error.reason", entered.reason.as_ref())?,
        },
        ChangeView::ClockWarning(warning) => Change::ClockWarning {
            clock: id("clock_warning.clock_id", &warning.clock_id, ClockId::new)?,
            permille: small_count("clock_warning.permille", warning.permille)?,
            due_at: required_timestamp("clock_warning.due_at", warning.due_at.as_ref())?,
            deadline: required_timestamp("clock_warning.deadline", warning.deadline.as_ref())?,
        },
        ChangeView::ClockBreached(breached) => Change::ClockBreached {
            clock: id("clock_breached.clock_id", &breached.clock_id, ClockId::new)?,
            deadline: required_timestamp("clock_breached.deadline", breached.deadline.as_ref())?,
        },
        ChangeView::Escalated(escalated) => Change::Escalated {
            clock: id("escalated.clock_id", &escalated.clock_id, ClockId::new)?,
            level: small_count("escalated.level", escalated.level)?,
            repetition: small_count("escalated.repetition", escalated.repetition)?,
            due_at: required_timestamp("escalated.due_at", escalated.due_at.as_ref())?,
            action: action("escalated.action", escalated.action)?,
            notified: escalated
                .notified
                .iter()
                .enumerate()
                .map(|(index, target)| {
                    let field = format!("escalated.notified[{index}]");
                    Ok(Notified {
                        agency: id(&format!("{field}.agency"), &target.agency, AgencyId::new)?,
                        role: role(&format!("{field}.role"), target.role)?,
                    })
                })
                .collect::<Result<_, FieldError>>()?,
        },
        ChangeView::EscalationAcknowledged(acknowledged) => Change::EscalationAcknowledged {
            clock: id(
                "escalation_acknowledged.clock_id",
                &acknowledged.clock_id,
                ClockId::new,
            )?,
            level: small_count("escalation_acknowledged.level", acknowledged.level)?,
        },
        ChangeView::RerouteRequested(requested) => Change::RerouteRequested {
            to: id("reroute_requested.to", &requested.to, AgencyId::new)?,
            cause: match &requested.cause {
                Some(v1::reroute_requested::Cause::Escalation(cause)) => RerouteCause::Escalation {
                    clock: id(
                        "reroute_requested.escalation.clock_id",
                        &cause.clock_id,
                        ClockId::new,
                    )?,
                    level: small_count("reroute_requested.escalation.level", cause.level)?,
                },
                Some(v1::reroute_requested::Cause::Status(value)) => RerouteCause::Status {
                    status: status("reroute_requested.status", *value)?,
                },
                None => return Err(FieldError::new("reroute_requested.cause", "required")),
            },
            due_at: required_timestamp("reroute_requested.due_at", requested.due_at.as_ref())?,
        },
        ChangeView::Rerouted(rerouted) => Change::Rerouted {
            child: id(
                "rerouted.child_referral_id",
                &rerouted.child_referral_id,
                ReferralId::parse,
            )?,
            to: id("rerouted.to", &rerouted.to, AgencyId::new)?,
        },
        ChangeView::IntegrityAlert(alert) => Change::IntegrityAlert {
            stream_seq: alert.stream_seq,
            problem: refbus_core::integrity::Problem::parse(&alert.problem).ok_or_else(|| {
                FieldError::new(
                    "integrity_alert.problem",
                    format!("`{}` is not a kind of integrity problem", alert.problem),
                )
            })?,
        },
    })
}

fn creation_from_view(
    case_id: &str,
    created: &v1::ReferralCreated,
) -> Result<Creation, FieldError> {
    Ok(Creation {
        // The envelope carries the case id once for every kind of event.
        case_id: id("case_id", case_id, CaseId::new)?,
        sender: id("sender", &created.sender, AgencyId::new)?,
        recipient: id("recipient", &created.recipient, AgencyId::new)?,
        service: id("service", &created.service, ServiceId::new)?,
        priority: priority("priority", created.priority)?,
        categories: categories(&created.categories)?,
        child: created.child,
        consent: consent(created.consent.as_ref())?,
        case_reported_at: optional_timestamp(
            "case_reported_at",
            created.case_reported_at.as_ref(),
        )?,
        identity: optional_sealed_from_proto("sealed_identity", created.sealed_identity.as_ref())?,
        note: optional_sealed_from_proto("sealed_note", created.sealed_note.as_ref())?,
        policy_version: id(
            "policy_version",
            &created.policy_version,
            PolicyVersion::new,
        )?,
        parent: optional_id(
            "parent_referral_id",
            &created.parent_referral_id,
            ReferralId::parse,
        )?,
        sex: super::request::sex("created.sex", created.sex)?,
        age_band: super::request::age_band("created.age_band", created.age_band)?,
    })
}

fn categories(texts: &[String]) -> Result<Vec<CategoryId>, FieldError> {
    texts
        .iter()
        .enumerate()
        .map(|(index, text)| id(&format!("categories[{index}]"), text, CategoryId::new))
        .collect()
}

fn consent(consent: Option<&v1::Consent>) -> Result<Consent, FieldError> {
    let consent = consent.ok_or_else(|| FieldError::new("consent", "required"))?;
    Ok(Consent {
        services: consent.services,
        disclose_to_agencies: consent.disclose_to_agencies,
        override_justification: optional_sealed_from_proto(
            "consent.sealed_override_justification",
            consent.sealed_override_justification.as_ref(),
        )?,
    })
}

fn reason_from_view(field: &str, reason: Option<&v1::Reason>) -> Result<Reason, FieldError> {
    let reason = reason.ok_or_else(|| FieldError::new(field, "required"))?;
    Ok(Reason {
        code: id(&format!("{field}.code"), &reason.code, ReasonCode::new)?,
        note: optional_sealed_from_proto(
            &format!("{field}.sealed_note"),
            reason.sealed_note.as_ref(),
        )?,
    })
}

fn outcome_from_view(field: &str, outcome: Option<&v1::Outcome>) -> Result<Outcome, FieldError> {
    let outcome = outcome.ok_or_else(|| FieldError::new(field, "required"))?;
    Ok(Outcome {
        code: id(&format!("{field}.code"), &outcome.code, OutcomeCode::new)?,
        note: optional_sealed_from_proto(
            &format!("{field}.sealed_note"),
            outcome.sealed_note.as_ref(),
        )?,
    })
}

fn hash(field: &str, text: &str) -> Result<EventHash, FieldError> {
    EventHash::from_hex(text)
        .filter(|hash| hash.to_hex() == text)
        .ok_or_else(|| FieldError::new(field, "must be 64 lower-case hex digits"))
}
