//! The notary against a real nats-server and a running system: it logs every event, signs a
//! checkpoint covering them, resumes after a restart without appending anything twice, refuses
//! to extend its log over a stream that no longer holds what it signed (a byte altered in the
//! store, a stale backup restored), and reports a stream altered under it while it logs on.

mod common;

use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;

use common::{ORIGIN, create, log_dir, start, trust};
use refbus_e2e::System;
use refbus_notary::NotaryError;
use refbus_notary::notary::stream_leaves;
use refbus_notary::note::{KeyKind, NoteKey};
use refbus_notary::tiles::TileDir;
use refbus_notary::verify::{self, Problem};

#[tokio::test]
async fn the_notary_logs_every_event_signs_a_checkpoint_and_resumes_without_appending_twice() {
    let mut system = System::start().await;
    create(&mut system, 0..3).await;
    let stored = system.stored_messages().await;
    assert!(stored >= 6, "a create writes an event and an index entry");
    let key = NoteKey::generate(ORIGIN, KeyKind::Notary).unwrap();
    let (_temp, dir) = log_dir();

    let notary = start(system.bus().await, &key, &dir).await;
    notary.covers(stored).await;
    // The checkpoint as a witness in another office fetches it.
    let first = refbus_notary::http::fetch(&notary.url, "checkpoint")
        .await
        .unwrap()
        .expect("the log serves its checkpoint");
    assert!(first.starts_with(format!("{ORIGIN}\n{stored}\n").as_bytes()));
    assert_eq!(
        refbus_notary::http::fetch(&notary.url, "../notary.key")
            .await
            .unwrap(),
        None
    );
    // Events written while it runs are logged too.
    create(&mut system, 3..5).await;
    let stored = system.stored_messages().await;
    notary.covers(stored).await;
    // And its metrics say so.
    let scraped = refbus_metrics::scrape(notary.metrics).await.unwrap().body;
    let sample = |name| refbus_metrics::sample(&scraped, name, &[]);
    assert_eq!(
        sample("refbus_notary_log_size"),
        Some(stored as f64),
        "{scraped}"
    );
    assert_eq!(sample("refbus_notary_checkpoint_size"), Some(stored as f64));
    assert_eq!(sample("refbus_notary_gaps_total"), Some(0.0));
    notary.stop().await.unwrap();

    let tiles = TileDir::new(&dir);
    let second = std::fs::read(dir.join("checkpoint")).unwrap();
    let bus = system.bus().await;
    let (checkpoint, problems) =
        verify::check_checkpoints(&second, std::slice::from_ref(&first), &trust(&key), &tiles);
    assert_eq!(problems, vec![]);
    let checkpoint = checkpoint.unwrap();
    assert_eq!(checkpoint.size, stored);
    let leaves = stream_leaves(&bus).await.unwrap();
    assert_eq!(verify::check_stream(&leaves, &checkpoint, &tiles), vec![]);

    // A restart resumes where the log ends: nothing appended twice, new events after.
    create(&mut system, 5..6).await;
    let stored = system.stored_messages().await;
    let notary = start(system.bus().await, &key, &dir).await;
    notary.covers(stored).await;
    assert_eq!(notary.stats.size.load(Ordering::Relaxed), stored);
    notary.stop().await.unwrap();
    let third = std::fs::read(dir.join("checkpoint")).unwrap();
    let (checkpoint, problems) =
        verify::check_checkpoints(&third, &[first, second], &trust(&key), &tiles);
    assert_eq!(problems, vec![]);
    assert_eq!(checkpoint.unwrap().size, stored);
}

/// Flips one byte of the first stored copy of `needle` in the server's store files.
fn alter_store(store: &Path, needle: &[u8]) -> bool {
    for path in walk(store) {
        let mut bytes = std::fs::read(&path).unwrap();
        if let Some(at) = bytes.windows(needle.len()).position(|w| w == needle) {
            bytes[at] ^= 0x01;
            std::fs::write(&path, bytes).unwrap();
            return true;
        }
    }
    false
}

fn walk(dir: &Path) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            files.extend(walk(&path));
        } else {
            files.push(path);
        }
    }
    files
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.path().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

#[tokio::test]
async fn a_byte_altered_in_the_store_stops_the_notary_with_the_message_named() {
    let mut system = System::start().await;
    create(&mut system, 0..3).await;
    let stored = system.stored_messages().await;
    let key = NoteKey::generate(ORIGIN, KeyKind::Notary).unwrap();
    let (_temp, dir) = log_dir();
    let notary = start(system.bus().await, &key, &dir).await;
    notary.covers(stored).await;
    notary.stop().await.unwrap();

    system.nats.kill().unwrap();
    assert!(alter_store(system.nats.store_dir(), b"MRS-2026-0042"));
    system.nats.restart().unwrap();

    let notary = start(system.bus().await, &key, &dir).await;
    let Err(NotaryError::Tampered(problems)) = notary.task.await.unwrap() else {
        panic!("the notary extended a log over an altered stream");
    };
    // JetStream notices the broken block when it starts and drops what it cannot read: the
    // log names what is gone (or, where a message survives altered, the message).
    assert!(
        problems.iter().any(|p| matches!(
            p,
            Problem::LeafDiffers { .. }
                | Problem::MissingFromStream { .. }
                | Problem::StreamShorter { .. }
        )),
        "{problems:?}"
    );
    assert!(notary.stats.mismatches.load(Ordering::Relaxed) > 0);
    // The auditor's check says the same from the files alone.
    let checkpoint = std::fs::read(dir.join("checkpoint")).unwrap();
    let (checkpoint, _) =
        verify::check_checkpoints(&checkpoint, &[], &trust(&key), &TileDir::new(&dir));
    let leaves = stream_leaves(&system.bus().await).await.unwrap();
    let found = verify::check_stream(&leaves, &checkpoint.unwrap(), &TileDir::new(&dir));
    assert_eq!(found, problems);
    for problem in &found {
        println!("{problem}");
    }
}

#[tokio::test]
async fn a_stream_restored_from_a_stale_backup_stops_the_notary() {
    let mut system = System::start().await;
    create(&mut system, 0..2).await;
    let backup = tempfile::tempdir().unwrap();
    system.nats.kill().unwrap();
    copy_dir(system.nats.store_dir(), backup.path());
    system.nats.restart().unwrap();
    let at_backup = system.stored_messages().await;

    create(&mut system, 2..4).await;
    let stored = system.stored_messages().await;
    let key = NoteKey::generate(ORIGIN, KeyKind::Notary).unwrap();
    let (_temp, dir) = log_dir();
    let notary = start(system.bus().await, &key, &dir).await;
    notary.covers(stored).await;
    notary.stop().await.unwrap();

    system.nats.kill().unwrap();
    std::fs::remove_dir_all(system.nats.store_dir()).unwrap();
    copy_dir(backup.path(), system.nats.store_dir());
    system.nats.restart().unwrap();

    let notary = start(system.bus().await, &key, &dir).await;
    let Err(NotaryError::Tampered(problems)) = notary.task.await.unwrap() else {
        panic!("the notary extended a log over a stale stream");
    };
    assert!(
        problems.contains(&Problem::StreamShorter {
            log_size: stored,
            stream_last_seq: at_backup
        }),
        "{problems:?}"
    );
}

#[tokio::test]
async fn a_stream_rebuilt_without_a_message_is_named_at_the_first_message_that_moved() {
    let mut system = System::start().await;
    create(&mut system, 0..3).await;
    let stored = system.stored_messages().await;
    let key = NoteKey::generate(ORIGIN, KeyKind::Notary).unwrap();
    let (_temp, dir) = log_dir();
    let notary = start(system.bus().await, &key, &dir).await;
    notary.covers(stored).await;
    notary.stop().await.unwrap();
    let bus = system.bus().await;
    let logged = stream_leaves(&bus).await.unwrap();
    let messages: Vec<_> =
        futures::StreamExt::collect::<Vec<_>>(Box::pin(bus.raw_messages(0, false).await.unwrap()))
            .await
            .into_iter()
            .map(Result::unwrap)
            .collect();

    // As an auditor reads a stream whose message 3 was deleted: the hole is named.
    let holed = verify::leaves(
        messages
            .iter()
            .filter(|m| m.seq != 3)
            .map(|m| (m.seq, m.subject.as_str(), m.payload.as_ref())),
    );
    let note = std::fs::read(dir.join("checkpoint")).unwrap();
    let tiles = TileDir::new(&dir);
    let (checkpoint, _) = verify::check_checkpoints(&note, &[], &trust(&key), &tiles);
    let checkpoint = checkpoint.unwrap();
    assert_eq!(
        verify::check_stream(&holed, &checkpoint, &tiles),
        vec![Problem::MissingFromStream {
            seq: 3,
            logged: logged[2].to_string()
        }]
    );

    // The stream rebuilt from a copy without message 3: everything after it moved up.
    let url = system.nats.url();
    refbus_testkit::hostile::delete_stream(&url, "REFBUS_EVENTS")
        .await
        .unwrap();
    drop(system.bus().await);
    for message in messages.iter().filter(|m| m.seq != 3) {
        refbus_testkit::hostile::publish_raw(&url, &message.subject, message.payload.to_vec())
            .await
            .unwrap();
    }
    let notary = start(system.bus().await, &key, &dir).await;
    let Err(NotaryError::Tampered(problems)) = notary.task.await.unwrap() else {
        panic!("the notary extended a log over a rebuilt stream");
    };
    assert_eq!(
        problems[0],
        Problem::LeafDiffers {
            seq: 3,
            subject: messages[3].subject.clone(),
            expected: logged[2].to_string()
        }
    );
    assert_eq!(
        problems.last(),
        Some(&Problem::StreamShorter {
            log_size: stored,
            stream_last_seq: stored - 1
        })
    );
    for problem in &problems {
        println!("{problem}");
    }
}

/// The notary's `refbus_notary_stream_differences` as its metrics serve it now.
async fn stream_differences(metrics: std::net::SocketAddr) -> Option<f64> {
    let scraped = refbus_metrics::scrape(metrics).await.ok()?.body;
    refbus_metrics::sample(&scraped, "refbus_notary_stream_differences", &[])
}

/// Waits up to 30 s for the notary's metrics to report `expected` stream differences.
async fn until_stream_differences(metrics: std::net::SocketAddr, expected: f64) {
    for _ in 0..600 {
        if stream_differences(metrics).await == Some(expected) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    panic!(
        "the notary reports {:?} stream differences, not {expected}",
        stream_differences(metrics).await
    );
}

#[tokio::test]
async fn a_stream_altered_under_a_running_notary_is_reported_and_the_log_goes_on() {
    let mut system = System::start().await;
    create(&mut system, 0..2).await;
    let stored = system.stored_messages().await;
    let key = NoteKey::generate(ORIGIN, KeyKind::Notary).unwrap();
    let (_temp, dir) = log_dir();
    let notary = common::start_rechecking(
        system.bus().await,
        &key,
        &dir,
        std::time::Duration::from_millis(100),
        std::time::Duration::from_millis(250),
    )
    .await;
    notary.covers(stored).await;
    until_stream_differences(notary.metrics, 0.0).await;
    // Connected before the stream is altered: a connection made after refuses it.
    let bus = system.bus().await;

    // An age limit set by hand under the running notary, as `nats stream edit` would.
    let url = system.nats.url();
    let alter = |max_age| {
        refbus_testkit::hostile::alter_stream(&url, "REFBUS_EVENTS", move |config| {
            config.max_age = max_age;
        })
    };
    alter(std::time::Duration::from_secs(30 * 24 * 3600))
        .await
        .unwrap();
    until_stream_differences(notary.metrics, 1.0).await;

    // It goes on logging what is written meanwhile.
    create(&mut system, 2..4).await;
    let stored = bus.last_sequence().await.unwrap();
    notary.covers(stored).await;

    // Put right, the next check says so.
    alter(std::time::Duration::ZERO).await.unwrap();
    until_stream_differences(notary.metrics, 0.0).await;
    notary.stop().await.unwrap();
}
