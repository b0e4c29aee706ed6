//! A witness in another office follows the notary over HTTP and cosigns consistent
//! checkpoints; a forked checkpoint (the notary key signing two trees of the same size, or a
//! tree that does not extend the last) is refused, and refused again after, and the auditor's
//! check reports the equivocation.

mod common;

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use common::{ORIGIN, create, log_dir, start, trust};
use refbus_e2e::System;
use refbus_notary::Hash;
use refbus_notary::note::{
    CosignatureVerifier, KeyKind, NoteKey, notary_verifier, open_checkpoint,
};
use refbus_notary::tiles::TileDir;
use refbus_notary::verify::{self, Problem};
use refbus_notary::witness::{Refusal, Settings, Witness, WitnessStats};

fn witness(key: &NoteKey, notary: &NoteKey, url: &str, dir: &std::path::Path) -> Witness {
    Witness {
        key: NoteKey::from_secret_text(&key.secret_text(), KeyKind::Witness).unwrap(),
        notary: notary_verifier(&notary.verifier_key()).unwrap(),
        settings: Settings {
            log_url: url.to_owned(),
            origin: ORIGIN.to_owned(),
            dir: dir.to_owned(),
            interval: Duration::from_millis(100),
        },
        bus: None,
        stats: Arc::new(WitnessStats::default()),
    }
}

#[tokio::test]
async fn a_witness_cosigns_consistent_checkpoints_and_refuses_a_fork_for_good() {
    let mut system = System::start().await;
    create(&mut system, 0..2).await;
    let key = NoteKey::generate(ORIGIN, KeyKind::Notary).unwrap();
    let inspektorat =
        NoteKey::generate("inspektorat.maros.example/witness", KeyKind::Witness).unwrap();
    let (_temp, dir) = log_dir();
    let notary = start(system.bus().await, &key, &dir).await;
    notary.covers(system.stored_messages().await).await;

    // The witness runs as `refbus witness` does, publishing its cosignatures on the bus; the
    // notary adds them to the checkpoint it serves.
    let state = tempfile::tempdir().unwrap();
    let mut running = witness(&inspektorat, &key, &notary.url, state.path());
    running.bus = Some(system.bus().await);
    let stats = running.stats.clone();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = tokio::spawn(running.run(async move {
        let _ = stopped.await;
    }));
    create(&mut system, 2..5).await;
    let stored = system.stored_messages().await;
    notary.covers(stored).await;
    let witnesses = [CosignatureVerifier::new(&inspektorat.verifier_key()).unwrap()];
    let notary_key = notary_verifier(&key.verifier_key()).unwrap();
    let mut served = Vec::new();
    for _ in 0..400 {
        served = std::fs::read(dir.join("checkpoint")).unwrap();
        let (checkpoint, names) =
            open_checkpoint(&served, ORIGIN, &notary_key, &witnesses).unwrap();
        if checkpoint.size == stored && names.len() == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let _ = stop.send(());
    task.await.unwrap();
    assert_eq!(stats.size.load(Ordering::Relaxed), stored);
    assert_eq!(stats.refused.load(Ordering::Relaxed), 0);
    // Its metrics, as `refbus witness --metrics-addr` serves them, say so.
    let endpoint = refbus_metrics::Endpoint::bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let server = refbus_metrics::spawn(
        refbus_notary::metrics::witness_exposition(stats.clone()),
        &endpoint,
    )
    .unwrap();
    let scraped = refbus_metrics::scrape(endpoint.address().unwrap())
        .await
        .unwrap()
        .body;
    let sample = |name| refbus_metrics::sample(&scraped, name, &[]);
    let cosigned = stats.cosigned.load(Ordering::Relaxed);
    assert!(cosigned >= 1, "{scraped}");
    assert_eq!(
        sample("refbus_witness_cosigned_total"),
        Some(cosigned as f64),
        "{scraped}"
    );
    assert_eq!(
        sample("refbus_witness_refused_total"),
        Some(0.0),
        "{scraped}"
    );
    assert_eq!(
        sample("refbus_witness_checkpoint_size"),
        Some(stored as f64),
        "{scraped}"
    );
    server.stop().await;
    let mut with_quorum = trust(&key);
    with_quorum.witnesses = witnesses.to_vec();
    with_quorum.quorum = 1;
    let tiles = TileDir::new(&dir);
    let (_, problems) = verify::check_checkpoints(&served, &[], &with_quorum, &tiles);
    assert_eq!(problems, vec![]);
    with_quorum.quorum = 2;
    let (_, problems) = verify::check_checkpoints(&served, &[], &with_quorum, &tiles);
    assert!(matches!(
        &problems[..],
        [Problem::QuorumNotMet { required: 2, cosigned_by }] if cosigned_by.len() == 1
    ));

    // The notary's key signs another tree of the same size.
    let forked = key.sign_checkpoint(ORIGIN, stored, Hash([0x42; 32]));
    let fresh = witness(&inspektorat, &key, &notary.url, state.path());
    let refusal = fresh.observe(&forked).await.unwrap_err();
    assert!(
        matches!(refusal, Refusal::Fork { size, .. } if size == stored),
        "{refusal}"
    );
    // And it keeps refusing, even the checkpoint it cosigned before.
    assert!(matches!(
        fresh.observe(&served).await,
        Err(Refusal::Forked(_))
    ));
    assert!(state.path().join("fork").exists());
    // The auditor who kept the forked checkpoint sees the equivocation.
    let (_, problems) =
        verify::check_checkpoints(&served, std::slice::from_ref(&forked), &trust(&key), &tiles);
    assert!(
        problems.contains(&Problem::Equivocation {
            size: stored,
            first: Hash([0x42; 32]),
            second: open_checkpoint(&served, ORIGIN, &notary_key, &[])
                .unwrap()
                .0
                .root,
        }),
        "{problems:?}"
    );
    println!("{}", problems[0]);

    // A larger tree that does not extend the last one is refused as well.
    let other = tempfile::tempdir().unwrap();
    let second = witness(&inspektorat, &key, &notary.url, other.path());
    second.observe(&served).await.unwrap();
    let larger = key.sign_checkpoint(ORIGIN, stored + 1, Hash([0x17; 32]));
    let refusal = second.observe(&larger).await.unwrap_err();
    assert!(
        matches!(refusal, Refusal::Inconsistent { known_size, .. } if known_size == stored),
        "{refusal}"
    );
    notary.stop().await.unwrap();
}
