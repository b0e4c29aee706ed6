//! Receipts: an agency system asks its adapter for the inclusion proof of an event of a
//! referral it sent or received (`GetReceipt`), and the proof verifies against the notary's
//! signed checkpoint from the bytes alone; every refusal has its exact status and writes
//! nothing.

mod common;

use std::time::Duration;

use common::{ORIGIN, create, log_dir, start, start_every, trust};
use refbus_e2e::{System, create_request};
use refbus_notary::note::{KeyKind, NoteKey};
use refbus_notary::proof::{Receipt, ReceiptError, verify_receipt};
use refbus_proto::v1::GetReceiptRequest;
use tonic::Code;

fn ask(id: &str, event_seq: u64) -> GetReceiptRequest {
    GetReceiptRequest {
        referral_id: id.to_owned(),
        event_seq,
    }
}

#[tokio::test]
async fn a_party_gets_a_receipt_that_verifies_and_every_refusal_is_exact() {
    let mut system = System::start().await;
    let key = NoteKey::generate(ORIGIN, KeyKind::Notary).unwrap();
    let (_temp, dir) = log_dir();
    let notary = start(system.bus().await, &key, &dir).await;
    let dinsos = system.agency("maros-dinsos").await;
    let id = dinsos
        .create(create_request("receipt-1", "maros-uptd-ppa", "shelter"))
        .await;
    create(&mut system, 0..2).await;
    notary.covers(system.stored_messages().await).await;

    // The sender and the recipient each get it; it verifies from the bytes alone.
    let uptd = system.agency("maros-uptd-ppa").await;
    for party in [&dinsos, &uptd] {
        let receipt = party
            .client()
            .get_receipt(party.request(ask(&id, 1)))
            .await
            .unwrap()
            .into_inner();
        assert!(
            receipt
                .tlog_proof
                .starts_with("c2sp.org/tlog-proof@v1\nextra ")
        );
        let (leaf, checkpoint) = verify_receipt(
            receipt.tlog_proof.as_bytes(),
            &receipt.subject,
            &receipt.record,
            &trust(&key),
        )
        .unwrap();
        assert_eq!(leaf.seq, receipt.stream_sequence);
        assert!(receipt.subject.ends_with(&id));
        assert!(checkpoint.size >= receipt.stream_sequence);
        // Another message's bytes, or a proof altered by one hash, do not verify.
        let mut other = receipt.record.clone();
        other[10] ^= 1;
        assert!(matches!(
            verify_receipt(
                receipt.tlog_proof.as_bytes(),
                &receipt.subject,
                &other,
                &trust(&key)
            ),
            Err(ReceiptError::OtherMessage(_))
        ));
        let mut parsed = Receipt::parse(receipt.tlog_proof.as_bytes()).unwrap();
        parsed.proof[0].0[0] ^= 1;
        assert_eq!(
            verify_receipt(
                &parsed.encode(),
                &receipt.subject,
                &receipt.record,
                &trust(&key)
            ),
            Err(ReceiptError::Proof)
        );
    }

    // Refusals, each exact, and nothing written.
    let before = system.stored_messages().await;
    let polres = system.agency("polres-maros").await;
    let not_party = polres
        .client()
        .get_receipt(polres.request(ask(&id, 1)))
        .await
        .unwrap_err();
    assert_eq!(not_party.code(), Code::NotFound);
    assert_eq!(not_party.message(), format!("referral {id} does not exist"));
    let unknown_id = "0000000000000000000000000R";
    let unknown = dinsos
        .client()
        .get_receipt(dinsos.request(ask(unknown_id, 1)))
        .await
        .unwrap_err();
    assert_eq!(unknown.code(), Code::NotFound);
    assert_eq!(
        unknown.message(),
        format!("referral {unknown_id} does not exist")
    );
    let no_event = dinsos
        .client()
        .get_receipt(dinsos.request(ask(&id, 99)))
        .await
        .unwrap_err();
    assert_eq!(no_event.code(), Code::NotFound);
    assert_eq!(no_event.message(), format!("referral {id} has no event 99"));
    let zero = dinsos
        .client()
        .get_receipt(dinsos.request(ask(&id, 0)))
        .await
        .unwrap_err();
    assert_eq!(zero.code(), Code::InvalidArgument);
    assert!(
        zero.message().starts_with("event_seq: "),
        "{}",
        zero.message()
    );
    let anonymous = system.client_presenting("maros-dinsos", None).await;
    let unauthenticated = anonymous
        .client()
        .get_receipt(anonymous.request(ask(&id, 1)))
        .await
        .unwrap_err();
    assert_eq!(unauthenticated.code(), Code::Unauthenticated);
    assert_eq!(system.stored_messages().await, before);
    notary.stop().await.unwrap();

    // No notary running: unavailable, retry later.
    let down = dinsos
        .client()
        .get_receipt(dinsos.request(ask(&id, 1)))
        .await
        .unwrap_err();
    assert_eq!(down.code(), Code::Unavailable);
    assert_eq!(
        down.message(),
        "no notary answered for the verifiable log; retry later"
    );

    // A notary whose next checkpoint is far off: the new event is not covered yet.
    let slow = start_every(system.bus().await, &key, &dir, Duration::from_secs(3600)).await;
    slow.covers(before).await;
    let later = dinsos
        .create(create_request("receipt-2", "maros-uptd-ppa", "shelter"))
        .await;
    let not_yet = dinsos
        .client()
        .get_receipt(dinsos.request(ask(&later, 1)))
        .await
        .unwrap_err();
    assert_eq!(not_yet.code(), Code::Unavailable);
    assert_eq!(
        not_yet.message(),
        "the verifiable log does not cover this event yet; retry in a few seconds"
    );
    slow.stop().await.unwrap();
}

/// Runs tests/python/verify_log.py; whether it accepted, and what it printed.
fn python(args: &[&std::ffi::OsStr]) -> (bool, String) {
    let root = refbus_e2e::repo_root();
    let python = root.join(".tools/venv/bin/python");
    assert!(python.exists(), "run scripts/install-tools.sh first");
    let output = std::process::Command::new(python)
        .arg(root.join("tests/python/verify_log.py"))
        .args(args)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        stdout.starts_with("OK: ") || stdout.starts_with("FAIL: "),
        "{stdout} {}",
        String::from_utf8_lossy(&output.stderr)
    );
    (output.status.success(), stdout)
}

#[tokio::test]
async fn the_python_verifier_agrees_with_the_verify_api_on_good_and_tampered_inputs() {
    use refbus_notary::note::CosignatureVerifier;
    use refbus_notary::verify;
    use std::ffi::OsStr;

    let mut system = System::start().await;
    let key = NoteKey::generate(ORIGIN, KeyKind::Notary).unwrap();
    let (_temp, dir) = log_dir();
    let notary = start(system.bus().await, &key, &dir).await;
    let dinsos = system.agency("maros-dinsos").await;
    let id = dinsos
        .create(create_request("python-log-1", "maros-uptd-ppa", "shelter"))
        .await;
    create(&mut system, 0..2).await;
    notary.covers(system.stored_messages().await).await;
    let receipt = dinsos
        .client()
        .get_receipt(dinsos.request(ask(&id, 1)))
        .await
        .unwrap()
        .into_inner();
    notary.stop().await.unwrap();

    // A witness cosigns the receipt's checkpoint.
    let witness = NoteKey::generate("inspektorat.test/w", KeyKind::Witness).unwrap();
    let parsed = Receipt::parse(receipt.tlog_proof.as_bytes()).unwrap();
    let cosigned = Receipt {
        checkpoint: witness.cosign(&parsed.checkpoint, 1_780_000_000).unwrap(),
        ..parsed.clone()
    };
    let mut with_witness = trust(&key);
    with_witness.witnesses = vec![CosignatureVerifier::new(&witness.verifier_key()).unwrap()];

    let files = tempfile::tempdir().unwrap();
    let write = |name: &str, bytes: &[u8]| {
        let path = files.path().join(name);
        std::fs::write(&path, bytes).unwrap();
        path
    };
    let record = write("record", &receipt.record);
    let mut altered = receipt.record.clone();
    altered[20] ^= 1;
    let altered_record = write("altered", &altered);
    let good = write("good.tlog-proof", &cosigned.encode());
    let mut forged_checkpoint = cosigned.checkpoint.clone();
    // One byte of the root hash's base64 (the third line) changed.
    let at = forged_checkpoint
        .iter()
        .enumerate()
        .filter(|(_, b)| **b == b'\n')
        .nth(1)
        .unwrap()
        .0
        + 1;
    forged_checkpoint[at] = if forged_checkpoint[at] == b'A' {
        b'B'
    } else {
        b'A'
    };
    let forged = write(
        "forged.tlog-proof",
        &Receipt {
            checkpoint: forged_checkpoint.clone(),
            ..cosigned.clone()
        }
        .encode(),
    );
    let signing_key = system
        .signing
        .agency(&refbus_core::AgencyId::new("maros-dinsos").unwrap())
        .verifying_key()
        .to_base64();
    let notary_key = key.verifier_key();
    let witness_key = witness.verifier_key();

    let cases: Vec<(&str, &std::path::Path, &std::path::Path, usize)> = vec![
        ("good, quorum 1", &good, &record, 1),
        ("good, quorum 2", &good, &record, 2),
        ("altered record", &good, &altered_record, 1),
        ("forged checkpoint", &forged, &record, 0),
    ];
    for (case, proof, bytes, quorum) in cases {
        with_witness.quorum = quorum;
        let rust = verify_receipt(
            &std::fs::read(proof).unwrap(),
            &receipt.subject,
            &std::fs::read(bytes).unwrap(),
            &with_witness,
        );
        let quorum_text = quorum.to_string();
        let (accepted, said) = python(&[
            OsStr::new("receipt"),
            OsStr::new("--receipt"),
            proof.as_os_str(),
            OsStr::new("--record"),
            bytes.as_os_str(),
            OsStr::new("--subject"),
            OsStr::new(&receipt.subject),
            OsStr::new("--notary-key"),
            OsStr::new(&notary_key),
            OsStr::new("--witness-key"),
            OsStr::new(&witness_key),
            OsStr::new("--quorum"),
            OsStr::new(&quorum_text),
            OsStr::new("--signing-key"),
            OsStr::new(&signing_key),
        ]);
        assert_eq!(
            accepted,
            rust.is_ok(),
            "{case}: python said {said}, rust {rust:?}"
        );
        println!("{case}: {said}");
    }
    // The good receipt is accepted by both, the event's own signature included.
    with_witness.quorum = 1;
    assert!(
        verify_receipt(
            &cosigned.encode(),
            &receipt.subject,
            &receipt.record,
            &with_witness
        )
        .is_ok()
    );

    // Checkpoints alone: the same verdicts as verify::check_checkpoints.
    let tiles = refbus_notary::tiles::TileDir::new(&dir);
    for (case, note, quorum) in [
        ("cosigned", cosigned.checkpoint.clone(), 1usize),
        ("forged", forged_checkpoint, 0),
        ("unsigned by the witness", parsed.checkpoint.clone(), 1),
    ] {
        with_witness.quorum = quorum;
        let (_, problems) = verify::check_checkpoints(&note, &[], &with_witness, &tiles);
        let file = write("checkpoint", &note);
        let quorum_text = quorum.to_string();
        let (accepted, said) = python(&[
            OsStr::new("checkpoint"),
            OsStr::new("--checkpoint"),
            file.as_os_str(),
            OsStr::new("--notary-key"),
            OsStr::new(&notary_key),
            OsStr::new("--witness-key"),
            OsStr::new(&witness_key),
            OsStr::new("--quorum"),
            OsStr::new(&quorum_text),
        ]);
        assert_eq!(
            accepted,
            problems.is_empty(),
            "{case}: python said {said}, rust {problems:?}"
        );
        println!("{case}: {said}");
    }
}
