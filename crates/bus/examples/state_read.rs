//! How the current state of a referral is best read: one direct read of its last message
//! (which carries the state after its event), or a replay of all its events through the core.
//!
//! `cargo run --release -p refbus-bus --example state_read` (nats-server from
//! `scripts/install-tools.sh`). Starts its own server, writes 2,000 referrals of 8 events each
//! as adapters write them, then times both ways of reading each referral's state, one read at a
//! time (latency) and 32 at once (throughput). The figures and the decision are in
//! docs/BENCHMARKS.md and docs/ARCHITECTURE.md.

use std::time::{Duration, Instant};

use futures::StreamExt;
use refbus_bus::{Append, Bus, Idempotency, StreamSettings, subjects};
use refbus_core::command::{Command, Request};
use refbus_core::ids::OperatorId;
use refbus_core::referral::{Consent, Creation, Priority, SealedPayload};
use refbus_core::{Actor, AgencyId, Referral, RequestId, Timestamp, decide, evolve};

const REFERRALS: usize = 2_000;

fn actor(agency: &str) -> Actor {
    Actor::Agency {
        agency: AgencyId::new(agency).unwrap(),
        system: None,
        operator: OperatorId::new("op").unwrap(),
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let registry = refbus_config::load(root.join("deploy/config/refbus.toml")).unwrap();
    let keys = refbus_seal::signing::SigningKeys::generate(&registry);
    let nats = refbus_testkit::NatsServer::start().unwrap();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let t0 = Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap();
    let note = |sender: &str, recipient: &str| SealedPayload {
        recipients: vec![
            AgencyId::new(sender).unwrap(),
            AgencyId::new(recipient).unwrap(),
        ],
        envelope: vec![7; 120],
    };

    // Write the referrals: create, receipt, acceptance, start, three notes, completion.
    let mut subjects_written = Vec::new();
    for n in 0..REFERRALS {
        let creation = Creation {
            case_id: "MRS-STATE".parse().unwrap(),
            sender: AgencyId::new("maros-dinsos").unwrap(),
            recipient: AgencyId::new("maros-uptd-ppa").unwrap(),
            service: "shelter".parse().unwrap(),
            priority: Priority::Urgent,
            categories: vec!["domestic_violence".parse().unwrap()],
            child: false,
            consent: Consent {
                services: true,
                disclose_to_agencies: true,
                override_justification: None,
            },
            case_reported_at: None,
            identity: Some(note("maros-dinsos", "maros-uptd-ppa")),
            note: None,
            policy_version: "2026-01".parse().unwrap(),
            parent: None,
            sex: Default::default(),
            age_band: Default::default(),
        };
        let steps: Vec<(Command, Actor)> = vec![
            (Command::Create(Box::new(creation)), actor("maros-dinsos")),
            (Command::ConfirmReceipt, actor("maros-uptd-ppa")),
            (Command::Accept, actor("maros-uptd-ppa")),
            (Command::Start, actor("maros-uptd-ppa")),
            (
                Command::AddNote {
                    note: note("maros-dinsos", "maros-uptd-ppa"),
                },
                actor("maros-dinsos"),
            ),
            (
                Command::AddNote {
                    note: note("maros-dinsos", "maros-uptd-ppa"),
                },
                actor("maros-uptd-ppa"),
            ),
            (
                Command::AddNote {
                    note: note("maros-dinsos", "maros-uptd-ppa"),
                },
                actor("maros-dinsos"),
            ),
            (
                Command::Complete {
                    outcome: refbus_core::referral::Outcome {
                        code: "service_provided".parse().unwrap(),
                        note: None,
                    },
                },
                actor("maros-uptd-ppa"),
            ),
        ];
        let mut state: Option<Referral> = None;
        let mut seq = 0;
        for (index, (command, actor)) in steps.into_iter().enumerate() {
            let request = Request {
                command,
                actor,
                request_id: Some(RequestId::new(format!("s{n}-{index}")).unwrap()),
            };
            let at = t0.plus(Duration::from_secs(60 * index as u64));
            let event = decide(&registry, state.as_ref(), &request, at)
                .unwrap()
                .events
                .remove(0);
            let after = evolve(state.take(), &event).unwrap();
            let subject = subjects::referral(after.recipient(), after.sender(), &after.id);
            let request_id = RequestId::new(format!("s{n}-{index}")).unwrap();
            let writer = event.actor.agency().cloned().unwrap();
            let idempotency = Idempotency::Request {
                agency: &writer,
                request_id: &request_id,
            };
            let key = keys.key(&refbus_core::signature::Signer::of(&event.actor));
            let (appended, _) = bus
                .append(&key, Append::after(event, &after, seq, idempotency))
                .await
                .unwrap();
            seq = appended.seq;
            state = Some(after);
            if index == 7 {
                subjects_written.push(subject);
            }
        }
    }

    // One read at a time: latency.
    let mut last_times = Vec::new();
    let mut replay_times = Vec::new();
    for subject in &subjects_written {
        let started = Instant::now();
        let last = bus.last(subject).await.unwrap().unwrap();
        last_times.push(started.elapsed());
        let started = Instant::now();
        let mut replayed: Option<Referral> = None;
        for stored in bus.history(subject).await.unwrap() {
            replayed = Some(evolve(replayed, &stored.record.event).unwrap());
        }
        replay_times.push(started.elapsed());
        assert_eq!(
            refbus_bus::record::snapshot(&replayed.unwrap()),
            last.record.state
        );
    }
    last_times.sort();
    replay_times.sort();

    // 32 at once: throughput.
    let throughput = |replay: bool| {
        let bus = bus.clone();
        let subjects_written = subjects_written.clone();
        async move {
            let started = Instant::now();
            futures::stream::iter(subjects_written)
                .map(|subject| {
                    let bus = bus.clone();
                    async move {
                        if replay {
                            let mut state: Option<Referral> = None;
                            for stored in bus.history(&subject).await.unwrap() {
                                state = Some(evolve(state, &stored.record.event).unwrap());
                            }
                        } else {
                            bus.last(&subject).await.unwrap();
                        }
                    }
                })
                .buffer_unordered(32)
                .collect::<Vec<()>>()
                .await;
            REFERRALS as f64 / started.elapsed().as_secs_f64()
        }
    };
    let last_rate = throughput(false).await;
    let replay_rate = throughput(true).await;

    println!(
        "current state of a referral with 8 events ({REFERRALS} referrals, one nats-server, loopback)"
    );
    println!(
        "  last message (direct get)   p50 {:>6} us  p99 {:>6} us  {:>7.0} reads/s at 32 in flight",
        percentile(&last_times, 0.50).as_micros(),
        percentile(&last_times, 0.99).as_micros(),
        last_rate
    );
    println!(
        "  replay of its 8 events      p50 {:>6} us  p99 {:>6} us  {:>7.0} reads/s at 32 in flight",
        percentile(&replay_times, 0.50).as_micros(),
        percentile(&replay_times, 0.99).as_micros(),
        replay_rate
    );
    println!(
        "  replay / last: {:.1}x the latency, {:.2}x the throughput",
        percentile(&replay_times, 0.5).as_secs_f64() / percentile(&last_times, 0.5).as_secs_f64(),
        replay_rate / last_rate
    );
}
