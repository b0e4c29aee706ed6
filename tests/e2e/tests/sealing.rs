//! The person's identity never reaches the bus in the clear: after a referral with identity and
//! notes has gone through its life, every byte of every stored message, and every byte of the
//! server's store on disk, is searched for the plaintext values, and none is found.

use futures::StreamExt;
use refbus_e2e::{System, create_request, identity, reason};
use refbus_proto::v1;

#[tokio::test]
async fn no_stored_byte_holds_identity_or_note_plaintext() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let uptd = system.agency("maros-uptd-ppa").await;
    let person = identity("Siti Contoh Korban");

    let created = dinsos
        .client()
        .create_referral(dinsos.request(create_request("sealed-1", "maros-uptd-ppa", "legal_aid")))
        .await
        .unwrap()
        .into_inner();
    let id = created.referral.unwrap().referral_id;
    let notes = [
        "Rahasia: pelaku adalah paman korban",
        "Korban takut pulang ke rumah",
        "Sudah didampingi ke pengadilan",
    ];
    dinsos
        .client()
        .add_note(dinsos.request(v1::AddNoteRequest {
            request_id: "n1".into(),
            referral_id: id.clone(),
            note: notes[0].into(),
            sealed_note: None,
        }))
        .await
        .unwrap();
    uptd.client()
        .reject_referral(uptd.request(v1::RejectReferralRequest {
            request_id: "r1".into(),
            referral_id: id.clone(),
            reason: reason("no_capacity", notes[1]),
        }))
        .await
        .unwrap();
    let rerouted = dinsos
        .client()
        .reroute_referral(dinsos.request(v1::RerouteReferralRequest {
            request_id: "reroute-1".into(),
            referral_id: id.clone(),
            to: "maros-bagian-hukum".into(),
            note: notes[2].into(),
            ..Default::default()
        }))
        .await
        .unwrap()
        .into_inner();
    // The parties can read it all back: the values are really in there, sealed.
    let hukum = system.agency("maros-bagian-hukum").await;
    let child = hukum
        .client()
        .get_referral(hukum.request(v1::GetReferralRequest {
            referral_id: rerouted.child_referral.unwrap().referral_id,
        }))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    assert_eq!(child.identity.as_ref().unwrap().nik, person.nik);
    assert_eq!(child.note, notes[2]);

    let secrets: Vec<&str> = [
        person.full_name.as_str(),
        &person.nik,
        &person.address,
        &person.phone,
        &person.narrative,
        &person.guardian_name,
        "Anak perlu rumah aman malam ini.",
    ]
    .into_iter()
    .chain(notes)
    .collect();

    // Every message, headers and payload, as JetStream returns it.
    let bus = system.bus().await;
    let all = vec![
        refbus_bus::subjects::ALL_REFERRALS.to_owned(),
        refbus_bus::subjects::ALL_NOTICES.to_owned(),
    ];
    // Raw reads on a connection of the test's own: the bus gives no access to NATS types.
    let stream = async_nats::jetstream::new(async_nats::connect(system.nats.url()).await.unwrap())
        .get_stream(refbus_bus::StreamSettings::default().name)
        .await
        .unwrap();
    let total = bus.last_sequence().await.unwrap();
    assert_eq!(
        total, 7,
        "create, note, rejection, the child, the reroute link, and two index entries"
    );
    let mut scanned = 0;
    for seq in 1..=total {
        let message = stream.direct_get(seq).await.unwrap();
        let mut bytes = message.payload.to_vec();
        for (name, values) in message.headers.iter() {
            bytes.extend_from_slice(name.to_string().as_bytes());
            for value in values {
                bytes.extend_from_slice(value.as_str().as_bytes());
            }
        }
        for secret in &secrets {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "message {seq} holds `{secret}` in the clear"
            );
        }
        scanned += 1;
    }
    assert_eq!(scanned, total);
    // The inbox path too, through a consumer (the records: the index entries hold only ids).
    let records = total - 2;
    let watched: Vec<_> = bus
        .watch(&system.verifier(), all, 0)
        .await
        .unwrap()
        .take(records as usize)
        .collect()
        .await;
    assert_eq!(watched.len() as u64, records);

    // And every file of the server's store on disk.
    let mut files = 0;
    for path in walk(system.nats.store_dir()) {
        let bytes = std::fs::read(&path).unwrap();
        for secret in &secrets {
            assert!(
                !contains(&bytes, secret.as_bytes()),
                "{} holds `{secret}` in the clear",
                path.display()
            );
        }
        files += 1;
    }
    assert!(files > 0);
    // The scan itself finds what is there: the metadata is stored in the clear.
    assert!(
        walk(system.nats.store_dir())
            .iter()
            .any(|path| contains(&std::fs::read(path).unwrap(), b"MRS-2026-0042"))
    );
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
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

#[tokio::test]
async fn a_consent_override_justification_is_sealed_like_a_note() {
    let mut system = System::start().await;
    let dinsos = system.agency("maros-dinsos").await;
    let uptd = system.agency("maros-uptd-ppa").await;
    let justification = "Ibu Siti Contoh Korban dirawat di RSUD, anak tanpa wali malam ini";
    let mut request = create_request("override-1", "maros-uptd-ppa", "shelter");
    let consent = request.consent.as_mut().unwrap();
    consent.services = false;
    consent.override_justification = justification.to_owned();
    let created = dinsos
        .client()
        .create_referral(dinsos.request(request))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    // The parties read it back in plaintext, beside its sealed form.
    let consent = created.consent.unwrap();
    assert_eq!(consent.override_justification, justification);
    let got = uptd
        .client()
        .get_referral(uptd.request(v1::GetReferralRequest {
            referral_id: created.referral_id.clone(),
        }))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
        .consent
        .unwrap();
    assert_eq!(got.override_justification, justification);
    let sealed = got.sealed_override_justification.unwrap();
    assert_eq!(sealed.recipients, ["maros-dinsos", "maros-uptd-ppa"]);

    // No stored byte holds it: every message of the stream, headers included.
    let stream = async_nats::jetstream::new(async_nats::connect(system.nats.url()).await.unwrap())
        .get_stream(refbus_bus::StreamSettings::default().name)
        .await
        .unwrap();
    // The creation and whatever the bus writes beside it (the creation index).
    let total = system.bus().await.last_sequence().await.unwrap();
    assert!(total >= 1);
    let mut bytes = Vec::new();
    for seq in 1..=total {
        let message = stream.direct_get(seq).await.unwrap();
        bytes.extend_from_slice(&message.payload);
        for (name, values) in message.headers.iter() {
            bytes.extend_from_slice(name.to_string().as_bytes());
            for value in values {
                bytes.extend_from_slice(value.as_str().as_bytes());
            }
        }
    }
    // The scan finds what is there: the envelope of the justification is stored.
    assert!(contains(&bytes, b"override_justification"));
    for needle in [justification, "dirawat di RSUD", "anak tanpa wali"] {
        assert!(
            !contains(&bytes, needle.as_bytes()),
            "a stored message holds `{needle}` in the clear"
        );
    }
}
