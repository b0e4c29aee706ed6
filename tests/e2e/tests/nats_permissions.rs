//! The production NATS permissions (`deploy/nats/permissions.conf`) on a real nats-server: each
//! component runs on its own user, adapters write only on their agency's referrals, auditors
//! write nothing, nobody deletes or purges, and what the permissions cannot stop (reading
//! other agencies' metadata; changing the router's durable consumer) is shown as it is, with
//! the sealing that protects identities.
//!
//! The server runs the shipped permissions file unchanged, next to a passwords file written
//! here; every refusal asserted below is the server's own ("Permissions Violation ..."), seen
//! by the client and logged by the server, and changes nothing on the bus.

use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use async_nats::jetstream;
use async_nats::{Client, ConnectOptions, Event};
use futures::{StreamExt, TryStreamExt};
use refbus_bus::{Bus, Item, StreamSettings, subjects};
use refbus_core::{AgencyId, ReferralId, Timestamp};
use refbus_e2e::{System, create_request, demo_registry, maros_registry, recorded, repo_root};
use refbus_proto::v1;
use refbus_router::{Activity, ManualClock, Options};
use refbus_testkit::NatsServer;
use tokio::sync::mpsc;

const STREAM: &str = "REFBUS_EVENTS";

/// The test users' bcrypt hashes (cost 4, Python `bcrypt` 5.0.0) of `test-<user>`; every other
/// user of the permissions file gets a hash whose password nobody knows.
const TEST_HASHES: &[(&str, &str)] = &[
    (
        "maros-dinsos",
        "$2b$04$a8W7WXmrTQOc550jz/gO2OK/GbWmG8ERYbWZxSQAD7XEDmrJIRuli",
    ),
    (
        "maros-uptd-ppa",
        "$2b$04$v4.DAEWFif9omBnQ6K9SZ.Y.YbIPIvV/EoTsT2g4XHej68x5TZUaK",
    ),
    (
        "maros-bappeda",
        "$2b$04$dYzUPi2xkgsh0Fk5ok377.jWK6TpA59cnrE6Cpy1raD6jDZROVAKG",
    ),
    (
        "polres-maros",
        "$2b$04$cti.MCElzIkCpCTb9uOwP.F1ASrNkFLe53NdDSXVpO/qr87rbJCyG",
    ),
    (
        "refbus-router",
        "$2b$04$pULQsQgw/EykdLHeawrNoegXios0383ev0ziWnffVc8iYhLwkPSvS",
    ),
    (
        "refbus-notary",
        "$2b$04$W5vvKuLt0ld3vrmfMO7vOughlnlKUGQEQZUDnJ2BnKpIDpKyhEp3u",
    ),
    (
        "refbus-witness",
        "$2b$04$dww2ZjTBrfcJRfV2r9EnW.e.mgcSyKpewfpu1M8/ByrgGfx.MFAUq",
    ),
    (
        "refbus-auditor",
        "$2b$04$DYD5ilYUBSRPMkA3P3evouzx3gdw/rW6TTEyG3whdMeJH14yUvIKy",
    ),
    (
        "refbus-dashboard",
        "$2b$04$KjLo/R/PrjszxOD5.70Dj.rFXRzu3eVCiDObUJ1yheMoelWgmsKB6",
    ),
    (
        "refbus-admin",
        "$2b$04$o9YYluOmHbSgOmNKR/vKJOZFc6HFru.v2zJBmqP5PcAI4Rg2d.Nm2",
    ),
];

/// bcrypt of a random password that was thrown away.
const NOBODY_KNOWS: &str = "$2b$04$B7HZUPlIs41.YYbD4JvOoOmyY5FxBre7H8fDHJTc4dB3Pq./K/T7.";

fn deploy_nats() -> PathBuf {
    repo_root().join("deploy/nats")
}

/// The variable a user's password hash is defined in (`maros-dinsos` → `MAROS_DINSOS_PASSWORD`).
fn password_variable(user: &str) -> String {
    format!("{}_PASSWORD", user.to_uppercase().replace('-', "_"))
}

/// A passwords.conf for every `password: $NAME` of `permissions`, as an administrator writes
/// one (deploy/nats/README.md).
fn test_passwords(permissions: &str) -> String {
    let mut text = String::new();
    for line in permissions.lines() {
        let Some(variable) = line.trim().strip_prefix("password: $") else {
            continue;
        };
        let hash = TEST_HASHES
            .iter()
            .find(|(user, _)| password_variable(user) == variable)
            .map_or(NOBODY_KNOWS, |(_, hash)| hash);
        text.push_str(&format!("{variable}: \"{hash}\"\n"));
    }
    text
}

/// A server with JetStream as production runs it (fsync on every write) and the shipped
/// permissions.
fn start_nats() -> NatsServer {
    let permissions = std::fs::read_to_string(deploy_nats().join("permissions.conf")).unwrap();
    NatsServer::builder()
        .sync_always(true)
        .config_file("passwords.conf", test_passwords(&permissions))
        .config_file("permissions.conf", permissions)
        .extra_config("include \"permissions.conf\"")
        .start()
        .unwrap()
}

/// The readers' deny list names the consumer of every router the deployment files run (their
/// replicas, unpartitioned) and of every partition count `refbus router` accepts: a consumer
/// name is one subject token, so one it missed would be open to every reader.
#[test]
fn the_readers_deny_list_names_every_routers_consumer_the_deployment_runs() {
    let permissions = std::fs::read_to_string(deploy_nats().join("permissions.conf")).unwrap();
    let start = permissions.find("READERS_NEVER: [").unwrap();
    let end = start + permissions[start..].find("\n]").unwrap();
    let denied: std::collections::BTreeSet<&str> = permissions[start..end]
        .lines()
        .filter_map(|line| line.trim().strip_prefix('"')?.strip_suffix('"'))
        .collect();
    let assert_denied = |name: &str| {
        for subject in [
            format!("$JS.API.CONSUMER.CREATE.REFBUS_EVENTS.{name}"),
            format!("$JS.API.CONSUMER.CREATE.REFBUS_EVENTS.{name}.>"),
            format!("$JS.API.CONSUMER.MSG.NEXT.REFBUS_EVENTS.{name}"),
            format!("$JS.API.CONSUMER.DELETE.REFBUS_EVENTS.{name}"),
        ] {
            assert!(denied.contains(subject.as_str()), "{subject} is not denied");
        }
    };
    for count in 1..=refbus_router::MAX_PARTITIONS {
        let partitions = refbus_router::Partitions::new(count);
        for k in 0..count {
            assert_denied(&partitions.consumer(k));
        }
    }
    // The replicas the deployment files name: systemd's (its environment file's, and the
    // second replica its unit describes), and the Kubernetes StatefulSet's pods, scaled up to
    // three.
    let deploy = deploy_nats().join("..");
    let read = |path: &str| std::fs::read_to_string(deploy.join(path)).unwrap();
    let env = read("systemd/router.env");
    let main = env
        .lines()
        .find_map(|line| line.strip_prefix("REFBUS_ROUTER_REPLICA="))
        .unwrap();
    assert!(read("systemd/refbus-router.service").contains("REFBUS_ROUTER_REPLICA=b"));
    let manifest = read("k8s/router.yaml");
    // Pods of the StatefulSet refbus-router are refbus-router-0, -1, ...
    assert!(manifest.contains("kind: StatefulSet\nmetadata:\n  name: refbus-router\n"));
    assert!(manifest.contains("--replica=$(POD_NAME)"));
    let pods: u32 = manifest
        .lines()
        .find_map(|line| line.trim().strip_prefix("replicas: "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(pods <= 3, "the StatefulSet runs {pods} pods");
    let mut replicas = vec![main.to_owned(), "b".to_owned()];
    replicas.extend((0..3).map(|pod| format!("refbus-router-{pod}")));
    for replica in replicas {
        assert_denied(&refbus_router::replica_consumer(&replica));
    }
    // And every user that may pull from a consumer, but the router's own, is denied the list.
    let users: Vec<&str> = permissions
        .match_indices("user: \"")
        .map(|(at, found)| {
            let name = &permissions[at + found.len()..];
            &name[..name.find('"').unwrap()]
        })
        .collect();
    let mut pullers = 0;
    for user in users {
        let block = user_block(&permissions, user).unwrap();
        if user != "refbus-router" && block.contains("$JS.API.CONSUMER.MSG.NEXT.") {
            assert!(
                block.contains("deny: $READERS_NEVER"),
                "{user} may pull from the routers' consumers"
            );
            pullers += 1;
        }
    }
    assert!(pullers >= 10, "{pullers}");
}

/// The user block of `user` in the permissions file: from its `user:` line to the block's end.
fn user_block<'f>(permissions: &'f str, user: &str) -> Option<&'f str> {
    let start = permissions.find(&format!("user: \"{user}\"\n"))?;
    let end = start + permissions[start..].find("\n      }\n")?;
    Some(&permissions[start..end])
}

/// Every agency of the shipped registry has its NATS user, and each is the same rules with its
/// own id: Dinas Sosial's for an agency that only sends and receives, the coordinator's for the
/// coordinator and any agency an escalation names (which acknowledges on referrals between
/// others). A block copied for a new agency with one id left unchanged would let that agency
/// read another's referrals; a missing one would stop its adapter; a named escalation target
/// with the narrower rules could not acknowledge.
#[test]
fn every_agency_of_the_registry_has_its_own_user_with_the_rules_of_its_kind() {
    let permissions = std::fs::read_to_string(deploy_nats().join("permissions.conf")).unwrap();
    let registry = maros_registry();
    let coordinator = registry.coordinator.to_string();
    let mut acknowledging: std::collections::BTreeSet<String> = registry
        .policies
        .iter()
        .flat_map(|policy| policy.escalations.values())
        .flat_map(|escalation| &escalation.levels)
        .flat_map(|level| &level.targets)
        .filter_map(|target| match target {
            refbus_core::escalation::Target::Agency { agency, .. } => Some(agency.to_string()),
            _ => None,
        })
        .collect();
    acknowledging.insert(coordinator.clone());
    let variable = |agency: &str| agency.to_uppercase().replace('-', "_");
    // `template`'s block with `agency` in place of its id (and of its password's variable).
    let rendered = |template: &str, agency: &str| {
        user_block(&permissions, template)
            .unwrap_or_else(|| panic!("no user {template}"))
            .replace(template, agency)
            .replace(&variable(template), &variable(agency))
    };
    for agency in registry.agencies.keys().map(ToString::to_string) {
        let template = if acknowledging.contains(&agency) {
            coordinator.as_str()
        } else {
            "maros-dinsos"
        };
        let block = user_block(&permissions, &agency)
            .unwrap_or_else(|| panic!("{agency} has no user in permissions.conf"));
        assert_eq!(
            block,
            rendered(template, &agency),
            "{agency}'s user is not {template}'s rules with its own id"
        );
    }
}

/// Whether `user` is an agency's (its adapter's) user rather than one of refbus's own.
fn is_agency(user: &str) -> bool {
    !user.starts_with("refbus-")
}

fn credentials(user: &str) -> ConnectOptions {
    let options = ConnectOptions::with_user_and_password(user.to_owned(), format!("test-{user}"));
    if is_agency(user) {
        // The only inbox an agency's user may subscribe to, as the bus sets it.
        options.custom_inbox_prefix(format!("_INBOX.{user}"))
    } else {
        options
    }
}

/// How a component connects on its own user: an adapter confined to its agency, as
/// `refbus adapter` connects.
fn bus_options(nats: &NatsServer, user: &str) -> refbus_bus::ConnectOptions {
    let options = refbus_bus::ConnectOptions::new([nats.url()]).with_credentials(
        refbus_bus::Credentials::UserPassword {
            user: user.to_owned(),
            password: format!("test-{user}"),
        },
    );
    if is_agency(user) {
        options.confined_to(AgencyId::new(user).unwrap())
    } else {
        options
    }
}

/// A component's bus connection on its own user.
async fn bus_as(nats: &NatsServer, user: &str) -> Bus {
    Bus::connect(&bus_options(nats, user), &StreamSettings::default())
        .await
        .unwrap_or_else(|err| panic!("{user} could not connect to the bus: {err}"))
}

/// The router's bus connection on its own user, as `refbus router` connects: the stream
/// checked and its signed statement stored for the adapters, which refuse to start without it.
async fn router_bus(system: &System) -> Bus {
    Bus::connect_attesting(
        &bus_options(&system.nats, "refbus-router"),
        &StreamSettings::default(),
        &system.signing.router(),
    )
    .await
    .unwrap_or_else(|err| panic!("the router could not connect to the bus: {err}"))
}

/// The server's permission refusals logged so far, one line each.
fn violations(nats: &NatsServer) -> Vec<String> {
    nats.log()
        .into_iter()
        .filter(|line| line.contains("Violation"))
        .collect()
}

/// A raw connection on one user, with the errors the server sends it.
struct Session {
    client: Client,
    errors: mpsc::UnboundedReceiver<String>,
}

impl Session {
    async fn open(nats: &NatsServer, user: &str) -> Session {
        let (sender, errors) = mpsc::unbounded_channel();
        let client = credentials(user)
            .event_callback(move |event| {
                if let Event::ServerError(error) = event {
                    let _ = sender.send(error.to_string());
                }
                async {}
            })
            .connect(nats.url())
            .await
            .unwrap();
        Session { client, errors }
    }

    /// Waits for the server's next error on this connection.
    async fn refusal(&mut self) -> String {
        tokio::time::timeout(Duration::from_secs(5), self.errors.recv())
            .await
            .expect("the server sent no error")
            .unwrap()
    }

    /// Publishes on `subject`, and returns the server's refusal.
    async fn refused_publish(&mut self, subject: &str) -> String {
        self.refused_request(subject, "{}").await
    }

    /// Sends the JetStream API request `body` on `subject` as a client library would (a reply
    /// inbox of this user's), and returns the server's refusal. No answer ever comes to the
    /// inbox: the request never reaches JetStream.
    async fn refused_request(&mut self, subject: &str, body: &str) -> String {
        let inbox = self.client.new_inbox();
        self.client
            .publish_with_reply(subject.to_owned(), inbox, body.to_owned().into())
            .await
            .unwrap();
        self.client.flush().await.unwrap();
        self.refusal().await
    }

    /// A JetStream context whose requests give up quickly: a refused request is never answered.
    fn jetstream(&self) -> jetstream::Context {
        jetstream::ContextBuilder::new()
            .timeout(Duration::from_secs(1))
            .build(self.client.clone())
    }
}

fn publish_refused(subject: &str) -> String {
    format!("nats: Permissions Violation for Publish to \"{subject}\"")
}

/// Creates a referral from `sender` to `recipient` through `sender`'s adapter; its id.
async fn create(system: &refbus_e2e::AgencySystem, recipient: &str, request_id: &str) -> String {
    let mut request = create_request(request_id, recipient, "psychological_counselling");
    request.priority = v1::Priority::Emergency.into();
    system.create(request).await
}

/// Stream messages, as the admin sees them.
async fn stored_messages(nats: &NatsServer) -> u64 {
    let admin = Session::open(nats, "refbus-admin").await;
    let mut stream = admin.jetstream().get_stream(STREAM).await.unwrap();
    stream.info().await.unwrap().state.messages
}

/// Starts the router on its own user with `clock`; returns once its timers are rebuilt.
async fn start_router(
    system: &System,
    clock: &ManualClock,
) -> tokio::sync::broadcast::Receiver<Activity> {
    let router = system.router(
        router_bus(system).await,
        Arc::new(clock.clone()),
        Options::default(),
    );
    let mut activity = router.activity();
    tokio::spawn(router.run(std::future::pending()));
    loop {
        if let Activity::Ready { .. } = activity.recv().await.unwrap() {
            return activity;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_component_works_on_its_own_user_router_and_coordinator_included() {
    let clock = ManualClock::new(Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap());
    let mut system = System::with_registry(start_nats(), demo_registry()).await;
    system.use_clock(Arc::new(clock.clone()));
    // The router starts first: it creates the stream, which adapters may not.
    let mut activity = start_router(&system, &clock).await;
    let dinsos_bus = bus_as(&system.nats, "maros-dinsos").await;
    let dinsos = system.agency_on("maros-dinsos", dinsos_bus).await;
    let uptd_bus = bus_as(&system.nats, "maros-uptd-ppa").await;
    let uptd = system.agency_on("maros-uptd-ppa", uptd_bus).await;
    let bappeda_bus = bus_as(&system.nats, "maros-bappeda").await;
    let bappeda = system.agency_on("maros-bappeda", bappeda_bus).await;

    let id = create(&dinsos, "maros-uptd-ppa", "perm-1").await;

    // Nobody acknowledges for two minutes: the router records the breach and level 2, and
    // sends the coordinator a notice.
    clock.advance_by(Duration::from_secs(120));
    recorded(&mut activity, "acknowledge_emergency.level.2.0").await;
    let mut coordinator_inbox = bappeda
        .client()
        .watch_inbox(bappeda.request(v1::WatchInboxRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let first = coordinator_inbox
        .next()
        .await
        .unwrap()
        .unwrap()
        .item
        .unwrap();
    let Some(v1::inbox_item::Item::Notice(notice)) = first.item else {
        panic!("the coordinator expected a notice, got {first:?}");
    };
    assert_eq!(notice.referral_id, id);
    // The coordinator acknowledges on a referral between two other agencies.
    bappeda
        .client()
        .acknowledge_escalation(bappeda.request(v1::AcknowledgeEscalationRequest {
            request_id: "bappeda-ack-1".into(),
            referral_id: id.clone(),
            clock_id: "acknowledge_emergency".into(),
            level: 2,
        }))
        .await
        .unwrap();

    // UPTD PPA finds the referral in its inbox, with the identity sealed for it, and accepts.
    let mut uptd_inbox = uptd
        .client()
        .watch_inbox(uptd.request(v1::WatchInboxRequest::default()))
        .await
        .unwrap()
        .into_inner();
    let first = uptd_inbox.next().await.unwrap().unwrap().item.unwrap();
    let Some(v1::inbox_item::Item::Event(created)) = first.item else {
        panic!("UPTD PPA expected the created event, got {first:?}");
    };
    let Some(v1::event::Change::Created(creation)) = created.change else {
        panic!("not a create: {created:?}");
    };
    assert_eq!(creation.identity.unwrap().nik, "7309014503120001");
    uptd.client()
        .confirm_receipt(uptd.request(v1::ConfirmReceiptRequest {
            request_id: "uptd-1".into(),
            referral_id: id.clone(),
        }))
        .await
        .unwrap();
    uptd.client()
        .accept_referral(uptd.request(v1::AcceptReferralRequest {
            request_id: "uptd-2".into(),
            referral_id: id.clone(),
        }))
        .await
        .unwrap();

    // Dinas Sosial reads it back (direct gets) and lists it (an ordered consumer).
    let got = dinsos
        .client()
        .get_referral(dinsos.request(v1::GetReferralRequest {
            referral_id: id.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.referral.unwrap().status(), v1::ReferralStatus::Accepted);
    let listed = dinsos
        .client()
        .list_referrals(dinsos.request(v1::ListReferralsRequest::default()))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(listed.referrals.len(), 1);

    // An inbox outlives its consumer (as after a NATS restart): the client deletes what is left
    // of the old consumer and creates it again under a new name, without delay. (Were the
    // delete refused, the client would wait for its 5 s request timeout first.)
    let mut dinsos_inbox = dinsos
        .client()
        .watch_inbox(dinsos.request(v1::WatchInboxRequest::default()))
        .await
        .unwrap()
        .into_inner();
    dinsos_inbox.next().await.unwrap().unwrap();
    let admin = Session::open(&system.nats, "refbus-admin").await;
    let stream = admin.jetstream().get_stream(STREAM).await.unwrap();
    let consumers: Vec<_> = stream.consumers().try_collect().await.unwrap();
    let inbox_consumer = consumers
        .iter()
        .find(|info| info.config.filter_subject == "refbus.v1.notice.maros-dinsos.*")
        .unwrap_or_else(|| panic!("no inbox consumer among {consumers:#?}"));
    stream.delete_consumer(&inbox_consumer.name).await.unwrap();
    dinsos
        .client()
        .add_note(dinsos.request(v1::AddNoteRequest {
            request_id: "dinsos-note".into(),
            referral_id: id.clone(),
            note: "Nenek bisa dihubungi sore hari".into(),
            sealed_note: None,
        }))
        .await
        .unwrap();
    loop {
        let item = tokio::time::timeout(Duration::from_secs(10), dinsos_inbox.next())
            .await
            .expect("the inbox stopped after its consumer was deleted")
            .unwrap()
            .unwrap();
        if let Some(v1::inbox_item::Item::Event(event)) = item.item.and_then(|item| item.item)
            && matches!(event.change, Some(v1::event::Change::NoteAdded(_)))
        {
            break;
        }
    }

    assert_eq!(violations(&system.nats), Vec::<String>::new());
}

/// Partitioned routers on the shipped permissions, as `--partitions 6`: two replicas keep their
/// leases in the bucket on the router's user, share the six partitions out and record a due
/// item, with no permission refused; no adapter, auditor or dashboard may create, pull from or
/// delete a partition's consumer, of that count or of any other `refbus router` accepts.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partitioned_routers_share_the_work_on_their_user_and_readers_cannot_touch_their_consumers()
{
    let clock = ManualClock::new(Timestamp::parse_rfc3339("2026-03-02T09:00:00+08:00").unwrap());
    let mut system = System::with_registry(start_nats(), demo_registry()).await;
    system.use_clock(Arc::new(clock.clone()));
    let mut activities = Vec::new();
    for replica in ["a", "b"] {
        let router = system.router(
            router_bus(&system).await,
            Arc::new(clock.clone()),
            Options {
                replica: replica.to_owned(),
                partitions: Some(refbus_router::Partitions::new(6)),
                ..Options::default()
            },
        );
        activities.push(router.activity());
        tokio::spawn(router.run(std::future::pending()));
    }
    // Shared out: each replica holds three partitions, every partition held by one.
    let mut held = [
        std::collections::BTreeSet::new(),
        std::collections::BTreeSet::new(),
    ];
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    while !(held[0].len() == 3 && held[1].len() == 3 && held[0].is_disjoint(&held[1])) {
        let [first, second] = &mut activities[..] else {
            unreachable!("two replicas")
        };
        let next = tokio::time::timeout_at(deadline, async {
            tokio::select! {
                next = first.recv() => (0, next.unwrap()),
                next = second.recv() => (1, next.unwrap()),
            }
        })
        .await;
        let Ok((n, next)) = next else {
            panic!(
                "the partitions were not shared out: {held:?}; {:?}",
                violations(&system.nats)
            );
        };
        match next {
            Activity::Claimed { partition, .. } => {
                held[n].insert(partition);
            }
            Activity::Released { partition } => {
                held[n].remove(&partition);
            }
            _ => {}
        }
    }
    let dinsos_bus = bus_as(&system.nats, "maros-dinsos").await;
    let dinsos = system.agency_on("maros-dinsos", dinsos_bus).await;
    let id = create(&dinsos, "maros-uptd-ppa", "perm-part-1").await;
    let id: ReferralId = id.parse().unwrap();
    let holder = refbus_router::Partitions::new(6).of(&id);
    let activity = if held[0].contains(&holder) {
        &mut activities[0]
    } else {
        &mut activities[1]
    };
    // Nobody acknowledges for two minutes: the replica holding its partition records level 2.
    clock.advance_by(Duration::from_secs(120));
    recorded(activity, "acknowledge_emergency.level.2.0").await;
    assert_eq!(violations(&system.nats), Vec::<String>::new());

    for user in ["maros-dinsos", "refbus-auditor", "refbus-dashboard"] {
        let mut session = Session::open(&system.nats, user).await;
        let consumers = [(0, 6), (5, 6), (0, 1), (3, 4), (11, 12)];
        for (k, count) in consumers {
            let name = refbus_router::Partitions::new(count).consumer(k);
            for subject in [
                format!("$JS.API.CONSUMER.CREATE.REFBUS_EVENTS.{name}"),
                format!("$JS.API.CONSUMER.CREATE.REFBUS_EVENTS.{name}.refbus.v1.ref.>"),
                format!("$JS.API.CONSUMER.MSG.NEXT.REFBUS_EVENTS.{name}"),
                format!("$JS.API.CONSUMER.DELETE.REFBUS_EVENTS.{name}"),
            ] {
                assert_eq!(
                    session.refused_request(&subject, "{}").await,
                    publish_refused(&subject),
                    "{user} on {subject}"
                );
            }
        }
        // Nor the leases: nobody but the router writes or reads them.
        let subject = "$KV.REFBUS_ROUTER_LEASES.partition.0-of-6";
        assert_eq!(
            session.refused_publish(subject).await,
            publish_refused(subject),
            "{user} on {subject}"
        );
    }
}

/// A referral from UPTD PPA to the police, with nothing of Dinas Sosial in it: its subject.
async fn referral_between_others(system: &mut System) -> (String, ReferralId) {
    let uptd_bus = bus_as(&system.nats, "maros-uptd-ppa").await;
    let uptd = system.agency_on("maros-uptd-ppa", uptd_bus).await;
    let mut request = create_request("uptd-to-police", "polres-maros", "police_report");
    request.priority = v1::Priority::Urgent.into();
    let id: ReferralId = uptd.create(request).await.parse().unwrap();
    let subject = subjects::referral(
        &AgencyId::new("polres-maros").unwrap(),
        &AgencyId::new("maros-uptd-ppa").unwrap(),
        &id,
    );
    (subject, id)
}

/// A system on the shipped permissions whose stream the router's user created.
async fn permissioned_system() -> System {
    let system = System::with_registry(start_nats(), maros_registry()).await;
    router_bus(&system).await;
    system
}

#[tokio::test]
async fn an_agency_writes_only_on_its_own_referrals_and_nobody_deletes_or_purges() {
    let mut system = permissioned_system().await;
    let (subject, id) = referral_between_others(&mut system).await;
    let before = stored_messages(&system.nats).await;

    // Dinas Sosial's user writes an event on the police's referral from UPTD PPA, as its
    // adapter would append one: the server refuses the publish and no acknowledgement comes.
    let mut dinsos = Session::open(&system.nats, "maros-dinsos").await;
    let append = dinsos
        .jetstream()
        .publish(subject.clone(), "{}".into())
        .await
        .unwrap();
    assert_eq!(dinsos.refusal().await, publish_refused(&subject));
    let ack = append
        .await
        .expect_err("a refused publish was acknowledged");
    assert_eq!(
        ack.kind(),
        async_nats::jetstream::context::PublishErrorKind::TimedOut
    );
    // Nor a notice, not even one for itself: only the router sends notices.
    let notice = subjects::notice(&AgencyId::new("maros-dinsos").unwrap(), &id);
    assert_eq!(
        dinsos.refused_publish(&notice).await,
        publish_refused(&notice)
    );

    // Nobody deletes or purges: not an adapter, not the router, not the auditor, not the
    // admin. The stream refuses message deletes and purges itself; deleting the whole stream
    // only the permissions stop.
    for user in [
        "maros-dinsos",
        "maros-bappeda",
        "refbus-router",
        "refbus-auditor",
        "refbus-dashboard",
        "refbus-admin",
    ] {
        let mut session = Session::open(&system.nats, user).await;
        for api in [
            "$JS.API.STREAM.DELETE.REFBUS_EVENTS",
            "$JS.API.STREAM.PURGE.REFBUS_EVENTS",
            "$JS.API.STREAM.MSG.DELETE.REFBUS_EVENTS",
        ] {
            assert_eq!(
                session.refused_publish(api).await,
                publish_refused(api),
                "{user}"
            );
        }
    }
    // Through the client's own API too: the request is refused, no answer comes.
    let admin = Session::open(&system.nats, "refbus-admin").await;
    assert!(admin.jetstream().delete_stream(STREAM).await.is_err());
    // And the admin, who may update the stream, cannot lift its own refusal of deletes and
    // purges: the server answers that an update cannot cancel them.
    let js = admin.jetstream();
    let config = js
        .get_stream(STREAM)
        .await
        .unwrap()
        .cached_info()
        .config
        .clone();
    for loosened in [
        jetstream::stream::Config {
            deny_delete: false,
            ..config.clone()
        },
        jetstream::stream::Config {
            deny_purge: false,
            ..config.clone()
        },
    ] {
        let refused = js.update_stream(loosened).await.unwrap_err().to_string();
        assert!(refused.contains("can not cancel deny"), "{refused}");
    }

    assert_eq!(stored_messages(&system.nats).await, before);
    let auditor = bus_as(&system.nats, "refbus-auditor").await;
    let last = auditor.last(&subject).await.unwrap().unwrap();
    assert_eq!(
        (last.seq, last.record.event.seq),
        (1, 1),
        "still the create alone"
    );
    // The server logged each refusal with the user's name.
    let logged = violations(&system.nats);
    assert!(
        logged.iter().any(|line| line.contains("maros-dinsos")
            && line.contains("Publish Violation")
            && line.contains(&subject)),
        "{logged:#?}"
    );
}

/// The auditor and the dashboard have the same rights: every read, no write.
#[tokio::test]
async fn the_auditor_and_the_dashboard_read_every_event_and_write_none() {
    let mut system = permissioned_system().await;
    let (police_referral, id) = referral_between_others(&mut system).await;
    let dinsos_bus = bus_as(&system.nats, "maros-dinsos").await;
    let dinsos = system.agency_on("maros-dinsos", dinsos_bus).await;
    create(&dinsos, "maros-uptd-ppa", "dinsos-to-uptd").await;
    let before = stored_messages(&system.nats).await;

    for user in ["refbus-auditor", "refbus-dashboard"] {
        reads_every_event_and_writes_none(&system, user, &police_referral, &id, before).await;
    }
}

async fn reads_every_event_and_writes_none(
    system: &System,
    user: &str,
    police_referral: &str,
    id: &ReferralId,
    before: u64,
) {
    // Everything, from the start, as a replay or the dashboard reads it (an ordered consumer)...
    let auditor = bus_as(&system.nats, user).await;
    let replay: Vec<Item> = auditor
        .watch(&system.verifier(), vec!["refbus.v1.>".to_owned()], 0)
        .await
        .unwrap()
        .take(2)
        .map(Result::unwrap)
        .collect()
        .await;
    let subjects_read: Vec<&str> = replay
        .iter()
        .map(|item| match item {
            Item::Event(stored) => stored.subject.as_str(),
            Item::Notice(stored) => stored.subject.as_str(),
            Item::Integrity(stored) => stored.subject.as_str(),
        })
        .collect();
    assert_eq!(subjects_read[0], police_referral, "{user}");
    assert!(subjects_read[1].starts_with("refbus.v1.ref.maros-uptd-ppa.maros-dinsos."));
    // ... one referral's history (direct gets), and every referral's state.
    assert_eq!(auditor.history(police_referral).await.unwrap().len(), 1);
    let states = auditor
        .latest(vec![subjects::ALL_REFERRALS.to_owned()])
        .await
        .unwrap()
        .count()
        .await;
    assert_eq!(states, 2, "{user}");
    // ... the reads of the dashboard's start from a snapshot: the stream's last sequence,
    // the referrals written since, each one's checked last record and history.
    assert_eq!(auditor.last_sequence().await.unwrap(), before, "{user}");
    let changed = auditor.referral_subjects_after(0).await.unwrap();
    assert_eq!(changed.len(), 2, "{user}: {changed:?}");
    assert!(
        auditor
            .referral(&system.verifier(), police_referral)
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        auditor
            .checked_history(&system.verifier(), police_referral)
            .await
            .unwrap()
            .len(),
        1
    );
    // ... and `refbus audit verify` in full: every message, JetStream's own figures, clocks.
    let options = refbus_audit::verify::Options {
        now: (system.now)(),
        resume: None,
        progress: false,
    };
    let checks = refbus_audit::checks::standard(
        system.registry.clone(),
        refbus_core::audit::DEFAULT_TOLERANCE,
    );
    let outcome = refbus_audit::verify::verify_bus(
        &auditor,
        &system.verifier(),
        checks,
        &options,
        &std::sync::atomic::AtomicBool::new(false),
    )
    .await
    .unwrap();
    match outcome {
        refbus_audit::verify::Outcome::Done(report) => {
            assert!(report.is_clean(), "{}", report.to_text());
            assert_eq!(report.referrals, 2);
            assert_eq!(report.last_seq, before);
        }
        refbus_audit::verify::Outcome::Stopped { .. } => panic!("not stopped"),
    }

    // Writing anything is refused: an event, a notice, a change to the stream's settings
    // (which could set limits that drop events), creating the stream.
    let mut session = Session::open(&system.nats, user).await;
    let notice = subjects::notice(&AgencyId::new("maros-bappeda").unwrap(), id);
    for subject in [
        police_referral,
        notice.as_str(),
        "$JS.API.STREAM.UPDATE.REFBUS_EVENTS",
        "$JS.API.STREAM.CREATE.REFBUS_EVENTS",
    ] {
        assert_eq!(
            session.refused_publish(subject).await,
            publish_refused(subject),
            "{user}"
        );
    }
    assert_eq!(stored_messages(&system.nats).await, before);
}

/// Every JetStream route by which a user could read stored messages or learn subjects, aimed at
/// `subject` (a referral of others, at stream sequence `seq`, id `id`), as request subject and
/// body. Each carries what it reads either in the body (where permissions do not look) or in an
/// API subject that names another agency's referral.
fn read_routes(subject: &str, seq: u64, id: &ReferralId) -> Vec<(String, String)> {
    let stream = STREAM;
    let consumer = |filter: &str| {
        format!(
            r#"{{"stream_name":"{stream}","config":{{"name":"spy","filter_subject":"{filter}","deliver_policy":"all","ack_policy":"none","inactive_threshold":5000000000,"mem_storage":true,"num_replicas":1}},"action":"create"}}"#
        )
    };
    let unnamed = format!(
        r#"{{"stream_name":"{stream}","config":{{"filter_subject":"{subject}","deliver_policy":"all","ack_policy":"none"}}}}"#
    );
    let wildcard = subjects::referral_pattern(id);
    vec![
        // Direct reads: by sequence, by subject in the body (last, next), a batch, and by
        // subject in the API subject, exact or with wildcards.
        (
            format!("$JS.API.DIRECT.GET.{stream}"),
            format!(r#"{{"seq":{seq}}}"#),
        ),
        (
            format!("$JS.API.DIRECT.GET.{stream}"),
            format!(r#"{{"last_by_subj":"{subject}"}}"#),
        ),
        (
            format!("$JS.API.DIRECT.GET.{stream}"),
            format!(r#"{{"seq":1,"next_by_subj":"{subject}"}}"#),
        ),
        (
            format!("$JS.API.DIRECT.GET.{stream}"),
            format!(r#"{{"multi_last":["{subject}"],"batch":10}}"#),
        ),
        (
            format!("$JS.API.DIRECT.GET.{stream}.{subject}"),
            String::new(),
        ),
        (
            format!("$JS.API.DIRECT.GET.{stream}.{wildcard}"),
            String::new(),
        ),
        (
            format!("$JS.API.DIRECT.GET.{stream}.refbus.v1.ref.>"),
            String::new(),
        ),
        // The stream's own message API.
        (
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
            format!(r#"{{"seq":{seq}}}"#),
        ),
        (
            format!("$JS.API.STREAM.MSG.GET.{stream}"),
            format!(r#"{{"last_by_subj":"{subject}"}}"#),
        ),
        // Consumers: unnamed (filter in the body), named without a filter in the subject,
        // named with the referral, a wildcard or everything as filter, the old durable API.
        (format!("$JS.API.CONSUMER.CREATE.{stream}"), unnamed),
        (
            format!("$JS.API.CONSUMER.CREATE.{stream}.spy"),
            consumer(subject),
        ),
        (
            format!("$JS.API.CONSUMER.CREATE.{stream}.spy.{subject}"),
            consumer(subject),
        ),
        (
            format!("$JS.API.CONSUMER.CREATE.{stream}.spy.{wildcard}"),
            consumer(&wildcard),
        ),
        (
            format!("$JS.API.CONSUMER.CREATE.{stream}.spy.refbus.v1.ref.>"),
            consumer("refbus.v1.ref.>"),
        ),
        (
            format!("$JS.API.CONSUMER.CREATE.{stream}.spy.refbus.v1.>"),
            consumer("refbus.v1.>"),
        ),
        (
            format!("$JS.API.CONSUMER.DURABLE.CREATE.{stream}.spy"),
            consumer(subject),
        ),
        // Consumer names, lists and information (a consumer's filter names a referral).
        (format!("$JS.API.CONSUMER.NAMES.{stream}"), "{}".to_owned()),
        (format!("$JS.API.CONSUMER.LIST.{stream}"), "{}".to_owned()),
        (
            format!("$JS.API.CONSUMER.INFO.{stream}.refbus-router-main"),
            String::new(),
        ),
        // Stream information with its subjects, and the stream listings.
        (
            format!("$JS.API.STREAM.INFO.{stream}"),
            r#"{"subjects_filter":">"}"#.to_owned(),
        ),
        (
            "$JS.API.STREAM.LIST".to_owned(),
            r#"{"subject":"refbus.v1.>"}"#.to_owned(),
        ),
        (
            "$JS.API.STREAM.NAMES".to_owned(),
            r#"{"subject":"refbus.v1.>"}"#.to_owned(),
        ),
        ("$JS.API.INFO".to_owned(), String::new()),
    ]
}

#[tokio::test]
async fn an_agency_reads_nothing_of_another_agencys_referral_by_any_jetstream_route() {
    let mut system = permissioned_system().await;
    let (police_referral, id) = referral_between_others(&mut system).await;
    let admin = Session::open(&system.nats, "refbus-admin").await;
    let seq = admin
        .jetstream()
        .get_stream(STREAM)
        .await
        .unwrap()
        .direct_get_last_for_subject(&police_referral)
        .await
        .unwrap()
        .sequence;
    // Dinas Sosial's adapter works, on its own referral, through the same permissions.
    let dinsos_bus = bus_as(&system.nats, "maros-dinsos").await;
    let dinsos = system.agency_on("maros-dinsos", dinsos_bus).await;
    let own = create(&dinsos, "maros-uptd-ppa", "dinsos-own").await;
    // A retried create is answered from the original, read back by its sequence among the
    // agency's own referrals.
    assert_eq!(create(&dinsos, "maros-uptd-ppa", "dinsos-own").await, own);
    // Through its adapter, Dinas Sosial is answered as for an unknown id: no party to the
    // police's referral, it must not even learn that it exists.
    let refused = dinsos
        .client()
        .get_referral(dinsos.request(v1::GetReferralRequest {
            referral_id: id.to_string(),
        }))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::NotFound);
    // The adapters' reads needed no route the permissions refuse.
    assert_eq!(violations(&system.nats), Vec::<String>::new());

    // With Dinas Sosial's own NATS credentials, every route to the police's referral is
    // refused by the server before JetStream sees it.
    let mut session = Session::open(&system.nats, "maros-dinsos").await;
    for (subject, body) in read_routes(&police_referral, seq, &id) {
        assert_eq!(
            session.refused_request(&subject, &body).await,
            publish_refused(&subject),
            "{subject} {body}"
        );
    }
    // So are the replies meant for other users, the stream's subjects themselves, and the
    // router's durable consumer.
    for subject in ["_INBOX.>", "_INBOX.maros-uptd-ppa.>", "refbus.v1.>"] {
        let _subscription = session.client.subscribe(subject.to_owned()).await.unwrap();
        session.client.flush().await.unwrap();
        assert_eq!(
            session.refusal().await,
            format!("nats: Permissions Violation for Subscription to \"{subject}\"")
        );
    }
    let pull = "$JS.API.CONSUMER.MSG.NEXT.REFBUS_EVENTS.refbus-router-main";
    assert_eq!(session.refused_publish(pull).await, publish_refused(pull));

    // A consumer whose API subject names one of Dinas Sosial's own filters but whose body asks
    // for the police's referral is refused by JetStream itself: the filters must agree.
    let own = subjects::sent_by(&AgencyId::new("maros-dinsos").unwrap());
    for body in [
        format!(
            r#"{{"stream_name":"{STREAM}","config":{{"name":"spy","filter_subject":"{police_referral}","ack_policy":"none","mem_storage":true}},"action":"create"}}"#
        ),
        format!(
            r#"{{"stream_name":"{STREAM}","config":{{"name":"spy","filter_subjects":["{own}","{police_referral}"],"ack_policy":"none","mem_storage":true}},"action":"create"}}"#
        ),
    ] {
        let answer = session
            .client
            .request(
                format!("$JS.API.CONSUMER.CREATE.{STREAM}.spy.{own}"),
                body.clone().into(),
            )
            .await
            .unwrap();
        let answer = String::from_utf8_lossy(&answer.payload).into_owned();
        assert!(answer.contains("\"error\""), "{body}: {answer}");
    }
    let stream = admin.jetstream().get_stream(STREAM).await.unwrap();
    let consumers: Vec<_> = stream.consumers().try_collect().await.unwrap();
    assert!(
        consumers.iter().all(|info| info.name != "spy"),
        "{consumers:#?}"
    );
}

#[tokio::test]
async fn nobody_but_the_router_and_the_admin_can_redirect_the_routers_durable_consumer() {
    let system = permissioned_system().await;
    let router = bus_as(&system.nats, "refbus-router").await;
    drop(router.durable("refbus-router-main").await.unwrap());
    // The unnamed create takes the consumer's name from its body, where permissions do not
    // look, and the server takes a create naming an existing consumer as an update: only the
    // router and the admin may send it.
    let redirect = r#"{"stream_name":"REFBUS_EVENTS","config":{"name":"refbus-router-main","description":"refbus router: every referral event, in order","filter_subject":"refbus.v1.ref.maros-dinsos.>","deliver_policy":"all","ack_policy":"explicit","ack_wait":60000000000,"max_ack_pending":20000},"action":"update"}"#;
    for user in ["maros-dinsos", "maros-bappeda", "refbus-auditor"] {
        let mut session = Session::open(&system.nats, user).await;
        for subject in [
            "$JS.API.CONSUMER.CREATE.REFBUS_EVENTS",
            "$JS.API.CONSUMER.CREATE.REFBUS_EVENTS.refbus-router-main",
            "$JS.API.CONSUMER.CREATE.REFBUS_EVENTS.refbus-router-main.refbus.v1.ref.maros-dinsos.*.*",
        ] {
            assert_eq!(
                session.refused_request(subject, redirect).await,
                publish_refused(subject),
                "{user}"
            );
        }
    }
    // The router's consumer is as it made it.
    drop(router.durable("refbus-router-main").await.unwrap());
}

/// Copies `from` into `to`, directories included.
fn copy_tree(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_tree(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Certificates where the shipped configurations expect them (`<etc>/tls/`): a CA, `server` for
/// one server, `refbus-<n>` for the cluster's nodes (a server's and a route client's).
fn install_certificates(etc: &std::path::Path) {
    use rcgen::{
        BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    };
    let dir = etc.join("tls");
    std::fs::create_dir_all(&dir).unwrap();
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    std::fs::write(dir.join("ca.pem"), ca.self_signed(&ca_key).unwrap().pem()).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    for name in ["server", "refbus-1", "refbus-2", "refbus-3"] {
        let key = KeyPair::generate().unwrap();
        let mut params = CertificateParams::new(vec![format!("{name}.maros.lan")]).unwrap();
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        let cert = params.signed_by(&key, &issuer).unwrap();
        std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
        std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    }
}

/// Points every `/etc/nats/` path of the configuration files under `etc` at `etc` itself.
fn relocate(etc: &std::path::Path) {
    for config in [
        "single.conf",
        "cluster/node-1.conf",
        "cluster/node-2.conf",
        "cluster/node-3.conf",
    ] {
        let path = etc.join(config);
        let text = std::fs::read_to_string(&path).unwrap();
        std::fs::write(
            &path,
            text.replace("/etc/nats/", &format!("{}/", etc.display())),
        )
        .unwrap();
    }
}

#[test]
fn the_shipped_server_configurations_are_valid_with_the_example_secrets() {
    // As an administrator installs them: the files side by side, the examples copied to the
    // secrets' names, certificates made. nats-server's check refuses unknown fields and
    // undefined variables, so an example that misses a user of permissions.conf (or defines
    // one it lacks) fails here, and it loads the certificates the TLS blocks name.
    let installed = tempfile::tempdir().unwrap();
    let etc = installed.path();
    copy_tree(&deploy_nats(), etc);
    install_certificates(etc);
    relocate(etc);
    std::fs::copy(
        etc.join("passwords.conf.example"),
        etc.join("passwords.conf"),
    )
    .unwrap();
    std::fs::copy(
        etc.join("cluster/routes.conf.example"),
        etc.join("cluster/routes.conf"),
    )
    .unwrap();
    let binary = refbus_testkit::nats_server_binary().unwrap();
    for config in [
        "single.conf",
        "cluster/node-1.conf",
        "cluster/node-2.conf",
        "cluster/node-3.conf",
    ] {
        let checked = std::process::Command::new(&binary)
            .arg("-t")
            .arg("--config")
            .arg(etc.join(config))
            .output()
            .unwrap();
        assert!(
            checked.status.success(),
            "{config}: {}{}",
            String::from_utf8_lossy(&checked.stdout),
            String::from_utf8_lossy(&checked.stderr)
        );
        // The one setting Jepsen's findings hang on, not commented out.
        let text = std::fs::read_to_string(etc.join(config)).unwrap();
        assert!(
            text.lines()
                .any(|line| line.trim() == "sync_interval: always"),
            "{config} does not fsync every write"
        );
        // TLS on, with client certificates: a `tls {` block that is not commented out (two on
        // a cluster node: clients and routes).
        let blocks = text.lines().filter(|line| line.trim() == "tls {").count();
        let wanted = if config.starts_with("cluster/") { 2 } else { 1 };
        assert_eq!(blocks, wanted, "{config}: TLS blocks");
        assert_eq!(
            text.lines()
                .filter(|line| line.trim() == "verify: true")
                .count(),
            wanted,
            "{config}: client certificates required"
        );
    }
}

#[tokio::test]
async fn credentials_in_the_url_are_not_used_by_the_client() {
    // async-nats 0.51 ignores user:password in a URL: components must be given their
    // credentials as options (deploy/nats/README.md).
    let nats = start_nats();
    let port = nats.port();
    let url = format!("nats://maros-dinsos:test-maros-dinsos@127.0.0.1:{port}");
    let refused = async_nats::connect(url).await.unwrap_err();
    assert_eq!(
        refused.kind(),
        async_nats::ConnectErrorKind::AuthorizationViolation
    );
}

#[tokio::test]
async fn the_router_creates_the_stream_and_an_adapter_cannot() {
    let nats = start_nats();
    // An adapter started first finds no stream to read (it may neither create one nor ask
    // for the stream's information) and gives up, naming the router.
    let refused = Bus::connect(
        &bus_options(&nats, "maros-dinsos"),
        &StreamSettings::default(),
    )
    .await
    .unwrap_err();
    assert_eq!(refused.kind(), refbus_bus::ConnectErrorKind::Provision);
    assert!(refused.to_string().contains("router"), "{refused}");
    // And its own user may not create the stream either.
    let mut session = Session::open(&nats, "maros-dinsos").await;
    let create = "$JS.API.STREAM.CREATE.REFBUS_EVENTS";
    assert_eq!(
        session.refused_publish(create).await,
        publish_refused(create)
    );

    let registry = Arc::new(maros_registry());
    let signing = refbus_seal::signing::SigningKeys::generate(&registry);
    Bus::connect_attesting(
        &bus_options(&nats, "refbus-router"),
        &StreamSettings::default(),
        &signing.router(),
    )
    .await
    .unwrap();
    let adapter = bus_as(&nats, "maros-dinsos").await;
    // The adapter's user reads the router's signed statement on the stream it checked, which
    // stands in for the settings it may not read itself.
    let verifier = refbus_bus::Verifier::new(registry, Arc::new(signing.signers()), None);
    let (statement, _) = adapter.router_statement(&verifier).await.unwrap();
    assert!(statement.differences.is_empty(), "{statement:?}");
    // The adapter found the router's stream and reads its end through its own subjects (the
    // router and the auditor check the stream's settings; an agency may not read them).
    assert_eq!(adapter.last_sequence().await.unwrap(), 0);
    // A message of others (a raw one, on the router's user) moves the stream's end all the same.
    let router = Session::open(&nats, "refbus-router").await;
    let appended = router
        .jetstream()
        .publish("refbus.v1.notice.maros-bappeda.raw", "{}".into())
        .await
        .unwrap()
        .await
        .unwrap();
    // A message of others moves the stream's end all the same.
    assert_eq!(adapter.last_sequence().await.unwrap(), appended.sequence);
}

#[tokio::test]
async fn the_notary_and_a_witness_work_on_their_own_users_and_adapters_get_receipts() {
    use refbus_notary::note::{CosignatureVerifier, KeyKind, NoteKey, notary_verifier};

    let mut system = permissioned_system().await;
    let key = NoteKey::generate("refbus.test/log", KeyKind::Notary).unwrap();
    let log = tempfile::tempdir().unwrap();
    let stats = Arc::new(refbus_notary::Stats::default());
    let notary = refbus_notary::Notary {
        bus: bus_as(&system.nats, "refbus-notary").await,
        key: NoteKey::from_secret_text(&key.secret_text(), KeyKind::Notary).unwrap(),
        settings: refbus_notary::Settings {
            dir: log.path().to_owned(),
            origin: "refbus.test/log".to_owned(),
            interval: Duration::from_millis(100),
            metrics: None,
            // Soon, so that its check of the stream while running is made with its own user.
            stream_recheck_every: Duration::from_millis(100),
        },
        stats: stats.clone(),
    };
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(notary.run(Some(listener), async move {
        let _ = stopped.await;
    }));
    let dinsos_bus = bus_as(&system.nats, "maros-dinsos").await;
    let dinsos = system.agency_on("maros-dinsos", dinsos_bus).await;
    let id = create(&dinsos, "maros-uptd-ppa", "perm-receipt").await;
    let stored = stored_messages(&system.nats).await;

    // A witness publishing on its own user; the notary adds its cosignature.
    let witness_key = NoteKey::generate("inspektorat.test/w", KeyKind::Witness).unwrap();
    let state = tempfile::tempdir().unwrap();
    let witness = refbus_notary::witness::Witness {
        key: NoteKey::from_secret_text(&witness_key.secret_text(), KeyKind::Witness).unwrap(),
        notary: notary_verifier(&key.verifier_key()).unwrap(),
        settings: refbus_notary::witness::Settings {
            log_url: url,
            origin: "refbus.test/log".to_owned(),
            dir: state.path().to_owned(),
            interval: Duration::from_millis(100),
        },
        bus: Some(bus_as(&system.nats, "refbus-witness").await),
        stats: Arc::default(),
    };
    let (stop_witness, witness_stopped) = tokio::sync::oneshot::channel::<()>();
    let witness_task = tokio::spawn(witness.run(async move {
        let _ = witness_stopped.await;
    }));
    let witnesses = [CosignatureVerifier::new(&witness_key.verifier_key()).unwrap()];
    let notary_key = notary_verifier(&key.verifier_key()).unwrap();
    let mut cosigned = false;
    for _ in 0..400 {
        if let Ok(note) = std::fs::read(log.path().join("checkpoint"))
            && let Ok((checkpoint, names)) = refbus_notary::note::open_checkpoint(
                &note,
                "refbus.test/log",
                &notary_key,
                &witnesses,
            )
            && checkpoint.size >= stored
            && names.len() == 1
        {
            cosigned = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(cosigned, "no cosigned checkpoint covers {stored} messages");
    // Its check of the stream while running is answered on its own user, and finds the stream
    // as configured.
    for _ in 0..400 {
        if stats.stream_checks.load(Ordering::Relaxed) > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(stats.stream_checks.load(Ordering::Relaxed) > 0);
    assert_eq!(stats.stream_differences.load(Ordering::Relaxed), 0);

    // The adapter, on its agency's user, gets a receipt from the notary.
    let receipt = dinsos
        .client()
        .get_receipt(dinsos.request(v1::GetReceiptRequest {
            referral_id: id,
            event_seq: 1,
        }))
        .await
        .unwrap()
        .into_inner();
    let trust = refbus_notary::verify::Trust {
        origin: "refbus.test/log".to_owned(),
        notary: notary_key,
        witnesses: witnesses.to_vec(),
        quorum: 1,
    };
    refbus_notary::proof::verify_receipt(
        receipt.tlog_proof.as_bytes(),
        &receipt.subject,
        &receipt.record,
        &trust,
    )
    .unwrap();
    let _ = stop_witness.send(());
    witness_task.await.unwrap();
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert_eq!(violations(&system.nats), Vec::<String>::new());
}
