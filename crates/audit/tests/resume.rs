//! An interrupted verification resumes from its state file and ends with exactly the report an
//! uninterrupted run gives.

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use common::*;
use refbus_audit::checks::{self, Check, End, Seen};
use refbus_audit::verify::{Options, Outcome, verify_bus};
use refbus_audit::{Problem, Report};
use refbus_core::Command;
use refbus_testkit::NatsServer;

/// Asks the run to stop once it has seen stream sequence `at` (Ctrl-C at a known place).
struct StopAt {
    at: u64,
    stop: Arc<AtomicBool>,
}

impl Check for StopAt {
    fn name(&self) -> &'static str {
        "stop_at"
    }
    fn message(&mut self, seen: Seen<'_>, _: &mut Vec<Problem>) {
        if seen.message.seq == self.at {
            self.stop.store(true, Ordering::Relaxed);
        }
    }
    fn finish(&mut self, _: End<'_>, _: &mut Vec<Problem>) {}
    fn save(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    fn restore(&mut self, _: serde_json::Value) -> Result<(), serde_json::Error> {
        Ok(())
    }
}

fn standard() -> Vec<Box<dyn Check>> {
    checks::standard(maros(), refbus_core::audit::DEFAULT_TOLERANCE)
}

#[tokio::test]
async fn an_interrupted_verification_resumes_to_the_same_report() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    // A referral whose router missed everything (clock items owed across the interruption), and
    // two others answered in time.
    let missed = create(&bus, "MRS-RES-1", "resume-1", t0_plus(0)).await;
    recipient_does(&bus, &missed, Command::ConfirmReceipt, t0_plus(2)).await;
    for (index, case) in ["MRS-RES-2", "MRS-RES-3"].into_iter().enumerate() {
        let created = create(&bus, case, &format!("resume-{}", index + 2), t0_plus(1)).await;
        let received = recipient_does(&bus, &created, Command::ConfirmReceipt, t0_plus(3)).await;
        recipient_does(&bus, &received, Command::Accept, t0_plus(4)).await;
    }
    let now = t0_plus(50);
    let whole: Report = verify(&bus, now).await;
    assert!(!whole.is_clean(), "the missed referral's items");

    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("verify.state");
    let options = Options {
        now,
        resume: Some(state.clone()),
        progress: true,
    };
    let stop = Arc::new(AtomicBool::new(false));
    let mut checks = standard();
    checks.push(Box::new(StopAt {
        at: 4,
        stop: stop.clone(),
    }));
    let outcome = verify_bus(&bus, &verifier(), checks, &options, &stop)
        .await
        .unwrap();
    match outcome {
        Outcome::Stopped { last_seq, saved } => {
            assert_eq!(last_seq, 4);
            assert_eq!(saved.as_deref(), Some(state.as_path()));
        }
        Outcome::Done(report) => panic!("not stopped: {}", report.to_text()),
    }
    use std::os::unix::fs::PermissionsExt as _;
    let mode = std::fs::metadata(&state).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);

    // Resumed: reads only from sequence 5, ends with the same report.
    let outcome = verify_bus(
        &bus,
        &verifier(),
        standard(),
        &options,
        &AtomicBool::new(false),
    )
    .await
    .unwrap();
    let Outcome::Done(resumed) = outcome else {
        panic!("stopped again")
    };
    assert_eq!(resumed, whole, "{}\n{}", resumed.to_text(), whole.to_text());
    assert!(!state.exists(), "the state file is removed once complete");
}

#[tokio::test]
async fn a_resume_file_of_another_source_is_refused() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("verify.state");
    std::fs::write(&state, "not json").unwrap();
    let options = Options {
        now: t0_plus(1),
        resume: Some(state.clone()),
        progress: false,
    };
    let error = verify_bus(
        &bus,
        &verifier(),
        standard(),
        &options,
        &AtomicBool::new(false),
    )
    .await
    .unwrap_err();
    assert!(error.to_string().contains("not a resume file"), "{error}");
}

#[tokio::test]
async fn a_resume_file_of_an_unknown_format_is_refused_naming_it() {
    let nats = NatsServer::start().unwrap();
    let bus = bus(&nats.url()).await;
    let dir = tempfile::tempdir().unwrap();
    let state = dir.path().join("verify.state");
    // A newer refbus's file: its format first, the rest in a shape this build does not know.
    std::fs::write(&state, r#"{"version":2,"progress":{"at":7}}"#).unwrap();
    let options = Options {
        now: t0_plus(1),
        resume: Some(state.clone()),
        progress: false,
    };
    let error = verify_bus(
        &bus,
        &verifier(),
        standard(),
        &options,
        &AtomicBool::new(false),
    )
    .await
    .unwrap_err();
    assert_eq!(
        error.to_string(),
        format!(
            "{}: audit resume file format 2 is unknown; this refbus reads format 1; upgrade \
             this reader before the writers (docs/ARCHITECTURE.md, \"Record formats and \
             versions\")",
            state.display()
        )
    );
}
