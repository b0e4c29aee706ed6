//! `refbus audit` as an auditor runs it: exit codes (0 clean, 3 problems found, 2 a bad command
//! line, 1 could not run) and messages, and nothing written on bad input.

mod common;

use std::path::PathBuf;

use common::{refbus, text};
use refbus_testkit::NatsServer;

fn config() -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../deploy/config/refbus.toml")
        .display()
        .to_string()
}

/// A port nothing listens on: a command that tried to connect would hang retrying, so a
/// prompt answer proves it refused before connecting.
const NOWHERE: &str = "nats://127.0.0.1:9";

#[test]
fn bad_times_and_filters_are_refused_before_anything_is_read_or_written() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("export.csv");
    let out_arg = out.display().to_string();
    let config = config();
    let cases: [(&[&str], &str); 8] = [
        (
            &[
                "audit",
                "replay",
                "--referral",
                "0000000000000000000000000A",
                "--at",
                "yesterday",
            ],
            "--at \"yesterday\" is not a time",
        ),
        (
            &["audit", "replay", "--referral", "not-an-id"],
            "--referral",
        ),
        (&["audit", "verify", "--now", "2026-13-40"], "--now"),
        (
            &["audit", "export", "--format", "xml", "-o", &out_arg],
            "--format \"xml\"",
        ),
        (
            &[
                "audit", "export", "--format", "csv", "--status", "lost", "-o", &out_arg,
            ],
            "--status \"lost\": one of requested",
        ),
        (
            &[
                "audit", "export", "--format", "csv", "--agency", "nobody", "-o", &out_arg,
            ],
            "--agency \"nobody\": no such agency",
        ),
        (
            &[
                "audit",
                "export",
                "--format",
                "fhir",
                "--service",
                "magic",
                "-o",
                &out_arg,
            ],
            "--service \"magic\": no such service",
        ),
        (
            &[
                "audit",
                "export",
                "--format",
                "jsonl",
                "--from",
                "2026-03-02",
                "--to",
                "2026-03-01",
                "-o",
                &out_arg,
            ],
            "is not before --to",
        ),
    ];
    for (args, expected) in cases {
        let mut args = args.to_vec();
        args.extend(["--config", &config, "--nats", NOWHERE]);
        let output = refbus(&args);
        assert_eq!(output.status.code(), Some(2), "{args:?}: {}", text(&output));
        assert!(
            text(&output).contains(expected),
            "{args:?}: {}",
            text(&output)
        );
        assert!(!out.exists(), "{args:?} wrote {out_arg}");
    }
}

#[test]
fn an_unknown_referral_or_case_is_a_usage_error_and_an_empty_stream_verifies() {
    let nats = NatsServer::start().unwrap();
    let url = nats.url();
    let config = config();
    let output = refbus(&[
        "audit",
        "replay",
        "--referral",
        "0000000000000000000000000A",
        "--config",
        &config,
        "--nats",
        &url,
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(
        text(&output).contains("no referral 0000000000000000000000000A on the bus"),
        "{}",
        text(&output)
    );
    let output = refbus(&[
        "audit", "replay", "--case", "MRS-NONE", "--config", &config, "--nats", &url,
    ]);
    assert_eq!(output.status.code(), Some(2), "{}", text(&output));
    assert!(text(&output).contains("no referral of case MRS-NONE"));

    let output = refbus(&["audit", "verify", "--config", &config, "--nats", &url]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    assert!(
        text(&output).contains("OK: no problem found"),
        "{}",
        text(&output)
    );
    let output = refbus(&[
        "audit", "verify", "--json", "--config", &config, "--nats", &url,
    ]);
    assert_eq!(output.status.code(), Some(0), "{}", text(&output));
    let report: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(report["problems"], serde_json::json!([]));
}

#[test]
fn a_tampered_export_verifies_with_exit_3_and_each_problem_named() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.jsonl");
    let subject = "refbus.v1.ref.maros-uptd-ppa.maros-dinsos.0000000000000000000000000A";
    let lines = [
        r#"{"refbus_export":1,"filters":{},"stream":{"first_seq":1,"last_seq":3,"messages":3,"deleted":0}}"#.to_owned(),
        format!(r#"{{"seq":1,"subject":"{subject}","stored_at":"2026-03-02T01:00:00.000Z","payload":"not a record"}}"#),
        format!(r#"{{"seq":3,"subject":"{subject}","stored_at":"2026-03-02T01:01:00.000Z","payload":"{{}}"}}"#),
    ];
    std::fs::write(&file, lines.join("\n") + "\n").unwrap();
    let config = config();
    let file_arg = file.display().to_string();
    let output = refbus(&[
        "audit",
        "verify",
        "--from-export",
        &file_arg,
        "--config",
        &config,
        "--now",
        "2026-03-02T02:00:00Z",
    ]);
    assert_eq!(output.status.code(), Some(3), "{}", text(&output));
    let report = text(&output);
    assert!(report.contains("3 PROBLEM(S)"), "{report}");
    assert!(
        report.contains(&format!(
            "RECORD unreadable: referral 0000000000000000000000000A, stream sequence 1 on {subject}"
        )),
        "{report}"
    );
    assert!(
        report.contains("GAP: stream sequences 2..=2 are missing"),
        "{report}"
    );

    // Not an export at all: could not run.
    std::fs::write(&file, "hello\n").unwrap();
    let output = refbus(&[
        "audit",
        "verify",
        "--from-export",
        &file_arg,
        "--config",
        &config,
    ]);
    assert_eq!(output.status.code(), Some(1), "{}", text(&output));
    assert!(text(&output).contains("not the header of a refbus export"));
}
