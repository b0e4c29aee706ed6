//! Agency key pairs: X25519 keys, their base64 text forms, key ids, and secret key files.

use std::fmt;
use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};

use data_encoding::BASE64;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, Serializable};
use refbus_core::AgencyId;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use sha2::{Digest, Sha256};
use zeroize::{Zeroize, Zeroizing};

/// The length of an X25519 public or secret key in bytes.
pub const KEY_LEN: usize = 32;

/// A secret key file holds one line of base64; anything much longer is not a key file.
const MAX_KEY_FILE_LEN: u64 = 1024;

type HpkeSecretKey = <X25519HkdfSha256 as Kem>::PrivateKey;

/// Why a text or byte string is not a key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("a {kind} must be standard base64 (A-Z, a-z, 0-9, '+', '/', '=' padding): {reason}")]
    NotBase64 { kind: &'static str, reason: String },
    #[error("a {kind} is {KEY_LEN} bytes (44 base64 characters), but this one is {found} bytes")]
    WrongLength { kind: &'static str, found: usize },
    #[error(
        "this public key is one of the few X25519 points that would let anyone read what is \
         sealed for it (a placeholder such as all zeros?); generate a real key pair"
    )]
    WeakPublicKey,
}

/// Why a secret key file could not be written or read.
#[derive(Debug, thiserror::Error)]
pub enum KeyFileError {
    #[error("{path} already exists; refbus never overwrites a secret key (move it away first)")]
    AlreadyExists { path: PathBuf },
    #[error("cannot write the secret key file {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    #[error("cannot read the secret key file {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path} is larger than {MAX_KEY_FILE_LEN} bytes: it is not a refbus secret key file")]
    TooLarge { path: PathBuf },
    #[error("{path} does not hold a secret key: {source}")]
    Invalid { path: PathBuf, source: KeyError },
    #[error(
        "{path} is a secret key that others may read (mode {mode:04o}): refbus refuses to use \
         it. Make it readable by its owner only (`chmod 600 {path}`), and if anyone else could \
         have copied it, rotate the key (`refbus keys rotate`)"
    )]
    Exposed { path: PathBuf, mode: u32 },
}

// === impl KeyId ===

/// A short public fingerprint of a public key: the first 8 bytes of its SHA-256, shown as hex.
///
/// Envelopes record it beside each key wrap so that an agency holding the wrong (or an old) key
/// is told so plainly, and operators can compare keys over the phone.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct KeyId(pub(crate) [u8; 8]);

impl KeyId {
    pub fn as_bytes(&self) -> &[u8; 8] {
        &self.0
    }
}

impl fmt::Display for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for byte in self.0 {
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

// === impl PublicKey ===

/// An agency's public key: anyone may seal for it; the registry publishes it.
///
/// Only its bytes: sealing hands them to ring's X25519 (see `wrap`), and opening needs none.
#[derive(Clone, PartialEq, Eq)]
pub struct PublicKey {
    bytes: [u8; KEY_LEN],
}

impl PublicKey {
    pub fn from_bytes(bytes: [u8; KEY_LEN]) -> Result<PublicKey, KeyError> {
        if is_small_order(&bytes) {
            return Err(KeyError::WeakPublicKey);
        }
        Ok(PublicKey { bytes })
    }

    pub fn to_bytes(&self) -> [u8; KEY_LEN] {
        self.bytes
    }

    pub fn from_base64(text: &str) -> Result<PublicKey, KeyError> {
        let bytes = decode_key("public key", text)?;
        PublicKey::from_bytes(*bytes)
    }

    pub fn to_base64(&self) -> String {
        BASE64.encode(&self.bytes)
    }

    pub fn key_id(&self) -> KeyId {
        let digest = Sha256::digest(self.bytes);
        let mut id = [0u8; 8];
        id.copy_from_slice(&digest[..8]);
        KeyId(id)
    }
}

impl fmt::Display for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_base64())
    }
}

impl fmt::Debug for PublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PublicKey({})", self.to_base64())
    }
}

impl std::str::FromStr for PublicKey {
    type Err = KeyError;

    fn from_str(text: &str) -> Result<Self, KeyError> {
        PublicKey::from_base64(text)
    }
}

impl Serialize for PublicKey {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_base64())
    }
}

impl<'de> Deserialize<'de> for PublicKey {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        PublicKey::from_base64(&text).map_err(serde::de::Error::custom)
    }
}

/// The X25519 points of small order (RFC 7748 §6.1), on the curve and its twist: 0, 1, p - 1,
/// p and p + 1 (non-canonical 0 and 1), and the two points of order 8. Sealing for one yields
/// an all-zero shared secret.
const SMALL_ORDER: [[u8; KEY_LEN]; 7] = {
    const fn repeat_then(first: u8, rest: u8, last: u8) -> [u8; KEY_LEN] {
        let mut point = [rest; KEY_LEN];
        point[0] = first;
        point[KEY_LEN - 1] = last;
        point
    }
    [
        repeat_then(0x00, 0x00, 0x00),
        repeat_then(0x01, 0x00, 0x00),
        repeat_then(0xec, 0xff, 0x7f),
        repeat_then(0xed, 0xff, 0x7f),
        repeat_then(0xee, 0xff, 0x7f),
        [
            0xe0, 0xeb, 0x7a, 0x7c, 0x3b, 0x41, 0xb8, 0xae, 0x16, 0x56, 0xe3, 0xfa, 0xf1, 0x9f,
            0xc4, 0x6a, 0xda, 0x09, 0x8d, 0xeb, 0x9c, 0x32, 0xb1, 0xfd, 0x86, 0x62, 0x05, 0x16,
            0x5f, 0x49, 0xb8, 0x00,
        ],
        [
            0x5f, 0x9c, 0x95, 0xbc, 0xa3, 0x50, 0x8c, 0x24, 0xb1, 0xd0, 0xb1, 0x55, 0x9c, 0x83,
            0xef, 0x5b, 0x04, 0x44, 0x5c, 0xc4, 0x58, 0x1c, 0x8e, 0x86, 0xd8, 0x22, 0x4e, 0xdd,
            0xd0, 0x9f, 0x11, 0x57,
        ],
    ]
};

/// Whether `bytes` encode a small-order point; X25519 ignores the top bit, and so does this.
fn is_small_order(bytes: &[u8; KEY_LEN]) -> bool {
    let mut masked = *bytes;
    masked[KEY_LEN - 1] &= 0x7f;
    SMALL_ORDER.contains(&masked)
}

// === impl SecretKey ===

/// An agency's secret key: it opens what was sealed for the agency. Wiped from memory on drop;
/// its `Debug` shows only the key id of its public key.
pub struct SecretKey {
    // x25519-dalek's StaticSecret underneath zeroizes itself on drop.
    inner: HpkeSecretKey,
    // Kept because deriving it costs a scalar multiplication, and `open` needs its key id.
    public: PublicKey,
}

impl SecretKey {
    pub fn from_bytes(bytes: &[u8; KEY_LEN]) -> SecretKey {
        // Any 32 bytes are a secret key once clamped, which `from_bytes` does.
        let inner = HpkeSecretKey::from_bytes(bytes).unwrap_or_else(|_| {
            unreachable!("an X25519 secret key of {KEY_LEN} bytes is always accepted")
        });
        SecretKey::from_hpke(inner)
    }

    pub fn from_base64(text: &str) -> Result<SecretKey, KeyError> {
        let bytes = decode_key("secret key", text)?;
        Ok(SecretKey::from_bytes(&bytes))
    }

    /// The base64 text form (44 characters), wiped from memory when dropped.
    pub fn to_base64(&self) -> Zeroizing<String> {
        let mut bytes = self.inner.to_bytes();
        let text = Zeroizing::new(BASE64.encode(&bytes));
        bytes.as_mut_slice().zeroize();
        text
    }

    pub fn public_key(&self) -> &PublicKey {
        &self.public
    }

    fn from_hpke(inner: HpkeSecretKey) -> SecretKey {
        let public = X25519HkdfSha256::sk_to_pk(&inner);
        let mut bytes = [0u8; KEY_LEN];
        bytes.copy_from_slice(&public.to_bytes());
        SecretKey {
            inner,
            public: PublicKey { bytes },
        }
    }

    /// Reads a secret key file as [`KeyPair::write_secret`] writes it: one line of base64.
    pub fn from_file(path: impl AsRef<Path>) -> Result<SecretKey, KeyFileError> {
        let path = path.as_ref();
        let text = read_secret_file(path)?;
        SecretKey::from_base64(&text).map_err(|source| KeyFileError::Invalid {
            path: path.to_owned(),
            source,
        })
    }

    pub(crate) fn hpke(&self) -> &HpkeSecretKey {
        &self.inner
    }
}

/// The file's mode if its group or anyone else may read, write or run it (`None`: its owner
/// only). Every secret file refbus reads goes through this one check (key files here, the
/// dashboard's operator accounts), on the opened file so that the file read is the file
/// checked. Always `None` where there are no Unix permissions.
pub fn exposed_mode(file: &File) -> io::Result<Option<u32>> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = file.metadata()?.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Ok(Some(mode));
        }
    }
    #[cfg(not(unix))]
    let _ = file;
    Ok(None)
}

/// The text of a secret key file, refused if it is larger than any key file.
pub fn read_secret_file(path: &Path) -> Result<Zeroizing<String>, KeyFileError> {
    let read_error = |source| KeyFileError::Read {
        path: path.to_owned(),
        source,
    };
    let file = File::open(path).map_err(read_error)?;
    // Checked on the opened file, so the file read is the file checked.
    if let Some(mode) = exposed_mode(&file).map_err(read_error)? {
        return Err(KeyFileError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    // Room for the whole allowed length, so reading never reallocates and leaves a copy.
    let mut text = Zeroizing::new(String::with_capacity(MAX_KEY_FILE_LEN as usize + 64));
    file.take(MAX_KEY_FILE_LEN + 1)
        .read_to_string(&mut text)
        .map_err(read_error)?;
    if text.len() as u64 > MAX_KEY_FILE_LEN {
        return Err(KeyFileError::TooLarge {
            path: path.to_owned(),
        });
    }
    Ok(text)
}

impl fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SecretKey(for {})", self.public_key().key_id())
    }
}

// === impl KeyPair ===

/// An agency's key pair, as `refbus keys generate` makes it.
#[derive(Debug)]
pub struct KeyPair {
    // The public half is the secret key's own, so the two can never disagree.
    secret: SecretKey,
}

impl KeyPair {
    /// A new key pair from the operating system's randomness.
    ///
    /// Panics only if the operating system cannot provide randomness at all.
    pub fn generate() -> KeyPair {
        let (inner, _) = X25519HkdfSha256::gen_keypair();
        KeyPair::from_secret(SecretKey::from_hpke(inner))
    }

    pub fn from_secret(secret: SecretKey) -> KeyPair {
        KeyPair { secret }
    }

    pub fn public(&self) -> &PublicKey {
        self.secret.public_key()
    }

    pub fn secret(&self) -> &SecretKey {
        &self.secret
    }

    /// The secret key, for a [`Keyring`](crate::Keyring).
    pub fn into_secret(self) -> SecretKey {
        self.secret
    }

    /// Writes the secret key to a new file readable by its owner only (mode 0600), as one line
    /// of base64. Refuses to overwrite an existing file: that would destroy the only key able to
    /// open what was already sealed for the agency.
    pub fn write_secret(&self, path: impl AsRef<Path>) -> Result<(), KeyFileError> {
        write_secret_file(path.as_ref(), &self.secret.to_base64())
    }
}

/// Writes `text` (a secret key's base64) to a new file readable by its owner only (mode 0600).
/// Refuses to overwrite an existing file: that would destroy a key still needed.
pub fn write_secret_file(path: &Path, text: &str) -> Result<(), KeyFileError> {
    {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(path).map_err(|source| match source.kind() {
            io::ErrorKind::AlreadyExists => KeyFileError::AlreadyExists {
                path: path.to_owned(),
            },
            _ => KeyFileError::Write {
                path: path.to_owned(),
                source,
            },
        })?;
        file.write_all(text.as_bytes())
            .and_then(|()| file.write_all(b"\n"))
            .and_then(|()| file.sync_all())
            .map_err(|source| {
                // A partial file would block the retry (no overwriting) and holds no usable key.
                let _ = std::fs::remove_file(path);
                KeyFileError::Write {
                    path: path.to_owned(),
                    source,
                }
            })
    }
}

/// The file name `refbus keys generate` gives an agency's secret key, e.g. `maros-dinsos.key`.
pub fn secret_key_file_name(agency: &AgencyId) -> String {
    format!("{agency}.key")
}

fn decode_key(kind: &'static str, text: &str) -> Result<Zeroizing<[u8; KEY_LEN]>, KeyError> {
    let decoded = Zeroizing::new(BASE64.decode(text.trim().as_bytes()).map_err(|error| {
        KeyError::NotBase64 {
            kind,
            reason: error.to_string(),
        }
    })?);
    let mut bytes = Zeroizing::new([0u8; KEY_LEN]);
    if decoded.len() != KEY_LEN {
        return Err(KeyError::WrongLength {
            kind,
            found: decoded.len(),
        });
    }
    bytes.copy_from_slice(&decoded);
    Ok(bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_forms_round_trip() {
        let pair = KeyPair::generate();
        let public = PublicKey::from_base64(&pair.public().to_base64()).unwrap();
        assert_eq!(public, *pair.public());
        assert_eq!(pair.public().to_base64().len(), 44);
        let secret = SecretKey::from_base64(&pair.secret().to_base64()).unwrap();
        assert_eq!(secret.public_key(), pair.public());
        // Text pasted from a terminal often carries a newline or spaces.
        let padded = format!("  {}\n", pair.public().to_base64());
        assert_eq!(padded.parse::<PublicKey>().unwrap(), *pair.public());
    }

    #[test]
    fn base64_errors_say_what_is_wrong() {
        assert!(matches!(
            PublicKey::from_base64("not base64!"),
            Err(KeyError::NotBase64 {
                kind: "public key",
                ..
            })
        ));
        assert!(matches!(
            SecretKey::from_base64(&BASE64.encode(&[7u8; 16])),
            Err(KeyError::WrongLength {
                kind: "secret key",
                found: 16
            })
        ));
        assert!(matches!(
            PublicKey::from_base64(""),
            Err(KeyError::WrongLength { found: 0, .. })
        ));
        assert_eq!(
            PublicKey::from_base64(&BASE64.encode(&[0u8; 32])),
            Err(KeyError::WeakPublicKey)
        );
        let message = PublicKey::from_base64("abc").unwrap_err().to_string();
        assert!(message.contains("public key"), "{message}");
    }

    #[test]
    fn small_order_points_are_exactly_those_hpke_refuses() {
        let seal_for = |bytes: &[u8; KEY_LEN]| {
            let public = <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(bytes).unwrap();
            let mut buffer = [0u8; 4];
            hpke::single_shot_seal_inout_detached::<
                hpke::aead::ChaCha20Poly1305,
                hpke::kdf::HkdfSha256,
                X25519HkdfSha256,
            >(
                &hpke::OpModeS::Base,
                &public,
                b"",
                hpke::inout::InOutBuf::from(&mut buffer[..]),
                b"",
            )
            .map(|_| ())
        };
        for point in SMALL_ORDER {
            let mut high_bit = point;
            high_bit[KEY_LEN - 1] |= 0x80;
            for bytes in [point, high_bit] {
                assert!(
                    seal_for(&bytes).is_err(),
                    "{bytes:02x?} was accepted by HPKE"
                );
                assert_eq!(PublicKey::from_bytes(bytes), Err(KeyError::WeakPublicKey));
            }
        }
        for _ in 0..8 {
            let public = KeyPair::generate().public().clone();
            assert!(seal_for(&public.to_bytes()).is_ok());
        }
    }

    #[test]
    fn debug_output_never_shows_the_secret() {
        let pair = KeyPair::generate();
        let secret_text = pair.secret().to_base64();
        let shown = format!("{pair:?}");
        assert!(!shown.contains(secret_text.as_str()), "{shown}");
        assert!(
            shown.contains(&pair.public().key_id().to_string()),
            "{shown}"
        );
    }

    #[test]
    fn key_ids_are_stable_hex_fingerprints() {
        let public = PublicKey::from_bytes([9u8; 32]).unwrap();
        let id = public.key_id();
        assert_eq!(id.to_string().len(), 16);
        assert_eq!(id, PublicKey::from_bytes([9u8; 32]).unwrap().key_id());
        assert_ne!(id, KeyPair::generate().public().key_id());
    }

    #[test]
    fn serde_uses_the_base64_form() {
        let pair = KeyPair::generate();
        let json = serde_json::to_string(pair.public()).unwrap();
        assert_eq!(json, format!("\"{}\"", pair.public().to_base64()));
        let back: PublicKey = serde_json::from_str(&json).unwrap();
        assert_eq!(back, *pair.public());
        assert!(serde_json::from_str::<PublicKey>("\"AAAA\"").is_err());
    }
}
