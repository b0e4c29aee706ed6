//! `refbus witness`: run by another office (the Inspektorat), it follows the notary's
//! checkpoints over HTTP, checks each new one is consistent with the last it cosigned (a
//! consistency proof built from the log's tiles, which are checked against the new root), and
//! cosigns it (C2SP tlog-cosignature). A checkpoint that forks (same size, another root; or
//! not an extension of the last) is refused loudly, the evidence is kept in its directory, and
//! from then on it cosigns nothing until an operator looks (removes `fork`).
//!
//! Its directory: `state` (the last checkpoint it cosigned, as the notary signed it),
//! `cosigned` (that checkpoint with its cosignature: what it publishes) and, after a fork,
//! `fork` (both checkpoints).

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use refbus_bus::Bus;
use signed_note::StandardVerifier;
use tracing::{error, info, warn};

use crate::note::{CheckpointError, NoteKey, SignedCheckpoint, open_checkpoint};
use crate::tiles::{MemoryTiles, TileDir};
use crate::verify::{Consistency, consistency};

/// What a witness follows and where it keeps its state.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The log's HTTP prefix (`http://host:port`).
    pub log_url: String,
    pub origin: String,
    /// The directory of its state.
    pub dir: PathBuf,
    /// How often it fetches the checkpoint.
    pub interval: Duration,
}

/// Why a checkpoint is not cosigned.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error(
        "FORK: the notary signed size {size} with root {offered}, but the witness cosigned size \
         {size} with root {known}"
    )]
    Fork {
        size: u64,
        known: tlog_tiles::Hash,
        offered: tlog_tiles::Hash,
    },
    #[error("FORK: the checkpoint of size {size} does not extend size {known_size}: {reason}")]
    Inconsistent {
        known_size: u64,
        size: u64,
        reason: String,
    },
    #[error("the log's tiles could not be fetched: {0}")]
    Fetch(String),
    #[error(
        "the witness saw a fork earlier (evidence in {0}) and cosigns nothing until an operator \
         has looked"
    )]
    Forked(String),
}

/// Counters for tests and metrics.
#[derive(Debug, Default)]
pub struct WitnessStats {
    pub cosigned: AtomicU64,
    pub refused: AtomicU64,
    /// Size of the last checkpoint cosigned.
    pub size: AtomicU64,
}

/// A witness ready to run.
pub struct Witness {
    pub key: NoteKey,
    pub notary: StandardVerifier,
    pub settings: Settings,
    /// Where cosigned checkpoints are published too (`refbus.v1.log.cosignature`), if given.
    pub bus: Option<Bus>,
    pub stats: Arc<WitnessStats>,
}

impl Witness {
    fn files(&self) -> TileDir {
        TileDir::new(self.settings.dir.clone())
    }

    /// The last checkpoint cosigned, if any.
    pub fn state(&self) -> Result<Option<SignedCheckpoint>, Refusal> {
        match self.files().read_any("state") {
            Some(note) => open_checkpoint(&note, &self.settings.origin, &self.notary, &[])
                .map(|(checkpoint, _)| Some(checkpoint))
                .map_err(Refusal::from),
            None => Ok(None),
        }
    }

    /// Checks `note` against the last checkpoint cosigned and cosigns it; fetches the tiles a
    /// consistency proof needs from the log. Cosigning the same checkpoint again is allowed.
    pub async fn observe(&self, note: &[u8]) -> Result<Vec<u8>, Refusal> {
        let files = self.files();
        if files.read_any("fork").is_some() {
            return Err(Refusal::Forked(
                self.settings.dir.join("fork").display().to_string(),
            ));
        }
        let (offered, _) = open_checkpoint(note, &self.settings.origin, &self.notary, &[])?;
        if let Some(known) = self.state()? {
            let refusal = if known.size == offered.size && known.root != offered.root {
                Some(Refusal::Fork {
                    size: known.size,
                    known: known.root,
                    offered: offered.root,
                })
            } else if known.size != offered.size {
                match self.consistent(&known, &offered).await {
                    Ok(()) => None,
                    Err(Consistency::Fails(reason)) => Some(Refusal::Inconsistent {
                        known_size: known.size,
                        size: offered.size,
                        reason,
                    }),
                    Err(Consistency::MissingTiles(paths)) => {
                        return Err(Refusal::Fetch(format!("missing {}", paths.join(", "))));
                    }
                }
            } else {
                None
            };
            if let Some(refusal) = refusal {
                let mut evidence = known.note.clone();
                evidence.extend_from_slice(b"\n");
                evidence.extend_from_slice(note);
                files
                    .write_file("fork", &evidence)
                    .map_err(|err| Refusal::Fetch(err.to_string()))?;
                return Err(refusal);
            }
        }
        let time = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        let cosigned = self
            .key
            .cosign(note, time)
            .map_err(|err| Refusal::Checkpoint(CheckpointError::Malformed(err)))?;
        let write = |name: &str, bytes: &[u8]| {
            files
                .write_file(name, bytes)
                .map_err(|err| Refusal::Fetch(err.to_string()))
        };
        write("state", note)?;
        write("cosigned", &cosigned)?;
        self.stats.size.store(offered.size, Ordering::Relaxed);
        Ok(cosigned)
    }

    /// The consistency proof from the log's tiles, fetching what is missing (a few rounds).
    async fn consistent(
        &self,
        known: &SignedCheckpoint,
        offered: &SignedCheckpoint,
    ) -> Result<(), Consistency> {
        let tiles = MemoryTiles::default();
        let mut rounds = 0;
        loop {
            match consistency(known, offered, &tiles) {
                Err(Consistency::MissingTiles(paths)) if rounds < 16 => {
                    rounds += 1;
                    for path in paths {
                        match crate::http::fetch(&self.settings.log_url, &path).await {
                            Ok(Some(bytes)) => tiles.insert(path, bytes),
                            Ok(None) => {
                                return Err(Consistency::Fails(format!(
                                    "the log does not serve {path}"
                                )));
                            }
                            Err(err) => return Err(Consistency::MissingTiles(vec![err])),
                        }
                    }
                }
                other => return other,
            }
        }
    }

    /// Fetches the checkpoint every interval until `shutdown`, cosigning or refusing each new
    /// one (a refusal is logged as an ERROR each time it is seen).
    pub async fn run(self, shutdown: impl Future<Output = ()>) {
        let mut shutdown = std::pin::pin!(shutdown);
        let mut ticker = tokio::time::interval(self.settings.interval);
        let mut last: Option<Vec<u8>> = None;
        loop {
            tokio::select! {
                () = &mut shutdown => return,
                _ = ticker.tick() => {}
            }
            let note = match crate::http::fetch(&self.settings.log_url, "checkpoint").await {
                Ok(Some(note)) => note,
                Ok(None) => continue,
                Err(err) => {
                    warn!("fetching the log's checkpoint: {err}");
                    continue;
                }
            };
            // The notary adds cosignatures to the checkpoint it serves: a new body is new.
            let body = crate::note::note_body(&note);
            if body.is_some() && last == body {
                continue;
            }
            match self.observe(&note).await {
                Ok(cosigned) => {
                    self.stats.cosigned.fetch_add(1, Ordering::Relaxed);
                    info!(
                        size = self.stats.size.load(Ordering::Relaxed),
                        "cosigned the log's checkpoint"
                    );
                    if let Some(bus) = &self.bus
                        && let Err(err) = bus.publish_log_cosignature(cosigned).await
                    {
                        warn!("publishing the cosignature: {err}");
                    }
                    last = body;
                }
                Err(Refusal::Fetch(err)) => warn!("checking the log's checkpoint: {err}"),
                Err(refusal) => {
                    self.stats.refused.fetch_add(1, Ordering::Relaxed);
                    error!("WITNESS REFUSES: {refusal}");
                }
            }
        }
    }
}

impl TileDir {
    /// A file of the directory, whatever its name (the witness's state files).
    pub(crate) fn read_any(&self, name: &str) -> Option<Vec<u8>> {
        std::fs::read(self.root().join(name)).ok()
    }
}
