//! Signing keys: the Ed25519 key each agency's adapter (and the router) signs its records with.
//!
//! The secret half is a 32-byte seed in a file of its own beside the sealing key
//! (`<agency>.sign.key`, `router.sign.key`; mode 0600, never overwritten); the public half goes
//! in the registry. Signing and verifying themselves are pure and live in
//! `refbus_core::signature`.

use std::path::Path;

use data_encoding::BASE64;
use refbus_core::AgencyId;
use refbus_core::signature::{Signer, SigningKey};
use zeroize::Zeroizing;

use crate::keys::{KeyError, KeyFileError, read_secret_file, write_secret_file};

/// The file name of a signer's secret signing key, e.g. `maros-dinsos.sign.key`.
pub fn signing_key_file_name(signer: &Signer) -> String {
    format!("{}.sign.key", file_stem(signer))
}

/// The file name of a signer's public signing key, e.g. `maros-dinsos.sign.pub`.
pub fn verifying_key_file_name(signer: &Signer) -> String {
    format!("{}.sign.pub", file_stem(signer))
}

fn file_stem(signer: &Signer) -> String {
    match signer {
        Signer::Agency(agency) => agency.to_string(),
        Signer::Router => "router".to_owned(),
    }
}

/// A new signing key for `signer` from the operating system's randomness.
///
/// Panics only if the operating system cannot provide randomness at all.
pub fn generate_signing_key(signer: Signer) -> (SigningKey, Zeroizing<[u8; 32]>) {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice())
        .unwrap_or_else(|err| panic!("the operating system gives no randomness: {err}"));
    (SigningKey::from_seed(&seed, signer), seed)
}

/// Writes a new signing key for `signer` to `path` (mode 0600, never overwriting) and returns
/// it.
pub fn write_new_signing_key(path: &Path, signer: Signer) -> Result<SigningKey, KeyFileError> {
    let (key, seed) = generate_signing_key(signer);
    let text = Zeroizing::new(BASE64.encode(seed.as_slice()));
    write_secret_file(path, &text)?;
    Ok(key)
}

/// Reads a signing key file as [`write_new_signing_key`] writes it.
pub fn read_signing_key(path: &Path, signer: Signer) -> Result<SigningKey, KeyFileError> {
    let text = read_secret_file(path)?;
    let invalid = |reason: String| KeyFileError::Invalid {
        path: path.to_owned(),
        source: KeyError::NotBase64 {
            kind: "signing key",
            reason,
        },
    };
    let bytes = Zeroizing::new(
        BASE64
            .decode(text.trim().as_bytes())
            .map_err(|err| invalid(err.to_string()))?,
    );
    let seed: Zeroizing<[u8; 32]> = Zeroizing::new(
        bytes
            .as_slice()
            .try_into()
            .map_err(|_| invalid(format!("it is {} bytes, not 32", bytes.len())))?,
    );
    Ok(SigningKey::from_seed(&seed, signer))
}

/// Fresh signing keys for every agency of a registry and for the router, held in memory: for
/// tests, benchmarks and demonstrations that run a whole deployment in one process.
#[derive(Clone)]
pub struct SigningKeys {
    keys: std::collections::HashMap<Signer, SigningKey>,
    seeds: std::collections::HashMap<Signer, Zeroizing<[u8; 32]>>,
    signers: refbus_core::signature::Signers,
}

impl std::fmt::Debug for SigningKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "SigningKeys({} signers, secrets not shown)",
            self.keys.len()
        )
    }
}

impl SigningKeys {
    pub fn generate(registry: &refbus_core::Registry) -> SigningKeys {
        let mut keys = std::collections::HashMap::new();
        let mut seeds = std::collections::HashMap::new();
        let mut signers = refbus_core::signature::Signers::new();
        let all = registry
            .agencies
            .keys()
            .map(|agency| Signer::Agency(agency.clone()))
            .chain([Signer::Router]);
        for signer in all {
            let (key, seed) = generate_signing_key(signer.clone());
            signers.add(signer.clone(), key.verifying_key());
            seeds.insert(signer.clone(), seed);
            keys.insert(signer, key);
        }
        SigningKeys {
            keys,
            seeds,
            signers,
        }
    }

    /// Writes every key as `refbus keys` would (`<name>.sign.key`, mode 0600, and
    /// `<name>.sign.pub`), for processes started from a test or benchmark.
    pub fn write_files(&self, dir: &Path) -> Result<(), KeyFileError> {
        for (signer, seed) in &self.seeds {
            let text = Zeroizing::new(BASE64.encode(seed.as_slice()));
            let secret = dir.join(signing_key_file_name(signer));
            if !secret.exists() {
                write_secret_file(&secret, &text)?;
            }
            let public = dir.join(verifying_key_file_name(signer));
            let key = self.key(signer).verifying_key().to_base64();
            std::fs::write(&public, format!("{key}\n")).map_err(|source| KeyFileError::Write {
                path: public.clone(),
                source,
            })?;
        }
        Ok(())
    }

    /// The key of `signer`. Panics for a signer the registry did not list: a test set-up error.
    pub fn key(&self, signer: &Signer) -> SigningKey {
        self.keys
            .get(signer)
            .cloned()
            .unwrap_or_else(|| panic!("no signing key was generated for {signer}"))
    }

    pub fn agency(&self, agency: &AgencyId) -> SigningKey {
        self.key(&Signer::Agency(agency.clone()))
    }

    pub fn router(&self) -> SigningKey {
        self.key(&Signer::Router)
    }

    /// Everyone's public keys.
    pub fn signers(&self) -> refbus_core::signature::Signers {
        self.signers.clone()
    }
}

/// The signer an agency's adapter signs as.
pub fn agency_signer(agency: &AgencyId) -> Signer {
    Signer::Agency(agency.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_written_signing_key_reads_back_and_is_private() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(signing_key_file_name(&Signer::Router));
        let key = write_new_signing_key(&path, Signer::Router).unwrap();
        let read = read_signing_key(&path, Signer::Router).unwrap();
        assert_eq!(read.verifying_key(), key.verifying_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert!(matches!(
            write_new_signing_key(&path, Signer::Router),
            Err(KeyFileError::AlreadyExists { .. })
        ));
    }
}
