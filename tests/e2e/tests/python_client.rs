//! A non-Rust client: `tests/python/maros_flow.py` generates grpcio stubs from `proto/` and
//! plays the Maros flow against five agencies' adapters over mutual TLS
//! (`grpc.ssl_channel_credentials` with each agency's client certificate, system `python`);
//! the bus is then checked from Rust.

use refbus_bus::subjects;
use refbus_core::{AgencyId, Status};
use refbus_e2e::{System, repo_root};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn python_agency_systems_play_the_maros_flow() {
    let python = repo_root().join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run scripts/install-tools.sh (scripts/test.sh does)",
        python.display()
    );
    let mut system = System::start().await;
    let agencies = [
        "puskesos-bontoa",
        "maros-dinsos",
        "maros-uptd-ppa",
        "polres-maros",
        "maros-bagian-hukum",
    ];
    let mut command = tokio::process::Command::new(&python);
    command
        .arg(repo_root().join("tests/python/maros_flow.py"))
        .arg("--proto")
        .arg(repo_root().join("proto"))
        .arg("--cacert")
        .arg(system.pki.ca_file());
    for agency in agencies {
        let addr = system.start_adapter(&AgencyId::new(agency).unwrap()).await;
        let client = system.pki.client(agency, "python").unwrap();
        command.arg("--adapter").arg(format!(
            "{agency}={addr},{},{}",
            client.certificate.display(),
            client.key.display()
        ));
    }
    let output = command.output().await.unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "the Python client failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // What the Python systems did is on the bus, as refbus recorded it.
    let ids: Vec<&str> = stdout.split_whitespace().skip(3).collect();
    assert_eq!(ids.len(), 3, "{stdout}");
    let bus = system.bus().await;
    let expected = [Status::Accepted, Status::InProgress, Status::Accepted];
    for (id, status) in ids.iter().zip(expected) {
        let id = id.parse().unwrap();
        let stored = bus
            .last(&subjects::referral_pattern(&id))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(stored.record.state.status, status, "{id}");
        assert!(
            stored
                .record
                .event
                .operator()
                .unwrap()
                .as_str()
                .starts_with("py-operator@")
        );
        assert_eq!(
            stored.record.event.system().map(|system| system.as_str()),
            Some("python"),
            "the system the Python client's certificate names is recorded"
        );
    }
}
