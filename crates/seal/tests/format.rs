//! The envelope format as the crate documentation specifies it, decoded by hand: another
//! implementation that follows the documentation opens what refbus seals.

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit, Nonce, Tag};
use hpke::aead::ChaCha20Poly1305 as HpkeAead;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use refbus_core::AgencyId;
use refbus_core::referral::SealedPayload;
use refbus_seal::{KeyPair, OpenError, open, seal};
use sha2::{Digest, Sha256};

#[test]
fn the_documented_format_opens_what_seal_produces() {
    let dinsos = AgencyId::new("maros-dinsos").unwrap();
    let polres = AgencyId::new("polres-maros").unwrap();
    let (dinsos_keys, polres_keys) = (KeyPair::generate(), KeyPair::generate());
    let aad = b"refbus/v1/identity/0000000000000000000000000Z";
    let plaintext = b"Siti Aminah, NIK 7309014506900001";
    let payload = seal(
        plaintext,
        &[
            (&dinsos, dinsos_keys.public()),
            (&polres, polres_keys.public()),
        ],
        aad,
    )
    .unwrap();
    let bytes = &payload.envelope;

    // Walk the documented layout and find polres's wrap.
    assert_eq!(bytes[0], 2, "version");
    assert_eq!(bytes[1], 2, "count");
    let mut at = 2;
    let mut polres_wrap = None;
    for expected in [&dinsos, &polres] {
        let id_len = usize::from(bytes[at]);
        let id = &bytes[at + 1..at + 1 + id_len];
        assert_eq!(id, expected.as_str().as_bytes());
        at += 1 + id_len;
        let key_id = &bytes[at..at + 8];
        let enc = &bytes[at + 8..at + 40];
        let wrapped = &bytes[at + 40..at + 88];
        at += 88;
        if expected == &polres {
            let public = polres_keys.public().to_bytes();
            assert_eq!(key_id, &Sha256::digest(public)[..8]);
            polres_wrap = Some((enc, wrapped));
        }
    }
    let nonce = &bytes[at..at + 12];
    at += 12;
    let (header, sealed_content) = bytes.split_at(at);
    assert_eq!(sealed_content.len(), plaintext.len() + 16);

    // HPKE base mode: info = "refbus-seal/v1" 0x00 agency id; aad = the caller's context.
    let (enc, wrapped) = polres_wrap.unwrap();
    let secret_bytes = data_encoding::BASE64
        .decode(polres_keys.secret().to_base64().as_bytes())
        .unwrap();
    let secret = <X25519HkdfSha256 as Kem>::PrivateKey::from_bytes(&secret_bytes).unwrap();
    let enc = <X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(enc).unwrap();
    let info = [&b"refbus-seal/v1\0"[..], polres.as_str().as_bytes()].concat();
    let content_key = hpke::single_shot_open::<HpkeAead, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        &secret,
        &enc,
        &info,
        wrapped,
        aad,
    )
    .unwrap();
    assert_eq!(content_key.len(), 32);

    // ChaCha20-Poly1305 content: associated data = header, then the caller's context.
    let content_aad = [header, &aad[..]].concat();
    let (ciphertext, tag) = sealed_content.split_at(plaintext.len());
    let mut opened = ciphertext.to_vec();
    ChaCha20Poly1305::new_from_slice(&content_key)
        .unwrap()
        .decrypt_inout_detached(
            &Nonce::try_from(nonce).unwrap(),
            &content_aad,
            InOutBuf::from(opened.as_mut_slice()),
            &Tag::try_from(tag).unwrap(),
        )
        .unwrap();
    assert_eq!(opened, plaintext);
}

/// The other direction: an envelope written by hand from the documented format, its content key
/// wrapped by the hpke crate (what refbus sealed with before its wraps were made with ring's
/// X25519), opens through refbus's `open`, and the same envelope with any byte of the wrap
/// changed does not. With the test above (hpke opens what refbus seals) and the unit tests of
/// the wrap (RFC 9180's own test vector), this shows that sealing with ring changed no byte of
/// the format: an envelope either implementation wrote opens the same way.
#[test]
fn an_envelope_wrapped_by_the_hpke_crate_opens() {
    let polres = AgencyId::new("polres-maros").unwrap();
    let keys = KeyPair::generate();
    let aad = b"refbus/v1/identity/0000000000000000000000000Z";
    let plaintext = b"Siti Aminah, NIK 7309014506900001";
    let mut content_key = [0u8; 32];
    getrandom::fill(&mut content_key).unwrap();

    let public =
        <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(&keys.public().to_bytes()).unwrap();
    let info = [&b"refbus-seal/v1\0"[..], polres.as_str().as_bytes()].concat();
    let (enc, wrapped) = hpke::single_shot_seal::<HpkeAead, HkdfSha256, X25519HkdfSha256>(
        &OpModeS::Base,
        &public,
        &info,
        &content_key,
        aad,
    )
    .unwrap();
    assert_eq!(wrapped.len(), 48);

    let mut envelope = vec![2u8, 1, polres.as_str().len() as u8];
    envelope.extend_from_slice(polres.as_str().as_bytes());
    envelope.extend_from_slice(&Sha256::digest(keys.public().to_bytes())[..8]);
    let wrap_at = envelope.len();
    envelope.extend_from_slice(&enc.to_bytes());
    envelope.extend_from_slice(&wrapped);
    envelope.extend_from_slice(&[9u8; 12]);
    let content_aad = [&envelope[..], &aad[..]].concat();
    let mut sealed = plaintext.to_vec();
    let tag = ChaCha20Poly1305::new_from_slice(&content_key)
        .unwrap()
        .encrypt_inout_detached(
            &Nonce::from([9u8; 12]),
            &content_aad,
            InOutBuf::from(sealed.as_mut_slice()),
        )
        .unwrap();
    envelope.extend_from_slice(&sealed);
    envelope.extend_from_slice(&tag);

    let payload = SealedPayload {
        recipients: vec![polres.clone()],
        envelope,
    };
    assert_eq!(
        open(&payload, &polres, keys.secret(), aad).unwrap(),
        plaintext
    );
    for at in wrap_at..wrap_at + 32 + 48 {
        let mut altered = payload.clone();
        altered.envelope[at] ^= 0x01;
        assert!(
            matches!(
                open(&altered, &polres, keys.secret(), aad),
                Err(OpenError::Unauthentic)
            ),
            "byte {at} of the wrap changed, and it still opened"
        );
    }
}
