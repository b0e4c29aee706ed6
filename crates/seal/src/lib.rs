//! refbus-seal: victims' identity data and notes, sealed for exactly the agencies that may read them.
//!
//! A referral carries the identity of the person it serves (name, NIK, address, phone, narrative)
//! and free-text notes. They travel on the bus sealed for the sending and the receiving agency:
//! the router, the dashboard and auditors see the envelope and its list of recipients, never the
//! contents. Each agency holds an X25519 key pair; the registry publishes the public keys.
//!
//! ```
//! use refbus_core::{AgencyId, ReferralId};
//! use refbus_seal::{Context, KeyPair, Keyring};
//!
//! let dinsos = AgencyId::new("maros-dinsos").unwrap();
//! let polres = AgencyId::new("polres-maros").unwrap();
//! let (dinsos_keys, polres_keys) = (KeyPair::generate(), KeyPair::generate());
//! let registry = [
//!     (dinsos.clone(), dinsos_keys.public().clone()),
//!     (polres.clone(), polres_keys.public().clone()),
//! ];
//! let sender = Keyring::new(dinsos.clone(), dinsos_keys.into_secret(), registry.clone()).unwrap();
//! let receiver = Keyring::new(polres.clone(), polres_keys.into_secret(), registry).unwrap();
//!
//! let referral = ReferralId::from_bytes([7; 16]);
//! let context = Context::Identity(&referral);
//! let sealed = sender.seal_for(&[&dinsos, &polres], b"{\"name\":\"...\"}", context).unwrap();
//! assert_eq!(receiver.open(&sealed, context).unwrap(), b"{\"name\":\"...\"}");
//! ```
//!
//! # Layout
//!
//! - [`keys`]: key pairs, their base64 text forms, key ids, secret key files.
//! - [`Batch`] (one content key wrapped for every key of the recipients), [`seal()`],
//!   [`open_with()`]: the cryptography; [`Keyring`]: the same with an adapter's keys (its
//!   current and earlier secret keys, every agency's online and backup public keys).
//! - `wrap`: one HPKE key wrap, sealed with ring's X25519 and an RFC 9180 key schedule written
//!   there (faster than the hpke crate's X25519), opened with the hpke crate (ring has no static
//!   X25519 keys); the bytes are RFC 9180's either way, tested against its test vector.
//! - [`envelope`](crate::envelope_recipients): the bytes, parsed with every length checked.
//! - [`Context`]: the associated data that binds a payload to its referral.
//! - [`signing`]: the Ed25519 signing key files each agency (and the router) signs records with.
//!
//! # Scheme
//!
//! A fresh random 32-byte *content key* encrypts the plaintext once with ChaCha20-Poly1305
//! (RFC 8439) under a fresh random 12-byte nonce. The content key is then *wrapped* for each
//! key of each recipient (its online key, and its backup key where the registry lists one)
//! with HPKE (RFC 9180) single-shot `Seal` in base mode, suite
//! DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / ChaCha20-Poly1305 (KEM 0x0020, KDF 0x0001,
//! AEAD 0x0003), with
//!
//! - `info` = `"refbus-seal/v1"`, one zero byte, then the recipient's agency id in ASCII, so a
//!   wrap only opens as the agency it was made for;
//! - `aad` = the *wrap context*: for refbus's payloads the referral,
//!   `refbus/v1/referral/<referral id>` ([`Context::wrap_aad`]), which is not stored: the opener
//!   supplies it again. One content key may seal several payloads of one referral (a create's
//!   identity, note and consent justification: a [`Batch`]), so the wraps are made once per
//!   call, not once per payload; each payload has its own nonce.
//!
//! The content's associated data is the whole envelope header (every byte before the
//! ciphertext, see below) followed by the payload's own context (for example
//! `refbus/v1/identity/<referral id>`, see [`Context::aad`]). Changing any byte of the envelope,
//! the recipient list included, or opening in another context, fails authentication.
//!
//! The scheme keeps outsiders out: anyone without one of the recipients' secret keys learns
//! nothing but the lengths and the recipients. It does not authenticate the sender (base mode,
//! no signature): any holder of the public keys can seal, and each recipient can re-seal.
//! Who published a payload is established by the bus (per-agency credentials and subject
//! permissions) and by the hash-chained event log, not by the envelope.
//!
//! # Envelope format, version 2
//!
//! All lengths are in bytes; there are no multi-byte integers.
//!
//! ```text
//! envelope  = version:1 (= 0x02)
//!             count:1 (1..=16, the number of wraps)
//!             wrap × count
//!             nonce:12
//!             ciphertext (the plaintext's length) tag:16
//! wrap      = id_len:1 (1..=48) agency_id:id_len (an agency id, ASCII)
//!             key_id:8 (the first 8 bytes of SHA-256 of the recipient's 32-byte public key)
//!             enc:32 (HPKE encapsulated key)
//!             wrapped_key:48 (the content key encrypted by HPKE, then its 16-byte tag)
//! header    = every byte from `version` through `nonce`
//! ```
//!
//! An agency may have several wraps (its online key, then its backup key); they are adjacent
//! and each names another key. Agencies appear in the envelope (each at its first wrap) in the
//! same order as in [`SealedPayload::recipients`](refbus_core::referral::SealedPayload); a
//! reader refuses a payload whose list differs from its envelope's, an unknown version, an
//! agency's wraps apart or for the same key twice, and any length that runs past the end. The
//! `key_id` says which key each wrap is for: an agency that rotated its key opens old payloads
//! with the old key it kept, and one holding none of the keys is told so
//! ([`OpenError::WrongKey`]) instead of a bare authentication failure.
//!
//! Version 1 (what refbus wrote before backup keys) is the same layout with one wrap per agency,
//! each wrap bound to the payload's own context instead of the referral; it is still read.
//!
//! Keys travel as standard base64 with padding (44 characters) of their 32 bytes (RFC 7748
//! encoding); a secret key file holds that text and a newline, with mode 0600. A secret key file
//! that its group or anyone else may read is refused when it is read ([`KeyFileError::Exposed`]):
//! every component starts from its key files, so none starts with an exposed key.

pub mod keys;

// Only for its `precomputed-tables` feature, which hpke's X25519 then uses (see Cargo.toml).
use curve25519_dalek as _;

mod context;
mod envelope;
mod keyring;
mod seal;
pub mod signing;
mod wrap;

pub use context::Context;
pub use envelope::{
    MAX_RECIPIENTS, MAX_WRAPS, MalformedEnvelope, check_envelope, envelope_keys,
    envelope_recipients,
};
pub use keyring::{Keyring, KeyringError, open_in_contexts};
pub use keys::{
    KeyError, KeyFileError, KeyId, KeyPair, PublicKey, SecretKey, exposed_mode, read_secret_file,
    secret_key_file_name, write_secret_file,
};
pub use seal::{Batch, OpenError, Recipient, SealError, open, open_with, seal};
