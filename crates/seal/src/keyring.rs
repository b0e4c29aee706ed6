//! The adapter's view of keys: its own agency's secret keys (the current one and those it held
//! before a rotation) and every agency's public keys (online, and backup where listed).

use std::collections::HashMap;
use std::fmt;

use refbus_core::AgencyId;
use refbus_core::referral::SealedPayload;

use crate::context::Context;
use crate::keys::{KeyId, PublicKey, SecretKey};
use crate::seal::{Batch, OpenError, Recipient, SealError, open_with, version};

/// Why a keyring cannot be built.
#[derive(Debug, thiserror::Error)]
pub enum KeyringError {
    #[error(
        "the registry gives agency `{agency}` the public key {registered}, but none of its secret \
         keys belongs to it (it holds {held}): payloads sealed for `{agency}` could not be \
         opened here"
    )]
    OwnKeyMismatch {
        agency: AgencyId,
        registered: KeyId,
        held: KeyId,
    },
    #[error("a keyring needs at least one secret key")]
    NoSecretKey,
}

/// One agency's keys: what its adapter seals and opens with.
pub struct Keyring {
    agency: AgencyId,
    /// The current key (the one the registry lists) first, then earlier ones: a rotated agency
    /// still opens what was sealed for its old keys.
    secrets: Vec<SecretKey>,
    /// Every agency's keys a payload for it is wrapped for: its online key, then its backup key.
    directory: HashMap<AgencyId, Vec<PublicKey>>,
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
        Keyring::with_keys(agency, vec![secret], directory)
    }

    /// A keyring holding several secret keys of `agency`: after `refbus keys rotate`, the new
    /// one and every earlier one. The current key (the one it seals for itself with) is the one
    /// the registry lists, so the files can be rotated before the registry is changed; if the
    /// registry lists none, the first.
    pub fn with_keys(
        agency: AgencyId,
        mut secrets: Vec<SecretKey>,
        directory: impl IntoIterator<Item = (AgencyId, PublicKey)>,
    ) -> Result<Keyring, KeyringError> {
        if secrets.is_empty() {
            return Err(KeyringError::NoSecretKey);
        }
        let mut directory: HashMap<AgencyId, Vec<PublicKey>> = directory
            .into_iter()
            .map(|(agency, key)| (agency, vec![key]))
            .collect();
        match directory.get(&agency).and_then(|keys| keys.first()) {
            Some(registered) => {
                let Some(current) = secrets
                    .iter()
                    .position(|secret| secret.public_key() == registered)
                else {
                    return Err(KeyringError::OwnKeyMismatch {
                        agency,
                        registered: registered.key_id(),
                        held: secrets[0].public_key().key_id(),
                    });
                };
                secrets.swap(0, current);
            }
            None => {
                directory.insert(agency.clone(), vec![secrets[0].public_key().clone()]);
            }
        }
        Ok(Keyring {
            agency,
            secrets,
            directory,
        })
    }

    /// Adds the backup public keys the registry lists: everything this keyring seals for one of
    /// these agencies is wrapped for its backup key too. A backup key equal to the agency's
    /// online key, or for an agency without an online key, adds nothing.
    pub fn with_backup_keys(
        mut self,
        backups: impl IntoIterator<Item = (AgencyId, PublicKey)>,
    ) -> Keyring {
        for (agency, backup) in backups {
            if let Some(keys) = self.directory.get_mut(&agency)
                && !keys.contains(&backup)
            {
                keys.truncate(1);
                keys.push(backup);
            }
        }
        self
    }

    pub fn agency(&self) -> &AgencyId {
        &self.agency
    }

    /// The current public key of this agency.
    pub fn public_key(&self) -> &PublicKey {
        self.secrets[0].public_key()
    }

    /// The key ids of every secret key held, current first.
    pub fn key_ids(&self) -> Vec<KeyId> {
        self.secrets
            .iter()
            .map(|secret| secret.public_key().key_id())
            .collect()
    }

    /// The online public key of `agency`.
    pub fn public_key_of(&self, agency: &AgencyId) -> Option<&PublicKey> {
        self.directory.get(agency).and_then(|keys| keys.first())
    }

    /// The backup public key of `agency`, if the registry lists one.
    pub fn backup_key_of(&self, agency: &AgencyId) -> Option<&PublicKey> {
        self.directory.get(agency).and_then(|keys| keys.get(1))
    }

    /// A content key wrapped for every key of exactly `recipients` (online and backup), bound to
    /// `context`'s referral, to seal any number of that referral's payloads with
    /// [`Batch::seal_in`].
    pub fn batch_for(
        &self,
        recipients: &[&AgencyId],
        context: Context<'_>,
    ) -> Result<Batch, SealError> {
        let keyed = recipients
            .iter()
            .map(|agency| {
                self.directory
                    .get(*agency)
                    .map(|keys| Recipient {
                        agency,
                        keys: keys.as_slice(),
                    })
                    .ok_or_else(|| SealError::UnknownAgency((*agency).clone()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        Batch::new(&keyed, &context.wrap_aad())
    }

    /// Seals for exactly `recipients`, in that order (each agency's backup key too); refbus
    /// seals identity and notes for the referral's sender and recipient, this agency being one
    /// of them.
    pub fn seal_for(
        &self,
        recipients: &[&AgencyId],
        plaintext: &[u8],
        context: Context<'_>,
    ) -> Result<SealedPayload, SealError> {
        self.batch_for(recipients, context)?
            .seal_in(plaintext, context)
    }

    /// Opens a payload sealed for this agency in `context`.
    pub fn open(
        &self,
        payload: &SealedPayload,
        context: Context<'_>,
    ) -> Result<Vec<u8>, OpenError> {
        self.open_any(payload, &[context])
            .map(|(_, plaintext)| plaintext)
    }

    /// Opens a payload sealed for this agency in whichever of `contexts` (all of one referral)
    /// it was sealed in, and says which.
    pub fn open_any<'c>(
        &self,
        payload: &SealedPayload,
        contexts: &[Context<'c>],
    ) -> Result<(Context<'c>, Vec<u8>), OpenError> {
        open_in_contexts(payload, &self.agency, &self.secrets, contexts)
    }
}

/// Opens `payload` as `agency` with whichever of `secrets` it was wrapped for, in whichever of
/// `contexts` it was sealed in. Version 2 envelopes (what refbus writes) unwrap once under the
/// referral's wrap context, then try each content context; version 1 envelopes bound each wrap
/// to the payload's own context, so each context costs an unwrap.
pub fn open_in_contexts<'c>(
    payload: &SealedPayload,
    agency: &AgencyId,
    secrets: &[SecretKey],
    contexts: &[Context<'c>],
) -> Result<(Context<'c>, Vec<u8>), OpenError> {
    let secrets: Vec<&SecretKey> = secrets.iter().collect();
    let Some(first) = contexts.first() else {
        return Err(OpenError::Unauthentic);
    };
    if version(payload) == Some(1) {
        let mut last = OpenError::Unauthentic;
        for context in contexts {
            let aad = context.aad();
            match open_with(payload, agency, &secrets, &aad, &[&aad]) {
                Ok((_, plaintext)) => return Ok((*context, plaintext)),
                Err(err) => last = err,
            }
        }
        return Err(last);
    }
    let aads: Vec<Vec<u8>> = contexts.iter().map(Context::aad).collect();
    let aads: Vec<&[u8]> = aads.iter().map(Vec::as_slice).collect();
    let (index, plaintext) = open_with(payload, agency, &secrets, &first.wrap_aad(), &aads)?;
    Ok((contexts[index], plaintext))
}

impl fmt::Debug for Keyring {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Keyring")
            .field("agency", &self.agency)
            .field("keys", &self.key_ids())
            .field("agencies", &self.directory.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use refbus_core::ReferralId;

    use super::*;
    use crate::keys::KeyPair;

    #[test]
    fn envelopes_of_version_one_still_open() {
        // Version 1, as refbus wrote it before backup keys: one wrap per agency, each wrap
        // bound to the payload's own context.
        let agency = AgencyId::new("polres-maros").unwrap();
        let keys = KeyPair::generate();
        let referral = ReferralId::from_bytes([14; 16]);
        let aad = Context::Identity(&referral).aad();
        let recipient = Recipient {
            agency: &agency,
            keys: std::slice::from_ref(keys.public()),
        };
        let mut batch = Batch::new(&[recipient], &aad).unwrap();
        batch.set_version_for_tests(1);
        let payload = batch.seal(b"Siti", &aad).unwrap();
        assert_eq!(payload.envelope[0], 1);
        let keyring = Keyring::new(agency, keys.into_secret(), []).unwrap();
        let contexts = [Context::Note(&referral), Context::Identity(&referral)];
        let (context, opened) = keyring.open_any(&payload, &contexts).unwrap();
        assert_eq!(context, Context::Identity(&referral));
        assert_eq!(opened, b"Siti");
    }
}
