//! `refbus up` as a newcomer runs it: the process starts nats-server and every adapter, prints
//! the endpoints, serves a referral, stops cleanly on Ctrl-C (promptly, even with inbox streams
//! open, and leaving no nats-server behind), keeps its data for the next start, and prints each
//! router action once, without colour codes when its output is not a terminal; with
//! `--otlp-endpoint` it exports its spans, the last ones as it stops.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use common::repo_root;

use refbus_proto::v1;
use refbus_proto::v1::referral_service_client::ReferralServiceClient;

/// A client of `agency`'s adapter at `endpoint`, as `up` runs it: mutual TLS with the
/// certificates it made in `<data_dir>/tls` for the agency's `cli` system.
async fn connect(
    data_dir: &std::path::Path,
    agency: &str,
    endpoint: &str,
) -> ReferralServiceClient<tonic::transport::Channel> {
    use tonic::transport::{Certificate, Channel, ClientTlsConfig, Identity};
    let tls = data_dir.join("tls");
    let read = |name: String| std::fs::read_to_string(tls.join(name)).unwrap();
    let config = ClientTlsConfig::new()
        .ca_certificate(Certificate::from_pem(read("ca.pem".to_owned())))
        .identity(Identity::from_pem(
            read(format!("client-{agency}-cli.pem")),
            read(format!("client-{agency}-cli.key")),
        ))
        .domain_name("localhost");
    let channel = Channel::from_shared(format!("https://{endpoint}"))
        .unwrap()
        .tls_config(config)
        .unwrap()
        .connect()
        .await
        .unwrap();
    ReferralServiceClient::new(channel)
}

/// A plain HTTP/1.0 GET: the whole response, head and body.
fn http_get(address: &str, path: &str) -> String {
    http(address, "GET", path, &[], "")
}

/// One HTTP/1.0 request; the whole response, headers and body.
fn http(address: &str, method: &str, path: &str, headers: &[(&str, &str)], body: &str) -> String {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(address).unwrap();
    let mut request =
        format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\nAccept: text/html\r\n");
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() {
        request.push_str("Content-Type: application/x-www-form-urlencoded\r\n");
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    response
}

/// The first `name=value` of the response's Set-Cookie headers.
fn set_cookie(response: &str) -> String {
    response
        .lines()
        .find_map(|line| line.strip_prefix("set-cookie: "))
        .and_then(|cookie| cookie.split(';').next())
        .unwrap_or_else(|| panic!("no cookie set in {response}"))
        .to_owned()
}

/// Logs in through the login form, as a browser does; returns the session cookie.
fn log_in(address: &str, username: &str, password: &str) -> String {
    let page = http_get(address, "/login");
    let login_cookie = set_cookie(&page);
    let token = login_cookie.split_once('=').unwrap().1.to_owned();
    let body = format!("username={username}&password={password}&csrf={token}");
    let answer = http(
        address,
        "POST",
        "/login",
        &[("Cookie", &login_cookie)],
        &body,
    );
    assert!(answer.starts_with("HTTP/1.0 303"), "{answer}");
    set_cookie(&answer)
}

fn interrupt(child: &mut Child) -> std::process::ExitStatus {
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    child.wait().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_every_agency_stops_on_ctrl_c_and_keeps_its_data() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, lines) = common::up::start_up(data.path(), &[]);
    let output = lines.concat();
    assert!(output.contains("refbus is up."), "{output}");
    // The dashboard is up too, on loopback, and serves the board.
    let dashboard = lines
        .iter()
        .find_map(|line| line.trim().strip_prefix("dashboard"))
        .and_then(|rest| rest.trim().strip_prefix("http://"))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no dashboard URL in {output}"))
        .to_owned();
    assert!(dashboard.starts_with("127.0.0.1:"), "{dashboard}");
    // Nobody sees it without logging in; the coordinator logs in with the password up made.
    let anonymous = http_get(&dashboard, "/");
    assert!(anonymous.starts_with("HTTP/1.0 303"), "{anonymous}");
    assert!(anonymous.contains("/login"), "{anonymous}");
    let logins = std::fs::read_to_string(data.path().join("dashboard-logins.txt")).unwrap();
    let password = logins
        .lines()
        .find_map(|line| line.strip_prefix("koordinator "))
        .and_then(|rest| rest.split_whitespace().nth(2))
        .unwrap_or_else(|| panic!("no coordinator login in {logins}"))
        .to_owned();
    let session = log_in(&dashboard, "koordinator", &password);
    let board = http(&dashboard, "GET", "/", &[("Cookie", &session)], "");
    assert!(board.starts_with("HTTP/1.0 200"), "{board}");
    assert!(board.contains("id=\"board\""), "{board}");
    // The notary serves its log's signed checkpoint, for witnesses and auditors.
    let notary = lines
        .iter()
        .find_map(|line| line.trim().strip_prefix("notary"))
        .and_then(|rest| rest.trim().strip_prefix("http://"))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_else(|| panic!("no notary URL in {output}"))
        .to_owned();
    // Its first checkpoint follows its start by one read of the stream.
    let mut checkpoint = http_get(&notary, "/checkpoint");
    for _ in 0..200 {
        if checkpoint.contains("200 OK") {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
        checkpoint = http_get(&notary, "/checkpoint");
    }
    assert!(checkpoint.contains("200 OK"), "{checkpoint}");
    assert!(checkpoint.contains("refbus.local/log\n"), "{checkpoint}");
    assert!(data.path().join("keys/notary.vkey").exists());
    let dinsos_line = lines
        .iter()
        .find(|line| line.contains(" maros-dinsos "))
        .expect("Dinsos is listed");
    let dinsos = dinsos_line.split_whitespace().next().unwrap().to_owned();
    assert_eq!(
        lines
            .iter()
            .filter(|line| line.trim_start().starts_with("127.0.0.1:"))
            .count(),
        8,
        "{output}"
    );

    // What up printed to try it is a command that works, as printed.
    let printed = lines
        .iter()
        .position(|line| line.trim_start().starts_with("buf curl"))
        .map(|at| {
            format!(
                "{}{}",
                lines[at].trim_end().trim_end_matches('\\'),
                lines[at + 1]
            )
        })
        .unwrap_or_else(|| panic!("no buf curl command printed:\n{output}"));
    assert!(
        printed.contains("--cacert") && printed.contains("--cert") && printed.contains("--key"),
        "{printed}"
    );
    let path = format!(
        "{}:{}",
        repo_root().join(".tools/bin").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let ran = Command::new("sh")
        .args(["-c", &printed])
        .env("PATH", path)
        .output()
        .unwrap();
    assert!(
        ran.status.success(),
        "{printed}\n{}\n{}",
        String::from_utf8_lossy(&ran.stdout),
        String::from_utf8_lossy(&ran.stderr)
    );
    for (file, mode) in [
        ("ca.key", 0o600),
        ("server-adapters.key", 0o600),
        ("client-maros-dinsos-cli.key", 0o600),
        ("ca.pem", 0o644),
    ] {
        use std::os::unix::fs::PermissionsExt as _;
        let found = std::fs::metadata(data.path().join("tls").join(file))
            .unwrap()
            .permissions()
            .mode()
            & 0o777;
        assert_eq!(found, mode, "{file}");
    }

    let mut client = connect(data.path(), "maros-dinsos", &dinsos).await;
    let mut request = tonic::Request::new(v1::CreateReferralRequest {
        request_id: "up-test-1".into(),
        recipient: "maros-uptd-ppa".into(),
        case_id: "MRS-UP-1".into(),
        service: "shelter".into(),
        priority: v1::Priority::Urgent.into(),
        consent: Some(v1::Consent {
            services: true,
            disclose_to_agencies: true,
            override_justification: String::new(),
            sealed_override_justification: None,
        }),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-refbus-operator", "tester".parse().unwrap());
    let created = client.create_referral(request).await.unwrap().into_inner();
    let id = created.referral.unwrap().referral_id;

    // The auditor's command, as printed, verifies this run: the record, the sequences, the
    // clocks and the notary's log. It is run again until the notary's next checkpoint covers
    // the referral (a message newer than the checkpoint is reported `not_in_log`); bounded.
    let audit = lines
        .iter()
        .find_map(|line| line.trim().strip_prefix("auditor"))
        .map(|rest| rest.trim().to_owned())
        .unwrap_or_else(|| panic!("no auditor command printed:\n{output}"));
    let audit_args: Vec<&str> = audit
        .strip_prefix("refbus ")
        .unwrap_or_else(|| panic!("{audit}"))
        .split_whitespace()
        .collect();
    assert!(audit_args.contains(&"--log") && audit_args.contains(&"--public-keys"));
    let mut verified = None;
    for _ in 0..40 {
        let ran = common::command(&[]).args(&audit_args).output().unwrap();
        let report = String::from_utf8_lossy(&ran.stdout).into_owned();
        if ran.status.success() {
            verified = Some(report);
            break;
        }
        assert_eq!(ran.status.code(), Some(3), "{audit}\n{report}");
        assert!(report.contains("LOG not_in_log"), "{report}");
        std::thread::sleep(std::time::Duration::from_millis(250));
    }
    let report = verified.unwrap_or_else(|| panic!("{audit} never verified clean"));
    assert!(
        report.contains("checks: records, sequences, order, clocks, log"),
        "{report}"
    );
    assert!(report.contains("1 referrals"), "{report}");

    let status = interrupt(&mut child);
    assert!(
        status.success(),
        "refbus up exits cleanly on Ctrl-C: {status}"
    );
    assert!(data.path().join("keys/maros-dinsos.key").exists());

    // Started again on the same data, the referral is still there.
    let (mut child, lines) = common::up::start_up(data.path(), &[]);
    let dinsos_line = lines
        .iter()
        .find(|line| line.contains(" maros-dinsos "))
        .unwrap();
    let dinsos = dinsos_line.split_whitespace().next().unwrap().to_owned();
    let mut client = connect(data.path(), "maros-dinsos", &dinsos).await;
    let mut request = tonic::Request::new(v1::GetReferralRequest {
        referral_id: id.clone(),
    });
    request
        .metadata_mut()
        .insert("x-refbus-operator", "tester".parse().unwrap());
    let got = client.get_referral(request).await.unwrap().into_inner();
    assert_eq!(got.referral.unwrap().referral_id, id);
    assert!(interrupt(&mut child).success());
}

#[tokio::test]
async fn up_admits_to_nats_only_tls_clients_with_its_certificate_and_a_known_nkey() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, lines) = common::up::start_up(data.path(), &[]);
    let output = lines.concat();
    let url = lines
        .iter()
        .find_map(|line| {
            line.split_whitespace()
                .find(|word| word.starts_with("tls://"))
        })
        .unwrap_or_else(|| panic!("no tls:// NATS address in {output}"))
        .to_owned();
    assert!(output.contains("--nats-nkey-file"), "{output}");
    let auth = data.path().join("nats-auth");
    let plain = url.replace("tls://", "nats://");
    let with_ca = || async_nats::ConnectOptions::new().add_root_certificates(auth.join("ca.pem"));
    let with_certificate = || {
        with_ca().add_client_certificate(
            auth.join("refbus-router.pem"),
            auth.join("refbus-router-key.pem"),
        )
    };
    let seed = std::fs::read_to_string(auth.join("refbus-router.nk")).unwrap();

    // No TLS, no certificate, no key, an unknown key: each refused.
    let refused = [
        (
            "no credentials at all",
            async_nats::ConnectOptions::new().connect(&plain).await,
        ),
        ("TLS without a certificate", with_ca().connect(&url).await),
        (
            "a certificate but no key",
            with_certificate().connect(&url).await,
        ),
        (
            "a certificate and an unknown key",
            async_nats::ConnectOptions::with_nkey(nkeys::KeyPair::new_user().seed().unwrap())
                .add_root_certificates(auth.join("ca.pem"))
                .add_client_certificate(
                    auth.join("refbus-router.pem"),
                    auth.join("refbus-router-key.pem"),
                )
                .connect(&url)
                .await,
        ),
    ];
    for (attempt, result) in refused {
        let Err(err) = result else {
            panic!("{attempt} was let in");
        };
        // Past TLS, the server itself refuses whoever has no key it knows.
        if attempt.contains("key") {
            assert_eq!(
                err.kind(),
                async_nats::ConnectErrorKind::AuthorizationViolation,
                "{attempt}: {err}"
            );
        }
    }
    // The router's certificate and key: let in.
    let router = async_nats::ConnectOptions::with_nkey(seed.trim().to_owned())
        .add_root_certificates(auth.join("ca.pem"))
        .add_client_certificate(
            auth.join("refbus-router.pem"),
            auth.join("refbus-router-key.pem"),
        )
        .connect(&url)
        .await
        .unwrap();
    router.flush().await.unwrap();
    assert!(interrupt(&mut child).success());
}

/// `refbus up <args>` on free ports and `data_dir`: the process, and every line it writes on
/// stdout and stderr (read on threads, so its pipes never fill), once it said it is up.
fn start_merged(
    data_dir: &std::path::Path,
    args: &[&str],
) -> (
    common::up::Up,
    std::sync::mpsc::Receiver<String>,
    Vec<String>,
) {
    let mut child = common::up::command(data_dir, args)
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
    let mut seen = Vec::new();
    loop {
        let Ok(line) = lines.recv_timeout(std::time::Duration::from_secs(60)) else {
            let _ = child.kill();
            let _ = child.wait();
            panic!("refbus up never said it was up: {seen:#?}");
        };
        let done = line.contains("Press Ctrl-C");
        seen.push(line);
        if done {
            return (common::up::Up(child), lines, seen);
        }
    }
}

/// The address of `agency`'s adapter in up's endpoint list.
fn endpoint(lines: &[String], agency: &str) -> String {
    let line = lines
        .iter()
        .find(|line| line.contains(&format!(" {agency} ")))
        .unwrap_or_else(|| panic!("{agency} is not listed: {lines:#?}"));
    line.split_whitespace().next().unwrap().to_owned()
}

/// Kills a process the test no longer holds as a `Child`, unless forgotten.
struct KillOnDrop(u32);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-KILL", &self.0.to_string()])
            .status();
    }
}

fn operator<T>(message: T) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request
        .metadata_mut()
        .insert("x-refbus-operator", "tester".parse().unwrap());
    request
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_demo_with_an_open_inbox_stops_within_5_seconds_and_leaves_no_nats_server() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, lines, seen) = start_merged(data.path(), &["--demo"]);
    let nats_line = seen
        .iter()
        .find(|line| line.contains("NATS (JetStream)"))
        .expect("the NATS line");
    let nats_pid: u32 = nats_line
        .rsplit("pid ")
        .next()
        .and_then(|pid| pid.trim().parse().ok())
        .unwrap_or_else(|| panic!("no pid in {nats_line}"));
    let proc_entry = std::path::PathBuf::from(format!("/proc/{nats_pid}"));
    assert!(proc_entry.exists(), "nats-server {nats_pid} runs");

    // An agency system watching its inbox: a stream that never ends by itself.
    let uptd = endpoint(&seen, "maros-uptd-ppa");
    let mut client = connect(data.path(), "maros-uptd-ppa", &uptd).await;
    let mut inbox = client
        .watch_inbox(operator(v1::WatchInboxRequest::default()))
        .await
        .unwrap()
        .into_inner();
    // Reading up's output keeps its pipes from filling while it stops.
    std::thread::spawn(move || for _ in lines {});

    let (exited_tx, exited) = std::sync::mpsc::channel();
    let pid = child.id();
    // If the test fails while up still runs, up is killed (and its nats-server with it).
    let guard = KillOnDrop(pid);
    std::thread::spawn(move || {
        let _ = exited_tx.send(child.wait());
    });
    let interrupted = Command::new("kill")
        .args(["-INT", &pid.to_string()])
        .status()
        .unwrap();
    assert!(interrupted.success());
    let status = exited
        .recv_timeout(std::time::Duration::from_secs(5))
        .expect("refbus up stops within 5 seconds of Ctrl-C")
        .unwrap();
    std::mem::forget(guard);
    assert!(status.success(), "{status}");
    assert!(
        !proc_entry.exists(),
        "refbus up left its nats-server (pid {nats_pid}) running"
    );
    // The watching system was told to reconnect, not left hanging.
    loop {
        match inbox.message().await {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the inbox stream ended without saying why"),
            Err(status) => {
                assert_eq!(status.code(), tonic::Code::Unavailable, "{status:?}");
                break;
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_prints_each_router_action_once_and_no_colour_codes_into_a_pipe() {
    let data = tempfile::tempdir().unwrap();
    // The demo's minute clocks, with the router's time running 60 times as fast: the 2-minute
    // emergency clock breaches 2 seconds after the referral is created.
    let (mut child, lines, mut seen) = start_merged(
        data.path(),
        &["--config", "deploy/config/demo.toml", "--clock-speed", "60"],
    );
    let dinsos = endpoint(&seen, "maros-dinsos");
    let mut client = connect(data.path(), "maros-dinsos", &dinsos).await;
    let created = client
        .create_referral(operator(v1::CreateReferralRequest {
            request_id: "up-once-1".into(),
            recipient: "maros-uptd-ppa".into(),
            case_id: "MRS-UP-ONCE".into(),
            service: "psychological_counselling".into(),
            priority: v1::Priority::Emergency.into(),
            consent: Some(v1::Consent {
                services: true,
                disclose_to_agencies: true,
                override_justification: String::new(),
                sealed_override_justification: None,
            }),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    let id = created.referral.unwrap().referral_id;
    loop {
        let line = lines
            .recv_timeout(std::time::Duration::from_secs(60))
            .unwrap_or_else(|_| panic!("the breach was never printed: {seen:#?}"));
        let breach = line.contains("acknowledge_emergency.breach") && line.contains(&id);
        seen.push(line);
        if breach {
            break;
        }
    }
    let status = interrupt(&mut child);
    assert!(status.success(), "{status}");
    // Everything it wrote, to the end of both pipes.
    seen.extend(lines.iter());
    let output = seen.join("\n");
    let breaches = seen
        .iter()
        .filter(|line| line.contains("acknowledge_emergency.breach") && line.contains(&id))
        .count();
    assert_eq!(breaches, 1, "one line per router action:\n{output}");
    assert!(
        !output.contains('\u{1b}'),
        "colour codes in output that is not a terminal:\n{output}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_serves_each_components_metrics_and_prints_where() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, lines) = common::up::start_up(data.path(), &[]);
    let output = lines.concat();
    // One URL per component: the router, each of the eight adapters, the dashboard.
    let urls: Vec<(&str, &str)> = lines
        .iter()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            let url = words
                .next()?
                .strip_prefix("http://")?
                .strip_suffix("/metrics")?;
            Some((url, words.next()?))
        })
        .collect();
    assert_eq!(urls.len(), 10, "{output}");
    let address = |component: &str| -> std::net::SocketAddr {
        let (url, _) = urls
            .iter()
            .find(|(_, name)| *name == component)
            .unwrap_or_else(|| panic!("no metrics URL for {component}:\n{output}"));
        url.parse().unwrap()
    };
    let router = refbus_metrics::scrape(address("router")).await.unwrap();
    assert_eq!(router.status, 200);
    assert!(
        router.body.contains("refbus_router_timers_pending "),
        "{}",
        router.body
    );
    let dashboard = refbus_metrics::scrape(address("dashboard")).await.unwrap();
    assert!(
        dashboard
            .body
            .contains("refbus_dashboard_board_clients_connected "),
        "{}",
        dashboard.body
    );
    let dinsos = refbus_metrics::scrape(address("maros-dinsos"))
        .await
        .unwrap();
    assert_eq!(dinsos.status, 200);
    assert_eq!(
        refbus_metrics::sample(
            &dinsos.body,
            "refbus_adapter_inbox_streams_open",
            &[("agency", "maros-dinsos")]
        ),
        Some(0.0),
        "{}",
        dinsos.body
    );
    assert!(interrupt(&mut child).success());
}

/// A create through `up`'s adapter of `agency` at `endpoint`; the referral's id.
async fn create(data_dir: &std::path::Path, endpoint: &str, request_id: &str) -> String {
    let mut client = connect(data_dir, "maros-dinsos", endpoint).await;
    let created = client
        .create_referral(operator(v1::CreateReferralRequest {
            request_id: request_id.into(),
            recipient: "maros-uptd-ppa".into(),
            case_id: "MRS-UP-CLUSTER".into(),
            service: "shelter".into(),
            priority: v1::Priority::Urgent.into(),
            consent: Some(v1::Consent {
                services: true,
                disclose_to_agencies: true,
                override_justification: String::new(),
                sealed_override_justification: None,
            }),
            ..Default::default()
        }))
        .await
        .unwrap_or_else(|status| panic!("{request_id}: {status:?}"))
        .into_inner();
    created.referral.unwrap().referral_id
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_cluster_3_serves_a_referral_and_goes_on_serving_after_a_node_is_killed() {
    let data = tempfile::tempdir().unwrap();
    let (mut child, lines) = common::up::start_up(data.path(), &["--cluster", "3"]);
    let output = lines.concat();
    // Three nodes, each with its own store under the data directory and its process id.
    let nodes: Vec<(String, u32)> = lines
        .iter()
        .filter_map(|line| {
            let words: Vec<&str> = line.split_whitespace().collect();
            (words.first() == Some(&"node")).then(|| {
                let monitor = words
                    .iter()
                    .find_map(|word| word.strip_prefix("http://"))
                    .unwrap()
                    .to_owned();
                let pid = words[words.iter().position(|w| *w == "pid").unwrap() + 1];
                (monitor, pid.parse().unwrap())
            })
        })
        .collect();
    assert_eq!(nodes.len(), 3, "{output}");
    for node in 1..=3 {
        let store = data
            .path()
            .join("nats-cluster")
            .join(format!("refbus-local-{node}"));
        assert!(output.contains(&store.display().to_string()), "{output}");
    }
    // Every component was told all three; a separate one is started the same way.
    let urls = lines
        .iter()
        .find_map(|line| {
            line.split_whitespace()
                .skip_while(|word| *word != "--nats")
                .nth(1)
        })
        .unwrap_or_else(|| panic!("no --nats printed: {output}"));
    assert_eq!(urls.split(',').count(), 3, "{urls}");
    assert!(output.contains("--stream-replicas 3"), "{output}");
    // The stream is replicated on all three, as each node's own report says, and every node
    // fsyncs before it acknowledges.
    let mut leader = None;
    for (monitor, _) in &nodes {
        let jsz = http_get(monitor, "/jsz?accounts=true&streams=true&config=true");
        let body = jsz.split("\r\n\r\n").nth(1).unwrap_or_default();
        let report: serde_json::Value = serde_json::from_str(body).unwrap();
        assert_eq!(report["config"]["sync_always"], true, "{body}");
        let stream = report["account_details"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|account| account["stream_detail"].as_array().into_iter().flatten())
            .find(|stream| stream["name"] == "REFBUS_EVENTS")
            .unwrap_or_else(|| panic!("no events stream on {monitor}: {body}"))
            .clone();
        assert_eq!(stream["config"]["num_replicas"], 3, "{stream}");
        leader = stream["cluster"]["leader"].as_str().map(str::to_owned);
    }
    let leader = leader.expect("the events stream has a leader");
    let leader_node: usize = leader
        .strip_prefix("refbus-local-")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("leader {leader}"));

    let dinsos = endpoint(&lines, "maros-dinsos");
    let first = create(data.path(), &dinsos, "up-cluster-1").await;

    // The node leading the stream dies as in a crash; the others elect a new leader, and
    // the components, connected to all three, go on: a create and a read are answered OK.
    let (_, pid) = &nodes[leader_node - 1];
    let killed = Command::new("kill")
        .args(["-KILL", &pid.to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let second = create(data.path(), &dinsos, "up-cluster-2").await;
    assert_ne!(first, second);
    // A read rides through too (JetStream's meta leader may still be being elected, if the
    // killed node held that too): answered OK, no UNAVAILABLE reaches the agency system.
    let mut client = connect(
        data.path(),
        "maros-uptd-ppa",
        &endpoint(&lines, "maros-uptd-ppa"),
    )
    .await;
    let got = client
        .get_referral(operator(v1::GetReferralRequest {
            referral_id: first.clone(),
        }))
        .await
        .unwrap()
        .into_inner();
    assert_eq!(got.referral.unwrap().referral_id, first);

    assert!(interrupt(&mut child).success());
    // No node is left running.
    for (_, pid) in &nodes {
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/stat"))
                    .is_ok_and(|stat| stat.contains(") Z ")),
            "nats-server {pid} still runs"
        );
    }
}

/// `refbus up --otlp-endpoint` exports the spans of every component it runs, as one service
/// (`refbus-up`): a create carrying the caller's `traceparent` is in the caller's trace, and
/// what was still buffered when Ctrl-C came is exported before the process ends.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_with_otlp_endpoint_exports_a_calls_spans_in_the_callers_trace() {
    use refbus_testkit::otlp::{Collector, of_trace};
    const CALLER_TRACE: &str = "0af7651916cd43dd8448eb211c80319c";
    const CALLER_SPAN: &str = "b7ad6b7169203331";

    let (collector, addr) = Collector::start().await.unwrap();
    let data = tempfile::tempdir().unwrap();
    let (data_dir, otlp) = (data.path().to_owned(), format!("http://{addr}"));
    let (mut child, lines) = tokio::task::spawn_blocking(move || {
        common::up::start_up(&data_dir, &["--otlp-endpoint", &otlp])
    })
    .await
    .unwrap();
    let dinsos = endpoint(&lines, "maros-dinsos");
    let mut client = connect(data.path(), "maros-dinsos", &dinsos).await;
    let mut request = operator(v1::CreateReferralRequest {
        request_id: "up-trace-1".into(),
        recipient: "maros-uptd-ppa".into(),
        case_id: "MRS-UP-TRACE".into(),
        service: "shelter".into(),
        priority: v1::Priority::Urgent.into(),
        consent: Some(v1::Consent {
            services: true,
            disclose_to_agencies: true,
            override_justification: String::new(),
            sealed_override_justification: None,
        }),
        ..Default::default()
    });
    request.metadata_mut().insert(
        "traceparent",
        format!("00-{CALLER_TRACE}-{CALLER_SPAN}-01")
            .parse()
            .unwrap(),
    );
    let id = client
        .create_referral(request)
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
        .referral_id;
    // Stopped at once: the call's spans are exported on the way out, if not before.
    let status = tokio::task::spawn_blocking(move || interrupt(&mut child))
        .await
        .unwrap();
    assert!(status.success(), "{status}");

    let spans = collector.spans();
    let trace = of_trace(&spans, CALLER_TRACE);
    let named: Vec<String> = trace
        .values()
        .map(|span| format!("{} {}", span.service, span.name()))
        .collect();
    let call = trace
        .values()
        .find(|span| span.name() == "refbus.v1.ReferralService/CreateReferral")
        .unwrap_or_else(|| panic!("no call span in the caller's trace: {named:#?}"));
    assert_eq!(call.parent_id(), CALLER_SPAN);
    assert_eq!(call.service, "refbus-up");
    let created = trace
        .values()
        .find(|span| {
            span.name() == "bus.append"
                && span.attribute("refbus.change").as_deref() == Some("created")
        })
        .unwrap_or_else(|| panic!("no append of the creation: {named:#?}"));
    assert_eq!(created.parent_id(), call.span_id());
    assert_eq!(
        created.attribute("refbus.referral_id").as_deref(),
        Some(id.as_str())
    );
}
