//! Sealing and opening through the public API: who can open, and what makes opening fail.

use std::sync::OnceLock;

use proptest::prelude::*;
use refbus_core::referral::SealedPayload;
use refbus_core::{AgencyId, ReferralId};
use refbus_seal::{
    Context, KeyPair, Keyring, KeyringError, MalformedEnvelope, OpenError, PublicKey, SealError,
    SecretKey, check_envelope, envelope_recipients, open, open_in_contexts, seal,
};

const IDENTITY: &[u8] =
    br#"{"name":"Siti Aminah","nik":"7309014506900001","phone":"081234567890"}"#;

struct Agency {
    id: AgencyId,
    keys: KeyPair,
}

impl Agency {
    fn new(id: &str) -> Agency {
        Agency {
            id: AgencyId::new(id).unwrap(),
            keys: KeyPair::generate(),
        }
    }

    fn open(&self, payload: &SealedPayload, aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        open(payload, &self.id, self.keys.secret(), aad)
    }
}

fn identity_aad(seed: u8) -> Vec<u8> {
    Context::Identity(&ReferralId::from_bytes([seed; 16])).aad()
}

/// The sender and recipient agencies, with keys made once: key generation is the slow part of
/// these tests in an unoptimised build.
fn two_agencies() -> &'static (Agency, Agency) {
    static AGENCIES: OnceLock<(Agency, Agency)> = OnceLock::new();
    AGENCIES.get_or_init(|| (Agency::new("maros-dinsos"), Agency::new("polres-maros")))
}

fn sealed_for_two(
    plaintext: &[u8],
    aad: &[u8],
) -> (&'static Agency, &'static Agency, SealedPayload) {
    let (dinsos, polres) = two_agencies();
    let payload = seal(
        plaintext,
        &[
            (&dinsos.id, dinsos.keys.public()),
            (&polres.id, polres.keys.public()),
        ],
        aad,
    )
    .unwrap();
    (dinsos, polres, payload)
}

#[test]
fn both_recipients_open_it() {
    let aad = identity_aad(1);
    let (dinsos, polres, payload) = sealed_for_two(IDENTITY, &aad);
    assert_eq!(
        payload.recipients,
        vec![dinsos.id.clone(), polres.id.clone()]
    );
    assert!(payload.is_sealed_for(&[&polres.id, &dinsos.id]));
    assert_eq!(dinsos.open(&payload, &aad).unwrap(), IDENTITY);
    assert_eq!(polres.open(&payload, &aad).unwrap(), IDENTITY);
    assert!(
        !payload
            .envelope
            .windows(b"Siti".len())
            .any(|window| window == b"Siti"),
        "the plaintext shows through"
    );
}

#[test]
fn empty_and_large_plaintexts_round_trip() {
    let aad = identity_aad(2);
    let large: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
    for plaintext in [&[][..], &large[..]] {
        let (_, polres, payload) = sealed_for_two(plaintext, &aad);
        assert_eq!(polres.open(&payload, &aad).unwrap(), plaintext);
    }
}

#[test]
fn a_payload_survives_the_json_of_an_event() {
    let aad = identity_aad(3);
    let (_, polres, payload) = sealed_for_two(IDENTITY, &aad);
    let json = serde_json::to_string(&payload).unwrap();
    let back: SealedPayload = serde_json::from_str(&json).unwrap();
    assert_eq!(polres.open(&back, &aad).unwrap(), IDENTITY);
}

#[test]
fn a_third_agency_cannot_open_it() {
    let aad = identity_aad(4);
    let (_, polres, payload) = sealed_for_two(IDENTITY, &aad);
    let ppa = Agency::new("maros-ppa");
    assert!(matches!(
        ppa.open(&payload, &aad),
        Err(OpenError::NotRecipient { agency }) if agency == ppa.id
    ));
    // Claiming to be a recipient does not help without its secret key.
    let error = open(&payload, &polres.id, ppa.keys.secret(), &aad).unwrap_err();
    assert!(
        matches!(&error, OpenError::WrongKey { sealed_for, held, .. }
            if *sealed_for == polres.keys.public().key_id() && *held == ppa.keys.public().key_id()),
        "{error}"
    );
}

#[test]
fn another_context_does_not_open_it() {
    let aad = identity_aad(5);
    let (_, polres, payload) = sealed_for_two(IDENTITY, &aad);
    let referral = ReferralId::from_bytes([5; 16]);
    for wrong in [
        identity_aad(6),
        Context::Note(&referral).aad(),
        Vec::new(),
        [aad.as_slice(), b"x"].concat(),
    ] {
        assert!(matches!(
            polres.open(&payload, &wrong),
            Err(OpenError::Unauthentic)
        ));
    }
}

#[test]
fn the_listed_recipients_cannot_be_rewritten() {
    let aad = identity_aad(7);
    let (dinsos, polres, mut payload) = sealed_for_two(IDENTITY, &aad);
    let ppa = AgencyId::new("maros-ppa").unwrap();
    payload.recipients = vec![dinsos.id.clone(), ppa];
    assert!(matches!(
        polres.open(&payload, &aad),
        Err(OpenError::Malformed(
            MalformedEnvelope::RecipientsMismatch { .. }
        ))
    ));
    assert!(check_envelope(&payload).is_err());
    payload.recipients = vec![polres.id.clone(), dinsos.id.clone()];
    assert!(polres.open(&payload, &aad).is_err());
    payload.recipients = vec![dinsos.id.clone(), polres.id.clone()];
    assert!(check_envelope(&payload).is_ok());
    assert_eq!(
        envelope_recipients(&payload.envelope).unwrap(),
        payload.recipients
    );
}

#[test]
fn sealing_refuses_bad_recipient_lists() {
    let dinsos = Agency::new("maros-dinsos");
    let one = (&dinsos.id, dinsos.keys.public());
    assert!(matches!(seal(b"x", &[], b""), Err(SealError::NoRecipients)));
    assert!(matches!(
        seal(b"x", &[one, one], b""),
        Err(SealError::DuplicateRecipient(agency)) if agency == dinsos.id
    ));
    let many: Vec<Agency> = (0..9)
        .map(|i| Agency::new(&format!("agency-{i}")))
        .collect();
    let recipients: Vec<_> = many.iter().map(|a| (&a.id, a.keys.public())).collect();
    assert!(matches!(
        seal(b"x", &recipients, b""),
        Err(SealError::TooManyRecipients(9))
    ));
    assert!(seal(b"x", &recipients[..8], b"").is_ok());
    assert!(seal(b"x", &[one], b"").is_ok());
}

#[test]
fn keyrings_seal_for_registered_agencies_and_open_their_own() {
    let (dinsos, polres, ppa) = (
        Agency::new("maros-dinsos"),
        Agency::new("polres-maros"),
        Agency::new("maros-ppa"),
    );
    let registry = vec![
        (dinsos.id.clone(), dinsos.keys.public().clone()),
        (polres.id.clone(), polres.keys.public().clone()),
    ];
    let sender = Keyring::new(
        dinsos.id.clone(),
        dinsos.keys.into_secret(),
        registry.clone(),
    )
    .unwrap();
    let polres_public = polres.keys.public().clone();
    let receiver = Keyring::new(polres.id.clone(), polres.keys.into_secret(), registry).unwrap();
    assert_eq!(receiver.public_key(), &polres_public);
    assert_eq!(receiver.agency(), &polres.id);
    assert_eq!(sender.public_key_of(&polres.id), Some(&polres_public));

    let referral = ReferralId::from_bytes([8; 16]);
    let context = Context::Identity(&referral);
    let payload = sender
        .seal_for(&[&dinsos.id, &polres.id], IDENTITY, context)
        .unwrap();
    assert_eq!(sender.open(&payload, context).unwrap(), IDENTITY);
    assert_eq!(receiver.open(&payload, context).unwrap(), IDENTITY);
    assert!(matches!(
        receiver.open(&payload, Context::Note(&referral)),
        Err(OpenError::Unauthentic)
    ));
    assert!(matches!(
        sender.seal_for(&[&dinsos.id, &ppa.id], IDENTITY, context),
        Err(SealError::UnknownAgency(agency)) if agency == ppa.id
    ));
    let private = receiver
        .seal_for(&[&polres.id], b"own note", context)
        .unwrap();
    assert!(matches!(
        sender.open(&private, context),
        Err(OpenError::NotRecipient { .. })
    ));
}

#[test]
fn a_keyring_refuses_a_registry_that_disagrees_with_its_secret_key() {
    let dinsos = Agency::new("maros-dinsos");
    let other: PublicKey = KeyPair::generate().public().clone();
    let held_id = dinsos.keys.public().key_id();
    let error = Keyring::new(
        dinsos.id.clone(),
        dinsos.keys.into_secret(),
        [(dinsos.id.clone(), other.clone())],
    )
    .unwrap_err();
    let KeyringError::OwnKeyMismatch {
        registered, held, ..
    } = &error
    else {
        panic!("{error}");
    };
    assert_eq!(*registered, other.key_id());
    assert_eq!(*held, held_id);
}

/// A keyring for `agency` holding `secrets` (current first), with `registry` as the directory.
fn keyring(
    agency: &Agency,
    secrets: Vec<SecretKey>,
    registry: &[(AgencyId, PublicKey)],
) -> Keyring {
    Keyring::with_keys(agency.id.clone(), secrets, registry.iter().cloned()).unwrap()
}

fn copy(secret: &SecretKey) -> SecretKey {
    SecretKey::from_base64(&secret.to_base64()).unwrap()
}

#[test]
fn a_rotated_keyring_still_opens_what_was_sealed_for_its_old_key() {
    let (dinsos, polres) = (Agency::new("maros-dinsos"), Agency::new("polres-maros"));
    let old_registry = vec![
        (dinsos.id.clone(), dinsos.keys.public().clone()),
        (polres.id.clone(), polres.keys.public().clone()),
    ];
    let referral = ReferralId::from_bytes([11; 16]);
    let context = Context::Identity(&referral);
    let sender = keyring(&dinsos, vec![copy(dinsos.keys.secret())], &old_registry);
    let before = sender
        .seal_for(&[&dinsos.id, &polres.id], IDENTITY, context)
        .unwrap();

    // polres rotates: a new key, the old one kept; the registry lists the new one.
    let rotated = KeyPair::generate();
    let new_registry = vec![
        (dinsos.id.clone(), dinsos.keys.public().clone()),
        (polres.id.clone(), rotated.public().clone()),
    ];
    let receiver = keyring(
        &polres,
        vec![copy(rotated.secret()), copy(polres.keys.secret())],
        &new_registry,
    );
    assert_eq!(receiver.public_key(), rotated.public());
    assert_eq!(
        receiver.key_ids(),
        vec![rotated.public().key_id(), polres.keys.public().key_id()]
    );
    assert_eq!(receiver.open(&before, context).unwrap(), IDENTITY);
    let after = keyring(&dinsos, vec![copy(dinsos.keys.secret())], &new_registry)
        .seal_for(&[&dinsos.id, &polres.id], IDENTITY, context)
        .unwrap();
    assert_eq!(receiver.open(&after, context).unwrap(), IDENTITY);
    // The envelope names the key each wrap is for: the new key alone cannot open the old one.
    let new_only = keyring(&polres, vec![copy(rotated.secret())], &new_registry);
    assert!(matches!(
        new_only.open(&before, context),
        Err(OpenError::WrongKey { sealed_for, .. }) if sealed_for == polres.keys.public().key_id()
    ));
    // Files rotated before the registry changed: the key the registry lists stays current.
    let early = keyring(
        &polres,
        vec![copy(rotated.secret()), copy(polres.keys.secret())],
        &old_registry,
    );
    assert_eq!(early.public_key(), polres.keys.public());
}

#[test]
fn the_backup_key_opens_everything_sealed_for_its_agency() {
    let (dinsos, polres) = (Agency::new("maros-dinsos"), Agency::new("polres-maros"));
    let backup = KeyPair::generate();
    let registry = vec![
        (dinsos.id.clone(), dinsos.keys.public().clone()),
        (polres.id.clone(), polres.keys.public().clone()),
    ];
    let sender = keyring(&dinsos, vec![copy(dinsos.keys.secret())], &registry)
        .with_backup_keys([(polres.id.clone(), backup.public().clone())]);
    assert_eq!(sender.backup_key_of(&polres.id), Some(backup.public()));
    let referral = ReferralId::from_bytes([12; 16]);
    let batch = sender
        .batch_for(&[&dinsos.id, &polres.id], Context::Identity(&referral))
        .unwrap();
    let identity = batch
        .seal_in(IDENTITY, Context::Identity(&referral))
        .unwrap();
    let note = batch.seal_in(b"a note", Context::Note(&referral)).unwrap();
    assert_eq!(
        identity.recipients,
        vec![dinsos.id.clone(), polres.id.clone()]
    );
    assert_eq!(
        refbus_seal::envelope_keys(&identity.envelope).unwrap(),
        vec![
            (dinsos.id.clone(), dinsos.keys.public().key_id()),
            (polres.id.clone(), polres.keys.public().key_id()),
            (polres.id.clone(), backup.public().key_id()),
        ]
    );
    // The online key and the backup key (alone, as `refbus keys recover` holds it) both open
    // both payloads, each only in its own context.
    for secret in [polres.keys.secret(), backup.secret()] {
        let secrets = [copy(secret)];
        let contexts = [Context::Note(&referral), Context::Identity(&referral)];
        let (context, opened) =
            open_in_contexts(&identity, &polres.id, &secrets, &contexts).unwrap();
        assert_eq!(
            (context, opened.as_slice()),
            (Context::Identity(&referral), IDENTITY)
        );
        let (context, opened) = open_in_contexts(&note, &polres.id, &secrets, &contexts).unwrap();
        assert_eq!(
            (context, opened.as_slice()),
            (Context::Note(&referral), &b"a note"[..])
        );
        let other = ReferralId::from_bytes([13; 16]);
        assert!(open_in_contexts(&note, &polres.id, &secrets, &[Context::Note(&other)]).is_err());
    }
    // One content key, one set of wraps for the whole batch.
    let header = identity.envelope.len() - IDENTITY.len() - 16;
    assert_eq!(
        identity.envelope[..header - 12],
        note.envelope[..header - 12]
    );
}

#[test]
fn flipping_each_byte_of_an_envelope_is_detected() {
    // The property test below samples positions; this walks every byte of one envelope once.
    let aad = identity_aad(10);
    let (dinsos, polres, payload) = sealed_for_two(b"NIK 7309014506900001", &aad);
    for index in 0..payload.envelope.len() {
        let bit = index % 8;
        let mut altered = payload.clone();
        altered.envelope[index] ^= 1 << bit;
        for agency in [dinsos, polres] {
            let result = agency.open(&altered, &aad);
            assert!(
                result.is_err(),
                "byte {index} bit {bit} accepted by {}",
                agency.id
            );
        }
    }
}

/// One payload sealed for the two agencies, shared by the property tests, which only alter it.
fn sample() -> &'static SealedPayload {
    static SAMPLE: OnceLock<SealedPayload> = OnceLock::new();
    SAMPLE.get_or_init(|| sealed_for_two(IDENTITY, &sample_aad()).2)
}

fn sample_aad() -> Vec<u8> {
    identity_aad(9)
}

/// Bytes before the ciphertext in [`sample`].
fn sample_header_len() -> usize {
    sample().envelope.len() - IDENTITY.len() - 16
}

proptest! {
    // Each case that gets past parsing costs a Diffie-Hellman, slow in a debug build.
    #![proptest_config(ProptestConfig::with_cases(64))]

    #[test]
    fn flipping_any_bit_of_the_envelope_is_detected(
        position in any::<prop::sample::Index>(),
        bit in 0u8..8,
    ) {
        let (dinsos, polres) = two_agencies();
        let mut altered = sample().clone();
        let index = position.index(altered.envelope.len());
        altered.envelope[index] ^= 1 << bit;
        let aad = sample_aad();
        prop_assert!(dinsos.open(&altered, &aad).is_err(), "byte {} accepted by the sender", index);
        prop_assert!(polres.open(&altered, &aad).is_err(), "byte {} accepted by the recipient", index);
    }

    #[test]
    fn arbitrary_bytes_are_refused_without_panicking(
        envelope in prop::collection::vec(any::<u8>(), 0..512),
    ) {
        let (_, polres) = two_agencies();
        let payload = SealedPayload { recipients: vec![polres.id.clone()], envelope };
        prop_assert!(polres.open(&payload, b"").is_err());
        let _ = envelope_recipients(&payload.envelope);
    }

    #[test]
    fn a_valid_start_then_garbage_is_refused_without_panicking(
        kept in any::<prop::sample::Index>(),
        garbage in prop::collection::vec(any::<u8>(), 0..128),
    ) {
        // Random bytes rarely get past the version byte; starting from a real envelope reaches
        // every field of the parser.
        let (dinsos, polres) = two_agencies();
        let mut envelope = sample().envelope.clone();
        envelope.truncate(kept.index(sample_header_len()));
        envelope.extend_from_slice(&garbage);
        let payload = SealedPayload { recipients: vec![dinsos.id.clone(), polres.id.clone()], envelope };
        prop_assert!(polres.open(&payload, &sample_aad()).is_err());
        let _ = envelope_recipients(&payload.envelope);
    }

    #[test]
    fn truncated_envelopes_are_malformed(cut in any::<prop::sample::Index>()) {
        // A cut that leaves less than the header and a tag is malformed; a longer one parses,
        // and then fails authentication.
        let (_, polres) = two_agencies();
        let len = cut.index(sample().envelope.len());
        let mut truncated = sample().clone();
        truncated.envelope.truncate(len);
        let result = polres.open(&truncated, &sample_aad());
        if len < sample_header_len() + 16 {
            prop_assert!(matches!(result, Err(OpenError::Malformed(_))), "{:?}", result);
        } else {
            prop_assert!(matches!(result, Err(OpenError::Unauthentic)), "{:?}", result);
        }
    }

    #[test]
    fn any_ciphertext_after_a_valid_header_is_malformed_or_unauthentic(
        tail in prop::collection::vec(any::<u8>(), 0..64),
    ) {
        let (_, polres) = two_agencies();
        let mut altered = sample().clone();
        altered.envelope.truncate(sample_header_len());
        altered.envelope.extend_from_slice(&tail);
        let result = polres.open(&altered, &sample_aad());
        if tail.len() < 16 {
            prop_assert!(matches!(result, Err(OpenError::Malformed(_))), "{:?}", result);
        } else {
            prop_assert!(matches!(result, Err(OpenError::Unauthentic)), "{:?}", result);
        }
    }
}
