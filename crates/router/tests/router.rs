//! The router against a real nats-server with a manual clock: time moves only when the test
//! moves it, so hours of clocks run in milliseconds and nothing sleeps. Referral events are
//! written to the bus as an adapter writes them (core `decide`, then an append).
//!
//! Policy: the Kabupaten Maros registry (`deploy/config/refbus.toml`). An emergency referral's
//! acknowledge clock is 1 h; its "emergency" escalation notifies the recipient's supervisor at
//! 50%, the head and the Tim Terpadu coordinator at the breach (again 15 min later), and
//! reroutes to the alternate agency 30 min after the breach.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use refbus_bus::{Append, Bus, EventRecord, Idempotency, Item, Stored, StreamSettings, subjects};
use refbus_core::command::{Command, Request};
use refbus_core::ids::{ClockId, OperatorId};
use refbus_core::referral::{Consent, Creation, Priority};
use refbus_core::{Actor, AgencyId, Change, Registry, RequestId, Timestamp, decide, evolve};
use refbus_router::{Activity, ManualClock, Options, Router};
use refbus_testkit::NatsServer;
use tokio::sync::broadcast;

const T0: &str = "2026-03-02T09:00:00+08:00";

fn at(text: &str) -> Timestamp {
    Timestamp::parse_rfc3339(text).unwrap()
}

fn agency(id: &str) -> AgencyId {
    AgencyId::new(id).unwrap()
}

fn operator(id: &str) -> Actor {
    Actor::Agency {
        agency: agency(id),
        system: None,
        operator: OperatorId::new("op").unwrap(),
    }
}

fn maros() -> Arc<Registry> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/config/refbus.toml");
    Arc::new(refbus_config::load(path).unwrap())
}

/// The signing keys of every writer in these tests.
fn keys() -> &'static refbus_seal::signing::SigningKeys {
    static KEYS: std::sync::OnceLock<refbus_seal::signing::SigningKeys> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| refbus_seal::signing::SigningKeys::generate(&maros()))
}

/// The record check with those keys (manual clocks: event times are the tests').
fn verifier(registry: &Arc<Registry>) -> refbus_bus::Verifier {
    refbus_bus::Verifier::new(registry.clone(), Arc::new(keys().signers()), None)
}

/// The agency a test append is written for (its idempotency key's agency).
fn writer_of(actor: &Actor) -> AgencyId {
    actor
        .agency()
        .cloned()
        .unwrap_or_else(|| agency("test-router"))
}

fn key_of(actor: &Actor) -> refbus_core::signature::SigningKey {
    keys().key(&refbus_core::signature::Signer::of(actor))
}

/// An acceptance of `state` as `who` stamps it at `when`, written by hand: what a system that
/// bypasses its adapter (or a forger) would put on the bus.
fn acceptance_after(
    state: &refbus_core::Referral,
    who: &str,
    when: Timestamp,
    request_id: Option<RequestId>,
) -> refbus_core::Event {
    refbus_core::Event {
        referral_id: state.id,
        case_id: state.creation.case_id.clone(),
        seq: 2,
        at: when,
        actor: operator(who),
        request_id,
        change: Change::Accepted,
        prev_hash: state.last_hash,
    }
}

/// Writes what `command` decides on the referral's current state, as an adapter does.
async fn write(
    bus: &Bus,
    registry: &Registry,
    current: Option<&Stored<EventRecord>>,
    command: Command,
    actor: Actor,
    request: &str,
    now: Timestamp,
) -> Stored<EventRecord> {
    let state = current.map(|stored| &stored.record.state);
    let request = Request {
        command,
        actor,
        request_id: Some(RequestId::new(request).unwrap()),
    };
    let event = decide(registry, state, &request, now)
        .unwrap()
        .events
        .remove(0);
    let after = evolve(state.cloned(), &event).unwrap();
    let request_id = RequestId::new(format!("test:{}:{}", after.id, event.seq)).unwrap();
    let writer = writer_of(&event.actor);
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

fn creation(sender: &str, recipient: &str, service: &str, priority: Priority) -> Creation {
    Creation {
        case_id: "MRS-TEST-1".parse().unwrap(),
        sender: agency(sender),
        recipient: agency(recipient),
        service: service.parse().unwrap(),
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

/// Dinas Sosial refers someone to UPTD PPA for emergency counselling: the referral most tests
/// watch (acknowledge clock 1 h).
async fn create_emergency(
    bus: &Bus,
    registry: &Registry,
    request: &str,
    now: Timestamp,
) -> Stored<EventRecord> {
    let creation = creation(
        "maros-dinsos",
        "maros-uptd-ppa",
        "psychological_counselling",
        Priority::Emergency,
    );
    let command = Command::Create(Box::new(creation));
    write(
        bus,
        registry,
        None,
        command,
        operator("maros-dinsos"),
        request,
        now,
    )
    .await
}

struct Running {
    activity: broadcast::Receiver<Activity>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
}

async fn start_router(
    nats: &NatsServer,
    registry: &Arc<Registry>,
    clock: ManualClock,
    replica: &str,
) -> Running {
    let options = Options {
        replica: replica.to_owned(),
        ..Options::default()
    };
    start_router_with(nats, registry, clock, options).await.0
}

/// Starts a router with `options`; returns it once ready, with its ready report.
async fn start_router_with(
    nats: &NatsServer,
    registry: &Arc<Registry>,
    clock: ManualClock,
    options: Options,
) -> (Running, Activity) {
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let router = Router::new(
        bus,
        verifier(registry),
        keys().router(),
        Arc::new(clock.clone()),
        options,
    );
    let mut activity = router.activity();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        router
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    // Ready once its timers are rebuilt.
    let ready = loop {
        let activity = activity.recv().await.unwrap();
        if let Activity::Ready { .. } = activity {
            break activity;
        }
    };
    let running = Running {
        activity,
        stop,
        task,
    };
    (running, ready)
}

impl Running {
    /// Waits for `count` recordings, 30 s at most in all (other activity does not extend
    /// the wait); returns their keys in order.
    async fn recorded(&mut self, count: usize) -> Vec<String> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        let mut keys = Vec::new();
        while keys.len() < count {
            let activity = tokio::time::timeout_at(deadline, self.activity.recv())
                .await
                .expect("the router recorded too little")
                .unwrap();
            if let Activity::Recorded { key, .. } = activity {
                keys.push(key);
            }
        }
        keys
    }

    async fn stop(self) {
        let _ = self.stop.send(());
        self.task.await.unwrap();
    }
}

/// Every router-recorded item on a referral, in order.
async fn recorded_on(bus: &Bus, referral: &refbus_core::ReferralId) -> Vec<String> {
    recorded_on_with(bus, &maros(), referral).await
}

/// [`recorded_on`] for a referral of `registry` (its records are checked against it).
async fn recorded_on_with(
    bus: &Bus,
    registry: &Arc<Registry>,
    referral: &refbus_core::ReferralId,
) -> Vec<String> {
    bus.checked_history(&verifier(registry), &subjects::referral_pattern(referral))
        .await
        .unwrap()
        .into_iter()
        .filter_map(|stored| match stored.record.event.change {
            Change::ClockWarning {
                clock, permille, ..
            } => Some(format!("{clock}.warning.{permille}")),
            Change::ClockBreached { clock, .. } => Some(format!("{clock}.breach")),
            Change::Escalated {
                clock,
                level,
                repetition,
                ..
            } => Some(format!("{clock}.level.{level}.{repetition}")),
            Change::RerouteRequested { to, .. } => Some(format!("reroute.{to}")),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn warnings_breach_and_each_level_are_recorded_once_at_their_time_with_notices() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let created = create_emergency(&bus, &registry, "c1", at(T0)).await;
    let id = created.record.state.id;
    let clock = ManualClock::new(at(T0));
    let mut router = start_router(&nats, &registry, clock.clone(), "a").await;

    clock.advance_to(at("2026-03-02T09:29:59+08:00"));
    clock.advance_to(at("2026-03-02T09:30:00+08:00"));
    let mut keys = router.recorded(2).await;
    keys.sort();
    assert_eq!(
        keys,
        [
            "acknowledge_emergency.level.1.0",
            "acknowledge_emergency.warning.500"
        ]
    );

    clock.advance_to(at("2026-03-02T10:00:00+08:00"));
    let keys = router.recorded(3).await;
    assert_eq!(keys.len(), 3, "warning 75%, breach, level 2: {keys:?}");

    clock.advance_to(at("2026-03-02T10:30:00+08:00"));
    router.recorded(2).await;
    let history = recorded_on(&bus, &id).await;
    assert_eq!(
        history,
        [
            "acknowledge_emergency.warning.500",
            "acknowledge_emergency.level.1.0",
            "acknowledge_emergency.warning.750",
            "acknowledge_emergency.breach",
            "acknowledge_emergency.level.2.0",
            "acknowledge_emergency.level.2.1",
            "reroute.maros-rsud",
        ]
    );
    // The coordinator, not a party, got notices for level 2 (twice: the repeat).
    let notices: Vec<_> = futures::StreamExt::collect::<Vec<_>>(futures::StreamExt::take(
        bus.watch(
            &verifier(&registry),
            vec![subjects::notices_for(&agency("maros-bappeda"))],
            0,
        )
        .await
        .unwrap(),
        2,
    ))
    .await;
    assert_eq!(notices.len(), 2);

    // Nobody carries out the reroute: the reroute-pending clock escalates it after 30 minutes.
    clock.advance_to(at("2026-03-02T11:00:00+08:00"));
    let keys = router.recorded(2).await;
    assert!(
        keys.contains(&"reroute_pending.breach".to_owned()),
        "{keys:?}"
    );
    router.stop().await;
}

#[tokio::test]
async fn an_acknowledged_escalation_stops_the_later_levels_and_a_stopped_clock_everything() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let first = create_emergency(&bus, &registry, "ack-1", at(T0)).await;
    let accepted_early = create_emergency(&bus, &registry, "ack-2", at(T0)).await;
    write(
        &bus,
        &registry,
        Some(&accepted_early),
        Command::Accept,
        operator("maros-uptd-ppa"),
        "acc",
        at("2026-03-02T09:10:00+08:00"),
    )
    .await;

    let clock = ManualClock::new(at(T0));
    let mut router = start_router(&nats, &registry, clock.clone(), "a").await;
    clock.advance_to(at("2026-03-02T10:00:00+08:00"));
    router.recorded(5).await;
    let current = bus
        .last(&subjects::referral_pattern(&first.record.state.id))
        .await
        .unwrap()
        .unwrap();
    // The coordinator acknowledges level 2.
    write(
        &bus,
        &registry,
        Some(&current),
        Command::AcknowledgeEscalation {
            clock: ClockId::new("acknowledge_emergency").unwrap(),
            level: 2,
        },
        operator("maros-bappeda"),
        "bappeda-ack",
        at("2026-03-02T10:05:00+08:00"),
    )
    .await;
    clock.advance_to(at("2026-03-02T13:00:00+08:00"));
    // Nothing more of that clock; give the router a chance by recording on another referral.
    let probe = create_emergency(&bus, &registry, "probe", at("2026-03-02T12:00:00+08:00")).await;
    let keys = router.recorded(2).await;
    assert!(
        keys.iter()
            .all(|key| key.starts_with("acknowledge_emergency.")),
        "{keys:?}"
    );
    assert_eq!(
        recorded_on(&bus, &first.record.state.id).await,
        [
            "acknowledge_emergency.warning.500",
            "acknowledge_emergency.level.1.0",
            "acknowledge_emergency.warning.750",
            "acknowledge_emergency.breach",
            "acknowledge_emergency.level.2.0",
        ],
        "no repeat and no reroute after the acknowledgement"
    );
    assert!(
        recorded_on(&bus, &accepted_early.record.state.id)
            .await
            .is_empty(),
        "accepted in time: nothing"
    );
    assert!(!recorded_on(&bus, &probe.record.state.id).await.is_empty());
    router.stop().await;
}

#[tokio::test]
async fn on_hold_pauses_the_clock_and_resuming_moves_its_deadline() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    // Routine: 1 working day (8 h) from Monday 09:00 WITA, pausable.
    let created = write(
        &bus,
        &registry,
        None,
        Command::Create(Box::new(creation(
            "maros-dinsos",
            "maros-uptd-ppa",
            "psychological_counselling",
            Priority::Routine,
        ))),
        operator("maros-dinsos"),
        "hold-1",
        at(T0),
    )
    .await;
    let reason = refbus_core::referral::Reason {
        code: "awaiting_person".parse().unwrap(),
        note: None,
    };
    let held = write(
        &bus,
        &registry,
        Some(&created),
        Command::PutOnHold { reason },
        operator("maros-uptd-ppa"),
        "hold",
        at("2026-03-02T10:00:00+08:00"),
    )
    .await;
    let clock = ManualClock::new(at("2026-03-02T10:00:00+08:00"));
    let mut router = start_router(&nats, &registry, clock.clone(), "a").await;
    // Two days on hold: nothing falls due.
    clock.advance_to(at("2026-03-04T10:00:00+08:00"));
    let resumed = write(
        &bus,
        &registry,
        Some(&held),
        Command::Resume,
        operator("maros-uptd-ppa"),
        "resume",
        at("2026-03-04T10:00:00+08:00"),
    )
    .await;
    // 1 h counted before the hold; 7 h left from Wednesday 10:00: the breach is at 16:00... of
    // working hours: Wednesday 10:00-16:00 gives 6 h, Thursday 07:30 + 1 h = 08:30.
    clock.advance_to(at("2026-03-05T08:29:00+08:00"));
    let keys = router.recorded(2).await;
    assert_eq!(
        keys,
        [
            "acknowledge_routine.warning.500",
            "acknowledge_routine.warning.750"
        ]
    );
    clock.advance_to(at("2026-03-05T08:30:00+08:00"));
    let keys = router.recorded(2).await;
    assert_eq!(
        keys,
        [
            "acknowledge_routine.breach",
            "acknowledge_routine.level.1.0"
        ]
    );
    let _ = resumed;
    router.stop().await;
}

#[tokio::test]
async fn two_routers_at_once_record_each_item_exactly_once() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let mut ids = Vec::new();
    for n in 0..20 {
        let created = create_emergency(&bus, &registry, &format!("pair-{n}"), at(T0)).await;
        ids.push(created.record.state.id);
    }
    let clock = ManualClock::new(at(T0));
    let mut first = start_router(&nats, &registry, clock.clone(), "a").await;
    let mut second = start_router(&nats, &registry, clock.clone(), "b").await;
    clock.advance_to(at("2026-03-02T10:30:00+08:00"));
    // Seven items per referral, recorded by one router or the other.
    let mut recorded = 0;
    while recorded < 20 * 7 {
        tokio::select! {
            keys = first.recorded(1) => recorded += keys.len(),
            keys = second.recorded(1) => recorded += keys.len(),
        }
    }
    for id in &ids {
        let history = recorded_on(&bus, id).await;
        assert_eq!(history.len(), 7, "{id}: {history:?}");
        let mut unique = history.clone();
        unique.sort();
        unique.dedup();
        assert_eq!(unique.len(), 7, "{id}: recorded twice: {history:?}");
    }
    first.stop().await;
    second.stop().await;
}

#[tokio::test]
async fn an_event_the_core_would_refuse_is_flagged_and_never_moves_a_clock() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let created = create_emergency(&bus, &registry, "forged-1", at(T0)).await;
    let clock = ManualClock::new(at(T0));
    let mut router = start_router(&nats, &registry, clock.clone(), "a").await;

    // The sender writes an acceptance in its own name straight onto the bus (bypassing its
    // adapter), to silence the clock.
    let state = &created.record.state;
    let forged = acceptance_after(state, "maros-dinsos", at("2026-03-02T09:05:00+08:00"), None);
    let after = evolve(Some(state.clone()), &forged).unwrap();
    let key = key_of(&forged.actor);
    let (writer, request_id) = (writer_of(&forged.actor), RequestId::new("forged").unwrap());
    let idempotency = Idempotency::Request {
        agency: &writer,
        request_id: &request_id,
    };
    bus.append(
        &key,
        Append::after(forged, &after, created.seq, idempotency),
    )
    .await
    .unwrap();
    loop {
        if let Activity::Flagged { referral, why, .. } = router.activity.recv().await.unwrap() {
            assert_eq!(referral, Some(state.id));
            assert!(why.contains("only the recipient may accept"), "{why}");
            break;
        }
    }
    // Fail loud, never silent: the referral's clocks keep running from its last verified
    // state, so the breach of the acknowledge clock is still recorded.
    clock.advance_to(at("2026-03-02T10:01:00+08:00"));
    loop {
        if let Activity::Recorded { referral, key, .. } = router.activity.recv().await.unwrap()
            && referral == state.id
            && key == "acknowledge_emergency.breach"
        {
            break;
        }
    }
    router.stop().await;
}

#[tokio::test]
async fn a_router_restarted_after_its_downtime_records_what_fell_due_meanwhile_once() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let created = create_emergency(&bus, &registry, "down-1", at(T0)).await;
    let clock = ManualClock::new(at(T0));
    let mut router = start_router(&nats, &registry, clock.clone(), "a").await;
    clock.advance_to(at("2026-03-02T09:30:00+08:00"));
    router.recorded(2).await;
    // Aborted mid-flight, like a crash: nothing graceful happens.
    router.task.abort();
    let _ = router.task.await;

    // Ninety minutes pass while no router runs.
    let clock = ManualClock::new(at("2026-03-02T10:30:00+08:00"));
    let mut router = start_router(&nats, &registry, clock, "a").await;
    router.recorded(5).await;
    let history = recorded_on(&bus, &created.record.state.id).await;
    assert_eq!(history.len(), 7, "{history:?}");
    let mut unique = history.clone();
    unique.sort();
    unique.dedup();
    assert_eq!(unique.len(), 7);
    router.stop().await;
}

#[tokio::test]
async fn an_event_stamped_before_its_predecessor_is_refused_and_the_clock_runs_on() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let created = create_emergency(&bus, &registry, "skew-1", at(T0)).await;
    // UPTD PPA's system writes straight onto the bus an acceptance stamped before the creation
    // (refbus's own writers never do: they stamp at least the predecessor's time): the check
    // refuses it, so it stops no clock.
    let state = &created.record.state;
    let backdated = acceptance_after(
        state,
        "maros-uptd-ppa",
        at("2026-03-02T08:50:00+08:00"),
        Some(RequestId::new("skew-accept").unwrap()),
    );
    let after = evolve(Some(state.clone()), &backdated).unwrap();
    let key = key_of(&backdated.actor);
    let (writer, request_id) = (
        writer_of(&backdated.actor),
        RequestId::new("skew-accept").unwrap(),
    );
    let idempotency = Idempotency::Request {
        agency: &writer,
        request_id: &request_id,
    };
    bus.append(
        &key,
        Append::after(backdated, &after, created.seq, idempotency),
    )
    .await
    .unwrap();
    let probe = create_emergency(&bus, &registry, "skew-probe", at(T0)).await;
    let clock = ManualClock::new(at(T0));
    let mut router = start_router(&nats, &registry, clock.clone(), "a").await;
    clock.advance_to(at("2026-03-02T10:30:00+08:00"));
    // Both, created at the same instant and (in truth) never answered, get their seven items.
    router.recorded(14).await;
    assert_eq!(recorded_on(&bus, &probe.record.state.id).await.len(), 7);
    assert_eq!(
        recorded_on(&bus, &created.record.state.id).await,
        recorded_on(&bus, &probe.record.state.id).await
    );
    // And the refused acceptance is on the referral's record as an integrity alert.
    let history = bus
        .history(&subjects::referral_pattern(&created.record.state.id))
        .await
        .unwrap();
    assert!(history.iter().any(|stored| matches!(
        stored.record.event.change,
        Change::IntegrityAlert {
            problem: refbus_core::integrity::Problem::Time,
            ..
        }
    )));
    router.stop().await;
}

#[tokio::test]
async fn a_referral_keeps_its_policy_version_after_a_new_one_comes_into_force() {
    // Version 2026-07, in force from 1 March, doubles the emergency acknowledge target (2 h).
    let mut registry = (*maros()).clone();
    let mut july = registry.policies[0].clone();
    july.version = "2026-07".parse().unwrap();
    july.effective_from = at("2026-03-01T00:00:00+08:00");
    for clock in &mut july.clocks {
        if clock.id.as_str() == "acknowledge_emergency" {
            clock.target = Duration::from_secs(2 * 3600);
        }
    }
    registry.policies.push(july);
    let registry = Arc::new(registry);
    let nats = NatsServer::start().unwrap();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let mut created = Vec::new();
    for version in ["2026-01", "2026-07"] {
        let mut creation = creation(
            "maros-dinsos",
            "maros-uptd-ppa",
            "psychological_counselling",
            Priority::Emergency,
        );
        creation.policy_version = version.parse().unwrap();
        let stored = write(
            &bus,
            &registry,
            None,
            Command::Create(Box::new(creation)),
            operator("maros-dinsos"),
            &format!("version-{version}"),
            at(T0),
        )
        .await;
        created.push(stored.record.state.id);
    }
    let clock = ManualClock::new(at(T0));
    let mut router = start_router(&nats, &registry, clock.clone(), "a").await;

    // At 50% of one hour, only the referral on the old version warns.
    clock.advance_to(at("2026-03-02T09:30:00+08:00"));
    router.recorded(2).await;
    assert_eq!(
        recorded_on_with(&bus, &registry, &created[0]).await,
        [
            "acknowledge_emergency.warning.500",
            "acknowledge_emergency.level.1.0"
        ]
    );
    assert!(
        recorded_on_with(&bus, &registry, &created[1])
            .await
            .is_empty()
    );

    // At 50% of two hours (three events on the old one meanwhile: 75%, breach, level 2), the
    // new one warns.
    clock.advance_to(at("2026-03-02T10:00:00+08:00"));
    router.recorded(5).await;
    assert_eq!(
        recorded_on_with(&bus, &registry, &created[1]).await,
        [
            "acknowledge_emergency.warning.500",
            "acknowledge_emergency.level.1.0"
        ]
    );
    router.stop().await;
}

/// The first integrity notice the coordinator received.
async fn coordinator_integrity_notice(
    bus: &Bus,
    registry: &Arc<Registry>,
) -> refbus_core::IntegrityNotice {
    let mut notices = bus
        .watch(
            &verifier(registry),
            vec![subjects::integrity_notices_for(&registry.coordinator)],
            0,
        )
        .await
        .unwrap();
    let item = tokio::time::timeout(
        Duration::from_secs(20),
        futures::StreamExt::next(&mut notices),
    )
    .await
    .expect("the coordinator got no integrity notice")
    .unwrap()
    .unwrap();
    match item {
        Item::Integrity(notice) => notice.record,
        other => panic!("expected an integrity notice, got {other:?}"),
    }
}

/// Starts a router and moves the clock to 10:30: every warning, breach and escalation of an
/// emergency referral created at 09:00 (`referral`) is recorded by then.
async fn a_restart_records_every_item_by_10_30(
    nats: &NatsServer,
    registry: &Arc<Registry>,
    clock: &ManualClock,
    bus: &Bus,
    referral: &refbus_core::ReferralId,
) {
    let mut router = start_router(nats, registry, clock.clone(), "a").await;
    clock.advance_to(at("2026-03-02T10:30:00+08:00"));
    router.recorded(7).await;
    let items = recorded_on(bus, referral).await;
    assert!(
        items.contains(&"acknowledge_emergency.breach".to_owned()),
        "{items:?}"
    );
    assert!(
        items.contains(&"acknowledge_emergency.level.2.0".to_owned()),
        "{items:?}"
    );
    router.stop().await;
}

#[tokio::test]
async fn a_forged_event_naming_another_referral_does_not_silence_it() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    // An emergency referral between Dinsos and UPTD PPA...
    let created = create_emergency(&bus, &registry, "victim-1", at(T0)).await;
    let clock = ManualClock::new(at(T0));
    let router = start_router(&nats, &registry, clock.clone(), "a").await;

    // ...and Polres, with its own credentials and key, writes on a subject of its own an
    // acceptance that names that referral's id, to make the router stop its clocks.
    let state = &created.record.state;
    let forged = acceptance_after(state, "polres-maros", at("2026-03-02T09:05:00+08:00"), None);
    let mut claimed = state.clone();
    claimed.creation.recipient = agency("polres-maros");
    let claimed = evolve(Some(claimed), &forged).unwrap();
    let key = key_of(&forged.actor);
    let (writer, request_id) = (
        writer_of(&forged.actor),
        RequestId::new("forged-other").unwrap(),
    );
    let idempotency = Idempotency::Request {
        agency: &writer,
        request_id: &request_id,
    };
    bus.append(&key, Append::after(forged, &claimed, 0, idempotency))
        .await
        .unwrap();

    // The coordinator hears of it...
    let notice = coordinator_integrity_notice(&bus, &registry).await;
    assert_eq!(notice.referral_id, Some(state.id));
    assert!(
        notice
            .subject
            .starts_with("refbus.v1.ref.polres-maros.maros-dinsos.")
    );
    // ...and the referral's clocks run on, also in a router started after the forgery, whose
    // rebuild reads the look-alike subject's last record too: every warning, breach and
    // escalation is recorded.
    router.stop().await;
    a_restart_records_every_item_by_10_30(&nats, &registry, &clock, &bus, &state.id).await;
}

#[tokio::test]
async fn a_second_creation_on_a_referrals_subject_restarts_none_of_its_clocks() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let created = create_emergency(&bus, &registry, "second-1", at(T0)).await;
    let state = &created.record.state;
    let subject = subjects::referral(state.recipient(), state.sender(), &state.id);
    let clock = ManualClock::new(at(T0));
    let router = start_router(&nats, &registry, clock.clone(), "a").await;

    // Dinsos, the sender, with its own key and NATS credentials, stores on the referral's own
    // subject a second creation of it, signed and dated 75 minutes later, without the header
    // that makes JetStream refuse a creation on a subject that holds one: believed, it would
    // start the recipient's clocks again and hide their breach.
    let mut again = created.record.event.clone();
    again.at = at("2026-03-02T10:15:00+08:00");
    let restarted = evolve(None, &again).unwrap();
    let (_, payload) =
        EventRecord::signed(again.clone(), &restarted, &subject, &key_of(&again.actor));
    let second = refbus_testkit::hostile::publish_raw(&nats.url(), &subject, payload.to_vec())
        .await
        .unwrap();

    // The coordinator hears of it...
    let notice = coordinator_integrity_notice(&bus, &registry).await;
    assert_eq!(notice.referral_id, Some(state.id));
    assert_eq!(notice.subject, subject);
    // ...the adapter's read of the referral keeps the first creation (its last record is the
    // creation, or the router's integrity alert once appended)...
    let read = bus
        .referral(&verifier(&registry), &subject)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(read.seq, second);
    assert_eq!(read.record.state.created_at, state.created_at);
    // ...and so does a router started after it (its rebuild reads each subject's last record):
    // the clocks run from 09:00, every warning, breach and escalation is recorded by 10:30.
    router.stop().await;
    a_restart_records_every_item_by_10_30(&nats, &registry, &clock, &bus, &state.id).await;
}

#[tokio::test]
async fn a_record_following_an_older_one_rewrites_nothing() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let created = create_emergency(&bus, &registry, "fork-1", at(T0)).await;
    let state = &created.record.state;
    let subject = subjects::referral(state.recipient(), state.sender(), &state.id);
    let clock = ManualClock::new(at(T0));
    let mut router = start_router(&nats, &registry, clock.clone(), "a").await;
    clock.advance_to(at("2026-03-02T10:30:00+08:00"));
    router.recorded(7).await;

    // UPTD PPA, the recipient, breached its clock; with its own key it writes an acceptance
    // that follows the creation, stored after the router's seven records: believed, the
    // referral's breach and escalations would vanish from its state (and from its compliance).
    let last = bus
        .referral(&verifier(&registry), &subject)
        .await
        .unwrap()
        .unwrap();
    let fork = acceptance_after(
        state,
        "maros-uptd-ppa",
        at("2026-03-02T10:31:00+08:00"),
        Some(RequestId::new("fork-accept").unwrap()),
    );
    let forked = evolve(Some(state.clone()), &fork).unwrap();
    let (writer, request_id) = (writer_of(&fork.actor), fork.request_id.clone().unwrap());
    let append = Append {
        event: fork.clone(),
        state_after: &forked,
        expected_last_seq: last.last_seq,
        prev_seq: created.seq,
        key: Idempotency::Request {
            agency: &writer,
            request_id: &request_id,
        },
    };
    bus.append(&key_of(&fork.actor), append).await.unwrap();

    // The coordinator hears of it, and the referral stands as its history made it, for the
    // live router and for a reader of its last record alike.
    let notice = coordinator_integrity_notice(&bus, &registry).await;
    assert_eq!(notice.referral_id, Some(state.id));
    assert_eq!(notice.subject, subject);
    let read = bus
        .referral(&verifier(&registry), &subject)
        .await
        .unwrap()
        .unwrap();
    assert_ne!(read.record.state.status, forked.status);
    let breaches = |referral: &refbus_core::Referral| {
        referral
            .marks
            .iter()
            .filter(|mark| mark.mark == refbus_core::referral::Mark::Breach)
            .count()
    };
    assert_eq!(breaches(&read.record.state), 1);
    assert_eq!(breaches(&last.record.state), 1);
    let items = recorded_on(&bus, &state.id).await;
    assert_eq!(
        items
            .iter()
            .filter(|item| item.as_str() == "acknowledge_emergency.breach")
            .count(),
        1,
        "{items:?}"
    );
    router.stop().await;
}

/// Appends `event` with `state_after` as its stored state right after `previous` (JetStream
/// proves them adjacent), signed by the event's author.
async fn append_claiming(
    bus: &Bus,
    previous: &Stored<EventRecord>,
    event: refbus_core::Event,
    state_after: &refbus_core::Referral,
    request: &str,
) -> Stored<EventRecord> {
    let (writer, request_id) = (writer_of(&event.actor), RequestId::new(request).unwrap());
    let key = key_of(&event.actor);
    let append = Append {
        event,
        state_after,
        expected_last_seq: previous.seq,
        prev_seq: previous.seq,
        key: Idempotency::Request {
            agency: &writer,
            request_id: &request_id,
        },
    };
    let (appended, _) = bus.append(&key, append).await.unwrap();
    bus.event_at(appended.seq).await.unwrap().unwrap()
}

/// What a party writing straight onto the bus can store: `first` right after `previous`,
/// with `claimed` as its stored state (a state `first` does not make), then `second`, which
/// follows that claimed state. A reader checking the last record against its predecessor's
/// stored state believes the pair.
async fn store_claimed_pair(
    bus: &Bus,
    previous: &Stored<EventRecord>,
    first: refbus_core::Event,
    claimed: &refbus_core::Referral,
    second: refbus_core::Event,
) {
    let after = evolve(Some(claimed.clone()), &second).unwrap();
    let stored = append_claiming(bus, previous, first, claimed, "claimed-first").await;
    append_claiming(bus, &stored, second, &after, "claimed-second").await;
}

#[tokio::test]
async fn two_records_in_a_row_the_first_claiming_a_state_its_event_does_not_make_silence_nothing() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let created = create_emergency(&bus, &registry, "claim-1", at(T0)).await;
    let state = &created.record.state;
    let subject = subjects::referral(state.recipient(), state.sender(), &state.id);
    let clock = ManualClock::new(at(T0));
    start_router(&nats, &registry, clock.clone(), "a")
        .await
        .stop()
        .await;

    // UPTD PPA, the recipient, has not answered by 09:40. With its own key, straight onto the
    // bus while no router runs, it stores a receipt whose stored state claims an acceptance at
    // 09:40 (no acceptance event exists), then a start of the service that follows that
    // claimed state: a reader that believed the first record's state would see the
    // acknowledge clock stopped in time, and never record its breach at 10:00.
    let when = at("2026-03-02T09:40:00+08:00");
    clock.advance_to(when);
    let decided = |current: &refbus_core::Referral, command: Command| {
        let request = Request {
            command,
            actor: operator("maros-uptd-ppa"),
            request_id: None,
        };
        decide(&registry, Some(current), &request, when)
            .unwrap()
            .events
            .remove(0)
    };
    let received = decided(state, Command::ConfirmReceipt);
    let made = evolve(Some(state.clone()), &received).unwrap();
    let accepted = evolve(Some(made.clone()), &decided(&made, Command::Accept)).unwrap();
    let mut claimed = accepted;
    claimed.seq = made.seq;
    claimed.last_hash = made.last_hash;
    let started = decided(&claimed, Command::Start);
    store_claimed_pair(&bus, &created, received, &claimed, started).await;

    // A router started now rebuilds from each referral's last record, then its consumer
    // checks both records against the referral's history: the coordinator hears of them,
    // and the acknowledge clock runs on from 09:00 (its breach and escalations are recorded).
    let mut router = start_router(&nats, &registry, clock.clone(), "a").await;
    let notice = coordinator_integrity_notice(&bus, &registry).await;
    assert_eq!(notice.referral_id, Some(state.id));
    clock.advance_to(at("2026-03-02T10:30:00+08:00"));
    let recorded = router.recorded(5).await;
    assert!(
        recorded.contains(&"acknowledge_emergency.breach".to_owned()),
        "{recorded:?}"
    );
    // Every reader, the one that reads only the last records included, sees no acceptance.
    let read = bus
        .referral(&verifier(&registry), &subject)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(read.record.state.status, state.status);
    let items = recorded_on(&bus, &state.id).await;
    assert!(
        items.contains(&"acknowledge_emergency.level.2.0".to_owned()),
        "{items:?}"
    );
    router.stop().await;
}

/// Waits until the router has recorded `wanted` on any referral (30 s at most); returns what
/// it recorded meanwhile, with when each item was due.
async fn until_recorded(router: &mut Running, wanted: &str) -> Vec<(String, Timestamp)> {
    let mut recorded = Vec::new();
    let waiting = async {
        loop {
            if let Activity::Recorded { key, due_at, .. } = router.activity.recv().await.unwrap() {
                let done = key == wanted;
                recorded.push((key, due_at));
                if done {
                    return;
                }
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(30), waiting)
        .await
        .unwrap_or_else(|_| panic!("the router never recorded {wanted}"));
    recorded
}

/// An emergency referral created at 09:00 whose clocks router "a" ran to 09:50 (its 75 %
/// warning recorded), the router then stopped; returns its creation and the clock at 09:50.
async fn emergency_run_to_ten_to_ten(
    nats: &NatsServer,
    registry: &Arc<Registry>,
    bus: &Bus,
    request: &str,
) -> (Stored<EventRecord>, ManualClock) {
    let created = create_emergency(bus, registry, request, at(T0)).await;
    let clock = ManualClock::new(at(T0));
    let mut router = start_router(nats, registry, clock.clone(), "a").await;
    clock.advance_to(at("2026-03-02T09:50:00+08:00"));
    until_recorded(&mut router, "acknowledge_emergency.warning.750").await;
    router.stop().await;
    (created, clock)
}

/// UPTD PPA's note on `current` at `when`, made with `request_id` (the one it is stored under)
/// or none.
fn uptd_note(
    registry: &Registry,
    current: &refbus_core::Referral,
    when: Timestamp,
    request_id: Option<&str>,
) -> refbus_core::Event {
    let request = Request {
        command: Command::AddNote {
            note: refbus_core::referral::SealedPayload {
                recipients: vec![agency("maros-dinsos"), agency("maros-uptd-ppa")],
                envelope: vec![7; 48],
            },
        },
        actor: operator("maros-uptd-ppa"),
        request_id: request_id.map(|id| RequestId::new(id).unwrap()),
    };
    decide(registry, Some(current), &request, when)
        .unwrap()
        .events
        .remove(0)
}

#[tokio::test]
async fn a_timer_due_before_the_consumer_checked_a_claimed_state_records_from_the_history() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let (created, clock) = emergency_run_to_ten_to_ten(&nats, &registry, &bus, "claim-2").await;
    let state = &created.record.state;
    let subject = subjects::referral(state.recipient(), state.sender(), &state.id);
    let when = at("2026-03-02T09:50:00+08:00");

    // While no router runs, UPTD PPA stores a note whose stored state claims the referral was
    // requested at 08:45 (its acknowledge clock breached at 09:45), then a second note
    // following that claimed state.
    let last = bus
        .referral(&verifier(&registry), &subject)
        .await
        .unwrap()
        .unwrap();
    let first_note = uptd_note(&registry, &last.record.state, when, None);
    let mut claimed = evolve(Some(last.record.state.clone()), &first_note).unwrap();
    let requested = &mut claimed.steps[0];
    assert_eq!(
        requested.milestone,
        refbus_core::referral::Milestone::Entered(refbus_core::referral::Status::Requested)
    );
    requested.at = at("2026-03-02T08:45:00+08:00");
    let second_note = uptd_note(&registry, &claimed, when, None);
    store_claimed_pair(&bus, &last, first_note, &claimed, second_note).await;

    // A router started now rebuilds from the last record, finds the breach due by the claimed
    // state, and fires at once, before its consumer has checked the two notes. A record its
    // consumer has not checked is not gone on from: the referral is read in full, nothing is
    // due at 09:50, nothing is chained after the claimed state, and the breach is recorded at
    // 10:00, once, on the referral as its history makes it.
    let mut router = start_router(&nats, &registry, clock.clone(), "a").await;
    let notice = coordinator_integrity_notice(&bus, &registry).await;
    assert_eq!(notice.referral_id, Some(state.id));
    clock.advance_to(at("2026-03-02T10:30:00+08:00"));
    let recorded = until_recorded(&mut router, "acknowledge_emergency.level.2.0").await;
    let breach = (
        "acknowledge_emergency.breach".to_owned(),
        at("2026-03-02T10:00:00+08:00"),
    );
    assert_eq!(
        recorded
            .iter()
            .filter(|item| item.0 == breach.0)
            .collect::<Vec<_>>(),
        [&breach]
    );
    let items = recorded_on(&bus, &state.id).await;
    for item in [
        "acknowledge_emergency.warning.750",
        "acknowledge_emergency.breach",
        "acknowledge_emergency.level.2.0",
    ] {
        assert_eq!(
            items.iter().filter(|recorded| *recorded == item).count(),
            1,
            "{item}: {items:?}"
        );
    }
    let read = bus
        .referral(&verifier(&registry), &subject)
        .await
        .unwrap()
        .unwrap();
    let history = bus
        .checked_history(&verifier(&registry), &subject)
        .await
        .unwrap();
    assert_eq!(read.seq, history.last().unwrap().seq);
    router.stop().await;
}

#[tokio::test]
async fn garbage_on_a_referral_subject_stops_neither_a_restart_nor_its_clocks() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let created = create_emergency(&bus, &registry, "garbage-1", at(T0)).await;
    let state = &created.record.state;
    let subject = subjects::referral(state.recipient(), state.sender(), &state.id);
    // Bytes that are no refbus record, as the last message on the referral's own subject and
    // on a subject of no referral at all.
    refbus_testkit::hostile::publish_raw(&nats.url(), &subject, b"\x00not json".to_vec())
        .await
        .unwrap();
    refbus_testkit::hostile::publish_raw(
        &nats.url(),
        "refbus.v1.ref.maros-uptd-ppa.maros-dinsos.not-an-id",
        b"{}".to_vec(),
    )
    .await
    .unwrap();

    // A router starting now rebuilds past both, and still finds the referral's clocks due.
    let clock = ManualClock::new(at("2026-03-02T10:30:00+08:00"));
    let mut router = start_router(&nats, &registry, clock, "a").await;
    router.recorded(7).await;
    assert_eq!(recorded_on(&bus, &state.id).await.len(), 7);
    let notice = coordinator_integrity_notice(&bus, &registry).await;
    assert_eq!(notice.problem, refbus_core::integrity::Problem::Unreadable);
    router.stop().await;
}

#[tokio::test]
async fn a_record_of_an_unknown_format_reaches_the_coordinator_and_the_clocks_run_on() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let created = create_emergency(&bus, &registry, "format-1", at(T0)).await;
    let state = &created.record.state;
    let subject = subjects::referral(state.recipient(), state.sender(), &state.id);
    let clock = ManualClock::new(at(T0));
    let mut router = start_router(&nats, &registry, clock.clone(), "a").await;
    // What a newer refbus might write: a record of a format this router does not read.
    let seq = refbus_testkit::hostile::publish_raw(
        &nats.url(),
        &subject,
        br#"{"format":2,"events":[{"kind":"accepted"}]}"#.to_vec(),
    )
    .await
    .unwrap();

    // Never skipped in silence: the coordinator is told exactly what and where...
    let notice = coordinator_integrity_notice(&bus, &registry).await;
    assert_eq!(notice.problem, refbus_core::integrity::Problem::Format);
    assert_eq!(notice.stream_seq, seq);
    assert_eq!(notice.referral_id, Some(state.id));
    assert_eq!(
        notice.detail,
        format!(
            "{subject} (stream sequence {seq}): event record format 2 is unknown; this refbus \
             reads format 1; upgrade this reader before the writers (docs/ARCHITECTURE.md, \
             \"Record formats and versions\")"
        )
    );
    // ...and the referral's clocks run on from its last record this router reads.
    clock.advance_to(at("2026-03-02T10:30:00+08:00"));
    router.recorded(7).await;
    let items = recorded_on(&bus, &state.id).await;
    assert!(
        items.contains(&"acknowledge_emergency.breach".to_owned()),
        "{items:?}"
    );
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_nats_server_loses_no_clock_and_no_notice() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let created = create_emergency(&bus, &registry, "pause-1", at(T0)).await;
    let clock = ManualClock::new(at(T0));
    let mut router = start_router(&nats, &registry, clock.clone(), "a").await;

    // Everything falls due while the server is frozen: recording fails, notices cannot be
    // sent, and the router must neither give up nor take the failure for tampering.
    nats.pause().unwrap();
    clock.advance_to(at("2026-03-02T10:30:00+08:00"));
    // The fault lasts a few seconds (this is its duration, not a wait for an event).
    tokio::time::sleep(Duration::from_secs(4)).await;
    nats.resume().unwrap();

    router.recorded(7).await;
    let items = recorded_on(&bus, &created.record.state.id).await;
    let mut unique = items.clone();
    unique.sort();
    unique.dedup();
    assert_eq!((items.len(), unique.len()), (7, 7), "{items:?}");
    // The coordinator's escalation notices (level 2 and its repeat) both arrived.
    let notices: Vec<_> = futures::StreamExt::collect::<Vec<_>>(futures::StreamExt::take(
        bus.watch(
            &verifier(&registry),
            vec![subjects::notice(
                &agency("maros-bappeda"),
                &created.record.state.id,
            )],
            0,
        )
        .await
        .unwrap(),
        2,
    ))
    .await;
    assert_eq!(notices.len(), 2);
    // And the outage was not taken for tampering: no integrity alert on the referral.
    let history = bus
        .history(&subjects::referral_pattern(&created.record.state.id))
        .await
        .unwrap();
    assert!(
        !history
            .iter()
            .any(|stored| matches!(stored.record.event.change, Change::IntegrityAlert { .. }))
    );
    router.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_opening_its_consumer_while_nats_server_is_frozen_waits_for_it() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let created = create_emergency(&bus, &registry, "frozen-1", at(T0)).await;
    let clock = ManualClock::new(at("2026-03-02T10:30:00+08:00"));
    let router = Router::new(
        Bus::connect(&nats.url(), &StreamSettings::default())
            .await
            .unwrap(),
        verifier(&registry),
        keys().router(),
        Arc::new(clock),
        Options {
            replica: "a".to_owned(),
            ..Options::default()
        },
    );
    let mut activity = router.activity();

    // Connected, the router opens its consumer while nats-server is frozen for longer than an
    // answer is waited for: it must try again, not stop (a partitioned router gaining a
    // partition from a busy server stopped that way, dropping every partition it held).
    nats.pause().unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let mut task = tokio::spawn(router.run(async {
        let _ = stopped.await;
    }));
    // The fault's duration, not a wait for an event.
    tokio::time::sleep(refbus_bus::READ_TIMEOUT + Duration::from_secs(2)).await;
    nats.resume().unwrap();
    let ready = async {
        loop {
            match activity.recv().await {
                Ok(Activity::Ready { .. }) => return,
                Ok(_) => {}
                // The router stopped: its task says why.
                Err(_) => std::future::pending().await,
            }
        }
    };
    tokio::select! {
        ended = &mut task => panic!("the router stopped: {ended:?}"),
        ready = tokio::time::timeout(Duration::from_secs(60), ready) => ready.expect("the router was never ready"),
    }
    let mut recorded = 0;
    while recorded < 7 {
        if let Activity::Recorded { .. } =
            tokio::time::timeout(Duration::from_secs(30), activity.recv())
                .await
                .expect("the router recorded too little")
                .unwrap()
        {
            recorded += 1;
        }
    }
    assert_eq!(recorded_on(&bus, &created.record.state.id).await.len(), 7);
    let _ = stop.send(());
    task.await.unwrap().unwrap();
}

#[tokio::test]
async fn an_unsigned_acceptance_is_refused_recorded_as_an_alert_and_the_clock_runs_on() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let created = create_emergency(&bus, &registry, "unsigned-1", at(T0)).await;
    let clock = ManualClock::new(at(T0));
    let mut router = start_router(&nats, &registry, clock.clone(), "a").await;

    // The recipient's acceptance, written by a system that bypasses its adapter: no signature.
    let state = &created.record.state;
    let event = acceptance_after(
        state,
        "maros-uptd-ppa",
        at("2026-03-02T09:05:00+08:00"),
        None,
    );
    let after = evolve(Some(state.clone()), &event).unwrap();
    let unsigned = EventRecord {
        hash: refbus_core::chain::hash(&event),
        signature: None,
        event,
        state: after.into_snapshot(),
    };
    refbus_testkit::hostile::publish_raw(&nats.url(), &created.subject, unsigned.encode().to_vec())
        .await
        .unwrap();

    let notice = coordinator_integrity_notice(&bus, &registry).await;
    assert_eq!(notice.problem, refbus_core::integrity::Problem::Signature);
    clock.advance_to(at("2026-03-02T10:01:00+08:00"));
    router.recorded(5).await;
    let items = recorded_on(&bus, &state.id).await;
    assert!(
        items.contains(&"acknowledge_emergency.breach".to_owned()),
        "{items:?}"
    );
    // The refusal is on the referral's record, chained after its creation.
    let history = bus
        .checked_history(&verifier(&registry), &created.subject)
        .await
        .unwrap();
    assert!(matches!(
        history[1].record.event.change,
        Change::IntegrityAlert {
            problem: refbus_core::integrity::Problem::Signature,
            ..
        }
    ));
    router.stop().await;
}

/// A router whose durable consumer disappears (deleted by an operator or an intruder) does not
/// run on blind: `run` returns `Error::ConsumerEnded`, so `refbus router` exits non-zero and its
/// supervisor starts it again (which recreates the consumer and rebuilds the timers).
#[tokio::test]
async fn the_router_ends_with_an_error_when_its_consumer_is_deleted() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    create_emergency(&bus, &registry, "consumer-gone", at(T0)).await;
    let router = Router::new(
        bus,
        verifier(&registry),
        keys().router(),
        Arc::new(ManualClock::new(at(T0))),
        Options {
            replica: "gone".to_owned(),
            ..Options::default()
        },
    );
    let mut activity = router.activity();
    let task = tokio::spawn(router.run(std::future::pending()));
    loop {
        if let Activity::Ready { .. } = activity.recv().await.unwrap() {
            break;
        }
    }

    refbus_testkit::hostile::delete_consumer(
        &nats.url(),
        &StreamSettings::default().name,
        "refbus-router-gone",
    )
    .await
    .unwrap();
    // Bounded only so that a router that runs on fails the test instead of hanging it.
    let ended = tokio::time::timeout(Duration::from_secs(60), task)
        .await
        .expect("the router ran on without its consumer")
        .unwrap();
    match ended {
        Err(refbus_router::Error::ConsumerEnded { consumer }) => {
            assert_eq!(consumer, "refbus-router-gone");
        }
        other => panic!("expected ConsumerEnded, got {other:?}"),
    }
}

#[tokio::test]
async fn a_timers_snapshot_of_an_unknown_format_is_not_used_and_every_referral_is_read() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let created = create_emergency(&bus, &registry, "snap-format", at(T0)).await;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("router-a.timers");
    // A newer router's snapshot: its first line names format 2 (whatever follows).
    std::fs::write(&file, b"refbus router timers v2\n\x00\x01\x02").unwrap();
    let options = Options {
        replica: "a".to_owned(),
        snapshot: Some(file.clone()),
        snapshot_every: Duration::from_secs(3600),
        ..Options::default()
    };
    let clock = ManualClock::new(at(T0));
    let (mut router, ready) = start_router_with(&nats, &registry, clock.clone(), options).await;
    let Activity::Ready {
        referrals,
        from_snapshot,
        ..
    } = ready
    else {
        unreachable!()
    };
    // Refused by its format (an ERROR naming the file), and the timers rebuilt from the bus.
    assert_eq!((referrals, from_snapshot), (1, None));
    clock.advance_to(at("2026-03-02T09:40:00+08:00"));
    // Its clock runs: the items due by then (as in the test below), each once.
    router.recorded(2).await;
    assert_eq!(recorded_on(&bus, &created.record.state.id).await.len(), 2);
    router.stop().await;
}

/// Options of router `replica` keeping its timers' snapshot in `file`, written every 50 ms.
fn snapshotting(replica: &str, file: &Path) -> Options {
    Options {
        replica: replica.to_owned(),
        snapshot: Some(file.to_owned()),
        snapshot_every: Duration::from_millis(50),
        ..Options::default()
    }
}

/// A reader of the durable `consumer` beside its router (a partition's previous holder, as
/// JetStream sees it): it takes what it is given and acknowledges nothing. Returns what stops
/// it, the stream sequences it was given, and its task.
async fn other_reader(
    bus: &Bus,
    consumer: &str,
) -> (
    refbus_bus::DurableStop,
    Arc<std::sync::Mutex<Vec<u64>>>,
    tokio::task::JoinHandle<()>,
) {
    use futures::StreamExt;
    let mut deliveries = bus.durable(consumer).await.unwrap();
    let stop = deliveries.stopper();
    let held = Arc::new(std::sync::Mutex::new(Vec::new()));
    let task = tokio::spawn({
        let held = held.clone();
        async move {
            while let Some(delivery) = deliveries.next().await {
                held.lock().unwrap().push(delivery.unwrap().seq);
            }
        }
    });
    (stop, held, task)
}

/// A fire never goes on from a record its router has not checked, however far its consumer
/// has delivered: an event JetStream gave another reader of the consumer (a partition's
/// previous holder, killed with it in hand) and nobody acknowledged comes to this router only
/// after later ones, and a claimed state stored then was believed on the lighter check, its
/// breach recorded early (docs/RELIABILITY.md finding 8).
#[tokio::test]
async fn a_fire_reads_in_full_a_record_delivered_elsewhere_and_not_acknowledged() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let (created, clock) =
        emergency_run_to_ten_to_ten(&nats, &registry, &bus, "elsewhere-claim").await;
    let state = &created.record.state;
    let subject = subjects::referral(state.recipient(), state.sender(), &state.id);
    let when = at("2026-03-02T09:50:00+08:00");

    // Another reader of the router's consumer, alone on it now, takes what it is given.
    let consumer = refbus_router::replica_consumer("a");
    let (stop_other, held, reader) = other_reader(&bus, &consumer).await;

    // UPTD PPA stores a note whose stored state claims the referral was requested at 08:55
    // (its acknowledge clock breached at 09:55, not 10:00), then a note following that state.
    let last = bus
        .referral(&verifier(&registry), &subject)
        .await
        .unwrap()
        .unwrap();
    // Each with the request id it is stored under, as UPTD PPA's adapter would write it: each
    // record is then stored as written, and a one-step read walking back from the last record
    // stops at the first one, believing its stored state.
    let first_note = uptd_note(&registry, &last.record.state, when, Some("claimed-first"));
    let mut claimed = evolve(Some(last.record.state.clone()), &first_note).unwrap();
    claimed.steps[0].at = at("2026-03-02T08:55:00+08:00");
    let second_note = uptd_note(&registry, &claimed, when, Some("claimed-second"));
    store_claimed_pair(&bus, &last, first_note, &claimed, second_note).await;
    let second = bus.last(&subject).await.unwrap().unwrap().seq;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !held.lock().unwrap().contains(&second) {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the notes never reached the reader"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // Killed with both notes in hand: they stay unacknowledged for the minute's ack_wait (and
    // so does whatever else it had taken or buffered).
    let buffered = stop_other.stop().len();
    reader.await.unwrap();
    let unacknowledged = u64::try_from(held.lock().unwrap().len() + buffered).unwrap();

    // A referral after them, which the router's consumer delivers, and the router checks,
    // before the notes come back.
    create_emergency(&bus, &registry, "elsewhere-after", when).await;
    let mut router = start_router(&nats, &registry, clock.clone(), "a").await;
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while bus.durable_backlog(&consumer).await.unwrap() > unacknowledged {
        assert!(
            tokio::time::Instant::now() < deadline,
            "the later referral was never consumed"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    // Its rebuild set the timer from the claimed state (its breach due at 09:55). The fire
    // reads the referral in full: the breach is recorded as due at 10:00, by its history.
    clock.advance_to(at("2026-03-02T10:30:00+08:00"));
    let recorded = until_recorded(&mut router, "acknowledge_emergency.level.2.0").await;
    let breaches: Vec<_> = recorded
        .iter()
        .filter(|item| item.0 == "acknowledge_emergency.breach")
        .collect();
    assert_eq!(
        breaches,
        [&(
            "acknowledge_emergency.breach".to_owned(),
            at("2026-03-02T10:00:00+08:00")
        )]
    );
    router.stop().await;
}

/// A snapshot never covers an event its router has not seen: one delivered to another reader
/// of the consumer (a partition's previous holder, paused or killed with it in its buffer) and
/// not acknowledged comes again only after events past it, which the router applies first. A
/// router starting from that snapshot still reads its referral (docs/RELIABILITY.md finding
/// 8: an emergency referral's timer missing for a minute).
#[tokio::test]
async fn a_snapshot_never_covers_an_event_delivered_elsewhere_and_not_acknowledged() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("router-a.timers");
    let options = || snapshotting("a", &file);
    let (mut router, _) =
        start_router_with(&nats, &registry, ManualClock::new(at(T0)), options()).await;
    // The other reader takes what JetStream gives it and acknowledges nothing: JetStream shares
    // the consumer's events between the two.
    let consumer = refbus_router::replica_consumer("a");
    let (stop_other, held, reader) = other_reader(&bus, &consumer).await;
    let mut created = Vec::new();
    for n in 0..10 {
        let referral = create_emergency(&bus, &registry, &format!("elsewhere-{n}"), at(T0)).await;
        created.push(referral.seq);
    }
    // Every creation delivered, the router's acknowledged: what is left unacknowledged is what
    // the other reader holds.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let backlog = bus.durable_backlog(&consumer).await.unwrap();
        if backlog == u64::try_from(held.lock().unwrap().len()).unwrap() {
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the creations never settled"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let held: Vec<u64> = held.lock().unwrap().clone();
    let first_held = *held.first().expect("the other reader was given no event");
    assert!(
        created
            .iter()
            .any(|seq| *seq > first_held && !held.contains(seq)),
        "the router was given no event after the other reader's first: {created:?}, {held:?}"
    );

    // The router's snapshot holds the referrals it applied, and covers none it did not.
    let covers = loop {
        let activity = tokio::time::timeout(Duration::from_secs(20), router.activity.recv())
            .await
            .expect("no snapshot of the router's referrals was written")
            .unwrap();
        if let Activity::Snapshot { covers, entries } = activity
            && entries == created.len() - held.len()
        {
            break covers;
        }
    };
    assert!(
        covers < first_held,
        "the snapshot covers {covers}, past {first_held}, which the router never saw"
    );
    router.stop().await;
    // The other reader stops as a killed one would: what it holds waits for the
    // acknowledgement timeout, a minute.
    drop(stop_other.stop());
    reader.await.unwrap();

    // Restarted from its snapshot, the router has every referral's clock at once.
    let (router, ready) =
        start_router_with(&nats, &registry, ManualClock::new(at(T0)), options()).await;
    let Activity::Ready {
        pending,
        from_snapshot,
        ..
    } = ready
    else {
        unreachable!()
    };
    assert_eq!((pending, from_snapshot), (created.len(), Some(covers)));
    router.stop().await;
}

#[tokio::test]
async fn a_restart_from_the_timers_snapshot_reads_only_what_changed_and_misses_nothing() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("router-a.timers");
    let options = || snapshotting("a", &file);
    let (mut ids, mut last) = (Vec::new(), 0);
    for n in 0..3 {
        let created = create_emergency(&bus, &registry, &format!("snap-{n}"), at(T0)).await;
        ids.push(created.record.state.id);
        last = created.seq;
    }

    // The first start has no snapshot: every open referral is read.
    let clock = ManualClock::new(at(T0));
    let (mut router, ready) = start_router_with(&nats, &registry, clock, options()).await;
    let Activity::Ready {
        referrals,
        from_snapshot,
        ..
    } = ready
    else {
        unreachable!()
    };
    assert_eq!((referrals, from_snapshot), (3, None));
    // Written once the router's consumer has acknowledged the stream (a snapshot never
    // covers past it), perhaps after one covering less.
    let covers = loop {
        let activity = tokio::time::timeout(Duration::from_secs(20), router.activity.recv())
            .await
            .expect("no snapshot covering the stream was written")
            .unwrap();
        if let Activity::Snapshot { covers, entries } = activity {
            assert_eq!(entries, 3);
            if covers >= last {
                break covers;
            }
        }
    };
    router.stop().await;

    // While no router runs, a fourth referral arrives.
    let late = create_emergency(
        &bus,
        &registry,
        "snap-late",
        at("2026-03-02T09:10:00+08:00"),
    )
    .await;
    ids.push(late.record.state.id);

    // Restarted: the snapshot, and only the referral that changed since it is read.
    let clock = ManualClock::new(at("2026-03-02T09:10:00+08:00"));
    let (mut router, ready) = start_router_with(&nats, &registry, clock.clone(), options()).await;
    let Activity::Ready {
        referrals,
        from_snapshot,
        pending,
        ..
    } = ready
    else {
        unreachable!()
    };
    assert_eq!((referrals, from_snapshot, pending), (1, Some(covers), 4));
    // Every referral's clock runs: the 50 % items of all four, each once.
    clock.advance_to(at("2026-03-02T09:40:00+08:00"));
    router.recorded(8).await;
    router.stop().await;
    for id in &ids {
        assert_eq!(recorded_on(&bus, id).await.len(), 2, "referral {id}");
    }

    // An altered snapshot is not used: the router says so and reads every referral again.
    let mut bytes = std::fs::read(&file).unwrap();
    let middle = bytes.len() / 2;
    bytes[middle] ^= 0x01;
    std::fs::write(&file, &bytes).unwrap();
    let clock = ManualClock::new(at("2026-03-02T09:40:00+08:00"));
    let (mut router, ready) = start_router_with(&nats, &registry, clock.clone(), options()).await;
    let Activity::Ready {
        referrals,
        from_snapshot,
        ..
    } = ready
    else {
        unreachable!()
    };
    assert_eq!((referrals, from_snapshot), (4, None));
    // And the clocks still run: each referral's breach at its hour, once.
    clock.advance_to(at("2026-03-02T10:10:00+08:00"));
    for id in &ids {
        loop {
            let recorded = recorded_on(&bus, id).await;
            if recorded.iter().any(|key| key.ends_with(".breach")) {
                let mut unique = recorded.clone();
                unique.sort();
                unique.dedup();
                assert_eq!(unique.len(), recorded.len(), "{recorded:?}");
                break;
            }
            tokio::time::timeout(Duration::from_secs(20), router.activity.recv())
                .await
                .expect("a breach was never recorded")
                .unwrap();
        }
    }
    router.stop().await;
}

/// A router of a partitioned set, and what it holds as its activity tells.
struct Replica {
    name: &'static str,
    activity: broadcast::Receiver<Activity>,
    stop: tokio::sync::oneshot::Sender<()>,
    task: tokio::task::JoinHandle<()>,
    held: std::collections::BTreeSet<u32>,
    /// Referrals with pending clocks in each partition when it was claimed.
    pending: std::collections::BTreeMap<u32, usize>,
}

fn partitioned(replica: &str, count: u32) -> Options {
    Options {
        replica: replica.to_owned(),
        partitions: Some(refbus_router::Partitions {
            count,
            // Short, so that the test's takeover comes quickly (real time: a lease is not a
            // domain deadline, and the routers' clock is the manual one).
            lease_ttl: Duration::from_secs(2),
        }),
        ..Options::default()
    }
}

/// Starts a router with `options` and returns at once (a partitioned router is ready
/// partition by partition: see [`Replica::settle`]).
async fn start_replica(
    nats: &NatsServer,
    registry: &Arc<Registry>,
    clock: &ManualClock,
    name: &'static str,
    options: Options,
) -> Replica {
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let router = Router::new(
        bus,
        verifier(registry),
        keys().router(),
        Arc::new(clock.clone()),
        options,
    );
    let activity = router.activity();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(async move {
        router
            .run(async {
                let _ = stopped.await;
            })
            .await
            .unwrap();
    });
    Replica {
        name,
        activity,
        stop,
        task,
        held: Default::default(),
        pending: Default::default(),
    }
}

impl Replica {
    /// Applies one activity report to what the replica holds; counts recordings.
    fn note(&mut self, activity: Activity, recorded: &mut usize) {
        match activity {
            Activity::Claimed {
                partition, pending, ..
            } => {
                self.held.insert(partition);
                self.pending.insert(partition, pending);
            }
            Activity::Released { partition } => {
                self.held.remove(&partition);
                self.pending.remove(&partition);
            }
            Activity::Recorded { .. } => *recorded += 1,
            _ => {}
        }
    }
}

/// Waits until `done` holds of the replicas, reading their activity as it comes (bounded only
/// so that a replica that never gets there fails the test instead of hanging it).
async fn until(
    replicas: &mut [Replica],
    recorded: &mut usize,
    done: impl Fn(&[Replica], usize) -> bool,
) {
    let waiting = async {
        while !done(replicas, *recorded) {
            let next =
                futures::future::select_all(replicas.iter_mut().enumerate().map(|(n, replica)| {
                    Box::pin(async move { (n, replica.activity.recv().await) })
                }))
                .await
                .0;
            let (n, activity) = next;
            replicas[n].note(activity.unwrap(), recorded);
        }
    };
    tokio::time::timeout(Duration::from_secs(120), waiting)
        .await
        .expect("the replicas did not get there");
}

/// Three routers share six partitions of forty referrals; one is killed (its task aborted:
/// nothing given back, its leases left to expire, its fires in flight cut) right as every
/// referral's items fall due. The two survivors take its partitions over and every item is
/// recorded exactly once: counted on the stream, none missing, none twice.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_partition_taken_over_after_its_router_is_killed_records_each_item_exactly_once() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    const REFERRALS: usize = 40;
    let mut ids = Vec::new();
    for n in 0..REFERRALS {
        let created = create_emergency(&bus, &registry, &format!("part-{n}"), at(T0)).await;
        ids.push(created.record.state.id);
    }
    let clock = ManualClock::new(at(T0));
    let mut replicas = Vec::new();
    for name in ["a", "b", "c"] {
        replicas.push(start_replica(&nats, &registry, &clock, name, partitioned(name, 6)).await);
    }
    let mut recorded = 0;
    // Shared out: two partitions each, none held twice (the first to start claims all six,
    // then gives back what exceeds its share as the others join).
    until(&mut replicas, &mut recorded, |replicas, _| {
        replicas.iter().all(|replica| replica.held.len() == 2)
    })
    .await;
    let mut all: Vec<u32> = replicas
        .iter()
        .flat_map(|replica| replica.held.iter().copied())
        .collect();
    all.sort_unstable();
    assert_eq!(all, [0, 1, 2, 3, 4, 5]);
    // Each replica holds only its share of the timers: every referral's in exactly one.
    let pending: usize = replicas
        .iter()
        .map(|replica| replica.pending.values().sum::<usize>())
        .sum();
    assert_eq!(pending, REFERRALS);
    assert!(
        replicas
            .iter()
            .all(|replica| replica.pending.values().sum::<usize>() < REFERRALS),
        "one replica holds every timer"
    );

    // Half time: two items each, recorded by the three.
    clock.advance_to(at("2026-03-02T09:30:00+08:00"));
    until(&mut replicas, &mut recorded, |_, recorded| {
        recorded == REFERRALS * 2
    })
    .await;

    // Everything up to the reroute falls due, and c is killed at that very moment.
    clock.advance_to(at("2026-03-02T10:30:00+08:00"));
    let killed = replicas.pop().unwrap();
    assert_eq!(killed.name, "c");
    let orphans = killed.held.clone();
    killed.task.abort();
    assert!(killed.task.await.unwrap_err().is_cancelled());
    drop(killed.stop);

    // The survivors take c's partitions over once its leases expire: three each.
    until(&mut replicas, &mut recorded, |replicas, _| {
        replicas.iter().all(|replica| replica.held.len() == 3)
    })
    .await;
    for partition in &orphans {
        assert!(
            replicas
                .iter()
                .any(|replica| replica.held.contains(partition)),
            "partition {partition} of the killed router was not taken over"
        );
    }

    // Every item due is on the stream: counted there, not in the routers' reports (c may have
    // recorded some of its own before it died).
    let mut events = bus
        .watch(
            &verifier(&registry),
            vec![subjects::ALL_REFERRALS.to_owned()],
            0,
        )
        .await
        .unwrap();
    let mut on_stream = 0;
    let counting = async {
        while on_stream < REFERRALS * 7 {
            let item = futures::StreamExt::next(&mut events)
                .await
                .unwrap()
                .unwrap();
            if let Item::Event(stored) = item
                && matches!(stored.record.event.actor, Actor::Router)
            {
                on_stream += 1;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), counting)
        .await
        .expect("items due were not recorded");
    for id in &ids {
        assert_eq!(
            recorded_on(&bus, id).await,
            [
                "acknowledge_emergency.warning.500",
                "acknowledge_emergency.level.1.0",
                "acknowledge_emergency.warning.750",
                "acknowledge_emergency.breach",
                "acknowledge_emergency.level.2.0",
                "acknowledge_emergency.level.2.1",
                "reroute.maros-rsud",
            ],
            "{id}"
        );
    }
    for replica in replicas {
        let _ = replica.stop.send(());
        replica.task.await.unwrap();
    }
}

/// A router paused past its lease (SIGSTOP, a frozen VM: here its runtime's one thread
/// blocked) holds pull requests of its partition's consumer that go on receiving the events
/// stored meanwhile, and sees them first when it resumes, before its keeper learns that the
/// partition is another's. Applied and acknowledged there, they never reached the replica that
/// took the partition over, and were dropped with the partition a moment later: those
/// referrals had no clock anywhere. Handed back, every item is recorded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_router_paused_past_its_lease_hands_the_events_it_finds_back_to_the_new_holder() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let clock = ManualClock::new(at(T0));

    // Router a on a runtime of its own, driven by one thread: blocking that thread stops the
    // router, its keeper and its connection's reading at once, as a paused process.
    let (ready, a_ready) = tokio::sync::oneshot::channel();
    let (stop_a, a_stopped) = tokio::sync::oneshot::channel::<()>();
    let a = {
        let (url, registry, clock) = (nats.url(), registry.clone(), clock.clone());
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async move {
                let bus = Bus::connect(&url, &StreamSettings::default())
                    .await
                    .unwrap();
                let router = Router::new(
                    bus,
                    verifier(&registry),
                    keys().router(),
                    Arc::new(clock),
                    partitioned("a", 1),
                );
                let _ = ready.send((tokio::runtime::Handle::current(), router.activity()));
                // Its consumer may end with an error after the pause: not what is tested.
                let _ = router
                    .run(async {
                        let _ = a_stopped.await;
                    })
                    .await;
            });
        })
    };
    let (a_runtime, mut a_activity) = a_ready.await.unwrap();
    let bounded = Duration::from_secs(30);
    tokio::time::timeout(bounded, async {
        while !matches!(a_activity.recv().await.unwrap(), Activity::Claimed { .. }) {}
    })
    .await
    .expect("router a never claimed the partition");
    let mut b = start_replica(&nats, &registry, &clock, "b", partitioned("b", 1)).await;

    // a stops for 5 s, its lease lives 2 s: b claims the partition meanwhile.
    a_runtime.spawn(async { std::thread::sleep(Duration::from_secs(5)) });
    tokio::time::timeout(bounded, async {
        while !matches!(b.activity.recv().await.unwrap(), Activity::Claimed { .. }) {}
    })
    .await
    .expect("router b never took the partition over");
    const REFERRALS: usize = 8;
    let mut ids = Vec::new();
    for n in 0..REFERRALS {
        let created = create_emergency(&bus, &registry, &format!("paused-{n}"), at(T0)).await;
        ids.push(created.record.state.id);
    }
    // a resumes, finds the events its pull requests received, and gives the partition up.
    tokio::time::timeout(bounded, async {
        while !matches!(a_activity.recv().await.unwrap(), Activity::Released { .. }) {}
    })
    .await
    .expect("router a never gave the partition up");

    // Half time: the warning and the first escalation of every referral, by b.
    clock.advance_to(at("2026-03-02T09:30:00+08:00"));
    let mut recorded = std::collections::HashSet::new();
    let waiting = async {
        while recorded.len() < REFERRALS * 2 {
            if let Activity::Recorded { referral, key, .. } = b.activity.recv().await.unwrap() {
                recorded.insert((referral, key));
            }
        }
    };
    if tokio::time::timeout(bounded, waiting).await.is_err() {
        let without: Vec<_> = ids
            .iter()
            .filter(|id| !recorded.iter().any(|(referral, _)| referral == *id))
            .map(ToString::to_string)
            .collect();
        panic!(
            "referrals without their items: {without:?} ({} items recorded)",
            recorded.len()
        );
    }
    for id in &ids {
        assert_eq!(
            recorded_on(&bus, id).await,
            [
                "acknowledge_emergency.warning.500",
                "acknowledge_emergency.level.1.0"
            ],
            "{id}"
        );
    }
    let _ = stop_a.send(());
    a.join().unwrap();
    let _ = b.stop.send(());
    b.task.await.unwrap();
}

/// A partition whose takeover JetStream does not answer is given back and taken over again
/// once it answers: the router does not stop (a stop dropped every partition it held, and the
/// restart took them all over again against the same unsettled JetStream; docs/RELIABILITY.md,
/// finding 9). Here nats-server is paused while the router reads the partition's snapshot, a
/// pipe the test holds open, so that the rest of the takeover finds the bus frozen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_takeover_the_bus_fails_gives_the_partition_back_and_takes_it_over_again() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let created = create_emergency(&bus, &registry, "giveback-1", at(T0)).await;
    let dir = tempfile::tempdir().unwrap();
    let pipe = dir.path().join("router-part-0-of-1.timers");
    let made = std::process::Command::new("mkfifo")
        .arg(&pipe)
        .status()
        .unwrap();
    assert!(made.success());
    let clock = ManualClock::new(at(T0));
    let options = Options {
        snapshot: Some(dir.path().join("router-a.timers")),
        ..partitioned("a", 1)
    };
    let mut a = vec![start_replica(&nats, &registry, &clock, "a", options).await];

    // Opening the pipe to write waits for the router to open it to read: its takeover has
    // begun. The server is paused, the pipe removed (the next takeover finds no snapshot) and
    // closed: the snapshot read is empty, unusable, and the rebuild from the bus gets no answer.
    let opening = {
        let pipe = pipe.clone();
        tokio::task::spawn_blocking(move || std::fs::OpenOptions::new().write(true).open(pipe))
    };
    let writer = tokio::time::timeout(Duration::from_secs(30), opening)
        .await
        .expect("the router never read the partition's snapshot")
        .unwrap()
        .unwrap();
    nats.pause().unwrap();
    std::fs::remove_file(&pipe).unwrap();
    drop(writer);
    let given_back = async {
        loop {
            match a[0].activity.recv().await {
                Ok(Activity::Released { partition: 0 }) => return "given back",
                Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                Err(broadcast::error::RecvError::Closed) => return "the router stopped",
            }
        }
    };
    let given_back = tokio::time::timeout(refbus_bus::READ_TIMEOUT * 4, given_back).await;
    nats.resume().unwrap();
    assert_eq!(given_back, Ok("given back"));
    assert!(!a[0].task.is_finished(), "the router stopped");

    // Claimed again once the server answers, rebuilt from the bus, and its clocks run.
    let mut recorded = 0;
    until(&mut a, &mut recorded, |replicas, _| {
        replicas[0].pending.get(&0) == Some(&1)
    })
    .await;
    clock.advance_to(at("2026-03-02T10:30:00+08:00"));
    until(&mut a, &mut recorded, |_, recorded| recorded == 7).await;
    assert_eq!(recorded_on(&bus, &created.record.state.id).await.len(), 7);
    let a = a.pop().unwrap();
    let _ = a.stop.send(());
    a.task.await.unwrap();
}

/// A partition's timers are kept in a snapshot file of their own: a replica that takes the
/// partition over from the same directory starts from it (reading again only the referrals
/// changed since), and records every item once.
#[tokio::test]
async fn a_partition_taken_over_starts_from_its_snapshot_and_misses_nothing() {
    let nats = NatsServer::start().unwrap();
    let registry = maros();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let with_snapshots = |replica: &str| Options {
        snapshot: Some(dir.path().join(format!("router-{replica}.timers"))),
        snapshot_every: Duration::from_millis(50),
        ..partitioned(replica, 2)
    };
    const REFERRALS: usize = 12;
    let (mut ids, mut last) = (Vec::new(), 0);
    for n in 0..REFERRALS {
        let created = create_emergency(&bus, &registry, &format!("psnap-{n}"), at(T0)).await;
        ids.push(created.record.state.id);
        last = created.seq;
    }
    let clock = ManualClock::new(at(T0));
    let mut first = vec![start_replica(&nats, &registry, &clock, "a", with_snapshots("a")).await];
    let mut recorded = 0;
    until(&mut first, &mut recorded, |replicas, _| {
        replicas[0].held.len() == 2
    })
    .await;
    // Both partitions' snapshots written covering every referral (a snapshot report per file;
    // one covering less may come first, before the consumers' acknowledgements).
    let mut written = 0;
    while written < 2 {
        let activity = tokio::time::timeout(Duration::from_secs(60), first[0].activity.recv())
            .await
            .expect("no snapshot was written")
            .unwrap();
        if let Activity::Snapshot { covers, .. } = activity
            && covers >= last
        {
            written += 1;
        }
    }
    let first = first.pop().unwrap();
    let _ = first.stop.send(());
    first.task.await.unwrap();

    // A referral arrives while no router runs.
    let late = create_emergency(&bus, &registry, "psnap-late", at(T0)).await;
    ids.push(late.record.state.id);

    // Another replica, the same directory: both partitions from their snapshots.
    let b = start_replica(&nats, &registry, &clock, "b", with_snapshots("b")).await;
    let mut second = vec![b];
    let mut from_snapshots = 0;
    let mut pending = 0;
    let waiting = async {
        while from_snapshots < 2 {
            match second[0].activity.recv().await.unwrap() {
                Activity::Claimed {
                    from_snapshot: Some(_),
                    referrals,
                    pending: held,
                    ..
                } => {
                    from_snapshots += 1;
                    pending += held;
                    // Only the referral created since the snapshots is read again.
                    assert!(referrals <= 1, "{referrals} referrals read again");
                }
                Activity::Claimed { .. } => {
                    panic!("a partition was rebuilt, not started from its snapshot")
                }
                _ => {}
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(60), waiting)
        .await
        .expect("the partitions were not claimed");
    assert_eq!(pending, REFERRALS + 1);

    clock.advance_to(at("2026-03-02T10:30:00+08:00"));
    until(&mut second, &mut recorded, |_, recorded| {
        recorded == (REFERRALS + 1) * 7
    })
    .await;
    for id in &ids {
        assert_eq!(recorded_on(&bus, id).await.len(), 7, "{id}");
    }
    let b = second.pop().unwrap();
    let _ = b.stop.send(());
    b.task.await.unwrap();
}
