//! `refbus audit export`: JSONL holds the stored messages exactly as stored and verifies
//! offline (a byte changed in the file is reported); CSV has one row per referral; the FHIR
//! Bundle has the structure of R4 Bundle and Task resources (checked element by element below
//! against the R4 definitions); and no export holds identity plaintext.

mod common;

use std::sync::atomic::AtomicBool;

use common::*;
use refbus_audit::export::{Filters, Format, export};
use refbus_audit::verify::{Options, Outcome, verify_export};
use refbus_audit::{Problem, Report, checks};
use refbus_core::integrity::Problem as Integrity;
use refbus_core::{Command, Status};
use refbus_testkit::NatsServer;

/// Two referrals with sealed identities (one completed, one accepted) and one without, to
/// another recipient pair.
async fn scenario(bus: &refbus_bus::Bus) {
    let first = create_with_identity(bus, "MRS-E-1", "export-1", t0_plus(0)).await;
    let outcome = refbus_core::referral::Outcome {
        code: maros().outcomes.keys().next().unwrap().clone(),
        note: None,
    };
    let mut last = first;
    for (command, minutes) in [
        (Command::Accept, 5),
        (Command::Start, 10),
        (Command::Complete { outcome }, 20),
    ] {
        last = recipient_does(bus, &last, command, t0_plus(minutes)).await;
    }
    let second = create_with_identity(bus, "MRS-E-2", "export-2", t0_plus(2)).await;
    recipient_does(bus, &second, Command::Accept, t0_plus(6)).await;
    let mut creation = creation(
        "MRS-E-3",
        "maros-dp3a",
        "maros-dinsos",
        refbus_core::referral::Priority::Routine,
    );
    creation.service = "social_assistance".parse().unwrap();
    write(
        bus,
        None,
        Command::Create(Box::new(creation)),
        operator("maros-dp3a"),
        "export-3",
        t0_plus(3),
    )
    .await;
}

async fn exported(bus: &refbus_bus::Bus, filters: &Filters, format: Format) -> Vec<u8> {
    let mut out = Vec::new();
    export(bus, &verifier(), filters, format, t0_plus(30), &mut out)
        .await
        .unwrap();
    out
}

fn verify_file(bytes: &[u8]) -> Report {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("export.jsonl");
    std::fs::write(&file, bytes).unwrap();
    let options = Options {
        now: t0_plus(30),
        resume: None,
        progress: false,
    };
    let checks = checks::standard(maros(), refbus_core::audit::DEFAULT_TOLERANCE);
    match verify_export(
        &file,
        &verifier(),
        checks,
        &options,
        &AtomicBool::new(false),
    )
    .unwrap()
    {
        Outcome::Done(report) => report,
        Outcome::Stopped { .. } => panic!("not stopped"),
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

/// The identity's plaintext, whole or in parts, is nowhere in `bytes`.
fn assert_no_identity(bytes: &[u8], what: &str) {
    for part in [
        "Siti",
        "Aminah",
        "7309014107900001",
        "Poros Maros",
        "full_name",
        "nik",
    ] {
        assert!(
            !contains(bytes, part.as_bytes()),
            "{part:?} in the {what} export"
        );
    }
}

#[tokio::test]
async fn a_jsonl_export_holds_the_stored_bytes_and_verifies_offline() {
    // Verified clocks at 30 min: the routine referral's clock is a working day, the emergency
    // ones stopped at acceptance; the third referral's 50% warning is later.
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    scenario(&bus).await;
    let whole = exported(&bus, &Filters::default(), Format::Jsonl).await;
    let text = String::from_utf8(whole.clone()).unwrap();
    // The header and every message of the stream (7 events and the index entries).
    let last_seq = bus.last_sequence().await.unwrap();
    assert_eq!(text.lines().count() as u64, 1 + last_seq);
    assert!(last_seq >= 8);
    let report = verify_file(&whole);
    assert!(report.is_clean(), "{}", report.to_text());
    assert_eq!(report.referrals, 3);
    assert!(report.checks.contains(&"sequences".to_owned()));
    assert_no_identity(&whole, "jsonl");
    // The identity is there, sealed: the stored bytes of the creation are in the file.
    assert!(text.contains(r#"\"identity\":{\"envelope\""#));

    // Filtered: the two referrals UPTD PPA received, each with its whole history.
    let filters = Filters {
        agency: Some(agency("maros-uptd-ppa")),
        ..Filters::default()
    };
    let filtered = exported(&bus, &filters, Format::Jsonl).await;
    assert_eq!(String::from_utf8_lossy(&filtered).lines().count(), 1 + 6);
    let report = verify_file(&filtered);
    assert!(report.is_clean(), "{}", report.to_text());
    assert_eq!(report.referrals, 2);
    assert!(!report.checks.contains(&"sequences".to_owned()));

    // One byte of the file changed (a minute of an event's time): reported at its sequence.
    let tampered = text.replacen(
        r#"\"at\":\"2026-03-02T01:05"#,
        r#"\"at\":\"2026-03-02T01:06"#,
        1,
    );
    assert_ne!(tampered, text);
    let report = verify_file(tampered.as_bytes());
    assert!(
        matches!(
            &report.problems[0],
            Problem::Record {
                problem: Integrity::Altered,
                ..
            }
        ),
        "{}",
        report.to_text()
    );
    // A message removed from a whole-stream export is a gap.
    let mut lines: Vec<&str> = text.lines().collect();
    lines.remove(3);
    let report = verify_file((lines.join("\n") + "\n").as_bytes());
    assert!(
        report.problems.iter().any(|problem| matches!(
            problem,
            Problem::Gap {
                after: 2,
                next: 4,
                missing: 1
            }
        )),
        "{}",
        report.to_text()
    );
}

#[tokio::test]
async fn two_exports_of_the_same_stream_are_the_same_bytes() {
    // An auditor compares exports by their hash: every header of every message is written in
    // one order (by name), whatever order the client hands them over in.
    let nats = NatsServer::start().unwrap();
    let first_bus = bus(&nats.url()).await;
    scenario(&first_bus).await;
    let first = exported(&first_bus, &Filters::default(), Format::Jsonl).await;
    for _ in 0..3 {
        let other_bus = bus(&nats.url()).await;
        let again = exported(&other_bus, &Filters::default(), Format::Jsonl).await;
        assert!(first == again, "two exports of one stream differ");
    }
    let text = String::from_utf8(first).unwrap();
    let creation = text.lines().nth(1).unwrap();
    let line: serde_json::Value = serde_json::from_str(creation).unwrap();
    let names: Vec<&str> = line["headers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|header| header[0].as_str().unwrap())
        .collect();
    assert!(names.len() >= 5, "{names:?}");
    assert!(names.is_sorted(), "{names:?}");
}

#[tokio::test]
async fn a_csv_export_has_one_row_per_referral_and_no_identity() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    scenario(&bus).await;
    let csv = exported(&bus, &Filters::default(), Format::Csv).await;
    assert_no_identity(&csv, "csv");
    let text = String::from_utf8(csv).unwrap();
    let rows: Vec<Vec<&str>> = text.lines().map(|line| line.split(',').collect()).collect();
    assert_eq!(rows.len(), 4, "{text}");
    assert_eq!(rows[0][0], "referral_id");
    assert!(rows.iter().all(|row| row.len() == rows[0].len()), "{text}");
    let status = rows[0]
        .iter()
        .position(|column| *column == "status")
        .unwrap();
    let statuses: Vec<&str> = rows[1..].iter().map(|row| row[status]).collect();
    assert_eq!(statuses, ["completed", "accepted", "requested"]);

    // Filters: by status, by service, by period.
    let completed = Filters {
        status: Some(Status::Completed),
        ..Filters::default()
    };
    let text = String::from_utf8(exported(&bus, &completed, Format::Csv).await).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    let later = Filters {
        from: Some(t0_plus(1)),
        to: Some(t0_plus(3)),
        ..Filters::default()
    };
    let text = String::from_utf8(exported(&bus, &later, Format::Csv).await).unwrap();
    assert_eq!(
        text.lines().count(),
        2,
        "only the referral created at 2 min: {text}"
    );
    let other = Filters {
        service: Some("shelter".to_owned()),
        ..Filters::default()
    };
    let text = String::from_utf8(exported(&bus, &other, Format::Csv).await).unwrap();
    assert_eq!(text.lines().count(), 1, "the header alone: {text}");
}

// === a structural check of FHIR R4 Bundle and Task ===

/// Task's elements in R4 (hl7.org/fhir/R4/task.html), and those of its base resources.
const TASK_ELEMENTS: &[&str] = &[
    "resourceType",
    "id",
    "meta",
    "implicitRules",
    "language",
    "text",
    "contained",
    "extension",
    "modifierExtension",
    "identifier",
    "instantiatesCanonical",
    "instantiatesUri",
    "basedOn",
    "groupIdentifier",
    "partOf",
    "status",
    "statusReason",
    "businessStatus",
    "intent",
    "priority",
    "code",
    "description",
    "focus",
    "for",
    "encounter",
    "executionPeriod",
    "authoredOn",
    "lastModified",
    "requester",
    "performerType",
    "owner",
    "location",
    "reasonCode",
    "reasonReference",
    "insurance",
    "note",
    "relevantHistory",
    "restriction",
    "input",
    "output",
];
const TASK_STATUS: &[&str] = &[
    "draft",
    "requested",
    "received",
    "accepted",
    "rejected",
    "ready",
    "cancelled",
    "in-progress",
    "on-hold",
    "failed",
    "completed",
    "entered-in-error",
];
const TASK_INTENT: &[&str] = &[
    "unknown",
    "proposal",
    "plan",
    "order",
    "original-order",
    "reflex-order",
    "filler-order",
    "instance-order",
    "option",
];
const REQUEST_PRIORITY: &[&str] = &["routine", "urgent", "asap", "stat"];
const BUNDLE_TYPES: &[&str] = &[
    "document",
    "message",
    "transaction",
    "transaction-response",
    "batch",
    "batch-response",
    "history",
    "searchset",
    "collection",
];

fn is_fhir_id(text: &str) -> bool {
    (1..=64).contains(&text.len())
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.')
}

/// FHIR dateTime / instant with a time: YYYY-MM-DDThh:mm:ss(.sss)(Z|+hh:mm).
fn is_fhir_instant(text: &str) -> bool {
    refbus_core::Timestamp::parse_rfc3339(text).is_ok() && text.len() >= 20 && &text[10..11] == "T"
}

fn check_codeable_concept(value: &serde_json::Value, path: &str) {
    let object = value
        .as_object()
        .unwrap_or_else(|| panic!("{path}: an object"));
    for key in object.keys() {
        assert!(
            ["coding", "text", "id", "extension"].contains(&key.as_str()),
            "{path}.{key}"
        );
    }
    assert!(
        object.contains_key("coding") || object.contains_key("text"),
        "{path}: empty"
    );
    for coding in object
        .get("coding")
        .and_then(|c| c.as_array())
        .into_iter()
        .flatten()
    {
        let coding = coding.as_object().unwrap();
        for key in coding.keys() {
            assert!(
                ["system", "version", "code", "display", "userSelected"].contains(&key.as_str()),
                "{path}.coding.{key}"
            );
        }
        assert!(
            coding["system"].as_str().unwrap().contains(':'),
            "{path}: system is a uri"
        );
        assert!(!coding["code"].as_str().unwrap().is_empty());
    }
}

fn check_reference(value: &serde_json::Value, path: &str) {
    let reference = value["reference"]
        .as_str()
        .unwrap_or_else(|| panic!("{path}.reference"));
    let (kind, id) = reference.split_once('/').unwrap();
    assert!(
        ["Organization", "Task"].contains(&kind),
        "{path}: {reference}"
    );
    assert!(is_fhir_id(id), "{path}: {reference}");
}

/// Every Task of `bundle` checked against R4's structure; the Tasks.
fn check_r4_bundle(bundle: &serde_json::Value) -> Vec<serde_json::Value> {
    assert_eq!(bundle["resourceType"], "Bundle");
    assert!(BUNDLE_TYPES.contains(&bundle["type"].as_str().unwrap()));
    assert!(
        bundle.get("total").is_none(),
        "total is only for searchset and history"
    );
    assert!(is_fhir_instant(bundle["timestamp"].as_str().unwrap()));
    let mut tasks = Vec::new();
    for entry in bundle["entry"].as_array().unwrap() {
        let full_url = entry["fullUrl"].as_str().unwrap();
        let uuid = full_url.strip_prefix("urn:uuid:").unwrap();
        assert_eq!(uuid.len(), 36);
        let task = &entry["resource"];
        for key in task.as_object().unwrap().keys() {
            assert!(
                TASK_ELEMENTS.contains(&key.as_str()),
                "Task.{key} is not an R4 element"
            );
        }
        assert_eq!(task["resourceType"], "Task");
        assert!(is_fhir_id(task["id"].as_str().unwrap()));
        // Required (1..1): status and intent.
        assert!(TASK_STATUS.contains(&task["status"].as_str().unwrap()));
        assert!(TASK_INTENT.contains(&task["intent"].as_str().unwrap()));
        if let Some(priority) = task.get("priority") {
            assert!(REQUEST_PRIORITY.contains(&priority.as_str().unwrap()));
        }
        for element in ["businessStatus", "code", "statusReason"] {
            if let Some(value) = task.get(element) {
                check_codeable_concept(value, element);
            }
        }
        for element in ["requester", "owner"] {
            check_reference(&task[element], element);
        }
        for part_of in task
            .get("partOf")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            check_reference(part_of, "partOf");
        }
        for element in ["authoredOn", "lastModified"] {
            assert!(
                is_fhir_instant(task[element].as_str().unwrap()),
                "{element}"
            );
        }
        for identifier in task["identifier"].as_array().unwrap() {
            assert!(identifier["system"].as_str().unwrap().contains(':'));
            assert!(identifier["value"].is_string());
        }
        for output in task
            .get("output")
            .and_then(|v| v.as_array())
            .into_iter()
            .flatten()
        {
            check_codeable_concept(&output["type"], "output.type");
            // One value[x] per output.
            let values = output
                .as_object()
                .unwrap()
                .keys()
                .filter(|key| key.starts_with("value"))
                .count();
            assert_eq!(values, 1);
            check_codeable_concept(&output["valueCodeableConcept"], "output.value");
        }
        tasks.push(task.clone());
    }
    tasks
}

#[tokio::test]
async fn a_fhir_export_is_an_r4_bundle_of_tasks_with_statuses_mapped() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    scenario(&bus).await;
    let bytes = exported(&bus, &Filters::default(), Format::Fhir).await;
    assert_no_identity(&bytes, "fhir");
    let bundle: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
    let tasks = check_r4_bundle(&bundle);
    assert_eq!(tasks.len(), 3);
    let mapped: Vec<(&str, &str, &str)> = tasks
        .iter()
        .map(|task| {
            (
                task["status"].as_str().unwrap(),
                task["businessStatus"]["coding"][0]["code"]
                    .as_str()
                    .unwrap(),
                task["priority"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        mapped,
        [
            ("completed", "completed", "stat"),
            ("accepted", "accepted", "stat"),
            ("requested", "requested", "routine"),
        ]
    );
    assert_eq!(
        tasks[0]["requester"]["reference"],
        "Organization/maros-dinsos"
    );
    assert_eq!(
        tasks[0]["owner"]["reference"],
        "Organization/maros-uptd-ppa"
    );
    assert_eq!(tasks[0]["groupIdentifier"]["value"], "MRS-E-1");
    assert!(
        tasks[0].get("output").is_some(),
        "the completed one has its outcome"
    );
}

#[test]
fn every_status_maps_to_an_r4_task_status() {
    for status in Status::ALL {
        let mapped = refbus_audit::export::fhir_status(status, None);
        assert!(TASK_STATUS.contains(&mapped), "{status} -> {mapped}");
    }
    // A cancellation request is still the work it was.
    assert_eq!(
        refbus_audit::export::fhir_status(Status::CancelRequested, Some(Status::Accepted)),
        "accepted"
    );
    assert_eq!(
        refbus_audit::export::fhir_status(Status::Rerouted, None),
        "cancelled"
    );
}
