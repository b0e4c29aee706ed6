//! `refbus adapter` as a deployment runs it, next to `refbus router`, each its own process: when
//! a recipient rejects a referral and the reroute rule's delay has passed, the router asks for
//! the reroute and the sender's adapter process carries it out. The e2e harness runs the same
//! `refbus_adapter::run`, but only a process test shows that the command wires it.
//!
//! With OpenTelemetry export turned on as a deployment does it, the processes export one trace
//! from the agency system's `traceparent` through the bus to the recipient's delivery.
//!
//! In the reroute test, the router runs with a frozen pretend clock a minute ahead (`--clock-start`,
//! `--clock-speed 0`), so the demo rule's 30 s delay has passed as soon as it reads the referral,
//! and its records stay within the two minutes the adapters allow between an event's time and
//! the bus's.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::mpsc::Receiver;
use std::time::Duration;

use common::{Process, refbus_ok, repo_root, router_start};
use refbus_core::Timestamp;
use refbus_proto::v1;
use refbus_proto::v1::referral_service_client::ReferralServiceClient;
use refbus_testkit::NatsServer;
use refbus_testkit::free_port;
use refbus_testkit::otlp::{Collector, contains, descends, of_trace, only};

/// `refbus <args>` from the repository root, and its stdout and stderr lines as they come.
fn spawn(args: &[&str]) -> (Process, Receiver<String>) {
    spawn_with(args, &[])
}

/// [`spawn`] with more environment variables.
fn spawn_with(args: &[&str], env: &[(&str, &str)]) -> (Process, Receiver<String>) {
    let mut child = common::command(args)
        .env("REFBUS_LOG", "info")
        .envs(env.iter().copied())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, lines) = std::sync::mpsc::channel();
    for output in [
        Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
        Box::new(child.stderr.take().unwrap()),
    ] {
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(output).lines() {
                let Ok(line) = line else { return };
                if tx.send(line).is_err() {
                    return;
                }
            }
        });
    }
    (Process(child), lines)
}

/// Waits for a line containing `text`; fails after 60 s without it.
fn wait_for(lines: &Receiver<String>, text: &str) {
    loop {
        let line = lines
            .recv_timeout(Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("no line with {text:?}"));
        if line.contains(text) {
            return;
        }
    }
}

/// The demonstration registry copied into `dir`, trusting the CA that `refbus certs` made in
/// `dir/tls` for every agency's systems, with server and client certificates made the same
/// way; the main file's path.
fn deployment_with_certificates(dir: &Path, agencies: &[&str]) -> PathBuf {
    fn copy(from: &Path, to: &Path) {
        std::fs::create_dir_all(to).unwrap();
        for entry in std::fs::read_dir(from).unwrap() {
            let entry = entry.unwrap();
            if entry.file_type().unwrap().is_dir() {
                copy(&entry.path(), &to.join(entry.file_name()));
            } else {
                std::fs::copy(entry.path(), to.join(entry.file_name())).unwrap();
            }
        }
    }
    copy(&repo_root().join("deploy/config"), dir);
    let tls = dir.join("tls");
    let tls = tls.to_str().unwrap();
    refbus_ok(&["certs", "ca", "--dir", tls]);
    refbus_ok(&[
        "certs",
        "server",
        "--dir",
        tls,
        "--name",
        "adapters",
        "--host",
        "localhost",
    ]);
    for agency in agencies {
        refbus_ok(&[
            "certs", "client", "--dir", tls, "--agency", agency, "--system", "sikasus",
        ]);
    }
    let main = dir.join("demo.toml");
    let mut text = std::fs::read_to_string(&main).unwrap();
    text.push_str("\n[[deployment.client_ca]]\nfile = \"tls/ca.pem\"\n");
    std::fs::write(&main, text).unwrap();
    main
}

/// A client of the adapter at `addr` as `agency`'s system `sikasus`.
async fn client(
    config: &Path,
    agency: &str,
    addr: &str,
) -> ReferralServiceClient<tonic::transport::Channel> {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let tls = config.parent().unwrap().join("tls");
    let read = |name: String| std::fs::read_to_string(tls.join(name)).unwrap();
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem".to_owned())))
        .identity(Identity::from_pem(
            read(format!("client-{agency}-sikasus.pem")),
            read(format!("client-{agency}-sikasus.key")),
        ))
        .domain_name("localhost");
    ReferralServiceClient::new(
        Channel::from_shared(format!("https://{addr}"))
            .unwrap()
            .tls_config(config)
            .unwrap()
            .connect()
            .await
            .unwrap(),
    )
}

/// Starts `refbus adapter` for `agency` and waits until it serves; its address.
fn start_adapter(nats: &str, keys: &Path, config: &Path, agency: &str) -> (Process, String) {
    start_adapter_with(nats, keys, config, agency, &[])
}

/// [`start_adapter`] with more environment variables.
fn start_adapter_with(
    nats: &str,
    keys: &Path,
    config: &Path,
    agency: &str,
    env: &[(&str, &str)],
) -> (Process, String) {
    let listen = format!("127.0.0.1:{}", free_port());
    let key = keys.join(format!("{agency}.key"));
    let tls = config.parent().unwrap().join("tls");
    let (cert, tls_key) = (
        tls.join("server-adapters.pem"),
        tls.join("server-adapters.key"),
    );
    let args = [
        "adapter",
        "--agency",
        agency,
        "--config",
        config.to_str().unwrap(),
        "--tls-cert",
        cert.to_str().unwrap(),
        "--tls-key",
        tls_key.to_str().unwrap(),
        "--nats",
        nats,
        "--listen",
        &listen,
        "--key",
        key.to_str().unwrap(),
        "--public-keys",
        keys.to_str().unwrap(),
    ];
    let (process, lines) = spawn_with(&args, env);
    wait_for(&lines, "adapter serving");
    // Its later lines are not needed; reading them keeps its pipes from filling up.
    std::thread::spawn(move || for _ in lines {});
    (process, listen)
}

fn request<T>(message: T, operator: &str) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-refbus-operator", operator.parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_process_carries_out_a_reroute_the_router_process_asks_for() {
    let nats = NatsServer::start().unwrap();
    let keys = tempfile::tempdir().unwrap();
    let out = keys.path().display().to_string();
    for agency in ["maros-dinsos", "maros-uptd-ppa", "maros-rsud"] {
        refbus_ok(&["keys", "generate", "--agency", agency, "--out", &out]);
    }
    refbus_ok(&["keys", "generate-router", "--out", &out]);
    // The stream made and checked before the adapters start, as the router's start does in a
    // deployment: an adapter may neither create it nor read its settings.
    router_start::check_stream_as_the_router(&nats.url(), keys.path()).await;
    let deployment = tempfile::tempdir().unwrap();
    let config =
        deployment_with_certificates(deployment.path(), &["maros-dinsos", "maros-uptd-ppa"]);
    let (_dinsos_process, dinsos) =
        start_adapter(&nats.url(), keys.path(), &config, "maros-dinsos");
    let (_uptd_process, uptd) = start_adapter(&nats.url(), keys.path(), &config, "maros-uptd-ppa");
    let mut dinsos = client(&config, "maros-dinsos", &dinsos).await;
    let mut uptd = client(&config, "maros-uptd-ppa", &uptd).await;

    // Dinsos refers a woman for counselling; UPTD PPA has no capacity and rejects.
    let created = dinsos
        .create_referral(request(
            v1::CreateReferralRequest {
                request_id: "process-reroute-1".into(),
                recipient: "maros-uptd-ppa".into(),
                case_id: "MRS-PROC-1".into(),
                service: "psychological_counselling".into(),
                priority: v1::Priority::Urgent.into(),
                consent: Some(v1::Consent {
                    services: true,
                    disclose_to_agencies: true,
                    override_justification: String::new(),
                    sealed_override_justification: None,
                }),
                person: Some(v1::create_referral_request::Person::Identity(
                    v1::ClientIdentity {
                        full_name: "Orang Contoh Proses".into(),
                        ..Default::default()
                    },
                )),
                ..Default::default()
            },
            "operator@maros-dinsos",
        ))
        .await
        .unwrap()
        .into_inner();
    let id = created.referral.unwrap().referral_id;
    uptd.reject_referral(request(
        v1::RejectReferralRequest {
            request_id: "process-reject-1".into(),
            referral_id: id.clone(),
            reason: Some(v1::Reason {
                code: "no_capacity".into(),
                note: "Penuh".into(),
                sealed_note: None,
            }),
        },
        "operator@maros-uptd-ppa",
    ))
    .await
    .unwrap();
    let mut inbox = dinsos
        .watch_inbox(request(
            v1::WatchInboxRequest::default(),
            "operator@maros-dinsos",
        ))
        .await
        .unwrap()
        .into_inner();

    // A minute on, for the router: the rule's 30 s are over.
    let ahead = Timestamp::from_millis(
        i64::try_from(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_millis(),
        )
        .unwrap(),
    )
    .plus(Duration::from_secs(60));
    let (_router, router_lines) = spawn(&[
        "router",
        "--config",
        "deploy/config/demo.toml",
        "--nats",
        &nats.url(),
        "--clock-start",
        &ahead.to_rfc3339(),
        "--clock-speed",
        "0",
        "--signing-key",
        keys.path().join("router.sign.key").to_str().unwrap(),
        "--public-keys",
        keys.path().to_str().unwrap(),
    ]);
    std::thread::spawn(move || for _ in router_lines {});

    // Dinsos's system sees its adapter record the reroute on the original referral, with the
    // new referral to RSUD (the alternate for counselling).
    let rerouted = loop {
        let item = tokio::time::timeout(Duration::from_secs(60), inbox.message())
            .await
            .expect("the reroute was never carried out")
            .unwrap()
            .expect("the inbox stream ended");
        if let Some(v1::inbox_item::Item::Event(event)) = item.item.and_then(|item| item.item)
            && event.referral_id == id
            && let Some(v1::event::Change::Rerouted(rerouted)) = event.change
        {
            break rerouted;
        }
    };
    let child = dinsos
        .get_referral(request(
            v1::GetReferralRequest {
                referral_id: rerouted.child_referral_id.clone(),
            },
            "operator@maros-dinsos",
        ))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(rerouted.to, "maros-rsud");
    assert_eq!(child.recipient, "maros-rsud");
    assert_eq!(child.parent_referral_id, id);
}

/// `refbus adapter --metrics-addr` serves the adapter's metrics while it runs: a refused call
/// is counted with its method and status, under the adapter's agency.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_adapter_process_serves_its_metrics_on_metrics_addr() {
    let nats = NatsServer::start().unwrap();
    let keys = tempfile::tempdir().unwrap();
    refbus_ok(&[
        "keys",
        "generate",
        "--agency",
        "maros-dinsos",
        "--out",
        keys.path().to_str().unwrap(),
    ]);
    // The stream made and checked before the adapters start, as the router's start does in a
    // deployment: an adapter may neither create it nor read its settings.
    router_start::check_stream_as_the_router(&nats.url(), keys.path()).await;
    let deployment = tempfile::tempdir().unwrap();
    let config = deployment_with_certificates(deployment.path(), &["maros-dinsos"]);
    let listen = format!("127.0.0.1:{}", free_port());
    let metrics = format!("127.0.0.1:{}", free_port());
    let tls = config.parent().unwrap().join("tls");
    let key = keys.path().join("maros-dinsos.key");
    let (_process, lines) = spawn(&[
        "adapter",
        "--agency",
        "maros-dinsos",
        "--config",
        config.to_str().unwrap(),
        "--tls-cert",
        tls.join("server-adapters.pem").to_str().unwrap(),
        "--tls-key",
        tls.join("server-adapters.key").to_str().unwrap(),
        "--nats",
        &nats.url(),
        "--listen",
        &listen,
        "--key",
        key.to_str().unwrap(),
        "--public-keys",
        keys.path().to_str().unwrap(),
        "--metrics-addr",
        &metrics,
    ]);
    wait_for(&lines, "adapter serving");
    std::thread::spawn(move || for _ in lines {});
    let mut dinsos = client(&config, "maros-dinsos", &listen).await;
    let refused = dinsos
        .get_referral(request(
            v1::GetReferralRequest {
                referral_id: "not-an-id".into(),
            },
            "operator@maros-dinsos",
        ))
        .await
        .unwrap_err();
    assert_eq!(refused.code(), tonic::Code::InvalidArgument);

    let scraped = refbus_metrics::scrape(metrics.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(scraped.status, 200);
    assert_eq!(
        refbus_metrics::sample(
            &scraped.body,
            "refbus_adapter_grpc_requests_total",
            &[
                ("agency", "maros-dinsos"),
                ("method", "GetReferral"),
                ("code", "INVALID_ARGUMENT")
            ]
        ),
        Some(1.0),
        "{}",
        scraped.body
    );
}

/// The agency system's own trace and span, as it sends them in `traceparent`.
const CALLER_TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const CALLER_SPAN: &str = "00f067aa0ba902b7";

/// Tracing as a deployment turns it on: the adapter processes export to the collector named by
/// `OTEL_EXPORTER_OTLP_ENDPOINT` (as the systemd and Kubernetes files set it), the router
/// process to the one given by `--otlp-endpoint`. A create carrying the agency system's
/// `traceparent` is traced in the caller's trace across the three processes: the call, its
/// append, the router's consumption and the recipient's adapter delivering it, each under its
/// component's service name; nothing exported holds the person's identity.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_processes_export_the_callers_trace_over_otlp_without_identity() {
    let (collector, addr) = Collector::start().await.unwrap();
    let otlp = format!("http://{addr}");
    let nats = NatsServer::start().unwrap();
    let keys = tempfile::tempdir().unwrap();
    for agency in ["maros-dinsos", "maros-uptd-ppa"] {
        refbus_ok(&[
            "keys",
            "generate",
            "--agency",
            agency,
            "--out",
            keys.path().to_str().unwrap(),
        ]);
    }
    refbus_ok(&[
        "keys",
        "generate-router",
        "--out",
        keys.path().to_str().unwrap(),
    ]);
    // The stream made and checked before the adapters start, as the router's start does in a
    // deployment: an adapter may neither create it nor read its settings.
    router_start::check_stream_as_the_router(&nats.url(), keys.path()).await;
    let deployment = tempfile::tempdir().unwrap();
    let config =
        deployment_with_certificates(deployment.path(), &["maros-dinsos", "maros-uptd-ppa"]);
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", otlp.as_str())];
    let (_dinsos_process, dinsos) =
        start_adapter_with(&nats.url(), keys.path(), &config, "maros-dinsos", &env);
    let (_uptd_process, uptd) =
        start_adapter_with(&nats.url(), keys.path(), &config, "maros-uptd-ppa", &env);
    let (_router, router_lines) = spawn(&[
        "router",
        "--config",
        "deploy/config/demo.toml",
        "--nats",
        &nats.url(),
        "--signing-key",
        keys.path().join("router.sign.key").to_str().unwrap(),
        "--public-keys",
        keys.path().to_str().unwrap(),
        "--otlp-endpoint",
        &otlp,
    ]);
    std::thread::spawn(move || for _ in router_lines {});
    let mut dinsos = client(&config, "maros-dinsos", &dinsos).await;
    let mut uptd = client(&config, "maros-uptd-ppa", &uptd).await;
    let mut inbox = uptd
        .watch_inbox(request(
            v1::WatchInboxRequest::default(),
            "operator@maros-uptd-ppa",
        ))
        .await
        .unwrap()
        .into_inner();

    // Dinsos's system sends the person's identity, a note, and its own trace context.
    let person = v1::ClientIdentity {
        full_name: "Siti Contoh Korban".into(),
        nik: "7309014503120001".into(),
        birth_date: "2012-03-05".into(),
        sex: v1::Sex::Female.into(),
        address: "Dusun Bonto Tangnga RT 002/RW 001, Desa Bontoa, Kec. Bontoa".into(),
        phone: "+62-812-0000-4242".into(),
        narrative: "Korban kekerasan seksual oleh tetangga; tinggal bersama nenek.".into(),
        guardian_name: "Nenek korban, Hj. Contoh Wali".into(),
    };
    let note = "Anak perlu rumah aman malam ini.";
    let mut create = request(
        v1::CreateReferralRequest {
            request_id: "process-trace-1".into(),
            recipient: "maros-uptd-ppa".into(),
            case_id: "MRS-PROC-TRACE".into(),
            service: "psychological_counselling".into(),
            priority: v1::Priority::Urgent.into(),
            child: true,
            consent: Some(v1::Consent {
                services: true,
                disclose_to_agencies: true,
                override_justification: String::new(),
                sealed_override_justification: None,
            }),
            person: Some(v1::create_referral_request::Person::Identity(
                person.clone(),
            )),
            note: note.into(),
            ..Default::default()
        },
        "operator@maros-dinsos",
    );
    create.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
            .parse()
            .unwrap(),
    );
    let id = dinsos
        .create_referral(create)
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
        .referral_id;

    // UPTD PPA's system receives it (its adapter's delivery is traced too).
    let delivered = tokio::time::timeout(Duration::from_secs(60), inbox.message())
        .await
        .expect("the referral never reached UPTD PPA's inbox")
        .unwrap()
        .expect("the inbox stream ended");
    match delivered.item.and_then(|item| item.item) {
        Some(v1::inbox_item::Item::Event(event)) => assert_eq!(event.referral_id, id),
        other => panic!("UPTD PPA expected the creation, got {other:?}"),
    }

    // Each process sends its ended spans in its exporter's next batch.
    let spans = collector
        .wait_for(|spans| {
            let trace = of_trace(spans, CALLER_TRACE);
            let named = |name: &str| trace.values().any(|span| span.name() == name);
            named("refbus.v1.ReferralService/CreateReferral")
                && named("router.consume")
                && named("adapter.deliver")
        })
        .await
        .unwrap_or_else(|| {
            let received: Vec<String> = collector
                .spans()
                .iter()
                .map(|span| format!("{} {} {}", span.service, span.name(), span.trace_id()))
                .collect();
            panic!("the expected spans never arrived; received: {received:#?}")
        });
    let trace = of_trace(&spans, CALLER_TRACE);

    // Dinsos's adapter: the call, a child of the caller's span, and the append inside it.
    let call = only(&trace, "refbus.v1.ReferralService/CreateReferral", |_| true);
    assert_eq!(call.parent_id(), CALLER_SPAN);
    assert_eq!(call.service, "refbus-adapter");
    let created = only(&trace, "bus.append", |span| {
        span.attribute("refbus.change").as_deref() == Some("created")
    });
    assert_eq!(created.parent_id(), call.span_id());
    assert_eq!(created.service, "refbus-adapter");
    assert_eq!(
        created.attribute("refbus.referral_id").as_deref(),
        Some(id.as_str())
    );

    // The router process consumed the creation: its span's parent came through NATS headers.
    let consumed = only(&trace, "router.consume", |_| true);
    assert_eq!(consumed.service, "refbus-router");
    assert_eq!(consumed.parent_id(), created.span_id());

    // UPTD PPA's adapter process delivered it, in the same trace.
    let delivery = only(&trace, "adapter.deliver", |_| true);
    assert_eq!(delivery.service, "refbus-adapter");
    assert_eq!(delivery.attribute("refbus.item").as_deref(), Some("event"));
    assert!(descends(&trace, delivery, call));

    // Nothing exported holds the person's identity or the note; the referral id is there, so
    // the scan reads the spans' attributes.
    let exported = collector.bytes();
    assert!(contains(&exported, &id));
    for secret in [
        person.full_name.as_str(),
        person.nik.as_str(),
        person.birth_date.as_str(),
        person.address.as_str(),
        person.phone.as_str(),
        person.narrative.as_str(),
        person.guardian_name.as_str(),
        note,
    ] {
        assert!(
            !contains(&exported, secret),
            "the exported spans hold {secret:?}"
        );
    }
}
