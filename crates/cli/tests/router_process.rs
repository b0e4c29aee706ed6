//! The router as a process, killed with SIGKILL at any moment and run as two replicas: every
//! item that fell due is recorded exactly once.
//!
//! Each router runs with a frozen pretend clock (`--clock-start`, `--clock-speed 0`), so the
//! test decides what "now" is for each run instead of waiting: the first run sees 35 minutes
//! pass, the later runs 100 minutes, with the time in between spent with no router at all.

mod common;

use common::repo_root;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::Duration;

use futures::StreamExt;
use refbus_bus::{Append, Bus, Idempotency, Item, StreamSettings, subjects};
use refbus_core::command::Request;
use refbus_core::ids::OperatorId;
use refbus_core::referral::{Consent, Creation, Priority};
use refbus_core::{Actor, AgencyId, Change, Command as CoreCommand, RequestId, Timestamp};
use refbus_seal::signing::SigningKeys;
use refbus_testkit::NatsServer;

const T0: &str = "2026-03-02T09:00:00+08:00";
const REFERRALS: usize = 10;
/// Per referral: warnings at 50% and 75%, level 1 at 50%, the breach, level 2 and its repeat,
/// and the reroute request 30 minutes after the breach.
const ITEMS_EACH: usize = 7;

fn start_router(
    nats: &str,
    keys: &Path,
    replica: &str,
    now: Timestamp,
) -> (Child, std::sync::mpsc::Receiver<String>) {
    let mut child = common::command(&[])
        .args(["router", "--nats", nats, "--replica", replica])
        .arg("--signing-key")
        .arg(keys.join("router.sign.key"))
        .arg("--public-keys")
        .arg(keys)
        .args(["--clock-start", &now.to_rfc3339(), "--clock-speed", "0"])
        .env("REFBUS_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The router's activity lines, read on a thread so the test can wait on them.
    let (lines_tx, lines) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { return };
            if lines_tx.send(line).is_err() {
                return;
            }
        }
    });
    (child, lines)
}

/// Waits until the router printed `count` recordings.
fn wait_for_recordings(lines: &std::sync::mpsc::Receiver<String>, count: usize) {
    let mut seen = 0;
    while seen < count {
        let line = lines
            .recv_timeout(Duration::from_secs(30))
            .expect("the router recorded too little");
        if line.starts_with("router: clock_")
            || line.starts_with("router: escalated")
            || line.starts_with("router: reroute")
        {
            seen += 1;
        }
    }
}

async fn create_referrals(
    bus: &Bus,
    registry: &refbus_core::Registry,
    keys: &SigningKeys,
) -> Vec<refbus_core::ReferralId> {
    let mut ids = Vec::new();
    for n in 0..REFERRALS {
        let creation = Creation {
            case_id: "MRS-CRASH".parse().unwrap(),
            sender: AgencyId::new("maros-dinsos").unwrap(),
            recipient: AgencyId::new("maros-uptd-ppa").unwrap(),
            service: "psychological_counselling".parse().unwrap(),
            priority: Priority::Emergency,
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
        };
        let request = Request {
            command: CoreCommand::Create(Box::new(creation)),
            actor: Actor::Agency {
                agency: AgencyId::new("maros-dinsos").unwrap(),
                system: None,
                operator: OperatorId::new("op").unwrap(),
            },
            request_id: Some(RequestId::new(format!("crash-{n}")).unwrap()),
        };
        let recorded = refbus_core::record(
            registry,
            None,
            &request,
            Timestamp::parse_rfc3339(T0).unwrap(),
        )
        .unwrap();
        let state = recorded.state;
        let key = keys.agency(state.sender());
        let request_id = RequestId::new(format!("crash-{n}")).unwrap();
        let idempotency = Idempotency::Request {
            agency: state.sender(),
            request_id: &request_id,
        };
        bus.append(&key, Append::after(recorded.event, &state, 0, idempotency))
            .await
            .unwrap();
        ids.push(state.id);
    }
    ids
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_routers_and_two_replicas_record_every_due_item_exactly_once() {
    let nats = NatsServer::start().unwrap();
    let registry = refbus_config::load(repo_root().join("deploy/config/refbus.toml")).unwrap();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let keys = SigningKeys::generate(&registry);
    let keys_dir = tempfile::tempdir().unwrap();
    keys.write_files(keys_dir.path()).unwrap();
    let verifier = refbus_bus::Verifier::new(
        std::sync::Arc::new(registry.clone()),
        std::sync::Arc::new(keys.signers()),
        None,
    );
    let ids = create_referrals(&bus, &registry, &keys).await;
    let t0 = Timestamp::parse_rfc3339(T0).unwrap();
    let mut router_events = bus
        .watch(&verifier, vec![subjects::ALL_REFERRALS.to_owned()], 0)
        .await
        .unwrap();

    // Run 1, 35 minutes in: the 50% warning and level 1 of each referral; then SIGKILL.
    let (mut first, lines) = start_router(
        &nats.url(),
        keys_dir.path(),
        "a",
        t0.plus(Duration::from_secs(35 * 60)),
    );
    wait_for_recordings(&lines, 2 * REFERRALS);
    first.kill().unwrap();
    first.wait().unwrap();

    // Run 2, 100 minutes in: the rest fell due while no router ran. SIGKILL in the middle.
    let (mut second, lines) = start_router(
        &nats.url(),
        keys_dir.path(),
        "a",
        t0.plus(Duration::from_secs(100 * 60)),
    );
    wait_for_recordings(&lines, 15);
    second.kill().unwrap();
    second.wait().unwrap();

    // Runs 3 and 4 at once, as two replicas: together they finish, and never twice.
    let later = t0.plus(Duration::from_secs(100 * 60));
    let (mut third, _lines3) = start_router(&nats.url(), keys_dir.path(), "a", later);
    let (mut fourth, _lines4) = start_router(&nats.url(), keys_dir.path(), "b", later);
    let mut recorded = 0;
    while recorded < REFERRALS * ITEMS_EACH {
        let item = tokio::time::timeout(Duration::from_secs(60), router_events.next())
            .await
            .expect("items are missing")
            .unwrap()
            .unwrap();
        if let Item::Event(stored) = item
            && stored.record.event.actor == Actor::Router
        {
            recorded += 1;
        }
    }
    third.kill().unwrap();
    fourth.kill().unwrap();
    let _ = (third.wait(), fourth.wait());

    for id in &ids {
        let history = bus.history(&subjects::referral_pattern(id)).await.unwrap();
        let mut keys: Vec<String> = history
            .iter()
            .filter_map(|stored| match &stored.record.event.change {
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
                Change::RerouteRequested { .. } => Some("reroute".to_owned()),
                _ => None,
            })
            .collect();
        assert_eq!(keys.len(), ITEMS_EACH, "{id}: {keys:?}");
        keys.sort();
        keys.dedup();
        assert_eq!(keys.len(), ITEMS_EACH, "{id}: an item was recorded twice");
        refbus_core::chain::verify(history.iter().map(|stored| &stored.record.event)).unwrap();
    }
}

#[test]
fn the_router_logs_in_with_a_user_and_a_password_file() {
    let nats = NatsServer::builder()
        .extra_config("authorization { users = [ { user: \"refbus-router\", password: \"s3cret-router\" } ] }")
        .start()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let registry = refbus_config::load(repo_root().join("deploy/config/refbus.toml")).unwrap();
    SigningKeys::generate(&registry)
        .write_files(dir.path())
        .unwrap();
    let run = |password: &str| {
        let file = dir.path().join("password");
        std::fs::write(&file, format!("{password}\n")).unwrap();
        let mut child = common::command(&[])
            .args([
                "router",
                "--nats",
                &nats.url(),
                "--nats-user",
                "refbus-router",
                "--nats-password-file",
            ])
            .arg(&file)
            .arg("--signing-key")
            .arg(dir.path().join("router.sign.key"))
            .arg("--public-keys")
            .arg(dir.path())
            .env("REFBUS_LOG", "error")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let _ = child.kill();
        let _ = child.wait();
        first
    };
    assert!(run("s3cret-router").starts_with("router: ready"));
    assert_eq!(
        run("wrong"),
        "",
        "a wrong password never gets the router ready"
    );
}

/// `refbus router --metrics-addr` serves the router's metrics while it runs: every creation
/// consumed, nothing left behind in its consumer, a timer per open referral.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_router_process_serves_its_metrics_on_metrics_addr() {
    let nats = NatsServer::start().unwrap();
    let registry = refbus_config::load(repo_root().join("deploy/config/refbus.toml")).unwrap();
    let bus = Bus::connect(&nats.url(), &StreamSettings::default())
        .await
        .unwrap();
    let keys = SigningKeys::generate(&registry);
    let keys_dir = tempfile::tempdir().unwrap();
    keys.write_files(keys_dir.path()).unwrap();
    create_referrals(&bus, &registry, &keys).await;
    let address = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut child = common::command(&[])
        .args(["router", "--nats", &nats.url(), "--replica", "metrics"])
        .arg("--signing-key")
        .arg(keys_dir.path().join("router.sign.key"))
        .arg("--public-keys")
        .arg(keys_dir.path())
        .args(["--clock-start", T0, "--clock-speed", "0"])
        .args(["--metrics-addr", &address.to_string()])
        .env("REFBUS_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // The socket is bound before the router starts: a scrape waits for it to serve. The
    // router consumes at its own pace; the test waits for the counts, never for a time.
    let mut last = String::new();
    for _ in 0..2_000 {
        if let Ok(scraped) = refbus_metrics::scrape(address).await {
            assert_eq!(scraped.status, 200);
            last = scraped.body;
            let value = |name| refbus_metrics::sample(&last, name, &[]);
            if value("refbus_router_events_consumed_total") == Some(REFERRALS as f64)
                && value("refbus_router_lag_events") == Some(0.0)
                && value("refbus_router_timers_pending") == Some(REFERRALS as f64)
            {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let value = |name| refbus_metrics::sample(&last, name, &[]);
    assert_eq!(
        value("refbus_router_events_consumed_total"),
        Some(REFERRALS as f64),
        "{last}"
    );
    assert_eq!(value("refbus_router_lag_events"), Some(0.0), "{last}");
    assert_eq!(
        value("refbus_router_timers_pending"),
        Some(REFERRALS as f64),
        "{last}"
    );
}
