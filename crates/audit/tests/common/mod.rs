//! What the audit's tests share: the Maros registry, test signing keys, writing referral events
//! as an adapter and clock items as the router would (core `decide`/`record`, then an append),
//! and copying a stream to another server as someone rebuilding it from a copy would.
#![allow(
    dead_code,
    unreachable_pub,
    reason = "each test file uses a part of it"
)]

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use async_nats::jetstream;
use refbus_audit::verify::{Options, Outcome, verify_bus};
use refbus_audit::{Report, checks};
use refbus_bus::{Append, Bus, EventRecord, Idempotency, Stored, StreamSettings, Verifier};
use refbus_core::command::{Command, Request};
use refbus_core::ids::OperatorId;
use refbus_core::referral::{Consent, Creation, Priority};
use refbus_core::{Actor, AgencyId, Due, Registry, RequestId, Timestamp, decide, evaluate, evolve};

pub const T0: &str = "2026-03-02T09:00:00+08:00";

pub fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

pub fn t0_plus(minutes: u64) -> Timestamp {
    at(T0).plus(std::time::Duration::from_secs(minutes * 60))
}

pub fn agency(id: &str) -> AgencyId {
    AgencyId::new(id).unwrap()
}

pub fn operator(id: &str) -> Actor {
    Actor::Agency {
        agency: agency(id),
        system: None,
        operator: OperatorId::new("op").unwrap(),
    }
}

pub fn maros() -> Arc<Registry> {
    static REGISTRY: std::sync::OnceLock<Arc<Registry>> = std::sync::OnceLock::new();
    REGISTRY
        .get_or_init(|| {
            let path =
                Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/refbus.toml");
            Arc::new(refbus_config::load(path).unwrap())
        })
        .clone()
}

pub fn keys() -> &'static refbus_seal::signing::SigningKeys {
    static KEYS: std::sync::OnceLock<refbus_seal::signing::SigningKeys> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| refbus_seal::signing::SigningKeys::generate(&maros()))
}

/// The record check with those keys (event times are the tests', not JetStream's).
pub fn verifier() -> Verifier {
    Verifier::new(maros(), Arc::new(keys().signers()), None)
}

pub async fn bus(url: &str) -> Bus {
    Bus::connect(url, &StreamSettings::default()).await.unwrap()
}

fn key_of(actor: &Actor) -> refbus_core::signature::SigningKey {
    keys().key(&refbus_core::signature::Signer::of(actor))
}

/// Writes what `command` decides on the referral's current state, as an adapter does.
pub async fn write(
    bus: &Bus,
    current: Option<&Stored<EventRecord>>,
    command: Command,
    actor: Actor,
    request: &str,
    now: Timestamp,
) -> Stored<EventRecord> {
    let registry = maros();
    let state = current.map(|stored| &stored.record.state);
    let request = Request {
        command,
        actor,
        request_id: Some(RequestId::new(request).unwrap()),
    };
    let event = decide(&registry, state, &request, now)
        .unwrap()
        .events
        .remove(0);
    let after = evolve(state.cloned(), &event).unwrap();
    let request_id = RequestId::new(format!("test:{}:{}", after.id, event.seq)).unwrap();
    let writer = event
        .actor
        .agency()
        .cloned()
        .unwrap_or_else(|| agency("test-router"));
    let key = key_of(&event.actor);
    let (appended, _) = bus
        .append(
            &key,
            Append::after(
                event,
                &after,
                current.map_or(0, |stored| stored.seq),
                Idempotency::Request {
                    agency: &writer,
                    request_id: &request_id,
                },
            ),
        )
        .await
        .unwrap();
    bus.event_at(appended.seq).await.unwrap().unwrap()
}

/// Records, as the router does at `now`, each item due whose key `keep` accepts; the record
/// after the last.
pub async fn record_due(
    bus: &Bus,
    mut current: Stored<EventRecord>,
    now: Timestamp,
    keep: impl Fn(&Due) -> bool,
) -> Stored<EventRecord> {
    let registry = maros();
    for item in evaluate(&current.record.state, &registry, now).due {
        if !keep(&item) {
            continue;
        }
        let key = item.key();
        let request = Request {
            command: Command::Record(item),
            actor: Actor::Router,
            request_id: None,
        };
        let recorded =
            refbus_core::record(&registry, Some(&current.record.state), &request, now).unwrap();
        let referral = recorded.state.id;
        let (appended, _) = bus
            .append(
                &key_of(&Actor::Router),
                Append::after(
                    recorded.event,
                    &recorded.state,
                    current.seq,
                    Idempotency::ClockItem {
                        referral,
                        key: &key,
                    },
                ),
            )
            .await
            .unwrap();
        current = bus.event_at(appended.seq).await.unwrap().unwrap();
    }
    current
}

pub fn creation(case: &str, sender: &str, recipient: &str, priority: Priority) -> Creation {
    Creation {
        case_id: case.parse().unwrap(),
        sender: agency(sender),
        recipient: agency(recipient),
        service: "psychological_counselling".parse().unwrap(),
        priority,
        categories: vec![],
        child: false,
        consent: Consent {
            services: true,
            disclose_to_agencies: true,
            override_justification: None,
        },
        case_reported_at: None,
        identity: None,
        note: None,
        policy_version: "2026-01".parse().unwrap(),
        parent: None,
        sex: Default::default(),
        age_band: Default::default(),
    }
}

/// Dinas Sosial refers a person of `case` to UPTD PPA (emergency) at `now`.
pub async fn create(bus: &Bus, case: &str, request: &str, now: Timestamp) -> Stored<EventRecord> {
    let creation = creation(case, "maros-dinsos", "maros-uptd-ppa", Priority::Emergency);
    write(
        bus,
        None,
        Command::Create(Box::new(creation)),
        operator("maros-dinsos"),
        request,
        now,
    )
    .await
}

/// UPTD PPA's next step on `current`.
pub async fn recipient_does(
    bus: &Bus,
    current: &Stored<EventRecord>,
    command: Command,
    now: Timestamp,
) -> Stored<EventRecord> {
    let request = format!("r-{}-{}", current.record.state.id, current.record.state.seq);
    write(
        bus,
        Some(current),
        command,
        operator("maros-uptd-ppa"),
        &request,
        now,
    )
    .await
}

/// Verifies the stream `bus` reads with the standard checks, clocks recomputed to `now`.
pub async fn verify(bus: &Bus, now: Timestamp) -> Report {
    verify_with(bus, now, Vec::new()).await
}

/// What happens to a message when a stream is copied.
pub enum Copy {
    Keep,
    /// Copied with this payload instead.
    Payload(Vec<u8>),
    /// Left out: the copy's sequences close up behind it.
    Omit,
    /// Copied, then deleted from the copy: its sequence stays a hole.
    Delete,
}

/// Copies the events stream of `from` to `to`, message by message in the order `order` gives
/// (indexes into the original's messages), each treated as `treat` says; the copy is then
/// configured exactly as the original (deletes denied), as an administrator rebuilding a stream
/// from a copy of its files would leave it.
pub async fn copy_stream(
    from: &str,
    to: &str,
    order: impl Fn(usize) -> usize,
    treat: impl Fn(&async_nats::jetstream::message::StreamMessage) -> Copy,
) {
    copy_stream_rewriting(from, to, order, treat, false).await;
}

/// [`copy_stream`]; with `rewrite_prev_seq`, each referral record's `Refbus-Prev-Seq` header
/// (not signed) is rewritten to its predecessor's sequence in the copy, as a careful forger
/// would.
pub async fn copy_stream_rewriting(
    from: &str,
    to: &str,
    order: impl Fn(usize) -> usize,
    treat: impl Fn(&async_nats::jetstream::message::StreamMessage) -> Copy,
    rewrite_prev_seq: bool,
) {
    let mut last_of: std::collections::HashMap<String, u64> = std::collections::HashMap::new();
    let source = jetstream::new(async_nats::connect(from).await.unwrap());
    let target = jetstream::new(async_nats::connect(to).await.unwrap());
    let mut stream = source.get_stream("REFBUS_EVENTS").await.unwrap();
    let info = stream.info().await.unwrap().clone();
    let mut config = info.config.clone();
    config.deny_delete = false;
    config.deny_purge = false;
    let copy = target.create_stream(config).await.unwrap();
    let mut originals = Vec::new();
    for seq in 1..=info.state.last_sequence {
        originals.push(stream.get_raw_message(seq).await.unwrap());
    }
    let mut delete = Vec::new();
    for index in 0..originals.len() {
        let message = &originals[order(index)];
        let payload = match treat(message) {
            Copy::Keep | Copy::Delete => message.payload.to_vec(),
            Copy::Payload(payload) => payload,
            Copy::Omit => continue,
        };
        let mut headers = async_nats::HeaderMap::new();
        for (name, values) in message.headers.iter() {
            if name.to_string().starts_with("Nats-Expected") {
                continue;
            }
            for value in values {
                headers.append(name.clone(), value.clone());
            }
        }
        let subject = message.subject.to_string();
        if rewrite_prev_seq && subject.starts_with("refbus.v1.ref.") {
            let prev = last_of.get(&subject).copied().unwrap_or(0);
            headers.insert(refbus_bus::headers::PREV_SEQ, prev.to_string().as_str());
        }
        let ack = target
            .publish_with_headers(message.subject.to_string(), headers, payload.into())
            .await
            .unwrap()
            .await
            .unwrap();
        last_of.insert(subject, ack.sequence);
        if matches!(treat(message), Copy::Delete) {
            delete.push(ack.sequence);
        }
    }
    for seq in delete {
        copy.delete_message(seq).await.unwrap();
    }
    let mut config = info.config;
    config.deny_delete = true;
    config.deny_purge = true;
    target.update_stream(config).await.unwrap();
}

/// Someone's identity, as an agency system would send it (what must never leave sealed).
pub const IDENTITY: &str = r#"{"full_name":"Siti Aminah Daeng Ngai","nik":"7309014107900001","address":"Jl. Poros Maros 12"}"#;

/// [`create`] with the person's identity sealed for both agencies, as the adapter seals it.
pub async fn create_with_identity(
    bus: &Bus,
    case: &str,
    request: &str,
    now: Timestamp,
) -> Stored<EventRecord> {
    let mut creation = creation(case, "maros-dinsos", "maros-uptd-ppa", Priority::Emergency);
    let (dinsos, ppa) = (
        refbus_seal::KeyPair::generate(),
        refbus_seal::KeyPair::generate(),
    );
    let sealed = refbus_seal::seal(
        IDENTITY.as_bytes(),
        &[
            (&creation.sender, dinsos.public()),
            (&creation.recipient, ppa.public()),
        ],
        b"test identity",
    )
    .unwrap();
    creation.identity = Some(sealed);
    write(
        bus,
        None,
        Command::Create(Box::new(creation)),
        operator("maros-dinsos"),
        request,
        now,
    )
    .await
}

/// Three referrals, each created, received, accepted and started (the acknowledge clock stops
/// at 5 minutes, before any warning), written interleaved: a, b, c, a, b, c...
pub async fn three_referrals(bus: &refbus_bus::Bus) -> Vec<Vec<Stored<EventRecord>>> {
    let mut histories: Vec<Vec<Stored<EventRecord>>> = Vec::new();
    for (index, case) in ["MRS-A-1", "MRS-B-1", "MRS-C-1"].into_iter().enumerate() {
        histories.push(vec![
            create(bus, case, &format!("create-{index}"), t0_plus(0)).await,
        ]);
    }
    let steps = [
        (Command::ConfirmReceipt, 1),
        (Command::Accept, 5),
        (Command::Start, 10),
    ];
    for (command, minutes) in steps {
        for history in &mut histories {
            let last = history.last().unwrap().clone();
            history.push(recipient_does(bus, &last, command.clone(), t0_plus(minutes)).await);
        }
    }
    histories
}

/// Before any warning of any referral could fall due.
pub fn quiet_now() -> refbus_core::Timestamp {
    t0_plus(20)
}

/// Verifies the stream `bus` reads with the standard checks and `extra`, clocks recomputed to
/// `now`.
pub async fn verify_with(bus: &Bus, now: Timestamp, extra: Vec<Box<dyn checks::Check>>) -> Report {
    let options = Options {
        now,
        resume: None,
        progress: false,
    };
    let mut all = checks::standard(maros(), refbus_core::audit::DEFAULT_TOLERANCE);
    all.extend(extra);
    match verify_bus(bus, &verifier(), all, &options, &AtomicBool::new(false))
        .await
        .unwrap()
    {
        Outcome::Done(report) => report,
        Outcome::Stopped { .. } => panic!("not stopped"),
    }
}
