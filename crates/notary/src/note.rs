//! Keys, checkpoints and cosignatures in C2SP's signed-note formats.
//!
//! - The notary signs checkpoints (<https://c2sp.org/tlog-checkpoint>) with an Ed25519 note key
//!   (signature type 0x01, `signed_note::StandardSigner`).
//! - A witness cosigns them (<https://c2sp.org/tlog-cosignature>, `cosignature/v1`, signature
//!   type 0x04): the signed message is `cosignature/v1\ntime <T>\n` followed by the checkpoint's
//!   body, and the signature is the 8-byte big-endian time followed by the 64-byte Ed25519
//!   signature. `signed_note` 0.2 has no cosignature type, so it is implemented here on its
//!   `Signer`/`Verifier` traits.
//!
//! Keys are signed-note keys: the secret one `PRIVATE+KEY+<name>+<id>+<base64>` in a file of
//! mode 0600 (written and read as every refbus secret key file is, `refbus_seal`), the public
//! one a verifier key `<name>+<id>+<base64>` that auditors and witnesses are given.

use std::path::Path;

use data_encoding::BASE64;
use ed25519_dalek::{Signer as _, SigningKey, Verifier as _, VerifyingKey};
use signed_note::{Note, Signer, StandardVerifier, Verifier, key_id};
use tlog_tiles::{Checkpoint, Hash};
use zeroize::Zeroizing;

const ALG_ED25519: u8 = 0x01;
const ALG_COSIGNATURE_V1: u8 = 0x04;

/// Why a key could not be used.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error(transparent)]
    File(#[from] refbus_seal::KeyFileError),
    #[error("{0}: not a signed-note key of the expected kind")]
    Format(String),
    #[error("{0} is not a valid key name (no spaces, no '+')")]
    Name(String),
}

/// What a key is for: the notary's checkpoints or a witness's cosignatures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyKind {
    Notary,
    Witness,
}

impl KeyKind {
    fn alg(self) -> u8 {
        match self {
            KeyKind::Notary => ALG_ED25519,
            KeyKind::Witness => ALG_COSIGNATURE_V1,
        }
    }
}

/// A secret key with its name.
pub struct NoteKey {
    name: String,
    kind: KeyKind,
    key: SigningKey,
}

impl std::fmt::Debug for NoteKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NoteKey({})", self.verifier_key())
    }
}

impl NoteKey {
    /// A new key from the operating system's randomness.
    pub fn generate(name: &str, kind: KeyKind) -> Result<NoteKey, KeyError> {
        if !signed_note::is_key_name_valid(name) {
            return Err(KeyError::Name(name.to_owned()));
        }
        let mut seed = Zeroizing::new([0u8; 32]);
        getrandom::fill(seed.as_mut_slice())
            .unwrap_or_else(|err| panic!("the operating system gives no randomness: {err}"));
        Ok(NoteKey {
            name: name.to_owned(),
            kind,
            key: SigningKey::from_bytes(&seed),
        })
    }

    /// The secret key's text (`PRIVATE+KEY+<name>+<id>+<base64(type || seed)>`).
    pub fn secret_text(&self) -> Zeroizing<String> {
        let mut private = Zeroizing::new(vec![self.kind.alg()]);
        private.extend_from_slice(self.key.as_bytes());
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{:08x}+{}",
            self.name,
            self.id(),
            BASE64.encode(&private)
        ))
    }

    /// Parses a secret key's text.
    pub fn from_secret_text(text: &str, kind: KeyKind) -> Result<NoteKey, KeyError> {
        let bad = || KeyError::Format("secret key".to_owned());
        let mut parts = text.trim().splitn(5, '+');
        let (Some("PRIVATE"), Some("KEY"), Some(name), Some(id), Some(key)) = (
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
            parts.next(),
        ) else {
            return Err(bad());
        };
        let bytes = Zeroizing::new(BASE64.decode(key.as_bytes()).map_err(|_| bad())?);
        if bytes.len() != 33 || bytes[0] != kind.alg() {
            return Err(bad());
        }
        let seed: [u8; 32] = bytes[1..].try_into().map_err(|_| bad())?;
        let key = NoteKey {
            name: name.to_owned(),
            kind,
            key: SigningKey::from_bytes(&seed),
        };
        if format!("{:08x}", key.id()) != id {
            return Err(bad());
        }
        Ok(key)
    }

    /// Writes a new key's secret to `path` (0600, never overwriting) and its verifier key to
    /// `path` with the extension `.vkey`.
    pub fn write_new(path: &Path, name: &str, kind: KeyKind) -> Result<NoteKey, KeyError> {
        let key = NoteKey::generate(name, kind)?;
        refbus_seal::write_secret_file(path, &key.secret_text())?;
        std::fs::write(path.with_extension("vkey"), key.verifier_key() + "\n").map_err(
            |source| refbus_seal::KeyFileError::Write {
                path: path.with_extension("vkey"),
                source,
            },
        )?;
        Ok(key)
    }

    /// Reads a secret key file (refused if others may read it).
    pub fn read(path: &Path, kind: KeyKind) -> Result<NoteKey, KeyError> {
        let text = refbus_seal::read_secret_file(path)?;
        NoteKey::from_secret_text(&text, kind)
            .map_err(|_| KeyError::Format(path.display().to_string()))
    }

    pub fn name(&self) -> &str {
        &self.name
    }

    fn public_bytes(&self) -> Vec<u8> {
        let mut bytes = vec![self.kind.alg()];
        bytes.extend_from_slice(self.key.verifying_key().as_bytes());
        bytes
    }

    fn id(&self) -> u32 {
        key_id(&self.name, &self.public_bytes())
    }

    /// The public verifier key (`<name>+<id>+<base64(type || public key)>`).
    pub fn verifier_key(&self) -> String {
        format!(
            "{}+{:08x}+{}",
            self.name,
            self.id(),
            BASE64.encode(&self.public_bytes())
        )
    }

    /// Signs a checkpoint of `size` leaves and root `root` for the log `origin` (notary keys).
    pub fn sign_checkpoint(&self, origin: &str, size: u64, root: Hash) -> Vec<u8> {
        let checkpoint = Checkpoint::new(origin, size, root, "")
            .unwrap_or_else(|_| unreachable!("an origin is checked non-empty at start"));
        let mut note = Note::new(&checkpoint.to_bytes(), &[])
            .unwrap_or_else(|_| unreachable!("a checkpoint is a well-formed note text"));
        note.add_sigs(&[self as &dyn Signer])
            .unwrap_or_else(|_| unreachable!("key names are checked when keys are made"));
        note.to_bytes()
    }

    /// Adds this witness's cosignature at `time` (seconds since the epoch) to a signed note.
    pub fn cosign(&self, note: &[u8], time: u64) -> Result<Vec<u8>, String> {
        let mut note = Note::from_bytes(note).map_err(|err| err.to_string())?;
        let signer = Cosigner { key: self, time };
        note.add_sigs(&[&signer as &dyn Signer])
            .map_err(|err| err.to_string())?;
        Ok(note.to_bytes())
    }
}

impl Signer for NoteKey {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id()
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        Ok(self.key.sign(msg).to_bytes().to_vec())
    }
}

struct Cosigner<'a> {
    key: &'a NoteKey,
    time: u64,
}

fn cosigned_message(time: u64, body: &[u8]) -> Vec<u8> {
    let mut message = format!("cosignature/v1\ntime {time}\n").into_bytes();
    message.extend_from_slice(body);
    message
}

impl Signer for Cosigner<'_> {
    fn name(&self) -> &str {
        &self.key.name
    }
    fn key_id(&self) -> u32 {
        self.key.id()
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, ed25519_dalek::SignatureError> {
        let signature = self.key.key.sign(&cosigned_message(self.time, msg));
        let mut out = self.time.to_be_bytes().to_vec();
        out.extend_from_slice(&signature.to_bytes());
        Ok(out)
    }
}

/// A witness's public key, verifying `cosignature/v1` signatures.
#[derive(Debug, Clone)]
pub struct CosignatureVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl CosignatureVerifier {
    /// Parses a witness's verifier key (signature type 0x04).
    pub fn new(vkey: &str) -> Result<Self, KeyError> {
        let bad = || KeyError::Format(vkey.to_owned());
        let mut parts = vkey.trim().splitn(3, '+');
        let (Some(name), Some(id), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let bytes = BASE64.decode(key.as_bytes()).map_err(|_| bad())?;
        if bytes.len() != 33 || bytes[0] != ALG_COSIGNATURE_V1 {
            return Err(bad());
        }
        let id = u32::from_str_radix(id, 16).map_err(|_| bad())?;
        if id != key_id(name, &bytes) {
            return Err(bad());
        }
        let public: [u8; 32] = bytes[1..].try_into().map_err(|_| bad())?;
        Ok(CosignatureVerifier {
            name: name.to_owned(),
            id,
            key: VerifyingKey::from_bytes(&public).map_err(|_| bad())?,
        })
    }
}

impl Verifier for CosignatureVerifier {
    fn name(&self) -> &str {
        &self.name
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        if sig.len() != 72 {
            return false;
        }
        let time = u64::from_be_bytes(sig[..8].try_into().unwrap_or_default());
        let Ok(signature) = ed25519_dalek::Signature::from_slice(&sig[8..]) else {
            return false;
        };
        self.key
            .verify(&cosigned_message(time, msg), &signature)
            .is_ok()
    }
}

/// The notary's public key.
pub fn notary_verifier(vkey: &str) -> Result<StandardVerifier, KeyError> {
    StandardVerifier::new(vkey.trim()).map_err(|_| KeyError::Format(vkey.to_owned()))
}

/// A checkpoint note read back: its body parsed, and which of the given keys signed it.
#[derive(Debug, Clone, PartialEq)]
pub struct SignedCheckpoint {
    pub origin: String,
    pub size: u64,
    pub root: Hash,
    /// The whole note as received.
    pub note: Vec<u8>,
}

/// Why a checkpoint note is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointError {
    #[error("the checkpoint is not a well-formed signed note: {0}")]
    Malformed(String),
    #[error("the checkpoint is not validly signed by the notary key {0}")]
    Unsigned(String),
    #[error("the checkpoint is for the log {found}, not {expected}")]
    Origin { expected: String, found: String },
}

/// Parses a checkpoint and checks the notary's signature on it. Returns it with the names of
/// the witnesses (among `witnesses`) whose cosignature on it is valid; a cosignature that
/// claims a known witness's key but does not verify counts as absent.
pub fn open_checkpoint(
    note: &[u8],
    origin: &str,
    notary: &StandardVerifier,
    witnesses: &[CosignatureVerifier],
) -> Result<(SignedCheckpoint, Vec<String>), CheckpointError> {
    let parsed =
        Note::from_bytes(note).map_err(|err| CheckpointError::Malformed(err.to_string()))?;
    let checkpoint = Checkpoint::from_bytes(parsed.text())
        .map_err(|err| CheckpointError::Malformed(err.to_string()))?;
    if checkpoint.origin() != origin {
        return Err(CheckpointError::Origin {
            expected: origin.to_owned(),
            found: checkpoint.origin().to_owned(),
        });
    }
    let notary_list = signed_note::VerifierList::new(vec![Box::new(notary.clone())]);
    parsed
        .verify(&notary_list)
        .map_err(|_| CheckpointError::Unsigned(notary.name().to_owned()))?;
    let mut cosigned = Vec::new();
    for witness in witnesses {
        let list = signed_note::VerifierList::new(vec![Box::new(witness.clone())]);
        if parsed.verify(&list).is_ok() {
            cosigned.push(witness.name.clone());
        }
    }
    Ok((
        SignedCheckpoint {
            origin: checkpoint.origin().to_owned(),
            size: checkpoint.size(),
            root: *checkpoint.hash(),
            note: note.to_vec(),
        },
        cosigned,
    ))
}

/// The body of a signed note (its text up to the blank line), `None` if malformed.
pub fn note_body(note: &[u8]) -> Option<Vec<u8>> {
    Note::from_bytes(note).ok().map(|note| note.text().to_vec())
}

/// `ours` with the signature lines of `theirs` added, if both sign the same body: how the
/// notary adds the witnesses' cosignatures to the checkpoint it serves. A signature by a key
/// (name and key ID) already present replaces the older one. `None` if the bodies differ.
pub fn merge_signatures(ours: &[u8], theirs: &[u8]) -> Option<Vec<u8>> {
    let split = |note: &[u8]| -> Option<(Vec<u8>, Vec<String>)> {
        let body = note_body(note)?;
        let text = std::str::from_utf8(note).ok()?;
        let (_, lines) = text.rsplit_once("\n\n")?;
        Some((body, lines.lines().map(str::to_owned).collect()))
    };
    let (body, mut lines) = split(ours)?;
    let (other, new) = split(theirs)?;
    if body != other {
        return None;
    }
    // A signature line is `— <name> <base64(key ID || signature)>`: the key is the name and
    // the first 4 bytes.
    let key = |line: &str| -> Option<(String, Vec<u8>)> {
        let (name, sig) = line.strip_prefix("— ")?.split_once(' ')?;
        let bytes = BASE64.decode(sig.as_bytes()).ok()?;
        Some((name.to_owned(), bytes.get(..4)?.to_vec()))
    };
    for line in new {
        let Some(id) = key(&line) else { continue };
        lines.retain(|existing| key(existing).as_ref() != Some(&id));
        lines.push(line);
    }
    let mut merged = body;
    merged.push(b'\n');
    for line in lines {
        merged.extend_from_slice(line.as_bytes());
        merged.push(b'\n');
    }
    Note::from_bytes(&merged).ok()?;
    Some(merged)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_checkpoint_is_signed_and_cosigned_and_keys_round_trip() {
        let notary = NoteKey::generate("refbus.example/log", KeyKind::Notary).unwrap();
        let witness = NoteKey::generate("inspektorat.example/w1", KeyKind::Witness).unwrap();
        let again = NoteKey::from_secret_text(&witness.secret_text(), KeyKind::Witness).unwrap();
        assert_eq!(again.verifier_key(), witness.verifier_key());
        assert!(NoteKey::from_secret_text(&witness.secret_text(), KeyKind::Notary).is_err());

        let note = notary.sign_checkpoint("refbus.example/log", 3, Hash([7; 32]));
        let cosigned = witness.cosign(&note, 1_700_000_000).unwrap();
        let verifier = notary_verifier(&notary.verifier_key()).unwrap();
        let witnesses = [CosignatureVerifier::new(&witness.verifier_key()).unwrap()];
        let (checkpoint, names) =
            open_checkpoint(&cosigned, "refbus.example/log", &verifier, &witnesses).unwrap();
        assert_eq!(checkpoint.size, 3);
        assert_eq!(names, vec!["inspektorat.example/w1".to_owned()]);
        let (_, none) =
            open_checkpoint(&note, "refbus.example/log", &verifier, &witnesses).unwrap();
        assert!(none.is_empty());
        let other = NoteKey::generate("refbus.example/log", KeyKind::Notary).unwrap();
        let forged = other.sign_checkpoint("refbus.example/log", 3, Hash([7; 32]));
        assert!(matches!(
            open_checkpoint(&forged, "refbus.example/log", &verifier, &witnesses),
            Err(CheckpointError::Unsigned(_))
        ));
    }
}
