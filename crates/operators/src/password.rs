//! Password hashes: argon2id with OWASP's recommended parameters (19 MiB, 2 passes, 1 lane),
//! stored as PHC strings; verification that costs the same whether or not the account exists.

use std::fmt;
use std::sync::OnceLock;

use argon2::password_hash::phc;
use argon2::password_hash::{PasswordHasher, PasswordVerifier};
use argon2::{Algorithm, Argon2, Params, Version};

/// OWASP Password Storage Cheat Sheet, argon2id: m=19 MiB, t=2, p=1.
const M_COST_KIB: u32 = 19 * 1024;
const T_COST: u32 = 2;
const P_COST: u32 = 1;

/// Why a password cannot be hashed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordError {
    #[error("a password must be at least {MIN_PASSWORD_CHARS} characters long")]
    TooShort,
    #[error("a password must be at most {MAX_PASSWORD_BYTES} bytes long")]
    TooLong,
    #[error("hashing the password failed: {0}")]
    Hashing(String),
}

/// Why a stored hash is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadHash {
    #[error(
        "the password hash is not a PHC string ($argon2id$v=19$m=...,t=...,p=...$salt$hash): {0}"
    )]
    NotPhc(String),
    #[error(
        "the password hash is `{0}`, not an argon2id hash: make a new one with `refbus dashboard \
         user add`"
    )]
    NotArgon2id(String),
    #[error("the argon2id hash is incomplete or its parameters are invalid: {0}")]
    Invalid(String),
}

/// NIST SP 800-63B's minimum for a password the user chose.
pub const MIN_PASSWORD_CHARS: usize = 8;
/// Far beyond any passphrase; bounds the work one login can ask of the server.
pub const MAX_PASSWORD_BYTES: usize = 1024;

/// An argon2id hash in PHC string form. Its `Debug` never shows it.
#[derive(Clone, PartialEq, Eq)]
pub struct PasswordHash(String);

impl fmt::Debug for PasswordHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("PasswordHash(..)")
    }
}

fn hasher() -> Argon2<'static> {
    let params =
        Params::new(M_COST_KIB, T_COST, P_COST, None).expect("OWASP's parameters are valid");
    Argon2::new(Algorithm::Argon2id, Version::V0x13, params)
}

impl PasswordHash {
    /// Hashes `password` with a fresh random salt.
    pub fn hash(password: &str) -> Result<PasswordHash, PasswordError> {
        if password.chars().count() < MIN_PASSWORD_CHARS {
            return Err(PasswordError::TooShort);
        }
        if password.len() > MAX_PASSWORD_BYTES {
            return Err(PasswordError::TooLong);
        }
        let hash = hasher()
            .hash_password(password.as_bytes())
            .map_err(|error| PasswordError::Hashing(error.to_string()))?;
        Ok(PasswordHash(hash.to_string()))
    }

    /// A stored PHC string, refused unless it is a complete argon2id hash.
    pub fn parse(text: &str) -> Result<PasswordHash, BadHash> {
        let parsed =
            phc::PasswordHash::new(text).map_err(|error| BadHash::NotPhc(error.to_string()))?;
        if parsed.algorithm.as_str() != "argon2id" {
            return Err(BadHash::NotArgon2id(parsed.algorithm.as_str().to_owned()));
        }
        if parsed.salt.is_none() || parsed.hash.is_none() {
            return Err(BadHash::Invalid("no salt or no hash".to_owned()));
        }
        Params::try_from(&parsed).map_err(|error| BadHash::Invalid(error.to_string()))?;
        Ok(PasswordHash(text.to_owned()))
    }

    /// The PHC string, for the accounts file only.
    pub fn phc_string(&self) -> &str {
        &self.0
    }

    /// Whether `password` is the one hashed. Costs one argon2id computation at the stored
    /// parameters; the comparison of the outputs is constant-time (the argon2 crate's).
    pub fn verify(&self, password: &str) -> bool {
        if password.len() > MAX_PASSWORD_BYTES {
            return false;
        }
        match phc::PasswordHash::new(&self.0) {
            Ok(parsed) => hasher()
                .verify_password(password.as_bytes(), &parsed)
                .is_ok(),
            Err(_) => false,
        }
    }

    /// A short fingerprint of the hash: a session remembers it, so that changing an operator's
    /// password (a new hash) ends her sessions.
    pub(crate) fn fingerprint(&self) -> [u8; 16] {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(self.0.as_bytes());
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        out
    }
}

/// Checks `password` against `hash`, or, when there is no such account, against a hash of a
/// password nobody knows, so that an unknown username costs the same time as a wrong password
/// and the answer tells nothing about which usernames exist.
pub(crate) fn verify_or_waste(hash: Option<&PasswordHash>, password: &str) -> bool {
    match hash {
        Some(hash) => hash.verify(password),
        None => {
            let _ = decoy().verify(password);
            false
        }
    }
}

/// Makes the decoy hash now, so that no login pays for it.
pub(crate) fn warm_up() {
    decoy();
}

fn decoy() -> &'static PasswordHash {
    static DECOY: OnceLock<PasswordHash> = OnceLock::new();
    DECOY.get_or_init(|| {
        let mut random = [0u8; 24];
        let _ = getrandom::fill(&mut random);
        PasswordHash::hash(&data_encoding::BASE64.encode(&random))
            .expect("a random password of 32 characters hashes")
    })
}

/// A new random password for an account made by a program (`refbus up`'s demonstration
/// operators): 20 characters of base32 (100 bits), easy to read aloud and to type on a phone.
pub fn generate() -> zeroize::Zeroizing<String> {
    let mut random = zeroize::Zeroizing::new([0u8; 15]);
    getrandom::fill(random.as_mut_slice()).expect("the operating system provides randomness");
    zeroize::Zeroizing::new(
        data_encoding::BASE32_NOPAD
            .encode(random.as_slice())
            .to_lowercase(),
    )
}
