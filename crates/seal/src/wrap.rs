//! The HPKE key wrap of a content key for one agency key (RFC 9180, base mode, single shot):
//! sealed with ring's X25519 and the key schedule written here, opened with the hpke crate.
//!
//! Sealing is most of a sealed create's cost, and each wrap's cost is its X25519: one ephemeral
//! key generation and one Diffie-Hellman. The hpke crate computes both with x25519-dalek's
//! serial Montgomery ladder; ring's X25519 (BoringSSL's, with the ADX/BMI2 field arithmetic on
//! x86-64) is faster (a wrap about a third cheaper on the project's loaded machine), so the
//! *sealing* side of the wrap is done here with ring (docs/BENCHMARKS.md, "Sealing"). ring has no static X25519 keys, only ephemeral ones, so
//! opening (decapsulation with an agency's secret key) stays on the hpke crate: the bytes must
//! therefore be exactly RFC 9180's, which the tests below check against the RFC's own test
//! vector (A.2.1) and by opening with hpke what this module seals.
//!
//! The suite is the one the envelope format names, and only it: DHKEM(X25519, HKDF-SHA256)
//! (KEM 0x0020), HKDF-SHA256 (KDF 0x0001), ChaCha20-Poly1305 (AEAD 0x0003).

use chacha20poly1305::aead::inout::InOutBuf;
use chacha20poly1305::{AeadInOut, ChaCha20Poly1305, KeyInit, Nonce};
use hkdf::{Hkdf, HkdfExtract};
use hpke::aead::{AeadTag, ChaCha20Poly1305 as HpkeChaCha20Poly1305};
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, OpModeR};
use ring::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey, X25519};
use ring::rand::SystemRandom;
use sha2::Sha256;
use zeroize::Zeroizing;

use crate::envelope::{CONTENT_KEY_LEN, ENC_LEN, NONCE_LEN, TAG_LEN, WRAPPED_KEY_LEN};
use crate::keys::{KEY_LEN, SecretKey};

/// RFC 9180 §4.1: `"KEM" || I2OSP(kem_id, 2)`, DHKEM(X25519, HKDF-SHA256) being 0x0020.
const KEM_SUITE_ID: &[u8] = b"KEM\x00\x20";
/// RFC 9180 §5.1: `"HPKE" || I2OSP(kem_id, 2) || I2OSP(kdf_id, 2) || I2OSP(aead_id, 2)`.
const HPKE_SUITE_ID: &[u8] = b"HPKE\x00\x20\x00\x01\x00\x03";
/// RFC 9180 §4: the version label every labeled derivation starts with.
const VERSION_LABEL: &[u8] = b"HPKE-v1";
/// RFC 9180 §5.1: `mode_base`.
const MODE_BASE: u8 = 0x00;
/// SHA-256's output: `Nh`, and `Nsecret` of the KEM.
const HASH_LEN: usize = 32;

/// Why a wrap could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum WrapError {
    /// The operating system gave no randomness for the ephemeral key.
    Randomness,
    /// The Diffie-Hellman with the recipient's key gave the all-zero value (a small-order point,
    /// which [`PublicKey`](crate::PublicKey) already refuses).
    RecipientKey,
}

/// RFC 9180 single-shot `Seal` in base mode: encrypts `in_out` (the content key) in place for
/// the X25519 public key `recipient`, and returns the encapsulated key (the ephemeral public
/// key) and the AEAD tag.
pub(crate) fn seal(
    recipient: &[u8; KEY_LEN],
    info: &[u8],
    aad: &[u8],
    in_out: &mut [u8],
) -> Result<([u8; ENC_LEN], [u8; TAG_LEN]), WrapError> {
    // Encap(pkR), RFC 9180 §4.1. GenerateKeyPair may be any uniform choice of secret key (only
    // DeriveKeyPair is fixed by the RFC); ring draws 32 random bytes, clamped like any X25519
    // scalar.
    let ephemeral = EphemeralPrivateKey::generate(&X25519, &SystemRandom::new())
        .map_err(|_| WrapError::Randomness)?;
    let mut enc = [0u8; ENC_LEN];
    enc.copy_from_slice(
        ephemeral
            .compute_public_key()
            .map_err(|_| WrapError::Randomness)?
            .as_ref(),
    );
    // ring refuses an all-zero Diffie-Hellman value, as RFC 9180 §7.1.4 requires; the ephemeral
    // key is consumed here, and the value lives only for the closure.
    let shared_secret = agreement::agree_ephemeral(
        ephemeral,
        &UnparsedPublicKey::new(&X25519, recipient),
        |dh| kem_shared_secret(dh, &enc, recipient),
    )
    .map_err(|_| WrapError::RecipientKey)?;
    let tag = seal_with_shared_secret(&shared_secret, info, aad, in_out);
    Ok((enc, tag))
}

/// DHKEM's `ExtractAndExpand(dh, kem_context)` with `kem_context = enc || pkRm` (RFC 9180 §4.1).
fn kem_shared_secret(
    dh: &[u8],
    enc: &[u8; ENC_LEN],
    recipient: &[u8; KEY_LEN],
) -> Zeroizing<[u8; HASH_LEN]> {
    let (_, eae_prk) = labeled_extract(KEM_SUITE_ID, &[], b"eae_prk", dh);
    let mut shared_secret = Zeroizing::new([0u8; HASH_LEN]);
    labeled_expand(
        &eae_prk,
        KEM_SUITE_ID,
        b"shared_secret",
        &[enc, recipient],
        shared_secret.as_mut_slice(),
    );
    shared_secret
}

/// The AEAD key and base nonce of RFC 9180's `KeySchedule` in base mode (no PSK).
struct Schedule {
    key: Zeroizing<[u8; CONTENT_KEY_LEN]>,
    base_nonce: Zeroizing<[u8; NONCE_LEN]>,
}

/// `KeySchedule(mode_base, shared_secret, info, "", "")` (RFC 9180 §5.1), without the exporter
/// secret, which a single-shot seal never uses.
fn key_schedule(shared_secret: &[u8; HASH_LEN], info: &[u8]) -> Schedule {
    let (psk_id_hash, _) = labeled_extract(HPKE_SUITE_ID, &[], b"psk_id_hash", b"");
    let (info_hash, _) = labeled_extract(HPKE_SUITE_ID, &[], b"info_hash", info);
    let context: [&[u8]; 3] = [&[MODE_BASE], &psk_id_hash, &info_hash];
    let (_, secret) = labeled_extract(HPKE_SUITE_ID, shared_secret, b"secret", b"");
    let mut schedule = Schedule {
        key: Zeroizing::new([0u8; CONTENT_KEY_LEN]),
        base_nonce: Zeroizing::new([0u8; NONCE_LEN]),
    };
    labeled_expand(
        &secret,
        HPKE_SUITE_ID,
        b"key",
        &context,
        schedule.key.as_mut_slice(),
    );
    labeled_expand(
        &secret,
        HPKE_SUITE_ID,
        b"base_nonce",
        &context,
        schedule.base_nonce.as_mut_slice(),
    );
    schedule
}

/// The key schedule, then `Seal` of the context's first (and only) message: sequence number 0,
/// so the nonce is the base nonce itself (RFC 9180 §5.2).
fn seal_with_shared_secret(
    shared_secret: &[u8; HASH_LEN],
    info: &[u8],
    aad: &[u8],
    in_out: &mut [u8],
) -> [u8; TAG_LEN] {
    let schedule = key_schedule(shared_secret, info);
    // The cipher zeroizes its key on drop (chacha20poly1305's `zeroize` feature).
    let tag = ChaCha20Poly1305::new((&*schedule.key).into())
        .encrypt_inout_detached(
            &Nonce::from(*schedule.base_nonce),
            aad,
            InOutBuf::from(in_out),
        )
        .unwrap_or_else(|_| unreachable!("a content key is far below ChaCha20's length limit"));
    tag.into()
}

/// `LabeledExtract(salt, label, ikm)` (RFC 9180 §4): HKDF-Extract over
/// `"HPKE-v1" || suite_id || label || ikm`. Returns the pseudorandom key (only the two hashes
/// of the key schedule, which are not secret, are used as bytes) and HKDF ready to expand it.
fn labeled_extract(
    suite_id: &[u8],
    salt: &[u8],
    label: &[u8],
    ikm: &[u8],
) -> ([u8; HASH_LEN], Hkdf<Sha256>) {
    // An empty salt is HMAC's zero-length key, the same as RFC 5869's string of zeros.
    let mut extract = HkdfExtract::<Sha256>::new(Some(salt));
    for part in [VERSION_LABEL, suite_id, label, ikm] {
        extract.input_ikm(part);
    }
    let (prk, hkdf) = extract.finalize();
    (prk.into(), hkdf)
}

/// `LabeledExpand(prk, label, info, L)` (RFC 9180 §4): HKDF-Expand with
/// `I2OSP(L, 2) || "HPKE-v1" || suite_id || label || info`, `info` given in parts.
fn labeled_expand(
    prk: &Hkdf<Sha256>,
    suite_id: &[u8],
    label: &[u8],
    info: &[&[u8]],
    out: &mut [u8],
) {
    // Every output here is 32 bytes or fewer, far below HKDF's 255 × 32.
    let length = u16::try_from(out.len())
        .unwrap_or_else(|_| unreachable!("no HPKE output is longer than 64 KiB"))
        .to_be_bytes();
    // At most three parts (the key schedule context: mode, psk_id_hash, info_hash).
    let mut labeled_info: [&[u8]; 7] = [&length, VERSION_LABEL, suite_id, label, &[], &[], &[]];
    labeled_info[4..4 + info.len()].copy_from_slice(info);
    prk.expand_multi_info(&labeled_info[..4 + info.len()], out)
        .unwrap_or_else(|_| unreachable!("no HPKE output is longer than 255 hash lengths"));
}

/// RFC 9180 single-shot `Open` in base mode with an agency's secret key, through the hpke crate:
/// the content key of one wrap, or `None` if the wrap does not open (altered, made for another
/// key, another `info` or another `aad`, or a small-order `enc`).
pub(crate) fn open(
    enc: &[u8; ENC_LEN],
    wrapped_key: &[u8; WRAPPED_KEY_LEN],
    secret: &SecretKey,
    info: &[u8],
    aad: &[u8],
) -> Option<Zeroizing<[u8; CONTENT_KEY_LEN]>> {
    // Both conversions accept any bytes of the right length, which the parser guarantees.
    let enc = <X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(enc).ok()?;
    let tag = AeadTag::<HpkeChaCha20Poly1305>::from_bytes(&wrapped_key[CONTENT_KEY_LEN..]).ok()?;
    let mut content_key = Zeroizing::new([0u8; CONTENT_KEY_LEN]);
    content_key.copy_from_slice(&wrapped_key[..CONTENT_KEY_LEN]);
    hpke::single_shot_open_inout_detached::<HpkeChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
        &OpModeR::Base,
        secret.hpke(),
        &enc,
        info,
        InOutBuf::from(content_key.as_mut_slice()),
        aad,
        &tag,
    )
    .ok()?;
    Some(content_key)
}

#[cfg(test)]
mod tests {
    use curve25519_dalek::MontgomeryPoint;
    use data_encoding::HEXLOWER;
    use hpke::{OpModeS, Serializable};
    use proptest::prelude::*;

    use super::*;
    use crate::keys::{KeyPair, PublicKey};

    fn hex<const N: usize>(text: &str) -> [u8; N] {
        HEXLOWER
            .decode(text.as_bytes())
            .unwrap()
            .try_into()
            .unwrap()
    }

    fn wrapped(content_key: &[u8; CONTENT_KEY_LEN], tag: &[u8; TAG_LEN]) -> [u8; WRAPPED_KEY_LEN] {
        let mut wrapped = [0u8; WRAPPED_KEY_LEN];
        wrapped[..CONTENT_KEY_LEN].copy_from_slice(content_key);
        wrapped[CONTENT_KEY_LEN..].copy_from_slice(tag);
        wrapped
    }

    /// RFC 9180, appendix A.2.1: DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305,
    /// base mode, and its first encryption (sequence number 0): the values copied from the
    /// RFC's text. The ephemeral key is the vector's, so the Diffie-Hellman is computed with
    /// curve25519-dalek (ring takes no given ephemeral key); every step after it is this
    /// module's.
    #[test]
    fn the_key_schedule_reproduces_rfc_9180_a_2_1() {
        let info = hex::<20>("4f6465206f6e2061204772656369616e2055726e");
        let sk_e = hex::<32>("f4ec9b33b792c372c1d2c2063507b684ef925b8c75a42dbcbf57d63ccd381600");
        let pk_e = hex::<32>("1afa08d3dec047a643885163f1180476fa7ddb54c6a8029ea33f95796bf2ac4a");
        let pk_r = hex::<32>("4310ee97d88cc1f088a5576c77ab0cf5c3ac797f3d95139c6c84b5429c59662a");
        let sk_r = hex::<32>("8057991eef8f1f1af18f4a9491d16a1ce333f695d4db8e38da75975c4478e0fb");
        let shared_secret =
            hex::<32>("0bbe78490412b4bbea4812666f7916932b828bba79942424abb65244930d69a7");
        let key = hex::<32>("ad2744de8e17f4ebba575b3f5f5a8fa1f69c2a07f6e7500bc60ca6e3e3ec1c91");
        let base_nonce = hex::<12>("5c4d98150661b848853b547f");
        let plaintext = hex::<29>("4265617574792069732074727574682c20747275746820626561757479");
        let aad = hex::<7>("436f756e742d30");
        let ciphertext = hex::<45>(
            "1c5250d8034ec2b784ba2cfd69dbdb8af406cfe3ff938e131f0def8c8b60b4db21993c62ce81883d2dd1b51a28",
        );

        assert_eq!(MontgomeryPoint::mul_base_clamped(sk_e).to_bytes(), pk_e);
        let dh = MontgomeryPoint(pk_r).mul_clamped(sk_e).to_bytes();
        let derived = kem_shared_secret(&dh, &pk_e, &pk_r);
        assert_eq!(*derived, shared_secret);
        let schedule = key_schedule(&derived, &info);
        assert_eq!(*schedule.key, key);
        assert_eq!(*schedule.base_nonce, base_nonce);
        let mut buffer = plaintext;
        let tag = seal_with_shared_secret(&derived, &info, &aad, &mut buffer);
        assert_eq!([&buffer[..], &tag[..]].concat(), ciphertext);

        // And the recipient's secret key opens it through the hpke crate.
        let secret = SecretKey::from_bytes(&sk_r);
        assert_eq!(secret.public_key().to_bytes(), pk_r);
        let opened = hpke::single_shot_open::<HpkeChaCha20Poly1305, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            secret.hpke(),
            &<X25519HkdfSha256 as hpke::Kem>::EncappedKey::from_bytes(&pk_e).unwrap(),
            &info,
            &ciphertext,
            &aad,
        )
        .unwrap();
        assert_eq!(opened, plaintext);
    }

    /// The recipient key pairs, made once: key generation is slow in an unoptimised build.
    fn recipients() -> &'static [KeyPair; 2] {
        static KEYS: std::sync::OnceLock<[KeyPair; 2]> = std::sync::OnceLock::new();
        KEYS.get_or_init(|| [KeyPair::generate(), KeyPair::generate()])
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// What this module seals, the hpke crate opens with the right key, `info` and `aad`,
        /// and refuses with another key, `info` or `aad`, or with any byte of `enc`, the
        /// wrapped key or its tag changed.
        #[test]
        fn hpke_opens_exactly_what_is_sealed(
            content_key in any::<[u8; CONTENT_KEY_LEN]>(),
            info in proptest::collection::vec(any::<u8>(), 0..64),
            aad in proptest::collection::vec(any::<u8>(), 0..96),
            flip_at in 0..ENC_LEN + WRAPPED_KEY_LEN,
            flip in 1..=u8::MAX,
        ) {
            let [right, wrong] = recipients();
            let mut buffer = content_key;
            let (enc, tag) = seal(&right.public().to_bytes(), &info, &aad, &mut buffer).unwrap();
            prop_assert_ne!(buffer, content_key);
            let wrapped_key = wrapped(&buffer, &tag);

            let opened = open(&enc, &wrapped_key, right.secret(), &info, &aad);
            prop_assert_eq!(opened.as_deref(), Some(&content_key));
            prop_assert!(open(&enc, &wrapped_key, wrong.secret(), &info, &aad).is_none());
            let other_info = [&info[..], b"x"].concat();
            prop_assert!(open(&enc, &wrapped_key, right.secret(), &other_info, &aad).is_none());
            let other_aad = [&aad[..], b"x"].concat();
            prop_assert!(open(&enc, &wrapped_key, right.secret(), &info, &other_aad).is_none());

            let (mut enc_altered, mut wrapped_altered) = (enc, wrapped_key);
            if flip_at < ENC_LEN {
                enc_altered[flip_at] ^= flip;
            } else {
                wrapped_altered[flip_at - ENC_LEN] ^= flip;
            }
            prop_assert!(open(&enc_altered, &wrapped_altered, right.secret(), &info, &aad).is_none());
        }

        /// The hpke crate's own sealing opens the same way: both sides speak RFC 9180, and
        /// a wrap made before this module (by hpke) still opens.
        #[test]
        fn what_hpke_seals_opens(
            content_key in any::<[u8; CONTENT_KEY_LEN]>(),
            info in proptest::collection::vec(any::<u8>(), 0..64),
            aad in proptest::collection::vec(any::<u8>(), 0..96),
        ) {
            let [right, wrong] = recipients();
            let recipient = <X25519HkdfSha256 as hpke::Kem>::PublicKey::from_bytes(
                &right.public().to_bytes(),
            )
            .unwrap();
            let mut buffer = content_key;
            let (enc, tag) = hpke::single_shot_seal_inout_detached::<
                HpkeChaCha20Poly1305,
                HkdfSha256,
                X25519HkdfSha256,
            >(&OpModeS::Base, &recipient, &info, InOutBuf::from(&mut buffer[..]), &aad)
            .unwrap();
            let enc: [u8; ENC_LEN] = enc.to_bytes().into();
            let tag: [u8; TAG_LEN] = tag.to_bytes().into();
            let wrapped_key = wrapped(&buffer, &tag);
            let opened = open(&enc, &wrapped_key, right.secret(), &info, &aad);
            prop_assert_eq!(opened.as_deref(), Some(&content_key));
            prop_assert!(open(&enc, &wrapped_key, wrong.secret(), &info, &aad).is_none());
        }
    }

    #[test]
    fn every_wrap_has_a_fresh_ephemeral_key() {
        let recipient = recipients()[0].public().to_bytes();
        let mut first = [7u8; CONTENT_KEY_LEN];
        let mut second = [7u8; CONTENT_KEY_LEN];
        let (enc_first, tag_first) = seal(&recipient, b"info", b"aad", &mut first).unwrap();
        let (enc_second, tag_second) = seal(&recipient, b"info", b"aad", &mut second).unwrap();
        assert_ne!(enc_first, enc_second);
        assert_ne!((first, tag_first), (second, tag_second));
    }

    /// A small-order recipient key gives the all-zero Diffie-Hellman value, which ring refuses
    /// (and `PublicKey` never holds such a key: it refuses the same points on parsing).
    #[test]
    fn a_small_order_key_is_refused() {
        for point in [[0u8; KEY_LEN], {
            let mut one = [0u8; KEY_LEN];
            one[0] = 1;
            one
        }] {
            assert!(PublicKey::from_bytes(point).is_err());
            let mut buffer = [0u8; CONTENT_KEY_LEN];
            assert_eq!(
                seal(&point, b"", b"", &mut buffer),
                Err(WrapError::RecipientKey)
            );
        }
    }
}
