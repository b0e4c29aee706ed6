//! Core -> proto: referrals, clocks, events and notices as an agency system reads them.
//!
//! Sealed data is always passed on in its sealed form, and also in plaintext when the
//! [`Opener`] can open it for the caller's agency; a payload the caller cannot open (or that
//! does not decode) leaves the plaintext field empty.

use prost::Message;
use refbus_core::chain;
use refbus_core::clock::{ClockPolicy, ClockView, Phase};
use refbus_core::demographics::{AgeBand, Sex};
use refbus_core::event::{Actor, Change, Event, Notice, Notified, RerouteCause};
use refbus_core::referral::{
    Consent, Creation, Outcome, Party, Reason, Referral, Reroute, SealedPayload,
};

use super::Opener;
use super::fields::{duration, sealed, text_or_empty, timestamp};
use crate::v1;
use crate::v1::event::Change as ChangeView;

/// A referral as `opener`'s agency sees it, with its clocks.
///
/// `clocks` are the views the caller computed at its `now` ([`ClockView::of`] for each clock of
/// the referral's policy version that applies); `clock_policies` are that version's clock
/// definitions, which give each clock's basis and responsible party (a clock without its
/// definition here leaves them unset).
pub fn referral_view(
    referral: &Referral,
    clocks: &[ClockView],
    clock_policies: &[ClockPolicy],
    opener: &Opener<'_>,
) -> v1::Referral {
    let creation = &referral.creation;
    v1::Referral {
        referral_id: referral.id.to_string(),
        case_id: creation.case_id.to_string(),
        sender: creation.sender.to_string(),
        recipient: creation.recipient.to_string(),
        service: creation.service.to_string(),
        priority: v1::Priority::from(creation.priority).into(),
        categories: creation
            .categories
            .iter()
            .map(ToString::to_string)
            .collect(),
        child: creation.child,
        consent: Some(consent(&creation.consent, opener)),
        case_reported_at: creation.case_reported_at.map(timestamp),
        sex: v1::Sex::from(creation.sex).into(),
        age_band: v1::AgeBand::from(creation.age_band).into(),
        status: v1::ReferralStatus::from(referral.status).into(),
        resume_status: referral
            .resume_to
            .map_or(v1::ReferralStatus::Unspecified, v1::ReferralStatus::from)
            .into(),
        business_status: referral.business_status().unwrap_or_default().to_owned(),
        reason: referral.reason.as_ref().map(|r| reason(r, opener)),
        outcome: referral.outcome.as_ref().map(|o| outcome(o, opener)),
        appointment_time: referral.appointment.as_ref().map(|a| timestamp(a.at)),
        parent_referral_id: text_or_empty(creation.parent.as_ref()),
        child_referral_ids: referral.children.iter().map(ToString::to_string).collect(),
        reroute: referral.reroute.as_ref().map(reroute),
        policy_version: creation.policy_version.to_string(),
        created_at: Some(timestamp(referral.created_at)),
        updated_at: Some(timestamp(referral.updated_at)),
        last_operator: text_or_empty(referral.last_operator.as_ref()),
        seq: referral.seq,
        last_event_hash: referral.last_hash.to_hex(),
        clocks: clocks
            .iter()
            .map(|view| {
                let policy = clock_policies.iter().find(|p| p.id == view.clock);
                clock_view(view, policy, referral)
            })
            .collect(),
        identity: open_identity(creation.identity.as_ref(), opener),
        sealed_identity: creation.identity.as_ref().map(sealed),
        note: open_note(creation.note.as_ref(), opener),
        sealed_note: creation.note.as_ref().map(sealed),
    }
}

/// One clock of `referral`; `policy` (the clock's definition) gives its basis and the party
/// that must act.
pub fn clock_view(
    view: &ClockView,
    policy: Option<&ClockPolicy>,
    referral: &Referral,
) -> v1::Clock {
    let (phase, stopped_at) = match view.phase {
        Phase::NotStarted => (v1::ClockPhase::NotStarted, None),
        Phase::Running => (v1::ClockPhase::Running, None),
        Phase::Paused => (v1::ClockPhase::Paused, None),
        Phase::Stopped(at) => (v1::ClockPhase::Stopped, Some(timestamp(at))),
    };
    let responsible = policy.map(|policy| policy.responsible);
    v1::Clock {
        clock_id: view.clock.to_string(),
        title: view.title.clone(),
        basis: policy
            .and_then(|policy| policy.basis.clone())
            .unwrap_or_default(),
        phase: phase.into(),
        started_at: view.started_at.map(timestamp),
        stopped_at,
        deadline: view.deadline.map(timestamp),
        target: Some(duration(view.target)),
        elapsed: Some(duration(view.elapsed)),
        breached: view.breached,
        responsible_party: responsible
            .map_or(v1::Party::Unspecified, v1::Party::from)
            .into(),
        responsible_agency: match responsible {
            Some(Party::Sender) => referral.sender().to_string(),
            Some(Party::Recipient) => referral.recipient().to_string(),
            None => String::new(),
        },
    }
}

/// An event as `opener`'s agency sees it, with its hash computed from its canonical encoding.
pub fn event_view(event: &Event, opener: &Opener<'_>) -> v1::Event {
    let (author_agency, author_operator) = match &event.actor {
        Actor::Agency {
            agency, operator, ..
        } => (agency.to_string(), operator.to_string()),
        Actor::Router => (String::new(), String::new()),
    };
    v1::Event {
        event_id: event.id(),
        referral_id: event.referral_id.to_string(),
        case_id: event.case_id.to_string(),
        seq: event.seq,
        time: Some(timestamp(event.at)),
        author_agency,
        author_operator,
        author_system: text_or_empty(event.system()),
        author_is_router: event.actor == Actor::Router,
        request_id: text_or_empty(event.request_id.as_ref()),
        prev_hash: event.prev_hash.to_hex(),
        hash: chain::hash(event).to_hex(),
        change: Some(change_view(&event.change, opener)),
    }
}

/// An escalation notice as the notified agency's system reads it in its inbox.
pub fn notice_view(notice: &Notice) -> v1::Notice {
    v1::Notice {
        referral_id: notice.referral_id.to_string(),
        case_id: notice.case_id.to_string(),
        sender: notice.sender.to_string(),
        recipient: notice.recipient.to_string(),
        service: notice.service.to_string(),
        priority: v1::Priority::from(notice.priority).into(),
        clock_id: notice.clock.to_string(),
        level: notice.level.into(),
        repetition: notice.repetition.into(),
        action: v1::EscalationAction::from(notice.action).into(),
        agency: notice.notified.agency.to_string(),
        role: v1::Role::from(notice.notified.role).into(),
        due_at: Some(timestamp(notice.due_at)),
        time: Some(timestamp(notice.at)),
        event_seq: notice.event_seq,
    }
}

pub fn integrity_notice_view(notice: &refbus_core::IntegrityNotice) -> v1::IntegrityNotice {
    v1::IntegrityNotice {
        subject: notice.subject.clone(),
        stream_seq: notice.stream_seq,
        referral_id: notice
            .referral_id
            .map(|id| id.to_string())
            .unwrap_or_default(),
        problem: notice.problem.as_str().to_owned(),
        detail: notice.detail.clone(),
        time: Some(timestamp(notice.at)),
    }
}

// Every core change has its own message; a new variant does not compile until it has one.
fn change_view(change: &Change, opener: &Opener<'_>) -> ChangeView {
    match change {
        Change::Created(creation) => ChangeView::Created(created(creation, opener)),
        Change::Received => ChangeView::Received(v1::ReferralReceived {}),
        Change::Accepted => ChangeView::Accepted(v1::ReferralAccepted {}),
        Change::Rejected { reason: r } => ChangeView::Rejected(v1::ReferralRejected {
            reason: Some(reason(r, opener)),
        }),
        Change::Started => ChangeView::Started(v1::ReferralStarted {}),
        Change::AppointmentScheduled { at, note } => {
            ChangeView::AppointmentScheduled(v1::AppointmentScheduled {
                time: Some(timestamp(*at)),
                note: open_note(note.as_ref(), opener),
                sealed_note: note.as_ref().map(sealed),
            })
        }
        Change::NoShowRecorded { appointment_at } => {
            ChangeView::NoShowRecorded(v1::NoShowRecorded {
                appointment_time: Some(timestamp(*appointment_at)),
            })
        }
        Change::NoteAdded { note } => ChangeView::NoteAdded(v1::NoteAdded {
            note: open_note(Some(note), opener),
            sealed_note: Some(sealed(note)),
        }),
        Change::PutOnHold { reason: r } => ChangeView::PutOnHold(v1::ReferralPutOnHold {
            reason: Some(reason(r, opener)),
        }),
        Change::Resumed => ChangeView::Resumed(v1::ReferralResumed {}),
        Change::CancellationRequested { reason: r } => {
            ChangeView::CancellationRequested(v1::CancellationRequested {
                reason: Some(reason(r, opener)),
            })
        }
        Change::CancellationConfirmed => {
            ChangeView::CancellationConfirmed(v1::CancellationConfirmed {})
        }
        Change::CancellationDeclined { reason: r } => {
            ChangeView::CancellationDeclined(v1::CancellationDeclined {
                reason: Some(reason(r, opener)),
            })
        }
        Change::Cancelled { reason: r } => ChangeView::Cancelled(v1::ReferralCancelled {
            reason: Some(reason(r, opener)),
        }),
        Change::Completed { outcome: o } => ChangeView::Completed(v1::ReferralCompleted {
            outcome: Some(outcome(o, opener)),
        }),
        Change::Failed { reason: r } => ChangeView::Failed(v1::ReferralFailed {
            reason: Some(reason(r, opener)),
        }),
        Change::EnteredInError { reason: r } => {
            ChangeView::EnteredInError(v1::ReferralEnteredInError {
                reason: Some(reason(r, opener)),
            })
        }
        Change::ClockWarning {
            clock,
            permille,
            due_at,
            deadline,
        } => ChangeView::ClockWarning(v1::ClockWarning {
            clock_id: clock.to_string(),
            permille: (*permille).into(),
            due_at: Some(timestamp(*due_at)),
            deadline: Some(timestamp(*deadline)),
        }),
        Change::ClockBreached { clock, deadline } => ChangeView::ClockBreached(v1::ClockBreached {
            clock_id: clock.to_string(),
            deadline: Some(timestamp(*deadline)),
        }),
        Change::Escalated {
            clock,
            level,
            repetition,
            due_at,
            action,
            notified,
        } => ChangeView::Escalated(v1::ReferralEscalated {
            clock_id: clock.to_string(),
            level: (*level).into(),
            repetition: (*repetition).into(),
            due_at: Some(timestamp(*due_at)),
            action: v1::EscalationAction::from(*action).into(),
            notified: notified.iter().map(escalation_target).collect(),
        }),
        Change::EscalationAcknowledged { clock, level } => {
            ChangeView::EscalationAcknowledged(v1::EscalationAcknowledged {
                clock_id: clock.to_string(),
                level: (*level).into(),
            })
        }
        Change::RerouteRequested { to, cause, due_at } => {
            ChangeView::RerouteRequested(v1::RerouteRequested {
                to: to.to_string(),
                due_at: Some(timestamp(*due_at)),
                cause: Some(reroute_cause(cause)),
            })
        }
        Change::Rerouted { child, to } => ChangeView::Rerouted(v1::ReferralRerouted {
            child_referral_id: child.to_string(),
            to: to.to_string(),
        }),
        Change::IntegrityAlert {
            stream_seq,
            problem,
        } => ChangeView::IntegrityAlert(v1::IntegrityAlert {
            stream_seq: *stream_seq,
            problem: problem.as_str().to_owned(),
        }),
    }
}

fn created(creation: &Creation, opener: &Opener<'_>) -> v1::ReferralCreated {
    v1::ReferralCreated {
        sender: creation.sender.to_string(),
        recipient: creation.recipient.to_string(),
        service: creation.service.to_string(),
        priority: v1::Priority::from(creation.priority).into(),
        categories: creation
            .categories
            .iter()
            .map(ToString::to_string)
            .collect(),
        child: creation.child,
        consent: Some(consent(&creation.consent, opener)),
        case_reported_at: creation.case_reported_at.map(timestamp),
        identity: open_identity(creation.identity.as_ref(), opener),
        sealed_identity: creation.identity.as_ref().map(sealed),
        note: open_note(creation.note.as_ref(), opener),
        sealed_note: creation.note.as_ref().map(sealed),
        policy_version: creation.policy_version.to_string(),
        parent_referral_id: text_or_empty(creation.parent.as_ref()),
        sex: v1::Sex::from(creation.sex).into(),
        age_band: v1::AgeBand::from(creation.age_band).into(),
    }
}

impl From<Sex> for v1::Sex {
    fn from(sex: Sex) -> v1::Sex {
        match sex {
            Sex::Unknown => v1::Sex::Unspecified,
            Sex::Female => v1::Sex::Female,
            Sex::Male => v1::Sex::Male,
        }
    }
}

impl From<AgeBand> for v1::AgeBand {
    fn from(band: AgeBand) -> v1::AgeBand {
        match band {
            AgeBand::Unknown => v1::AgeBand::Unspecified,
            AgeBand::From0To5 => v1::AgeBand::AgeBand0To5,
            AgeBand::From6To12 => v1::AgeBand::AgeBand6To12,
            AgeBand::From13To17 => v1::AgeBand::AgeBand13To17,
            AgeBand::From18To24 => v1::AgeBand::AgeBand18To24,
            AgeBand::From25To59 => v1::AgeBand::AgeBand25To59,
            AgeBand::From60 => v1::AgeBand::AgeBand60AndOver,
        }
    }
}

fn consent(consent: &Consent, opener: &Opener<'_>) -> v1::Consent {
    v1::Consent {
        services: consent.services,
        disclose_to_agencies: consent.disclose_to_agencies,
        override_justification: open_note(consent.override_justification.as_ref(), opener),
        sealed_override_justification: consent.override_justification.as_ref().map(sealed),
    }
}

fn reason(reason: &Reason, opener: &Opener<'_>) -> v1::Reason {
    v1::Reason {
        code: reason.code.to_string(),
        note: open_note(reason.note.as_ref(), opener),
        sealed_note: reason.note.as_ref().map(sealed),
    }
}

fn outcome(outcome: &Outcome, opener: &Opener<'_>) -> v1::Outcome {
    v1::Outcome {
        code: outcome.code.to_string(),
        note: open_note(outcome.note.as_ref(), opener),
        sealed_note: outcome.note.as_ref().map(sealed),
    }
}

fn reroute(reroute: &Reroute) -> v1::Reroute {
    v1::Reroute {
        to: reroute.to.to_string(),
        requested_at: Some(timestamp(reroute.requested_at)),
        child_referral_id: text_or_empty(reroute.child.as_ref()),
    }
}

fn reroute_cause(cause: &RerouteCause) -> v1::reroute_requested::Cause {
    match cause {
        RerouteCause::Escalation { clock, level } => {
            v1::reroute_requested::Cause::Escalation(v1::EscalationCause {
                clock_id: clock.to_string(),
                level: (*level).into(),
            })
        }
        RerouteCause::Status { status } => {
            v1::reroute_requested::Cause::Status(v1::ReferralStatus::from(*status).into())
        }
    }
}

fn escalation_target(notified: &Notified) -> v1::EscalationTarget {
    v1::EscalationTarget {
        agency: notified.agency.to_string(),
        role: v1::Role::from(notified.role).into(),
    }
}

fn open_identity(
    payload: Option<&SealedPayload>,
    opener: &Opener<'_>,
) -> Option<v1::ClientIdentity> {
    let plaintext = opener(payload?)?;
    v1::ClientIdentity::decode(plaintext.as_slice()).ok()
}

fn open_note(payload: Option<&SealedPayload>, opener: &Opener<'_>) -> String {
    payload
        .and_then(opener)
        .and_then(|plaintext| String::from_utf8(plaintext).ok())
        .unwrap_or_default()
}
