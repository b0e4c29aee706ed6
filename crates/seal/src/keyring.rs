//! The adapter's view of keys: its own agency's secret key and every agency's public key.

use std::collections::HashMap;
use std::fmt;

use refbus_core::AgencyId;
use refbus_core::referral::SealedPayload;

use crate::keys::{KeyId, PublicKey, SecretKey};
use crate::seal::{OpenError, SealError, open, seal};

/// Why a keyring cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(
        "the registry gives agency `{agency}` the public key {registered}, but its secret key \
         belongs to {held}: payloads sealed for `{agency}` could not be opened here"
    )]
    OwnKeyMismatch {
        agency: AgencyId,
        registered: KeyId,
        held: KeyId,
    },
}

/// One agency's keys: what its adapter seals and opens with.
pub struct Keyring {
    agency: AgencyId,
    secret: SecretKey,
    directory: HashMap<AgencyId, PublicKey>,
}

impl Keyring {
    /// A keyring for `agency`, holding its `secret` key, with the public keys of the agencies
    /// it may seal for (the registry's). The registry may list `agency` itself, but then with
    /// the public key of `secret`: a mismatch would make every payload sealed for it unreadable,
    /// so it is refused here, at start-up.
    pub fn new(
        agency: AgencyId,
        secret: SecretKey,
        directory: impl IntoIterator<Item = (AgencyId, PublicKey)>,
    ) -> Result<Keyring, KeyringError> {
        let public = secret.public_key();
        let mut directory: HashMap<AgencyId, PublicKey> = directory.into_iter().collect();
        match directory.get(&agency) {
            Some(registered) if registered != public => {
                return Err(KeyringError::OwnKeyMismatch {
                    agency,
                    registered: registered.key_id(),
                    held: public.key_id(),
                });
            }
            Some(_) => {}
            None => {
                directory.insert(agency.clone(), public.clone());
            }
        }
        Ok(Keyring {
            agency,
            secret,
            directory,
        })
    }

    pub fn agency(&self) -> &AgencyId {
        &self.agency
    }

    pub fn public_key(&self) -> &PublicKey {
        self.secret.public_key()
    }

    pub fn public_key_of(&self, agency: &AgencyId) -> Option<&PublicKey> {
        self.directory.get(agency)
    }

    /// Seals for exactly `recipients`, in that order; refbus seals identity and notes for the
    /// referral's sender and recipient, this agency being one of them.
    pub fn seal_for(
        &self,
        recipients: &[&AgencyId],
        plaintext: &[u8],
        aad: &[u8],
    ) -> Result<SealedPayload, SealError> {
        let keyed = recipients
            .iter()
            .map(|agency| {
                self.directory
                    .get(*agency)
                    .map(|key| (*agency, key))
                    .ok_or_else(|| SealError::UnknownAgency((*agency).clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        seal(plaintext, &keyed, aad)
    }

    /// Opens a payload sealed for this agency.
    pub fn open(&self, payload: &SealedPayload, aad: &[u8]) -> Result<Vec<u8>, OpenError> {
        open(payload, &self.agency, &self.secret, aad)
    }
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("agency", &self.agency)
            .field("key", &self.secret.public_key().key_id())
            .field("agencies", &self.directory.len())
            .finish()
    }
}
