//! Leases in a JetStream key-value bucket: who works on what, among replicas of one component
//! (the router's partitions; docs/ARCHITECTURE.md, "Routers that partition").
//!
//! A lease is a key holding its holder's name. It is claimed by creating the key (refused if
//! someone holds it), kept by updating it with the revision last written (refused if someone
//! else wrote it since, or if it expired), and given up by deleting it with that revision. The
//! bucket's `max_age` is the lease's time to live, counted by the server: a holder that stops
//! renewing (killed, paused, cut off) loses the key when its last write ages out, whatever the
//! clocks of the replicas say, and another replica's create then succeeds.
//!
//! A lease shares out work; it is not what makes that work correct. Two replicas that both
//! believe they hold a lease for a moment (one paused past its expiry) each do the work, and
//! whatever makes the work safe for two writers (for the router: message ids and expected
//! sequences) still holds. What is not safe for two is taking something only one may have (a
//! durable consumer's acknowledgement): the holder checks its lease's age first (the router's
//! `share::Tenure`).

use std::time::Duration;

use async_nats::jetstream::kv;
use futures::StreamExt;

use crate::Bus;
use crate::error::Error;

/// Why a lease operation failed (not: someone else holds it, which is an answer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LeaseErrorKind {
    /// The bucket or the server cannot be reached now; the holder's lease may still be its own.
    #[error("the lease bucket is unavailable")]
    Unavailable,
}

pub type LeaseError = Error<LeaseErrorKind>;

fn unavailable(err: impl std::fmt::Display) -> LeaseError {
    LeaseError::with_source(LeaseErrorKind::Unavailable, err.to_string())
}

/// A lease held: its key and the revision its holder last wrote.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lease {
    pub key: String,
    revision: u64,
}

/// The leases of one bucket, as seen by one holder.
#[derive(Clone)]
pub struct Leases {
    store: kv::Store,
    holder: String,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Leases")
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

impl Bus {
    /// The lease bucket `bucket`, created with time to live `ttl` if missing, for `holder`.
    /// An existing bucket is used as it is (its time to live is the one its creator chose: all
    /// replicas of a deployment are started with the same).
    pub async fn leases(
        &self,
        bucket: &str,
        ttl: Duration,
        holder: &str,
    ) -> Result<Leases, LeaseError> {
        let store = match self.js.get_key_value(bucket).await {
            Ok(store) => store,
            Err(_) => self
                .js
                .create_key_value(kv::Config {
                    bucket: bucket.to_owned(),
                    description: "refbus: which replica holds which share of the work".to_owned(),
                    history: 1,
                    max_age: ttl,
                    num_replicas: self
                        .info
                        .as_ref()
                        .map_or(1, |info| info.config.num_replicas),
                    ..Default::default()
                })
                .await
                .map_err(unavailable)?,
        };
        Ok(Leases {
            store,
            holder: holder.to_owned(),
        })
    }
}

impl Leases {
    /// Claims `key`: `Some` if it was free (never held, given up, or expired), `None` if
    /// someone holds it.
    pub async fn claim(&self, key: &str) -> Result<Option<Lease>, LeaseError> {
        match self.store.create(key, self.holder.clone().into()).await {
            Ok(revision) => Ok(Some(Lease {
                key: key.to_owned(),
                revision,
            })),
            Err(err) if err.kind() == kv::CreateErrorKind::AlreadyExists => Ok(None),
            Err(err) => Err(unavailable(err)),
        }
    }

    /// Keeps `lease` for another time to live: `Some` with the new revision, `None` if it is
    /// lost (it expired, or someone else wrote the key since).
    pub async fn renew(&self, lease: &Lease) -> Result<Option<Lease>, LeaseError> {
        match self
            .store
            .update(&lease.key, self.holder.clone().into(), lease.revision)
            .await
        {
            Ok(revision) => Ok(Some(Lease {
                key: lease.key.clone(),
                revision,
            })),
            Err(err) if err.kind() == kv::UpdateErrorKind::WrongLastRevision => Ok(None),
            Err(err) => Err(unavailable(err)),
        }
    }

    /// Gives `lease` up, so another holder may claim it at once; a lease already lost is left
    /// to its new holder.
    pub async fn release(&self, lease: Lease) -> Result<(), LeaseError> {
        match self
            .store
            .delete_expect_revision(&lease.key, Some(lease.revision))
            .await
        {
            Ok(()) => Ok(()),
            Err(err) if err.kind() == kv::DeleteErrorKind::WrongLastRevision => Ok(()),
            Err(err) => Err(unavailable(err)),
        }
    }

    /// The keys held now that start with `prefix`, with their holders.
    pub async fn held(&self, prefix: &str) -> Result<Vec<(String, String)>, LeaseError> {
        let mut keys = self.store.keys().await.map_err(unavailable)?;
        let mut wanted = Vec::new();
        while let Some(key) = keys.next().await {
            let key = key.map_err(unavailable)?;
            if key.starts_with(prefix) {
                wanted.push(key);
            }
        }
        let mut held = Vec::new();
        for key in wanted {
            if let Some(entry) = self.store.entry(key.clone()).await.map_err(unavailable)?
                && entry.operation == kv::Operation::Put
            {
                held.push((key, String::from_utf8_lossy(&entry.value).into_owned()));
            }
        }
        Ok(held)
    }
}
