//! `refbus up` as a newcomer runs it: the process starts nats-server and every adapter, prints
//! the endpoints, serves a referral, stops cleanly on Ctrl-C, and keeps its data for the next
//! start.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};

use refbus_proto::v1;
use refbus_proto::v1::referral_service_client::ReferralServiceClient;

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A run of `count` consecutive free ports (the adapters' ports follow the first).
fn free_ports(count: u16) -> u16 {
    loop {
        let base = free_port();
        if base > u16::MAX - count {
            continue;
        }
        if (base..base + count).all(|port| TcpListener::bind(("127.0.0.1", port)).is_ok()) {
            return base;
        }
    }
}

fn repo_root() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// Starts `refbus up` and reads its output until it says it is up; returns the endpoints.
fn start(data_dir: &std::path::Path, base_port: u16) -> (Child, Vec<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_refbus"))
        .current_dir(repo_root())
        .args(["up", "--data-dir"])
        .arg(data_dir)
        .args(["--nats-port", &free_port().to_string()])
        .args(["--nats-monitor-port", &free_port().to_string()])
        .args(["--base-port", &base_port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut lines = Vec::new();
    let mut reader = BufReader::new(child.stdout.take().unwrap());
    loop {
        let mut line = String::new();
        assert!(
            reader.read_line(&mut line).unwrap() > 0,
            "refbus up ended early: {lines:?}"
        );
        let done = line.contains("Press Ctrl-C");
        lines.push(line);
        if done {
            break;
        }
    }
    (child, lines)
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
    let base_port = free_ports(8);
    let (mut child, lines) = start(data.path(), base_port);
    let output = lines.concat();
    assert!(output.contains("refbus is up."), "{output}");
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

    let mut client = ReferralServiceClient::connect(format!("http://{dinsos}"))
        .await
        .unwrap();
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
        }),
        ..Default::default()
    });
    request
        .metadata_mut()
        .insert("x-refbus-operator", "tester".parse().unwrap());
    let created = client.create_referral(request).await.unwrap().into_inner();
    let id = created.referral.unwrap().referral_id;

    let status = interrupt(&mut child);
    assert!(
        status.success(),
        "refbus up exits cleanly on Ctrl-C: {status}"
    );
    assert!(data.path().join("keys/maros-dinsos.key").exists());

    // Started again on the same data, the referral is still there.
    let (mut child, lines) = start(data.path(), base_port);
    let dinsos_line = lines
        .iter()
        .find(|line| line.contains(" maros-dinsos "))
        .unwrap();
    let dinsos = dinsos_line.split_whitespace().next().unwrap().to_owned();
    let mut client = ReferralServiceClient::connect(format!("http://{dinsos}"))
        .await
        .unwrap();
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
