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
