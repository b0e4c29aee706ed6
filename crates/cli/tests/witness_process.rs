//! `refbus witness` as another office runs it: its metrics are served where
//! `REFBUS_METRICS_ADDR` (the variable every component reads) says, while it follows a log.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;

use common::{Process, refbus_ok};
use refbus_testkit::free_port;

#[tokio::test]
async fn the_witness_serves_its_metrics_on_refbus_metrics_addr() {
    let dir = tempfile::tempdir().unwrap();
    let path = |name: &str| dir.path().join(name).to_str().unwrap().to_owned();
    refbus_ok(&[
        "keys",
        "generate-notary",
        "--name",
        "refbus.maros.example/log",
        "--out",
        &path("notary.key"),
    ]);
    refbus_ok(&[
        "keys",
        "generate-witness",
        "--name",
        "inspektorat.maros.example/witness",
        "--out",
        &path("witness.key"),
    ]);
    std::fs::create_dir(dir.path().join("state")).unwrap();
    let metrics = format!("127.0.0.1:{}", free_port());
    // No notary serves this log yet: the witness keeps trying, and serves its metrics.
    let mut child = common::command(&[
        "witness",
        "--log-url",
        &format!("http://127.0.0.1:{}", free_port()),
        "--notary-key",
        &path("notary.vkey"),
        "--key",
        &path("witness.key"),
        "--dir",
        &path("state"),
    ])
    .env("REFBUS_METRICS_ADDR", &metrics)
    .stdout(Stdio::piped())
    .stderr(Stdio::null())
    .spawn()
    .unwrap();
    let mut stdout = BufReader::new(child.stdout.take().unwrap());
    let _process = Process(child);
    let mut line = String::new();
    stdout.read_line(&mut line).unwrap();
    assert!(line.contains("following"), "{line}");

    let scraped = refbus_metrics::scrape(metrics.parse().unwrap())
        .await
        .unwrap();
    assert_eq!(scraped.status, 200);
    for (name, value) in [
        ("refbus_witness_cosigned_total", 0.0),
        ("refbus_witness_refused_total", 0.0),
        ("refbus_witness_checkpoint_size", 0.0),
    ] {
        assert_eq!(
            refbus_metrics::sample(&scraped.body, name, &[]),
            Some(value),
            "{}",
            scraped.body
        );
    }
}
