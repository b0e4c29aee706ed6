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
//! let aad = Context::Identity(&referral).aad();
//! let sealed = sender.seal_for(&[&dinsos, &polres], b"{\"name\":\"...\"}", &aad).unwrap();
//! assert_eq!(receiver.open(&sealed, &aad).unwrap(), b"{\"name\":\"...\"}");
//! ```
//!
//! # Layout
//!
//! - [`keys`]: key pairs, their base64 text forms, key ids, secret key files.
//! - [`seal()`] and [`open()`]: the cryptography; [`Keyring`]: the same with an adapter's keys.
//! - [`envelope`](crate::envelope_recipients): the bytes, parsed with every length checked.
//! - [`Context`]: the associated data that binds a payload to its referral.
//! - [`signing`]: the Ed25519 signing key files each agency (and the router) signs records with.
//!
//! # Scheme
//!
//! A fresh random 32-byte *content key* encrypts the plaintext once with ChaCha20-Poly1305
//! (RFC 8439) under a fresh random 12-byte nonce. The content key is then *wrapped* for each
//! recipient with HPKE (RFC 9180) single-shot `Seal` in base mode, suite
//! DHKEM(X25519, HKDF-SHA256) / HKDF-SHA256 / ChaCha20-Poly1305 (KEM 0x0020, KDF 0x0001,
//! AEAD 0x0003), with
//!
//! - `info` = `"refbus-seal/v1"`, one zero byte, then the recipient's agency id in ASCII, so a
//!   wrap only opens as the agency it was made for;
//! - `aad` = the caller's context (for example `refbus/v1/identity/<referral id>`, see
//!   [`Context`]), which is not stored: the opener supplies it again.
//!
//! The content's associated data is the whole envelope header (every byte before the
//! ciphertext, see below) followed by the caller's context. Changing any byte of the envelope,
//! the recipient list included, or opening in another context, fails authentication.
//!
//! The scheme keeps outsiders out: anyone without one of the recipients' secret keys learns
//! nothing but the lengths and the recipients. It does not authenticate the sender (base mode,
//! no signature): any holder of the public keys can seal, and each recipient can re-seal.
//! Who published a payload is established by the bus (per-agency credentials and subject
//! permissions) and by the hash-chained event log, not by the envelope.
//!
//! # Envelope format, version 1
//!
//! All lengths are in bytes; there are no multi-byte integers.
//!
//! ```text
//! envelope  = version:1 (= 0x01)
//!             count:1 (1..=8, the number of recipients)
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
//! Agency ids appear in the envelope in the same order as in
//! [`SealedPayload::recipients`](refbus_core::referral::SealedPayload); a reader refuses a
//! payload whose list differs from its envelope's, an unknown version, a duplicate agency, and
//! any length that runs past the end. The `key_id` lets an agency holding the wrong or a
//! replaced key be told so ([`OpenError::WrongKey`]) instead of a bare authentication failure.
//!
//! Keys travel as standard base64 with padding (44 characters) of their 32 bytes (RFC 7748
//! encoding); a secret key file holds that text and a newline, with mode 0600.

pub mod keys;

mod context;
mod envelope;
mod keyring;
mod seal;
pub mod signing;

pub use context::Context;
pub use envelope::{MAX_RECIPIENTS, MalformedEnvelope, check_envelope, envelope_recipients};
pub use keyring::{Keyring, KeyringError};
pub use keys::{
    KeyError, KeyFileError, KeyId, KeyPair, PublicKey, SecretKey, secret_key_file_name,
};
pub use seal::{OpenError, SealError, open, seal};
