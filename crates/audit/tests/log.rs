//! `refbus audit verify` with the Merkle log's check, against a real nats-server and a real
//! notary: a faithful stream verifies clean; what a careful forger does to the stream alone
//! (a referral removed, the stream renumbered, every header rewritten: clean for every other
//! check) and a stale stream restored from an older backup are reported by the log check; an
//! equivocating notary and a checkpoint without its witnesses' quorum are reported too.

mod common;

use std::path::Path;

use common::*;
use refbus_audit::Problem;
use refbus_audit::checks::Check;
use refbus_audit::log::{LogCheck, LogSource};
use refbus_notary::note::{CosignatureVerifier, KeyKind, NoteKey, notary_verifier};
use refbus_notary::verify::Trust;
use refbus_notary::{Hash, Notary, Settings, Stats};
use refbus_testkit::NatsServer;

const ORIGIN: &str = "refbus.test/log";

/// Runs a notary over the stream at `url` until a checkpoint covers all of it, then stops it.
async fn notarise(url: &str, key: &NoteKey, dir: &Path) {
    let bus = bus(url).await;
    let last = bus.stream_state().await.unwrap().last_seq;
    let stats = std::sync::Arc::new(Stats::default());
    let notary = Notary {
        bus,
        key: NoteKey::from_secret_text(&key.secret_text(), KeyKind::Notary).unwrap(),
        settings: Settings {
            dir: dir.to_owned(),
            origin: ORIGIN.to_owned(),
            interval: std::time::Duration::from_millis(50),
            metrics: None,
            stream_recheck_every: refbus_bus::statement::RECHECK_EVERY,
        },
        stats: stats.clone(),
    };
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(notary.run(None, async move {
        let _ = stopped.await;
    }));
    // Bounded wait for the notary's first checkpoint over the whole stream (not a timing
    // assertion: the test fails only if it never comes).
    for _ in 0..400 {
        if stats
            .checkpointed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= last
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    task.await.unwrap().unwrap();
    assert!(
        stats
            .checkpointed
            .load(std::sync::atomic::Ordering::Relaxed)
            >= last,
        "no checkpoint covers the stream's {last} messages"
    );
}

fn log_check(
    key: &NoteKey,
    tiles: &Path,
    kept: &Path,
    witnesses: Vec<CosignatureVerifier>,
) -> Vec<Box<dyn Check>> {
    let quorum = witnesses.len();
    vec![Box::new(LogCheck::new(LogSource {
        tiles: tiles.to_owned(),
        trust: Trust {
            origin: ORIGIN.to_owned(),
            notary: notary_verifier(&key.verifier_key()).unwrap(),
            witnesses,
            quorum,
        },
        kept: Some(kept.to_owned()),
    }))]
}

fn log_kinds(report: &refbus_audit::Report) -> Vec<String> {
    report
        .problems
        .iter()
        .filter_map(|problem| match problem {
            Problem::Log { kind, .. } => Some(kind.clone()),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn the_log_check_reports_a_rebuilt_stream_and_a_stale_backup_that_the_stream_alone_hides() {
    let nats = NatsServer::start().unwrap();
    let histories = three_referrals(&bus(&nats.url()).await).await;
    let key = NoteKey::generate(ORIGIN, KeyKind::Notary).unwrap();
    let temp = tempfile::tempdir().unwrap();
    let (tiles, kept) = (temp.path().join("log"), temp.path().join("kept"));
    notarise(&nats.url(), &key, &tiles).await;

    // The faithful stream: clean, and its checkpoint is kept for the next audit.
    let report = verify_with(
        &bus(&nats.url()).await,
        quiet_now(),
        log_check(&key, &tiles, &kept, Vec::new()),
    )
    .await;
    assert!(report.is_clean(), "{}", report.to_text());
    assert!(report.checks.contains(&"log".to_owned()));
    assert_eq!(std::fs::read_dir(&kept).unwrap().count(), 1);

    // A referral removed, the stream renumbered, every header rewritten: the other checks
    // see nothing (verify.rs pins that); the log names the first sequence that differs.
    let gone = histories[1].first().unwrap().subject.clone();
    let forged = NatsServer::start().unwrap();
    copy_stream_rewriting(
        &nats.url(),
        &forged.url(),
        |index| index,
        |message| match message.subject.as_str() == gone {
            true => Copy::Omit,
            false => Copy::Keep,
        },
        true,
    )
    .await;
    let report = verify_with(
        &bus(&forged.url()).await,
        quiet_now(),
        log_check(&key, &tiles, &kept, Vec::new()),
    )
    .await;
    // Shown with --nocapture: the report an auditor reads for this tampered stream.
    eprintln!("{}", report.to_text());
    let kinds = log_kinds(&report);
    assert!(
        report
            .problems
            .iter()
            .all(|problem| matches!(problem, Problem::Log { .. })),
        "{}",
        report.to_text()
    );
    assert!(
        kinds.contains(&"leaf_differs".to_owned()),
        "{}",
        report.to_text()
    );
    assert!(
        kinds.contains(&"stream_shorter".to_owned()),
        "{}",
        report.to_text()
    );
    // The first message of the removed referral is where the stream and the log part.
    let first_gone = histories[1].first().unwrap().seq;
    assert!(
        report.problems.iter().any(|problem| matches!(
            problem,
            Problem::Log { kind, seq: Some(seq), .. } if kind == "leaf_differs" && *seq == first_gone
        )),
        "{}",
        report.to_text()
    );
    assert!(
        report.to_text().contains("LOG leaf_differs"),
        "{}",
        report.to_text()
    );

    // A stale stream restored from an older backup: its first half only. Every remaining
    // record is sound, no sequence is missing: only the log knows the stream was longer.
    let half = bus(&nats.url())
        .await
        .stream_state()
        .await
        .unwrap()
        .last_seq
        / 2;
    let stale = NatsServer::start().unwrap();
    copy_stream(
        &nats.url(),
        &stale.url(),
        |index| index,
        |message| match message.sequence > half {
            true => Copy::Omit,
            false => Copy::Keep,
        },
    )
    .await;
    let report = verify_with(
        &bus(&stale.url()).await,
        quiet_now(),
        log_check(&key, &tiles, &kept, Vec::new()),
    )
    .await;
    assert_eq!(
        log_kinds(&report),
        vec!["stream_shorter".to_owned()],
        "{}",
        report.to_text()
    );
    // A tampered log is never kept as the next audit's reference.
    assert_eq!(std::fs::read_dir(&kept).unwrap().count(), 1);
}

#[tokio::test]
async fn an_equivocating_notary_and_a_missing_quorum_are_reported() {
    let nats = NatsServer::start().unwrap();
    three_referrals(&bus(&nats.url()).await).await;
    let key = NoteKey::generate(ORIGIN, KeyKind::Notary).unwrap();
    let temp = tempfile::tempdir().unwrap();
    let (tiles, kept) = (temp.path().join("log"), temp.path().join("kept"));
    notarise(&nats.url(), &key, &tiles).await;
    let size = bus(&nats.url())
        .await
        .stream_state()
        .await
        .unwrap()
        .last_seq;

    // The notary's key signed another tree of the same size, which an auditor kept earlier.
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(
        kept.join("checkpoint-other"),
        key.sign_checkpoint(ORIGIN, size, Hash([7; 32])),
    )
    .unwrap();
    let report = verify_with(
        &bus(&nats.url()).await,
        quiet_now(),
        log_check(&key, &tiles, &kept, Vec::new()),
    )
    .await;
    assert!(
        log_kinds(&report).contains(&"equivocation".to_owned()),
        "{}",
        report.to_text()
    );

    // A witness the auditor requires never cosigned: the quorum is not met.
    let witness = NoteKey::generate("inspektorat.test/witness", KeyKind::Witness).unwrap();
    let fresh_kept = temp.path().join("kept-fresh");
    let report = verify_with(
        &bus(&nats.url()).await,
        quiet_now(),
        log_check(
            &key,
            &tiles,
            &fresh_kept,
            vec![CosignatureVerifier::new(&witness.verifier_key()).unwrap()],
        ),
    )
    .await;
    assert_eq!(
        log_kinds(&report),
        vec!["quorum".to_owned()],
        "{}",
        report.to_text()
    );
}
