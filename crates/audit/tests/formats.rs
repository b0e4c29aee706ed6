//! Record formats in the audit: a stream written before formats were recorded (no `format`
//! anywhere) verifies clean, read as format 1; a record of a format this build does not read
//! is a problem at its sequence with the record check's exact sentence, never skipped; so is
//! an index entry of an unknown format.

mod common;

use common::*;
use refbus_audit::Problem;
use refbus_core::integrity::Problem as Integrity;
use refbus_testkit::NatsServer;

fn without_formats(payload: &[u8]) -> Vec<u8> {
    String::from_utf8(payload.to_vec())
        .unwrap()
        .replacen(",\"format\":1", "", 1)
        .replacen("\"format\":1,", "", 1)
        .into_bytes()
}

#[tokio::test]
async fn a_stream_written_before_formats_verifies_clean_as_format_1() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    three_referrals(&bus).await;
    let copy = NatsServer::start().unwrap();
    copy_stream(
        &nats.url(),
        &copy.url(),
        |index| index,
        |message| {
            let legacy = without_formats(&message.payload);
            assert!(!String::from_utf8_lossy(&legacy).contains("\"format\""));
            Copy::Payload(legacy)
        },
    )
    .await;
    let report = verify(&common::bus(&copy.url()).await, quiet_now()).await;
    assert!(report.is_clean(), "{}", report.to_text());
    assert_eq!(report.records, 12);
}

#[tokio::test]
async fn a_record_of_an_unknown_format_is_a_problem_with_the_exact_sentence() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    let histories = three_referrals(&bus).await;
    let target = &histories[1][1];
    let copy = NatsServer::start().unwrap();
    copy_stream(
        &nats.url(),
        &copy.url(),
        |index| index,
        |message| {
            // The target record, and every index entry (a newer writer's).
            if message.sequence != target.seq && !message.subject.starts_with("refbus.v1.idx.") {
                return Copy::Keep;
            }
            let text = String::from_utf8(message.payload.to_vec()).unwrap();
            Copy::Payload(
                text.replacen("\"format\":1", "\"format\":2", 1)
                    .into_bytes(),
            )
        },
    )
    .await;
    let report = verify(&common::bus(&copy.url()).await, quiet_now()).await;
    let expected = format!(
        "{} (stream sequence {}): event record format 2 is unknown; this refbus reads format 1; \
         upgrade this reader before the writers (docs/ARCHITECTURE.md, \"Record formats and \
         versions\")",
        target.subject, target.seq
    );
    assert!(
        report.problems.iter().any(|problem| matches!(
            problem,
            Problem::Record { seq, referral: Some(id), problem: Integrity::Format, detail, .. }
                if *seq == target.seq && *id == target.record.state.id && *detail == expected
        )),
        "{}",
        report.to_text()
    );
    // Index entries are not referral records, but their format is checked all the same.
    let entries: Vec<_> = report
        .problems
        .iter()
        .filter_map(|problem| match problem {
            Problem::Record {
                seq,
                subject,
                referral: None,
                problem: Integrity::Format,
                detail,
            } if subject.starts_with("refbus.v1.idx.") => Some((*seq, subject, detail)),
            _ => None,
        })
        .collect();
    assert_eq!(entries.len(), 3, "{}", report.to_text());
    for (seq, subject, detail) in entries {
        assert_eq!(
            *detail,
            format!(
                "{subject} (stream sequence {seq}): index entry format 2 is unknown; this \
                 refbus reads format 1; upgrade this reader before the writers \
                 (docs/ARCHITECTURE.md, \"Record formats and versions\")"
            )
        );
    }
}
