//! Round trips core -> proto -> core, coverage of every core change, and invalid requests.

use std::collections::BTreeSet;
use std::time::Duration;

use prost::Message;
use refbus_core::calendar::Calendar;
use refbus_core::chain::{self, EventHash};
use refbus_core::clock::{CalendarKind, ClockPolicy, ClockStart, ClockView};
use refbus_core::command::Command;
use refbus_core::demographics::{AgeBand, Sex};
use refbus_core::escalation::{Action, Role};
use refbus_core::event::{Actor, Change, Event, Notified, RerouteCause};
use refbus_core::evolve::evolve;
use refbus_core::ids::{
    AgencyId, CaseId, ClockId, OperatorId, OutcomeCode, PolicyVersion, ReasonCode, ReferralId,
    RequestId, ServiceId,
};
use refbus_core::referral::{
    Consent, Creation, Milestone, Outcome, Party, Priority, Reason, Referral, SealedPayload, Status,
};
use refbus_core::time::Timestamp;

use super::fields::{timestamp, timestamp_from_proto};
use super::*;
use crate::v1;

const SENDER: &str = "maros-dinsos";
const RECIPIENT: &str = "maros-dp3a";
const THIRD: &str = "polres-maros";
const ALTERNATE: &str = "maros-hukum";

fn agency(text: &str) -> AgencyId {
    AgencyId::new(text).unwrap()
}

/// 2026-03-02T01:00:00.123Z plus `minutes`: the odd milliseconds check they survive.
fn at(minutes: i64) -> Timestamp {
    Timestamp::from_millis(1_772_413_200_123 + minutes * 60_000)
}

/// A stand-in for the seal crate: the "envelope" is the plaintext behind a marker, and only the
/// named recipients' openers return it.
fn fake_seal(parties: &[&AgencyId], plaintext: &[u8]) -> SealedPayload {
    SealedPayload {
        recipients: parties.iter().map(|party| (*party).clone()).collect(),
        envelope: [b"sealed:".as_slice(), plaintext].concat(),
    }
}

fn opener_for(agency_text: &str) -> impl Fn(&SealedPayload) -> Option<Vec<u8>> {
    let agency = agency(agency_text);
    move |payload| {
        payload
            .recipients
            .contains(&agency)
            .then(|| {
                payload
                    .envelope
                    .strip_prefix(b"sealed:")
                    .map(<[u8]>::to_vec)
            })
            .flatten()
    }
}

/// A sealer for a referral from SENDER to RECIPIENT (or to the recipient a request names).
fn test_sealer(target: SealTarget<'_>, plaintext: &[u8]) -> Result<SealedPayload, SealError> {
    let sender = agency(SENDER);
    let recipient = target
        .recipient()
        .cloned()
        .unwrap_or_else(|| agency(RECIPIENT));
    Ok(fake_seal(&[&sender, &recipient], plaintext))
}

fn parties() -> [AgencyId; 2] {
    [agency(SENDER), agency(RECIPIENT)]
}

fn sealed_note(text: &str) -> SealedPayload {
    let [sender, recipient] = parties();
    fake_seal(&[&sender, &recipient], text.as_bytes())
}

fn identity() -> v1::ClientIdentity {
    v1::ClientIdentity {
        full_name: "Siti Aminah".to_owned(),
        nik: "7309014501900001".to_owned(),
        birth_date: "2011-04-23".to_owned(),
        sex: v1::Sex::Female.into(),
        address: "Dusun Bontoa, Kec. Mandai".to_owned(),
        phone: "+62 812-3456-7890".to_owned(),
        narrative: "Dilaporkan oleh guru sekolah.".to_owned(),
        guardian_name: "Ibu Hasnah".to_owned(),
    }
}

fn reason(code: &str, note: Option<&str>) -> Reason {
    Reason {
        code: ReasonCode::new(code).unwrap(),
        note: note.map(sealed_note),
    }
}

fn creation() -> Creation {
    let [sender, recipient] = parties();
    Creation {
        case_id: CaseId::new("MRS-2026-0042").unwrap(),
        sender: sender.clone(),
        recipient: recipient.clone(),
        service: ServiceId::new("shelter").unwrap(),
        priority: Priority::Emergency,
        categories: vec![refbus_core::ids::CategoryId::new("child_abuse").unwrap()],
        child: true,
        consent: Consent {
            services: true,
            disclose_to_agencies: false,
            override_justification: Some(sealed_note(
                "Immediate danger at home; guardian is the alleged abuser",
            )),
        },
        case_reported_at: Some(at(-90)),
        identity: Some(fake_seal(
            &[&sender, &recipient],
            &identity().encode_to_vec(),
        )),
        note: Some(sealed_note("Needs a safe house tonight.")),
        policy_version: policy_version(),
        parent: Some(ReferralId::from_bytes([7; 16])),
        sex: Sex::Female,
        age_band: AgeBand::From13To17,
    }
}

/// One change of every kind, in an order a referral could plausibly live through.
fn every_change() -> Vec<Change> {
    let clock = ClockId::new("acknowledge").unwrap();
    vec![
        Change::Created(Box::new(creation())),
        Change::Received,
        Change::ClockWarning {
            clock: clock.clone(),
            permille: 500,
            due_at: at(30),
            deadline: at(60),
        },
        Change::ClockBreached {
            clock: clock.clone(),
            deadline: at(60),
        },
        Change::Escalated {
            clock: clock.clone(),
            level: 1,
            repetition: 0,
            due_at: at(60),
            action: Action::Notify,
            notified: vec![
                Notified {
                    agency: agency(RECIPIENT),
                    role: Role::Supervisor,
                },
                Notified {
                    agency: agency(THIRD),
                    role: Role::Head,
                },
            ],
        },
        Change::EscalationAcknowledged {
            clock: clock.clone(),
            level: 1,
        },
        Change::Accepted,
        Change::Started,
        Change::AppointmentScheduled {
            at: at(600),
            note: Some(sealed_note("Bring the birth certificate.")),
        },
        Change::NoShowRecorded {
            appointment_at: at(600),
        },
        Change::NoteAdded {
            note: sealed_note("Called the family; no answer."),
        },
        Change::PutOnHold {
            reason: reason("awaiting_documents", Some("Waiting for the KK.")),
        },
        Change::Resumed,
        Change::CancellationRequested {
            reason: reason("family_moved", None),
        },
        Change::CancellationDeclined {
            reason: reason("still_in_danger", Some("She is still at risk.")),
        },
        Change::CancellationRequested {
            reason: reason("family_moved", None),
        },
        Change::CancellationConfirmed,
        Change::Cancelled {
            reason: reason("duplicate", None),
        },
        Change::Completed {
            outcome: Outcome {
                code: OutcomeCode::new("service_provided").unwrap(),
                note: Some(sealed_note("Placed at the UPTD PPA safe house.")),
            },
        },
        Change::Failed {
            reason: reason("no_capacity", None),
        },
        Change::Rejected {
            reason: reason("out_of_area", Some("Not our kabupaten.")),
        },
        Change::RerouteRequested {
            to: agency(ALTERNATE),
            cause: RerouteCause::Escalation {
                clock: clock.clone(),
                level: 2,
            },
            due_at: at(700),
        },
        Change::RerouteRequested {
            to: agency(ALTERNATE),
            cause: RerouteCause::Status {
                status: Status::Rejected,
            },
            due_at: at(710),
        },
        Change::Rerouted {
            child: ReferralId::from_bytes([9; 16]),
            to: agency(ALTERNATE),
        },
        Change::IntegrityAlert {
            stream_seq: 77,
            problem: refbus_core::integrity::Problem::Signature,
        },
        Change::EnteredInError {
            reason: reason("entered_by_mistake", None),
        },
    ]
}

/// A new core change fails to compile here until it is numbered, which fails the coverage test
/// until `every_change` has a sample of it and the views handle it.
fn variant_index(change: &Change) -> usize {
    match change {
        Change::Created(_) => 0,
        Change::Received => 1,
        Change::Accepted => 2,
        Change::Rejected { .. } => 3,
        Change::Started => 4,
        Change::AppointmentScheduled { .. } => 5,
        Change::NoShowRecorded { .. } => 6,
        Change::NoteAdded { .. } => 7,
        Change::PutOnHold { .. } => 8,
        Change::Resumed => 9,
        Change::CancellationRequested { .. } => 10,
        Change::CancellationConfirmed => 11,
        Change::CancellationDeclined { .. } => 12,
        Change::Cancelled { .. } => 13,
        Change::Completed { .. } => 14,
        Change::Failed { .. } => 15,
        Change::EnteredInError { .. } => 16,
        Change::ClockWarning { .. } => 17,
        Change::ClockBreached { .. } => 18,
        Change::Escalated { .. } => 19,
        Change::EscalationAcknowledged { .. } => 20,
        Change::RerouteRequested { .. } => 21,
        Change::Rerouted { .. } => 22,
        Change::IntegrityAlert { .. } => 23,
    }
}
const CHANGE_VARIANTS: usize = 24;

fn referral_id() -> ReferralId {
    ReferralId::derive(&agency(SENDER), &RequestId::new("req-create").unwrap())
}

/// A chained history with one event per sample change, authored as the core would author it.
fn history() -> Vec<Event> {
    let mut previous = EventHash::GENESIS;
    let mut events = Vec::new();
    for (seq, change) in (1..).zip(every_change()) {
        let (actor, request_id) = if change.is_router_change() {
            (Actor::Router, None)
        } else {
            let side = if seq % 2 == 1 { SENDER } else { RECIPIENT };
            (
                Actor::Agency {
                    agency: agency(side),
                    system: None,
                    operator: OperatorId::new(format!("operator-{seq}")).unwrap(),
                },
                Some(RequestId::new(format!("req-{seq}")).unwrap()),
            )
        };
        let event = Event {
            referral_id: referral_id(),
            case_id: CaseId::new("MRS-2026-0042").unwrap(),
            seq,
            at: at(i64::try_from(seq).unwrap()),
            actor,
            request_id,
            change,
            prev_hash: previous,
        };
        previous = chain::hash(&event);
        events.push(event);
    }
    events
}

fn without_history(mut referral: Referral) -> Referral {
    referral.steps.clear();
    referral.marks.clear();
    referral
}

// === coverage ===

#[test]
fn every_core_change_has_a_sample_and_a_proto_message() {
    let covered: BTreeSet<usize> = every_change().iter().map(variant_index).collect();
    assert_eq!(
        covered.len(),
        CHANGE_VARIANTS,
        "a change kind has no sample"
    );
}

/// The first field number in an encoding that holds nothing else.
fn only_field_number(bytes: &[u8]) -> u64 {
    let mut key = 0u64;
    for (index, byte) in bytes.iter().enumerate() {
        key |= u64::from(byte & 0x7f) << (7 * index);
        if byte & 0x80 == 0 {
            break;
        }
    }
    key >> 3
}

#[test]
fn proto_change_fields_are_named_after_the_core_change_kinds() {
    let set = prost_types::FileDescriptorSet::decode(crate::FILE_DESCRIPTOR_SET).unwrap();
    let event = set
        .file
        .iter()
        .filter(|file| file.package() == "refbus.v1")
        .flat_map(|file| &file.message_type)
        .find(|message| message.name() == "Event")
        .unwrap();
    let change_fields: Vec<_> = event
        .field
        .iter()
        .filter(|field| field.oneof_index.is_some())
        .collect();
    let proto_names: BTreeSet<&str> = change_fields.iter().map(|field| field.name()).collect();
    let core_kinds: BTreeSet<&str> = every_change().iter().map(Change::kind).collect();
    assert_eq!(proto_names, core_kinds);

    let opener = opener_for(RECIPIENT);
    for event in history() {
        let only_change = v1::Event {
            change: event_view(&event, &opener).change,
            ..Default::default()
        };
        let number = only_field_number(&only_change.encode_to_vec());
        let field = change_fields
            .iter()
            .find(|field| u64::try_from(field.number()).ok() == Some(number))
            .unwrap();
        assert_eq!(field.name(), event.change.kind());
    }
}

// === round trips ===

#[test]
fn events_round_trip_through_their_views_for_parties_and_others() {
    for reader in [SENDER, RECIPIENT, THIRD] {
        let opener = opener_for(reader);
        for event in history() {
            let view = event_view(&event, &opener);
            assert_eq!(view.hash, chain::hash(&event).to_hex());
            assert_eq!(
                view.event_id,
                format!("{}-{}", event.referral_id, event.seq)
            );
            let back = event_from_view(&view).unwrap_or_else(|error| {
                panic!("{} read back by {reader}: {error}", event.change.kind())
            });
            assert_eq!(back, event);
        }
    }
}

#[test]
fn referral_views_round_trip_after_every_event() {
    let opener = opener_for(SENDER);
    let mut state = None;
    for event in history() {
        let referral = evolve(state, &event).unwrap();
        let view = referral_view(&referral, &[], &[], &opener);
        let back = referral_from_view(&view)
            .unwrap_or_else(|error| panic!("after {}: {error}", event.change.kind()));
        assert_eq!(back, without_history(referral.clone()));
        state = Some(referral);
    }
    let last = state.unwrap();
    let view = referral_view(&last, &[], &[], &opener);
    assert_eq!(view.seq, 26);
    assert_eq!(view.business_status, "no_show");
    assert_eq!(view.child_referral_ids.len(), 1);
    assert_eq!(view.status, i32::from(v1::ReferralStatus::EnteredInError));
}

// === what each agency sees ===

#[test]
fn parties_read_plaintext_and_third_parties_only_sealed_data() {
    let created = &history()[0];
    let ChangeView::Created(for_recipient) =
        event_view(created, &opener_for(RECIPIENT)).change.unwrap()
    else {
        panic!("the first event is a creation");
    };
    assert_eq!(for_recipient.identity, Some(identity()));
    assert_eq!(for_recipient.note, "Needs a safe house tonight.");
    assert!(for_recipient.sealed_identity.is_some());

    let ChangeView::Created(for_police) = event_view(created, &opener_for(THIRD)).change.unwrap()
    else {
        panic!("the first event is a creation");
    };
    assert_eq!(for_police.identity, None);
    assert_eq!(for_police.note, "");
    assert_eq!(for_police.sealed_identity, for_recipient.sealed_identity);

    let referral = evolve(None, created).unwrap();
    let view = referral_view(&referral, &[], &[], &opener_for(RECIPIENT));
    assert_eq!(view.identity, Some(identity()));
    assert_eq!(view.note, "Needs a safe house tonight.");
    let view = referral_view(&referral, &[], &[], &opener_for(THIRD));
    assert_eq!((view.identity, view.note.as_str()), (None, ""));
}

use crate::v1::event::Change as ChangeView;

#[test]
fn reason_notes_are_opened_for_parties() {
    let hold = history()
        .into_iter()
        .find(|event| matches!(event.change, Change::PutOnHold { .. }))
        .unwrap();
    let Some(ChangeView::PutOnHold(view)) = event_view(&hold, &opener_for(SENDER)).change else {
        panic!("a hold");
    };
    let reason = view.reason.unwrap();
    assert_eq!(reason.code, "awaiting_documents");
    assert_eq!(reason.note, "Waiting for the KK.");
}

#[test]
fn a_view_that_does_not_carry_the_recorded_event_is_refused() {
    let event = &history()[0];
    let mut view = event_view(event, &opener_for(RECIPIENT));
    if let Some(ChangeView::Created(created)) = &mut view.change {
        created.child = false;
    }
    assert_eq!(event_from_view(&view).unwrap_err().field, "hash");

    let mut view = event_view(event, &opener_for(RECIPIENT));
    view.event_id = format!("{}-2", event.referral_id);
    assert_eq!(event_from_view(&view).unwrap_err().field, "event_id");

    let mut view = event_view(event, &opener_for(RECIPIENT));
    view.author_is_router = true;
    assert_eq!(event_from_view(&view).unwrap_err().field, "author_agency");

    let mut view = event_view(event, &opener_for(RECIPIENT));
    view.prev_hash = view.prev_hash.to_uppercase().replace('0', "G");
    assert_eq!(event_from_view(&view).unwrap_err().field, "prev_hash");
}

#[test]
fn clock_views_carry_the_basis_and_the_agency_that_must_act() {
    let created = &history()[0];
    let referral = evolve(None, created).unwrap();
    let policy = ClockPolicy {
        id: ClockId::new("tpks_pasal_41").unwrap(),
        title: "Report sexual violence to the police".to_owned(),
        basis: Some("UU 12/2022 (TPKS) Pasal 41".to_owned()),
        applies_to: Default::default(),
        start: ClockStart::CaseReported,
        stop: vec![Milestone::Entered(Status::Accepted)],
        pause_on_hold: false,
        target: Duration::from_secs(72 * 3600),
        calendar: CalendarKind::WallClock,
        responsible: Party::Recipient,
        warnings: vec![500, 750],
        escalation: None,
    };
    let now = at(30);
    let clock = ClockView::of(&policy, &referral, &Calendar::WallClock, now);
    let view = referral_view(
        &referral,
        std::slice::from_ref(&clock),
        std::slice::from_ref(&policy),
        &opener_for(SENDER),
    );
    let [shown] = view.clocks.as_slice() else {
        panic!("one clock");
    };
    assert_eq!(shown.clock_id, "tpks_pasal_41");
    assert_eq!(shown.basis, "UU 12/2022 (TPKS) Pasal 41");
    assert_eq!(shown.phase, i32::from(v1::ClockPhase::Running));
    assert_eq!(shown.started_at, Some(timestamp(at(-90))));
    assert_eq!(shown.stopped_at, None);
    assert_eq!(shown.deadline, Some(timestamp(at(-90 + 72 * 60))));
    assert_eq!(shown.target.unwrap().seconds, 72 * 3600);
    assert_eq!(shown.elapsed.unwrap().seconds, 120 * 60);
    assert!(!shown.breached);
    assert_eq!(shown.responsible_party, i32::from(v1::Party::Recipient));
    assert_eq!(shown.responsible_agency, RECIPIENT);

    // Without its definition, a clock still shows what the view knows.
    let bare = clock_view(&clock, None, &referral);
    assert_eq!(
        (bare.basis.as_str(), bare.responsible_agency.as_str()),
        ("", "")
    );
    assert_eq!(bare.responsible_party, i32::from(v1::Party::Unspecified));

    let stopped = ClockView {
        phase: refbus_core::clock::Phase::Stopped(at(40)),
        ..clock
    };
    let shown = clock_view(&stopped, Some(&policy), &referral);
    assert_eq!(shown.phase, i32::from(v1::ClockPhase::Stopped));
    assert_eq!(shown.stopped_at, Some(timestamp(at(40))));
}

#[test]
fn escalation_notices_go_to_third_parties_only_and_carry_no_personal_data() {
    let events = history();
    let referral = evolve(None, &events[0]).unwrap();
    let escalated = events
        .iter()
        .find(|event| matches!(event.change, Change::Escalated { .. }))
        .unwrap();
    let notices: Vec<_> = refbus_core::notices(&referral, escalated)
        .iter()
        .map(notice_view)
        .collect();
    let [notice] = notices.as_slice() else {
        panic!("one notice, for the police head: {notices:?}");
    };
    assert_eq!(notice.agency, THIRD);
    assert_eq!(notice.role, i32::from(v1::Role::Head));
    assert_eq!(notice.sender, SENDER);
    assert_eq!(notice.recipient, RECIPIENT);
    assert_eq!(notice.service, "shelter");
    assert_eq!(notice.clock_id, "acknowledge");
    assert_eq!((notice.level, notice.repetition), (1, 0));
    assert_eq!(notice.event_seq, escalated.seq);
    assert_eq!(notice.time, Some(timestamp(escalated.at)));
    assert!(refbus_core::notices(&referral, &events[1]).is_empty());
}

#[test]
fn timestamps_keep_milliseconds_and_refuse_what_protobuf_forbids() {
    for millis in [0, 1, -1, 999, -1_001, 1_772_413_200_123] {
        let instant = Timestamp::from_millis(millis);
        let proto = timestamp(instant);
        assert!((0..1_000_000_000).contains(&proto.nanos), "{proto:?}");
        assert_eq!(timestamp_from_proto("t", &proto), Ok(instant));
    }
    let finer = prost_types::Timestamp {
        seconds: 10,
        nanos: 123_999_999,
    };
    assert_eq!(
        timestamp_from_proto("t", &finer),
        Ok(Timestamp::from_millis(10_123))
    );
    for bad in [
        prost_types::Timestamp {
            seconds: 0,
            nanos: -1,
        },
        prost_types::Timestamp {
            seconds: 0,
            nanos: 1_000_000_000,
        },
        prost_types::Timestamp {
            seconds: 253_402_300_800,
            nanos: 0,
        },
    ] {
        assert_eq!(timestamp_from_proto("t", &bad).unwrap_err().field, "t");
    }
}

// === requests ===

fn valid_create() -> v1::CreateReferralRequest {
    v1::CreateReferralRequest {
        request_id: "6f1c2a9e-4b1d-4c55-9a53-2f0e7d1c8b11".to_owned(),
        recipient: RECIPIENT.to_owned(),
        case_id: "MRS-2026-0042".to_owned(),
        service: "shelter".to_owned(),
        priority: v1::Priority::Emergency.into(),
        categories: vec!["child_abuse".to_owned(), "sexual_violence".to_owned()],
        child: true,
        consent: Some(v1::Consent {
            services: true,
            disclose_to_agencies: true,
            override_justification: String::new(),
            sealed_override_justification: None,
        }),
        case_reported_at: Some(timestamp(at(-90))),
        person: Some(v1::create_referral_request::Person::Identity(identity())),
        note: "Needs a safe house tonight.".to_owned(),
        sealed_note: None,
        sex: v1::Sex::Unspecified.into(),
        age_band: v1::AgeBand::Unspecified.into(),
    }
}

fn policy_version() -> PolicyVersion {
    PolicyVersion::new("2026-01").unwrap()
}

/// Creates are made at `at(0)` in WIB (UTC+7).
fn reckoning() -> AgeReckoning {
    AgeReckoning {
        now: at(0),
        offset: chrono::FixedOffset::east_opt(7 * 3600).unwrap(),
    }
}

fn create(request: &v1::CreateReferralRequest) -> Result<NewReferral, FieldError> {
    create_referral(
        request,
        &agency(SENDER),
        &policy_version(),
        reckoning(),
        &mut test_sealer,
    )
}

#[test]
fn a_consent_override_justification_is_sealed_for_sender_and_recipient() {
    let justification = "Immediate danger at home; guardian is the alleged abuser";
    let mut seen = Vec::new();
    let mut sealer = |target: SealTarget<'_>, plaintext: &[u8]| {
        seen.push(format!("{target:?}"));
        test_sealer(target, plaintext)
    };
    let request = v1::CreateReferralRequest {
        consent: Some(v1::Consent {
            services: true,
            disclose_to_agencies: false,
            override_justification: format!("  {justification}\n"),
            sealed_override_justification: None,
        }),
        ..valid_create()
    };
    let created = create_referral(
        &request,
        &agency(SENDER),
        &policy_version(),
        reckoning(),
        &mut sealer,
    )
    .unwrap();
    assert_eq!(
        seen.last().map(String::as_str),
        Some("Justification { recipient: AgencyId(\"maros-dp3a\") }")
    );
    let sealed = created.creation.consent.override_justification.unwrap();
    assert_eq!(sealed.recipients, parties());
    assert_eq!(
        opener_for(RECIPIENT)(&sealed).unwrap(),
        justification.as_bytes()
    );
}

#[test]
fn a_valid_create_seals_identity_and_note_for_sender_and_recipient() {
    let mut seen = Vec::new();
    let mut sealer = |target: SealTarget<'_>, plaintext: &[u8]| {
        seen.push(format!("{target:?}"));
        test_sealer(target, plaintext)
    };
    let created = create_referral(
        &valid_create(),
        &agency(SENDER),
        &policy_version(),
        reckoning(),
        &mut sealer,
    )
    .unwrap();
    assert_eq!(
        seen,
        [
            "Identity { recipient: AgencyId(\"maros-dp3a\") }",
            "Note { recipient: Some(AgencyId(\"maros-dp3a\")) }"
        ]
    );
    let creation = &created.creation;
    assert_eq!(creation.sender, agency(SENDER));
    assert_eq!(creation.recipient, agency(RECIPIENT));
    assert_eq!(creation.priority, Priority::Emergency);
    assert_eq!(creation.categories.len(), 2);
    assert_eq!(creation.case_reported_at, Some(at(-90)));
    assert_eq!(creation.consent.override_justification, None);
    assert_eq!(creation.parent, None);
    let opened = opener_for(RECIPIENT)(creation.identity.as_ref().unwrap()).unwrap();
    assert_eq!(
        v1::ClientIdentity::decode(opened.as_slice()).unwrap(),
        identity()
    );
    assert_eq!(
        created.referral_id(),
        ReferralId::derive(
            &agency(SENDER),
            &RequestId::new("6f1c2a9e-4b1d-4c55-9a53-2f0e7d1c8b11").unwrap()
        )
    );
    assert!(matches!(created.into_command(), Command::Create(_)));
}

#[test]
fn end_to_end_sealed_data_passes_through_and_anonymous_referrals_seal_nothing() {
    let [sender, recipient] = parties();
    let sealed = fake_seal(&[&sender, &recipient], b"opaque");
    let request = v1::CreateReferralRequest {
        person: Some(v1::create_referral_request::Person::SealedIdentity(
            fields::sealed(&sealed),
        )),
        note: String::new(),
        sealed_note: Some(fields::sealed(&sealed)),
        ..valid_create()
    };
    let mut refuse = |_: SealTarget<'_>, _: &[u8]| -> Result<SealedPayload, SealError> {
        panic!("nothing to seal")
    };
    let created = create_referral(
        &request,
        &sender,
        &policy_version(),
        reckoning(),
        &mut refuse,
    )
    .unwrap();
    assert_eq!(created.creation.identity.as_ref(), Some(&sealed));
    assert_eq!(created.creation.note.as_ref(), Some(&sealed));

    let anonymous = v1::CreateReferralRequest {
        person: None,
        note: String::new(),
        ..valid_create()
    };
    let created = create_referral(
        &anonymous,
        &sender,
        &policy_version(),
        reckoning(),
        &mut refuse,
    )
    .unwrap();
    assert_eq!(
        (created.creation.identity, created.creation.note),
        (None, None)
    );
}

#[test]
fn commands_carry_their_reasons_sealed_for_the_referrals_parties() {
    let request = v1::RejectReferralRequest {
        request_id: "req-7".to_owned(),
        referral_id: referral_id().to_string(),
        reason: Some(v1::Reason {
            code: "no_capacity".to_owned(),
            note: "All rooms are full.".to_owned(),
            sealed_note: None,
        }),
    };
    let parsed = request.parse(&mut test_sealer).unwrap();
    assert_eq!(parsed.referral_id, referral_id());
    assert_eq!(parsed.request_id, RequestId::new("req-7").unwrap());
    assert_eq!(
        parsed.command,
        Command::Reject {
            reason: reason("no_capacity", Some("All rooms are full.")),
        }
    );

    let acknowledge = v1::AcknowledgeEscalationRequest {
        request_id: "req-8".to_owned(),
        referral_id: referral_id().to_string().to_lowercase(),
        clock_id: "acknowledge".to_owned(),
        level: 2,
    };
    assert_eq!(
        acknowledge.parse(&mut test_sealer).unwrap().command,
        Command::AcknowledgeEscalation {
            clock: ClockId::new("acknowledge").unwrap(),
            level: 2,
        }
    );
}

#[test]
fn a_reroute_builds_a_linked_child_for_the_new_agency() {
    let request = v1::RerouteReferralRequest {
        request_id: "req-reroute".to_owned(),
        referral_id: referral_id().to_string(),
        to: ALTERNATE.to_owned(),
        note: "The DP3A shelter is full.".to_owned(),
        sealed_note: None,
        sealed_identity: None,
    };
    let order = reroute_referral(&request, &mut test_sealer).unwrap();
    assert_eq!(
        order.note.as_ref().unwrap().recipients,
        [agency(SENDER), agency(ALTERNATE)]
    );
    let original = evolve(None, &history()[0]).unwrap();
    let child_id = order.child_id(&agency(SENDER));
    let child = order.child_creation(&original, None, PolicyVersion::new("2026-02").unwrap());
    assert_eq!(child.recipient, agency(ALTERNATE));
    assert_eq!(child.parent, Some(original.id));
    assert_eq!(child.case_id, original.creation.case_id);
    assert_eq!(child.service, original.creation.service);
    assert_eq!(child.note, order.note);
    assert_eq!(
        order.record_command(child_id),
        Command::RecordReroute {
            child: child_id,
            to: agency(ALTERNATE),
        }
    );
}

#[test]
fn list_requests_default_their_page_and_filter_by_side() {
    let query = list_referrals(&v1::ListReferralsRequest {
        side: v1::Party::Recipient.into(),
        statuses: vec![v1::ReferralStatus::Requested.into()],
        ..Default::default()
    })
    .unwrap();
    assert_eq!(query.page_size, request::DEFAULT_PAGE_SIZE);
    assert_eq!(query.page_token, None);
    let referral = evolve(None, &history()[0]).unwrap();
    assert!(query.matches(&referral, &agency(RECIPIENT)));
    assert!(!query.matches(&referral, &agency(SENDER)));
    assert!(!query.matches(&referral, &agency(THIRD)));

    let query = list_referrals(&v1::ListReferralsRequest {
        page_size: 10_000,
        created_after: Some(timestamp(at(1))),
        page_token: "next".to_owned(),
        ..Default::default()
    })
    .unwrap();
    assert_eq!(query.page_size, request::MAX_PAGE_SIZE);
    assert_eq!(query.page_token.as_deref(), Some("next"));
    assert!(query.matches(&referral, &agency(SENDER)));
    let later = list_referrals(&v1::ListReferralsRequest {
        created_after: Some(timestamp(at(2))),
        ..Default::default()
    })
    .unwrap();
    assert!(!later.matches(&referral, &agency(SENDER)));
}

fn ok<T>(result: Result<T, FieldError>) -> Result<(), FieldError> {
    result.map(|_| ())
}

fn with_identity(change: impl FnOnce(&mut v1::ClientIdentity)) -> v1::CreateReferralRequest {
    let mut person = identity();
    change(&mut person);
    v1::CreateReferralRequest {
        person: Some(v1::create_referral_request::Person::Identity(person)),
        ..valid_create()
    }
}

fn with_sealed_identity(recipients: &[&str], envelope: &[u8]) -> v1::CreateReferralRequest {
    v1::CreateReferralRequest {
        person: Some(v1::create_referral_request::Person::SealedIdentity(
            v1::SealedPayload {
                recipients: recipients.iter().map(|r| (*r).to_owned()).collect(),
                envelope: envelope.to_vec(),
            },
        )),
        ..valid_create()
    }
}

fn reject(reason: Option<v1::Reason>) -> Result<(), FieldError> {
    ok(v1::RejectReferralRequest {
        request_id: "req-1".to_owned(),
        referral_id: referral_id().to_string(),
        reason,
    }
    .parse(&mut test_sealer))
}

fn acknowledge(clock_id: &str, level: u32) -> Result<(), FieldError> {
    ok(v1::AcknowledgeEscalationRequest {
        request_id: "req-1".to_owned(),
        referral_id: referral_id().to_string(),
        clock_id: clock_id.to_owned(),
        level,
    }
    .parse(&mut test_sealer))
}

fn accept(request_id: &str, referral: &str) -> Result<(), FieldError> {
    ok(v1::AcceptReferralRequest {
        request_id: request_id.to_owned(),
        referral_id: referral.to_owned(),
    }
    .parse(&mut test_sealer))
}

fn list(request: v1::ListReferralsRequest) -> Result<(), FieldError> {
    ok(list_referrals(&request))
}

#[test]
fn invalid_requests_name_the_field_at_fault() {
    let valid_id = referral_id().to_string();
    let valid_reason = || v1::Reason {
        code: "no_capacity".to_owned(),
        ..Default::default()
    };
    let bad_seconds = prost_types::Timestamp {
        seconds: i64::MAX,
        nanos: 0,
    };
    let cases: Vec<(&str, Result<(), FieldError>, &str)> = vec![
        (
            "create without request id",
            ok(create(&v1::CreateReferralRequest {
                request_id: String::new(),
                ..valid_create()
            })),
            "request_id",
        ),
        (
            "request id with a space",
            ok(create(&v1::CreateReferralRequest {
                request_id: "req 1".to_owned(),
                ..valid_create()
            })),
            "request_id",
        ),
        (
            "recipient not a slug",
            ok(create(&v1::CreateReferralRequest {
                recipient: "Maros DP3A".to_owned(),
                ..valid_create()
            })),
            "recipient",
        ),
        (
            "no case id",
            ok(create(&v1::CreateReferralRequest {
                case_id: String::new(),
                ..valid_create()
            })),
            "case_id",
        ),
        (
            "no service",
            ok(create(&v1::CreateReferralRequest {
                service: String::new(),
                ..valid_create()
            })),
            "service",
        ),
        (
            "priority unspecified",
            ok(create(&v1::CreateReferralRequest {
                priority: 0,
                ..valid_create()
            })),
            "priority",
        ),
        (
            "priority out of the enum",
            ok(create(&v1::CreateReferralRequest {
                priority: 99,
                ..valid_create()
            })),
            "priority",
        ),
        (
            "a bad category",
            ok(create(&v1::CreateReferralRequest {
                categories: vec!["child_abuse".to_owned(), "Bad!".to_owned()],
                ..valid_create()
            })),
            "categories[1]",
        ),
        (
            "too many categories",
            ok(create(&v1::CreateReferralRequest {
                categories: (0..17).map(|i| format!("category-{i}")).collect(),
                ..valid_create()
            })),
            "categories",
        ),
        (
            "no consent",
            ok(create(&v1::CreateReferralRequest {
                consent: None,
                ..valid_create()
            })),
            "consent",
        ),
        (
            "a justification too short",
            ok(create(&v1::CreateReferralRequest {
                consent: Some(v1::Consent {
                    override_justification: "   urgent   ".to_owned(),
                    ..Default::default()
                }),
                ..valid_create()
            })),
            "consent.override_justification",
        ),
        (
            "a justification in plaintext and sealed",
            ok(create(&v1::CreateReferralRequest {
                consent: Some(v1::Consent {
                    override_justification: "x".repeat(40),
                    sealed_override_justification: Some(v1::SealedPayload {
                        recipients: vec![SENDER.to_owned(), RECIPIENT.to_owned()],
                        envelope: vec![1],
                    }),
                    ..Default::default()
                }),
                ..valid_create()
            })),
            "consent.sealed_override_justification",
        ),
        (
            "a case id shaped like a NIK",
            ok(create(&v1::CreateReferralRequest {
                case_id: "7309014501900001".to_owned(),
                ..valid_create()
            })),
            "case_id",
        ),
        (
            "a justification too long",
            ok(create(&v1::CreateReferralRequest {
                consent: Some(v1::Consent {
                    override_justification: "x".repeat(2001),
                    ..Default::default()
                }),
                ..valid_create()
            })),
            "consent.override_justification",
        ),
        (
            "case reported with bad nanos",
            ok(create(&v1::CreateReferralRequest {
                case_reported_at: Some(prost_types::Timestamp {
                    seconds: 0,
                    nanos: -1,
                }),
                ..valid_create()
            })),
            "case_reported_at",
        ),
        (
            "identity without a name",
            ok(create(&with_identity(|p| p.full_name = "  ".to_owned()))),
            "identity.full_name",
        ),
        (
            "a name on two lines",
            ok(create(&with_identity(|p| {
                p.full_name = "Siti\nAminah".to_owned()
            }))),
            "identity.full_name",
        ),
        (
            "a short NIK",
            ok(create(&with_identity(|p| p.nik = "7309".to_owned()))),
            "identity.nik",
        ),
        (
            "a date that does not exist",
            ok(create(&with_identity(|p| {
                p.birth_date = "2011-02-30".to_owned()
            }))),
            "identity.birth_date",
        ),
        (
            "a date not padded",
            ok(create(&with_identity(|p| {
                p.birth_date = "2011-4-23".to_owned()
            }))),
            "identity.birth_date",
        ),
        (
            "sex out of the enum",
            ok(create(&with_identity(|p| p.sex = 7))),
            "identity.sex",
        ),
        (
            "an address too long",
            ok(create(&with_identity(|p| p.address = "a".repeat(501)))),
            "identity.address",
        ),
        (
            "a phone with words",
            ok(create(&with_identity(|p| p.phone = "call me".to_owned()))),
            "identity.phone",
        ),
        (
            "a narrative too long",
            ok(create(&with_identity(|p| {
                p.narrative = "a".repeat(64 * 1024 + 1)
            }))),
            "identity.narrative",
        ),
        (
            "a guardian name on two lines",
            ok(create(&with_identity(|p| {
                p.guardian_name = "Ibu\tHasnah".to_owned()
            }))),
            "identity.guardian_name",
        ),
        (
            "sealed identity for nobody",
            ok(create(&with_sealed_identity(&[], b"opaque"))),
            "sealed_identity.recipients",
        ),
        (
            "sealed identity for an agency twice",
            ok(create(&with_sealed_identity(&[SENDER, SENDER], b"opaque"))),
            "sealed_identity.recipients[1]",
        ),
        (
            "sealed identity for a bad agency id",
            ok(create(&with_sealed_identity(&[SENDER, "DP3A"], b"opaque"))),
            "sealed_identity.recipients[1]",
        ),
        (
            "sealed identity without an envelope",
            ok(create(&with_sealed_identity(&[SENDER, RECIPIENT], b""))),
            "sealed_identity.envelope",
        ),
        (
            "note and sealed note",
            ok(create(&v1::CreateReferralRequest {
                sealed_note: Some(fields::sealed(&sealed_note("x"))),
                ..valid_create()
            })),
            "sealed_note",
        ),
        (
            "a note too long",
            ok(create(&v1::CreateReferralRequest {
                note: "a".repeat(16 * 1024 + 1),
                ..valid_create()
            })),
            "note",
        ),
        (
            "a recipient the sealer cannot seal for",
            ok(create_referral(
                &valid_create(),
                &agency(SENDER),
                &policy_version(),
                reckoning(),
                &mut |_, _| Err(SealError("maros-dp3a has no public key yet".to_owned())),
            )),
            "identity",
        ),
        (
            "accept without request id",
            accept("", &valid_id),
            "request_id",
        ),
        (
            "accept without referral",
            accept("req-1", ""),
            "referral_id",
        ),
        (
            "accept a referral id with I",
            accept("req-1", "0000000000000000000000000I"),
            "referral_id",
        ),
        ("reject without reason", reject(None), "reason"),
        (
            "reject without reason code",
            reject(Some(v1::Reason::default())),
            "reason.code",
        ),
        (
            "reject with a note both ways",
            reject(Some(v1::Reason {
                note: "x".to_owned(),
                sealed_note: Some(fields::sealed(&sealed_note("x"))),
                ..valid_reason()
            })),
            "reason.sealed_note",
        ),
        (
            "reject with an empty sealed note",
            reject(Some(v1::Reason {
                sealed_note: Some(v1::SealedPayload {
                    recipients: vec![SENDER.to_owned(), RECIPIENT.to_owned()],
                    envelope: Vec::new(),
                }),
                ..valid_reason()
            })),
            "reason.sealed_note.envelope",
        ),
        (
            "complete with a bad outcome code",
            ok(v1::CompleteReferralRequest {
                request_id: "req-1".to_owned(),
                referral_id: valid_id.clone(),
                outcome: Some(v1::Outcome {
                    code: "Done!".to_owned(),
                    ..Default::default()
                }),
            }
            .parse(&mut test_sealer)),
            "outcome.code",
        ),
        (
            "complete without outcome",
            ok(v1::CompleteReferralRequest {
                request_id: "req-1".to_owned(),
                referral_id: valid_id.clone(),
                outcome: None,
            }
            .parse(&mut test_sealer)),
            "outcome",
        ),
        (
            "an appointment without time",
            ok(v1::ScheduleAppointmentRequest {
                request_id: "req-1".to_owned(),
                referral_id: valid_id.clone(),
                ..Default::default()
            }
            .parse(&mut test_sealer)),
            "time",
        ),
        (
            "an appointment after year 9999",
            ok(v1::ScheduleAppointmentRequest {
                request_id: "req-1".to_owned(),
                referral_id: valid_id.clone(),
                time: Some(bad_seconds),
                ..Default::default()
            }
            .parse(&mut test_sealer)),
            "time",
        ),
        (
            "an empty note",
            ok(v1::AddNoteRequest {
                request_id: "req-1".to_owned(),
                referral_id: valid_id.clone(),
                ..Default::default()
            }
            .parse(&mut test_sealer)),
            "note",
        ),
        ("acknowledge without clock", acknowledge("", 1), "clock_id"),
        (
            "acknowledge level 0",
            acknowledge("acknowledge", 0),
            "level",
        ),
        (
            "acknowledge a level beyond u16",
            acknowledge("acknowledge", 70_000),
            "level",
        ),
        (
            "reroute without destination",
            ok(reroute_referral(
                &v1::RerouteReferralRequest {
                    request_id: "req-1".to_owned(),
                    referral_id: valid_id.clone(),
                    ..Default::default()
                },
                &mut test_sealer,
            )),
            "to",
        ),
        (
            "get a bad referral id",
            ok(get_referral(&v1::GetReferralRequest {
                referral_id: "abc".to_owned(),
            })),
            "referral_id",
        ),
        (
            "list with a negative page",
            list(v1::ListReferralsRequest {
                page_size: -1,
                ..Default::default()
            }),
            "page_size",
        ),
        (
            "list an unspecified status",
            list(v1::ListReferralsRequest {
                statuses: vec![v1::ReferralStatus::Accepted.into(), 0],
                ..Default::default()
            }),
            "statuses[1]",
        ),
        (
            "list a side out of the enum",
            list(v1::ListReferralsRequest {
                side: 9,
                ..Default::default()
            }),
            "side",
        ),
        (
            "list an empty time range",
            list(v1::ListReferralsRequest {
                created_after: Some(timestamp(at(5))),
                created_before: Some(timestamp(at(5))),
                ..Default::default()
            }),
            "created_before",
        ),
        ("no operator", ok(operator("")), "x-refbus-operator"),
        (
            "an operator with a space",
            ok(operator("Budi Santoso")),
            "x-refbus-operator",
        ),
    ];
    for (case, result, field) in cases {
        match result {
            Ok(()) => panic!("{case}: accepted"),
            Err(error) => assert_eq!(error.field, field, "{case}: {error}"),
        }
    }
}

// === statistical metadata ===

fn demographics_of(request: &v1::CreateReferralRequest) -> Result<(Sex, AgeBand), FieldError> {
    create(request).map(|new| (new.creation.sex, new.creation.age_band))
}

#[test]
fn sex_and_age_band_are_derived_from_a_plaintext_identity_when_left_unset() {
    // Born 2011-04-23, reported 2026-03-02 (90 minutes before now): 14 years old.
    assert_eq!(
        demographics_of(&valid_create()).unwrap(),
        (Sex::Female, AgeBand::From13To17)
    );
    // Given and consistent: the same.
    let given = v1::CreateReferralRequest {
        sex: v1::Sex::Female.into(),
        age_band: v1::AgeBand::AgeBand13To17.into(),
        ..valid_create()
    };
    assert_eq!(
        demographics_of(&given).unwrap(),
        (Sex::Female, AgeBand::From13To17)
    );
    // No birth date, no sex on the identity: what the request says, else unknown.
    let silent = with_identity(|p| {
        p.birth_date = String::new();
        p.sex = v1::Sex::Unspecified.into();
    });
    assert_eq!(
        demographics_of(&silent).unwrap(),
        (Sex::Unknown, AgeBand::Unknown)
    );
    let told = v1::CreateReferralRequest {
        sex: v1::Sex::Male.into(),
        age_band: v1::AgeBand::AgeBand6To12.into(),
        ..silent
    };
    assert_eq!(
        demographics_of(&told).unwrap(),
        (Sex::Male, AgeBand::From6To12)
    );
}

#[test]
fn the_age_is_counted_on_the_day_of_the_report_in_the_senders_time_zone() {
    // at(0) is 2026-03-02T01:00Z, 08:00 WIB. Reported at 2026-03-01T18:30Z: already
    // 2026-03-02 in WIB (01:30), still 2026-03-01 in UTC. Born 2008-03-02: 18 in WIB.
    let request = v1::CreateReferralRequest {
        case_reported_at: Some(timestamp(
            Timestamp::parse_rfc3339("2026-03-01T18:30:00Z").unwrap(),
        )),
        child: false,
        person: Some(v1::create_referral_request::Person::Identity(
            v1::ClientIdentity {
                birth_date: "2008-03-02".to_owned(),
                ..identity()
            },
        )),
        ..valid_create()
    };
    assert_eq!(demographics_of(&request).unwrap().1, AgeBand::From18To24);
    let utc = AgeReckoning {
        offset: chrono::FixedOffset::east_opt(0).unwrap(),
        ..reckoning()
    };
    let in_utc = create_referral(
        &request,
        &agency(SENDER),
        &policy_version(),
        utc,
        &mut test_sealer,
    )
    .unwrap();
    assert_eq!(in_utc.creation.age_band, AgeBand::From13To17);
}

#[test]
fn statistical_metadata_that_contradicts_the_identity_or_is_out_of_range_is_refused() {
    let cases = [
        (
            "a band the birth date does not give",
            v1::CreateReferralRequest {
                age_band: v1::AgeBand::AgeBand18To24.into(),
                ..valid_create()
            },
            "age_band",
            "18-24 differs from the band identity.birth_date gives",
        ),
        (
            "a sex the identity does not give",
            v1::CreateReferralRequest {
                sex: v1::Sex::Male.into(),
                ..valid_create()
            },
            "sex",
            "male differs from identity.sex (female)",
        ),
        (
            "an age band out of range",
            v1::CreateReferralRequest {
                age_band: 7,
                ..valid_create()
            },
            "age_band",
            "unknown value 7",
        ),
        (
            "a sex out of range",
            v1::CreateReferralRequest {
                sex: 3,
                ..valid_create()
            },
            "sex",
            "unknown value 3",
        ),
        (
            "a birth date after the report",
            with_identity(|p| p.birth_date = "2026-03-03".to_owned()),
            "identity.birth_date",
            "is after the day the case was reported",
        ),
    ];
    for (what, request, field, message) in cases {
        let error = demographics_of(&request).expect_err(what);
        assert_eq!(error.field, field, "{what}");
        assert!(
            error.message.starts_with(message),
            "{what}: {}",
            error.message
        );
        // The message never quotes the person's birth date.
        assert!(!error.message.contains("2011-04-23"), "{what}");
    }
}

#[test]
fn a_sealed_identity_leaves_the_metadata_to_the_caller() {
    let [sender, recipient] = parties();
    let sealed = fake_seal(&[&sender, &recipient], b"opaque");
    let request = v1::CreateReferralRequest {
        person: Some(v1::create_referral_request::Person::SealedIdentity(
            fields::sealed(&sealed),
        )),
        sex: v1::Sex::Female.into(),
        age_band: v1::AgeBand::AgeBand0To5.into(),
        ..valid_create()
    };
    assert_eq!(
        demographics_of(&request).unwrap(),
        (Sex::Female, AgeBand::From0To5)
    );
}
