//! Keys that rotate and can be recovered, through the adapters: a referral sealed before the
//! recipient rotated its key is still opened by its GetReferral after, and everything sealed
//! for an agency with a backup key opens with that key alone.

use refbus_core::{AgencyId, ReferralId};
use refbus_e2e::{System, create_request};
use refbus_proto::v1;
use refbus_seal::Context;

async fn get(agency: &refbus_e2e::AgencySystem, referral_id: &str) -> v1::Referral {
    agency
        .client()
        .get_referral(agency.request(v1::GetReferralRequest {
            referral_id: referral_id.to_owned(),
        }))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
}

#[tokio::test]
async fn a_referral_sealed_before_a_rotation_is_still_opened_after_it() {
    let mut system = System::start().await;
    let uptd_id = AgencyId::new("maros-uptd-ppa").unwrap();
    let dinsos = system.agency("maros-dinsos").await;
    let before = dinsos
        .client()
        .create_referral(dinsos.request(create_request("before", "maros-uptd-ppa", "shelter")))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
        .referral_id;
    let old_key = system.keys[&uptd_id].public().key_id();

    // UPTD PPA rotates: its adapter restarts with the new key and the old one; Dinsos's
    // adapter restarts with the registry's new public key.
    system.rotate_key(&uptd_id);
    assert_ne!(system.keys[&uptd_id].public().key_id(), old_key);
    system.stop_adapter(&uptd_id).await;
    system
        .stop_adapter(&AgencyId::new("maros-dinsos").unwrap())
        .await;
    let uptd = system.agency("maros-uptd-ppa").await;
    let dinsos = system.agency("maros-dinsos").await;

    let old = get(&uptd, &before).await;
    assert_eq!(old.identity.unwrap().full_name, "Siti Contoh Korban");
    assert_eq!(old.note, "Anak perlu rumah aman malam ini.");

    let after = dinsos
        .client()
        .create_referral(dinsos.request(create_request("after", "maros-uptd-ppa", "shelter")))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap()
        .referral_id;
    let new = get(&uptd, &after).await;
    assert_eq!(
        new.identity.as_ref().unwrap().full_name,
        "Siti Contoh Korban"
    );
    // Sealed for the new key: its envelope names it, not the old one.
    let sealed = new.sealed_identity.unwrap();
    let keys = refbus_seal::envelope_keys(&sealed.envelope).unwrap();
    assert!(keys.contains(&(uptd_id.clone(), system.keys[&uptd_id].public().key_id())));
    assert!(!keys.iter().any(|(_, key)| *key == old_key));

    // Without the old key, the old referral stays closed: the earlier key is what opens it.
    system.earlier_keys.clear();
    system.stop_adapter(&uptd_id).await;
    let forgetful = system.agency("maros-uptd-ppa").await;
    let closed = get(&forgetful, &before).await;
    assert_eq!(closed.identity, None);
    assert!(closed.sealed_identity.is_some());
}

#[tokio::test]
async fn everything_sealed_for_an_agency_opens_with_its_backup_key() {
    let mut system = System::start().await;
    let uptd_id = AgencyId::new("maros-uptd-ppa").unwrap();
    system
        .backup_keys
        .insert(uptd_id.clone(), refbus_seal::KeyPair::generate());
    let dinsos = system.agency("maros-dinsos").await;
    let mut request = create_request("backed-up", "maros-uptd-ppa", "shelter");
    let consent = request.consent.as_mut().unwrap();
    consent.services = false;
    consent.override_justification =
        "Korban tidak sadar di RSUD; rumah aman dibutuhkan malam ini".to_owned();
    let created = dinsos
        .client()
        .create_referral(dinsos.request(request))
        .await
        .unwrap()
        .into_inner()
        .referral
        .unwrap();
    let referral: ReferralId = created.referral_id.parse().unwrap();

    // The online key is lost: only the backup key is held. What the bus stores opens with it.
    let bus = system.bus().await;
    let subject = refbus_bus::subjects::referral(
        &uptd_id,
        &AgencyId::new("maros-dinsos").unwrap(),
        &referral,
    );
    let creation = bus
        .checked_creation(&system.verifier(), &subject)
        .await
        .unwrap()
        .unwrap()
        .record
        .state
        .creation;
    let backup =
        [
            refbus_seal::SecretKey::from_base64(&system.backup_keys[&uptd_id].secret().to_base64())
                .unwrap(),
        ];
    let open = |payload: &refbus_core::referral::SealedPayload, context| {
        refbus_seal::open_in_contexts(payload, &uptd_id, &backup, &[context])
            .unwrap()
            .1
    };
    let identity = open(
        creation.identity.as_ref().unwrap(),
        Context::Identity(&referral),
    );
    assert!(contains(&identity, b"Siti Contoh Korban"));
    assert_eq!(
        open(creation.note.as_ref().unwrap(), Context::Note(&referral)),
        b"Anak perlu rumah aman malam ini."
    );
    assert_eq!(
        open(
            creation.consent.override_justification.as_ref().unwrap(),
            Context::Justification(&referral)
        ),
        "Korban tidak sadar di RSUD; rumah aman dibutuhkan malam ini".as_bytes()
    );
    // The sender's own wrap has no backup here (none listed for Dinsos): only UPTD PPA's.
    let keys = refbus_seal::envelope_keys(&creation.identity.unwrap().envelope).unwrap();
    assert_eq!(keys.len(), 3, "{keys:?}");
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle)
}
