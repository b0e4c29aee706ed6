//! The one record check, case by case: a good record passes, and each way a record can lie
//! (subject, hash, signature, author, chain, decision, state, time) is refused with its kind.

mod common;

use std::time::Duration;

use common::*;
use refbus_core::chain::{self, EventHash};
use refbus_core::command::{Command, Request};
use refbus_core::integrity::{Checker, Claim, Problem, SubjectTokens};
use refbus_core::referral::Priority;
use refbus_core::signature::{Signature, Signer, Signers, SigningKey};
use refbus_core::{Event, Referral, RequestId, Timestamp, record};

struct World {
    registry: refbus_core::Registry,
    signers: Signers,
    dinsos: SigningKey,
    uptd: SigningKey,
    polres: SigningKey,
    router: SigningKey,
}

fn world() -> World {
    let dinsos = SigningKey::from_seed(&[1; 32], Signer::Agency(agency(DINSOS)));
    let uptd = SigningKey::from_seed(&[2; 32], Signer::Agency(agency(UPTD)));
    let polres = SigningKey::from_seed(&[3; 32], Signer::Agency(agency(POLRES)));
    let router = SigningKey::from_seed(&[4; 32], Signer::Router);
    let signers = [&dinsos, &uptd, &polres, &router]
        .into_iter()
        .fold(Signers::new(), |signers, key| {
            signers.with(key.signer().clone(), key.verifying_key())
        });
    World {
        registry: registry(),
        signers,
        dinsos,
        uptd,
        polres,
        router,
    }
}

/// A record as a writer would store it, with every part the bus would supply.
struct Stored {
    subject: String,
    tokens: SubjectTokens,
    stored_at: Timestamp,
    event: Event,
    bytes: Vec<u8>,
    hash: EventHash,
    signature: Option<Signature>,
    state_json: String,
}

impl Stored {
    fn new(event: Event, after: &Referral, key: &SigningKey, stored_at: Timestamp) -> Stored {
        let subject = format!(
            "refbus.v1.ref.{}.{}.{}",
            after.recipient(),
            after.sender(),
            after.id
        );
        let bytes = chain::canonical_bytes(&event);
        Stored {
            tokens: SubjectTokens {
                recipient: after.recipient().clone(),
                sender: after.sender().clone(),
                referral: after.id,
            },
            signature: Some(key.sign(&subject, &bytes)),
            hash: chain::hash(&event),
            subject,
            stored_at,
            event,
            bytes,
            state_json: serde_json::to_string(&after.clone().into_snapshot()).unwrap(),
        }
    }

    fn claim(&self) -> Claim<'_> {
        Claim {
            subject: &self.subject,
            tokens: &self.tokens,
            stored_at: self.stored_at,
            event: &self.event,
            event_bytes: &self.bytes,
            stored_hash: self.hash,
            signature: self.signature.as_ref(),
            state_json: &self.state_json,
        }
    }
}

const T0: &str = "2026-03-02T09:00:00+08:00";

fn request(command: Command, actor: refbus_core::Actor, id: &str) -> Request {
    Request {
        command,
        actor,
        request_id: Some(RequestId::new(id).unwrap()),
    }
}

/// Dinsos refers someone to UPTD PPA; the record of the creation and the state after it.
fn creation(world: &World) -> (Stored, Referral) {
    let create = Command::Create(Box::new(common::creation(
        DINSOS,
        UPTD,
        "shelter",
        Priority::Urgent,
    )));
    let recorded = record(
        &world.registry,
        None,
        &request(create, operator(DINSOS), "c1"),
        at(T0),
    )
    .unwrap();
    let stored = Stored::new(recorded.event, &recorded.state, &world.dinsos, at(T0));
    (stored, recorded.state)
}

/// UPTD PPA accepts at `when`; the record as UPTD PPA's adapter would store it at `stored_at`.
fn acceptance(world: &World, before: &Referral, when: &str, stored_at: &str) -> Stored {
    let recorded = record(
        &world.registry,
        Some(before),
        &request(Command::Accept, operator(UPTD), "a1"),
        at(when),
    )
    .unwrap();
    Stored::new(recorded.event, &recorded.state, &world.uptd, at(stored_at))
}

fn checker(world: &World) -> Checker<'_> {
    Checker {
        registry: &world.registry,
        signers: &world.signers,
        max_skew: Some(Duration::from_secs(120)),
    }
}

fn problem(world: &World, stored: &Stored, before: Option<&Referral>) -> Problem {
    checker(world)
        .check(&stored.claim(), before.cloned())
        .expect_err("the check must refuse this record")
        .problem
}

#[test]
fn records_as_refbus_writes_them_pass() {
    let world = world();
    let (created, state) = creation(&world);
    let after = checker(&world).check(&created.claim(), None).unwrap();
    assert_eq!(after, state);
    let accepted = acceptance(
        &world,
        &state,
        "2026-03-02T09:10:00+08:00",
        "2026-03-02T09:10:01+08:00",
    );
    let after = checker(&world)
        .check(&accepted.claim(), Some(state))
        .unwrap();
    assert_eq!(after.status, refbus_core::Status::Accepted);
}

#[test]
fn a_record_on_another_referrals_subject_or_parties_is_refused() {
    let world = world();
    let (mut created, _) = creation(&world);
    // Copied onto a subject that names Polres as the recipient (a shadow copy).
    created.subject = created.subject.replace(UPTD, POLRES);
    created.tokens.recipient = agency(POLRES);
    assert_eq!(problem(&world, &created, None), Problem::WrongSubject);

    let (mut created, _) = creation(&world);
    // Naming another referral's id in its subject.
    created.tokens.referral = refbus_core::ReferralId::from_bytes([7; 16]);
    assert_eq!(problem(&world, &created, None), Problem::WrongSubject);
}

#[test]
fn a_record_whose_signature_does_not_hold_is_refused() {
    let world = world();
    let (mut unsigned, _) = creation(&world);
    unsigned.signature = None;
    assert_eq!(problem(&world, &unsigned, None), Problem::Signature);

    // Polres signs an event whose author is Dinsos.
    let (mut impostor, _) = creation(&world);
    impostor.signature = Some(world.polres.sign(&impostor.subject, &impostor.bytes));
    assert_eq!(problem(&world, &impostor, None), Problem::Signature);

    // Dinsos's key, but Polres claims to be Dinsos in the signature.
    let (mut relabelled, _) = creation(&world);
    let mut signature = world.polres.sign(&relabelled.subject, &relabelled.bytes);
    signature.by = Signer::Agency(agency(DINSOS));
    relabelled.signature = Some(signature);
    assert_eq!(problem(&world, &relabelled, None), Problem::Signature);

    // A router signature on an agency's event.
    let (mut routed, _) = creation(&world);
    routed.signature = Some(world.router.sign(&routed.subject, &routed.bytes));
    assert_eq!(problem(&world, &routed, None), Problem::Signature);
}

#[test]
fn an_altered_event_or_hash_is_refused() {
    let world = world();
    let (mut altered, _) = creation(&world);
    let text = String::from_utf8(altered.bytes.clone()).unwrap();
    altered.bytes = text.replace("urgent", "routine").into_bytes();
    assert_eq!(problem(&world, &altered, None), Problem::Altered);
}

#[test]
fn an_event_its_author_may_not_make_is_refused_even_when_signed() {
    let world = world();
    let (_, state) = creation(&world);
    // Dinsos accepts its own referral (only the recipient may), signed with its own key.
    let event = Event {
        referral_id: state.id,
        case_id: state.creation.case_id.clone(),
        seq: 2,
        at: at("2026-03-02T09:05:00+08:00"),
        actor: operator(DINSOS),
        request_id: None,
        change: refbus_core::Change::Accepted,
        prev_hash: state.last_hash,
    };
    let after = refbus_core::evolve(Some(state.clone()), &event).unwrap();
    let forged = Stored::new(
        event,
        &after,
        &world.dinsos,
        at("2026-03-02T09:05:00+08:00"),
    );
    assert_eq!(problem(&world, &forged, Some(&state)), Problem::Refused);
}

#[test]
fn an_event_out_of_its_chain_is_refused() {
    let world = world();
    let (_, state) = creation(&world);
    let mut other = state.clone();
    other.last_hash = EventHash([9; 32]);
    let accepted = acceptance(
        &world,
        &other,
        "2026-03-02T09:10:00+08:00",
        "2026-03-02T09:10:00+08:00",
    );
    assert_eq!(
        problem(&world, &accepted, Some(&state)),
        Problem::OutOfChain
    );
}

#[test]
fn a_stored_state_that_its_events_do_not_make_is_refused() {
    let world = world();
    let (mut created, made) = creation(&world);
    let stored = created.state_json.clone();
    created.state_json = stored.replace("\"requested\"", "\"completed\"");
    assert_eq!(problem(&world, &created, None), Problem::WrongState);
    // The stored bytes must be the state's encoding exactly: not cut short, not longer, not
    // the same state spaced differently.
    let cut_short = stored[..stored.len() - 1].to_owned();
    let longer = format!("{stored} ");
    let spaced = stored.replacen(':', ": ", 1);
    for state_json in [cut_short, longer, spaced] {
        created.state_json = state_json;
        assert_eq!(problem(&world, &created, None), Problem::WrongState);
    }
    created.state_json = stored;
    let after = checker(&world).check(&created.claim(), None).unwrap();
    // The state the check gives back keeps what the stored state leaves to the creation.
    assert!(after.creation.identity.is_some());
    assert_eq!(after, made);
}

#[test]
fn a_back_dated_event_is_refused() {
    let world = world();
    let (_, state) = creation(&world);
    // Stamped an hour before JetStream stored it: a late acceptance made to look timely.
    let late = acceptance(
        &world,
        &state,
        "2026-03-02T09:20:00+08:00",
        "2026-03-02T10:20:00+08:00",
    );
    assert_eq!(problem(&world, &late, Some(&state)), Problem::Time);
    // Stamped before its predecessor.
    let mut earlier = state.clone();
    earlier.updated_at = at("2026-03-02T09:30:00+08:00");
    let before_it = acceptance(
        &world,
        &state,
        "2026-03-02T09:20:00+08:00",
        "2026-03-02T09:20:00+08:00",
    );
    assert_eq!(problem(&world, &before_it, Some(&earlier)), Problem::Time);
    // Within the tolerance: believed.
    let prompt = acceptance(
        &world,
        &state,
        "2026-03-02T09:20:00+08:00",
        "2026-03-02T09:21:30+08:00",
    );
    assert!(checker(&world).check(&prompt.claim(), Some(state)).is_ok());
}
