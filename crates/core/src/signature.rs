//! Signatures on events: which component wrote a record, proved with Ed25519.
//!
//! Every event is signed by the component that wrote it: an agency's adapter with the agency's
//! signing key, the router with the router's. The signature covers the subject the record is
//! stored on and the event's canonical bytes (see [`crate::chain`]), so a record can be neither
//! re-attributed nor moved to another referral's subject. The exact bytes signed are
//!
//! ```text
//! "refbus.v1.event-signature\n" || subject (UTF-8) || "\n" || canonical event bytes
//! ```
//!
//! and an auditor in any language verifies them with the public key the registry lists.
//! Signing is pure computation on a key the caller holds; making and storing keys is the
//! `seal` crate's business.

use std::collections::HashMap;
use std::fmt;

use data_encoding::BASE64;
use ed25519_dalek::{Signer as _, Verifier as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};

use crate::event::Actor;
use crate::ids::AgencyId;

/// What is prepended to every signed message, so a refbus signature can never be mistaken for
/// a signature over anything else.
pub const DOMAIN: &[u8] = b"refbus.v1.event-signature\n";

/// The bytes an event's signature covers.
pub fn signed_bytes(subject: &str, event_bytes: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(DOMAIN.len() + subject.len() + 1 + event_bytes.len());
    out.extend_from_slice(DOMAIN);
    out.extend_from_slice(subject.as_bytes());
    out.push(b'\n');
    out.extend_from_slice(event_bytes);
    out
}

/// Who signed a record: an agency (its adapter) or the router.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Signer {
    Agency(AgencyId),
    Router,
}

impl Signer {
    /// The signer an event's author must have: an agency signs what its operators do, the
    /// router what it records on a clock.
    pub fn of(actor: &Actor) -> Signer {
        match actor {
            Actor::Agency { agency, .. } => Signer::Agency(agency.clone()),
            Actor::Router => Signer::Router,
        }
    }
}

impl fmt::Display for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Signer::Agency(agency) => write!(f, "agency:{agency}"),
            Signer::Router => f.write_str("router"),
        }
    }
}

impl Serialize for Signer {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Signer {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        if text == "router" {
            return Ok(Signer::Router);
        }
        text.strip_prefix("agency:")
            .and_then(|agency| AgencyId::new(agency).ok())
            .map(Signer::Agency)
            .ok_or_else(|| serde::de::Error::custom("a signer is `router` or `agency:<agency id>`"))
    }
}

/// A short fingerprint of a signing public key: the first 8 bytes of its SHA-256, in hex.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub [u8; 8]);

impl KeyId {
    pub fn of(public: &[u8; 32]) -> KeyId {
        let digest = Sha256::digest(public);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

impl Serialize for KeyId {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for KeyId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let mut id = [0u8; 8];
        hex::decode_to_slice(&text, &mut id)
            .map_err(|_| serde::de::Error::custom("a key id is 16 hex digits"))?;
        Ok(KeyId(id))
    }
}

/// A record's signature: who signed, with which key, and the Ed25519 signature itself.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub by: Signer,
    pub key: KeyId,
    #[serde(with = "base64_signature")]
    pub value: [u8; 64],
}

mod base64_signature {
    use super::BASE64;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &[u8; 64], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&BASE64.encode(value))
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<[u8; 64], D::Error> {
        let text = String::deserialize(d)?;
        BASE64
            .decode(text.as_bytes())
            .ok()
            .and_then(|bytes| <[u8; 64]>::try_from(bytes).ok())
            .ok_or_else(|| serde::de::Error::custom("a signature is 64 bytes in standard base64"))
    }
}

/// Why a text is not a signing key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a signing key is 32 bytes in standard base64 (44 characters ending in '=')")]
    Malformed,
    #[error("this is not a valid Ed25519 public key")]
    NotAPoint,
}

// === impl SigningKey ===

/// A component's secret signing key. Never printed.
#[derive(Clone)]
pub struct SigningKey {
    key: ed25519_dalek::SigningKey,
    signer: Signer,
    id: KeyId,
}

impl SigningKey {
    /// The key made from a 32-byte secret seed, signing as `signer`.
    pub fn from_seed(seed: &[u8; 32], signer: Signer) -> SigningKey {
        let key = ed25519_dalek::SigningKey::from_bytes(seed);
        let id = KeyId::of(key.verifying_key().as_bytes());
        SigningKey { key, signer, id }
    }

    pub fn signer(&self) -> &Signer {
        &self.signer
    }

    pub fn verifying_key(&self) -> VerifyingKey {
        VerifyingKey {
            key: self.key.verifying_key(),
            id: self.id,
        }
    }

    /// Signs an event stored on `subject` whose canonical bytes are `event_bytes`.
    pub fn sign(&self, subject: &str, event_bytes: &[u8]) -> Signature {
        Signature {
            by: self.signer.clone(),
            key: self.id,
            value: self
                .key
                .sign(&signed_bytes(subject, event_bytes))
                .to_bytes(),
        }
    }
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "SigningKey({} {}, secret not shown)",
            self.signer, self.id
        )
    }
}

// === impl VerifyingKey ===

/// A public signing key, as the registry lists it.
#[derive(Clone, PartialEq, Eq)]
pub struct VerifyingKey {
    key: ed25519_dalek::VerifyingKey,
    id: KeyId,
}

impl VerifyingKey {
    pub fn from_base64(text: &str) -> Result<VerifyingKey, KeyError> {
        let bytes: [u8; 32] = BASE64
            .decode(text.trim().as_bytes())
            .ok()
            .and_then(|bytes| bytes.try_into().ok())
            .ok_or(KeyError::Malformed)?;
        let key =
            ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| KeyError::NotAPoint)?;
        // A weak (small-order) key would accept forged signatures.
        if key.is_weak() {
            return Err(KeyError::NotAPoint);
        }
        Ok(VerifyingKey {
            key,
            id: KeyId::of(&bytes),
        })
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(self.key.as_bytes())
    }

    pub fn id(&self) -> KeyId {
        self.id
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.id)
    }
}

// === impl Signers ===

/// Why a signature is not believed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the record is not signed")]
    Missing,
    #[error("it is signed by {signed_by}, but its author is {author}")]
    WrongSigner { signed_by: Signer, author: Signer },
    #[error("it is signed with key {key}, which the registry does not list for {signer}")]
    UnknownKey { signer: Signer, key: KeyId },
    #[error(
        "the signature does not match the record (altered, moved to another subject, or forged)"
    )]
    Invalid,
}

/// The public signing keys of a deployment: every agency's and the router's (several, when a
/// key was rotated or replicas sign with their own).
#[derive(Debug, Clone, Default)]
pub struct Signers {
    keys: HashMap<Signer, Vec<VerifyingKey>>,
}

impl Signers {
    pub fn new() -> Signers {
        Signers::default()
    }

    /// Adds a key `signer` may sign with.
    pub fn add(&mut self, signer: Signer, key: VerifyingKey) {
        let keys = self.keys.entry(signer).or_default();
        if !keys.contains(&key) {
            keys.push(key);
        }
    }

    pub fn with(mut self, signer: Signer, key: VerifyingKey) -> Signers {
        self.add(signer, key);
        self
    }

    /// The keys the registry lists: each agency's and the router's.
    pub fn from_registry(
        registry: &crate::registry::Registry,
    ) -> Result<Signers, (Signer, KeyError)> {
        let mut signers = Signers::new();
        for agency in registry.agencies.values() {
            let signer = Signer::Agency(agency.id.clone());
            for text in &agency.signing_keys {
                let key = VerifyingKey::from_base64(text).map_err(|err| (signer.clone(), err))?;
                signers.add(signer.clone(), key);
            }
        }
        for text in &registry.router_signing_keys {
            let key = VerifyingKey::from_base64(text).map_err(|err| (Signer::Router, err))?;
            signers.add(Signer::Router, key);
        }
        Ok(signers)
    }

    /// Whether `signer` has at least one key.
    pub fn knows(&self, signer: &Signer) -> bool {
        self.keys.get(signer).is_some_and(|keys| !keys.is_empty())
    }

    /// Whether `key` is one of `signer`'s listed keys.
    pub fn accepts(&self, signer: &Signer, key: &VerifyingKey) -> bool {
        self.keys.get(signer).is_some_and(|keys| keys.contains(key))
    }

    /// Checks that `signature` was made by `author` over `subject` and `event_bytes`.
    pub fn verify(
        &self,
        author: &Signer,
        signature: Option<&Signature>,
        subject: &str,
        event_bytes: &[u8],
    ) -> Result<(), SignatureError> {
        let key = self.key_for(author, signature)?;
        let signature = signature.ok_or(SignatureError::Missing)?;
        let value = ed25519_dalek::Signature::from_bytes(&signature.value);
        key.key
            .verify(&signed_bytes(subject, event_bytes), &value)
            .map_err(|_| SignatureError::Invalid)
    }

    /// [`Signers::verify`] of every item, with the verdicts in order: what a reader of many
    /// records (a rebuild, a replay, an audit) calls. The signatures whose signer and key are
    /// known are checked together, [`BATCH`] at a time, with Ed25519 batch verification
    /// (about 2.5 times less CPU per signature than one at a time); a batch that fails is
    /// checked again one signature at a time, so each verdict is that of [`Signers::verify`]
    /// for any signature made by the Ed25519 algorithm. (The one difference, documented in
    /// docs/ARCHITECTURE.md: a signature its key's holder built on purpose with a small-order
    /// component may pass a batch; it still proves that holder signed these exact bytes.)
    pub fn verify_all(&self, items: &[ToVerify<'_>]) -> Vec<Result<(), SignatureError>> {
        let mut verdicts = Vec::with_capacity(items.len());
        // Those whose signer and key are known, for the batches: (index, key, signature).
        let mut known = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let found = self.key_for(item.author, item.signature);
            if let (Ok(key), Some(signature)) = (&found, item.signature) {
                known.push((
                    i,
                    key.key,
                    ed25519_dalek::Signature::from_bytes(&signature.value),
                ));
            }
            verdicts.push(found.map(drop));
        }
        for chunk in known.chunks(BATCH) {
            let messages: Vec<Vec<u8>> = chunk
                .iter()
                .map(|&(i, _, _)| signed_bytes(items[i].subject, items[i].event_bytes))
                .collect();
            let one_at_a_time = |verdicts: &mut Vec<Result<(), SignatureError>>| {
                for ((i, key, signature), message) in chunk.iter().zip(&messages) {
                    verdicts[*i] = key
                        .verify(message, signature)
                        .map_err(|_| SignatureError::Invalid);
                }
            };
            // One signature alone: the single check is cheaper than a batch of one.
            if chunk.len() == 1 {
                one_at_a_time(&mut verdicts);
                continue;
            }
            let slices: Vec<&[u8]> = messages.iter().map(Vec::as_slice).collect();
            let signatures: Vec<_> = chunk.iter().map(|(_, _, signature)| *signature).collect();
            let keys: Vec<_> = chunk.iter().map(|(_, key, _)| *key).collect();
            if ed25519_dalek::verify_batch(&slices, &signatures, &keys).is_err() {
                one_at_a_time(&mut verdicts);
            }
        }
        verdicts
    }

    /// The listed key `signature` names, if it is `author`'s signature at all.
    fn key_for(
        &self,
        author: &Signer,
        signature: Option<&Signature>,
    ) -> Result<&VerifyingKey, SignatureError> {
        let signature = signature.ok_or(SignatureError::Missing)?;
        if &signature.by != author {
            return Err(SignatureError::WrongSigner {
                signed_by: signature.by.clone(),
                author: author.clone(),
            });
        }
        let key = self
            .keys
            .get(author)
            .and_then(|keys| keys.iter().find(|key| key.id == signature.key))
            .ok_or_else(|| SignatureError::UnknownKey {
                signer: author.clone(),
                key: signature.key,
            })?;
        Ok(key)
    }
}

/// Signatures verified together by [`Signers::verify_all`], at most: past a few hundred, a
/// larger batch saves little more per signature, and a failed batch is checked again alone.
pub const BATCH: usize = 256;

/// One signature for [`Signers::verify_all`]: the arguments of [`Signers::verify`].
#[derive(Debug, Clone, Copy)]
pub struct ToVerify<'a> {
    pub author: &'a Signer,
    pub signature: Option<&'a Signature>,
    pub subject: &'a str,
    pub event_bytes: &'a [u8],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agency(name: &str) -> Signer {
        Signer::Agency(AgencyId::new(name).unwrap())
    }

    #[test]
    fn a_signature_verifies_only_for_its_signer_subject_and_bytes() {
        let key = SigningKey::from_seed(&[7; 32], agency("maros-dinsos"));
        let signers = Signers::new().with(agency("maros-dinsos"), key.verifying_key());
        let signature = key.sign("refbus.v1.ref.a.b.c", b"{\"x\":1}");
        let author = agency("maros-dinsos");
        assert_eq!(
            signers.verify(
                &author,
                Some(&signature),
                "refbus.v1.ref.a.b.c",
                b"{\"x\":1}"
            ),
            Ok(())
        );
        assert_eq!(
            signers.verify(
                &author,
                Some(&signature),
                "refbus.v1.ref.a.b.d",
                b"{\"x\":1}"
            ),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            signers.verify(
                &author,
                Some(&signature),
                "refbus.v1.ref.a.b.c",
                b"{\"x\":2}"
            ),
            Err(SignatureError::Invalid)
        );
        assert_eq!(
            signers.verify(&author, None, "refbus.v1.ref.a.b.c", b"{\"x\":1}"),
            Err(SignatureError::Missing)
        );
        assert!(matches!(
            signers.verify(&agency("maros-dp3a"), Some(&signature), "s", b""),
            Err(SignatureError::WrongSigner { .. })
        ));
    }

    #[test]
    fn a_key_the_registry_does_not_list_is_refused() {
        let listed = SigningKey::from_seed(&[1; 32], Signer::Router);
        let other = SigningKey::from_seed(&[2; 32], Signer::Router);
        let signers = Signers::new().with(Signer::Router, listed.verifying_key());
        let signature = other.sign("s", b"e");
        assert!(matches!(
            signers.verify(&Signer::Router, Some(&signature), "s", b"e"),
            Err(SignatureError::UnknownKey { .. })
        ));
    }

    #[test]
    fn verifying_many_gives_each_signature_the_verdict_it_gets_alone() {
        let dinsos = SigningKey::from_seed(&[4; 32], agency("maros-dinsos"));
        let dp3a = SigningKey::from_seed(&[5; 32], agency("maros-dp3a"));
        let unlisted = SigningKey::from_seed(&[6; 32], agency("maros-dinsos"));
        let signers = Signers::new()
            .with(agency("maros-dinsos"), dinsos.verifying_key())
            .with(agency("maros-dp3a"), dp3a.verifying_key());
        let (dinsos_id, dp3a_id) = (agency("maros-dinsos"), agency("maros-dp3a"));
        let subjects: Vec<String> = (0..516).map(|i| format!("refbus.v1.ref.a.b.{i}")).collect();
        let bytes: Vec<Vec<u8>> = (0..516)
            .map(|i| format!("{{\"x\":{i}}}").into_bytes())
            .collect();
        let mut signatures: Vec<Option<Signature>> = (0..516)
            .map(|i| {
                let key = if i % 3 == 0 { &dp3a } else { &dinsos };
                Some(key.sign(&subjects[i], &bytes[i]))
            })
            .collect();
        let authors: Vec<&Signer> = (0..516)
            .map(|i| if i % 3 == 0 { &dp3a_id } else { &dinsos_id })
            .collect();
        // Among the batches: bytes altered, one missing, one by the wrong signer, one with an
        // unlisted key; the 513 known signatures make two full batches and one alone.
        signatures[7] = Some(dinsos.sign(&subjects[7], b"{\"x\":\"other\"}"));
        signatures[300] = None;
        signatures[301] = Some(dp3a.sign(&subjects[301], &bytes[301]));
        signatures[302] = Some(unlisted.sign(&subjects[302], &bytes[302]));
        let items: Vec<ToVerify<'_>> = (0..516)
            .map(|i| ToVerify {
                author: authors[i],
                signature: signatures[i].as_ref(),
                subject: &subjects[i],
                event_bytes: &bytes[i],
            })
            .collect();
        let alone: Vec<_> = items
            .iter()
            .map(|item| signers.verify(item.author, item.signature, item.subject, item.event_bytes))
            .collect();
        assert_eq!(signers.verify_all(&items), alone);
        assert_eq!(alone[7], Err(SignatureError::Invalid));
        assert_eq!(alone[300], Err(SignatureError::Missing));
        assert!(matches!(
            alone[301],
            Err(SignatureError::WrongSigner { .. })
        ));
        assert!(matches!(alone[302], Err(SignatureError::UnknownKey { .. })));
        assert_eq!(alone.iter().filter(|verdict| verdict.is_ok()).count(), 512);
        // A whole batch of good signatures, then the same with one altered in the middle.
        let good: Vec<ToVerify<'_>> = items[8..264].to_vec();
        assert!(signers.verify_all(&good).iter().all(Result::is_ok));
        assert_eq!(
            signers.verify_all(&items[..8])[7],
            Err(SignatureError::Invalid)
        );
    }

    #[test]
    fn signatures_and_keys_round_trip_as_text() {
        let key = SigningKey::from_seed(&[3; 32], agency("polres-maros"));
        let signature = key.sign("s", b"e");
        let json = serde_json::to_string(&signature).unwrap();
        assert!(json.contains("\"by\":\"agency:polres-maros\""), "{json}");
        assert_eq!(serde_json::from_str::<Signature>(&json).unwrap(), signature);
        let public = key.verifying_key();
        assert_eq!(
            VerifyingKey::from_base64(&public.to_base64()).unwrap(),
            public
        );
        assert_eq!(VerifyingKey::from_base64("AAAA"), Err(KeyError::Malformed));
        assert!(!format!("{key:?}").contains(&hex::encode([3u8; 32])));
    }
}
