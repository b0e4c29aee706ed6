//! The notary's loop: read the events stream in order from where the log ends, append each
//! message as a leaf, and every `interval` (when the tree grew) write the tiles, sign a
//! checkpoint, write it and publish it; answer proof requests; serve the files over HTTP.

use std::future::Future;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::StreamExt;
use refbus_bus::{Bus, ProofAnswer, ProofRequest, ReadError};
use tracing::{error, info, warn};

use crate::leaf::Leaf;
use crate::note::{NoteKey, SignedCheckpoint, notary_verifier, open_checkpoint};
use crate::proof::Receipt;
use crate::tiles::{BUNDLE, TileDir, TileSource};
use crate::tree::Tree;
use crate::verify::{self, Problem};

/// Where and how the notary keeps its log.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The log's directory (tiles, entry bundles, `checkpoint`).
    pub dir: PathBuf,
    /// The log's origin: the first line of every checkpoint.
    pub origin: String,
    /// How often a checkpoint is signed when the tree grew.
    pub interval: Duration,
    /// Where to serve Prometheus metrics (`refbus_notary_*`), if anywhere.
    pub metrics: Option<refbus_metrics::Endpoint>,
    /// How often the events stream's settings are checked again while the notary runs
    /// ([`refbus_bus::statement::RECHECK_EVERY`] unless a test needs it sooner).
    pub stream_recheck_every: Duration,
}

/// What the notary has done, for tests and metrics.
#[derive(Debug, Default)]
pub struct Stats {
    /// Leaves in the tree.
    pub size: AtomicU64,
    /// Size of the latest signed checkpoint.
    pub checkpointed: AtomicU64,
    /// Sequences the stream skipped (recorded as missing leaves).
    pub gaps: AtomicU64,
    /// Problems found when the stream was compared with the log at start.
    pub mismatches: AtomicU64,
    /// Differences from the configured settings the last check of the events stream found
    /// (0: as configured).
    pub stream_differences: AtomicU64,
    /// Checks of the events stream made while running (those JetStream answered).
    pub stream_checks: AtomicU64,
}

/// A notary ready to run.
#[derive(Debug)]
pub struct Notary {
    pub bus: Bus,
    pub key: NoteKey,
    pub settings: Settings,
    pub stats: Arc<Stats>,
}

/// Why the notary stopped.
#[derive(Debug, thiserror::Error)]
pub enum NotaryError {
    #[error(
        "the stream does not match the log the notary signed ({} problem(s)); the notary will \
         not extend it: {}",
        .0.len(),
        .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; ")
    )]
    Tampered(Vec<Problem>),
    #[error("the log's checkpoint in {0}")]
    Checkpoint(String),
    #[error("the log's files: {0}")]
    Io(#[from] std::io::Error),
    #[error("the bus: {0}")]
    Bus(#[from] ReadError),
    #[error("the events stream ended")]
    StreamEnded,
}

/// The log in memory: the tree, the entries since the last full bundle, the last checkpoint.
struct Log {
    dir: TileDir,
    tree: Tree,
    /// Entries from `tail_start` (a bundle boundary) to the tree's size.
    tail: Vec<Vec<u8>>,
    tail_start: u64,
    published: u64,
    checkpoint: Option<Vec<u8>>,
}

impl Log {
    fn push(&mut self, leaf: &Leaf) {
        self.tree.push(leaf.hash());
        self.tail.push(leaf.encode());
    }
}

impl Notary {
    /// Runs until `shutdown` resolves (then signs a last checkpoint) or the log cannot go on.
    /// `http`, if given, serves the log's files read-only (`/checkpoint`, `/tile/...`).
    pub async fn run(
        self,
        http: Option<tokio::net::TcpListener>,
        shutdown: impl Future<Output = ()>,
    ) -> Result<(), NotaryError> {
        let (stop_http, http_stopped) = tokio::sync::watch::channel(false);
        let server = http.map(|listener| {
            let dir = TileDir::new(self.settings.dir.clone());
            let mut stopped = http_stopped.clone();
            tokio::spawn(async move {
                let stop = async move {
                    let _ = stopped.wait_for(|stop| *stop).await;
                };
                if let Err(err) = crate::http::serve(listener, dir, stop).await {
                    warn!("the notary's HTTP server stopped: {err}");
                }
            })
        });
        let metrics = match &self.settings.metrics {
            Some(endpoint) => Some(refbus_metrics::spawn(
                crate::metrics::exposition(self.stats.clone()),
                endpoint,
            )?),
            None => None,
        };
        let recheck = tokio::spawn(recheck_stream(
            self.bus.clone(),
            self.stats.clone(),
            self.settings.stream_recheck_every,
        ));
        let result = self.follow(shutdown).await;
        recheck.abort();
        if let Some(metrics) = metrics {
            metrics.stop().await;
        }
        stop_http.send_replace(true);
        if let Some(server) = server {
            let _ = server.await;
        }
        result
    }

    async fn follow(self, shutdown: impl Future<Output = ()>) -> Result<(), NotaryError> {
        let mut log = self.resume().await?;
        self.publish(&mut log).await?;
        let mut messages = Box::pin(self.bus.raw_messages(log.tree.size(), true).await?);
        let mut requests = Box::pin(self.bus.log_proof_requests().await?);
        let mut cosignatures = Box::pin(self.bus.log_cosignatures().await?);
        // The first tick one interval from now: the log was just published.
        let mut ticker = tokio::time::interval_at(
            tokio::time::Instant::now() + self.settings.interval,
            self.settings.interval,
        );
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            tokio::select! {
                () = &mut shutdown => {
                    self.publish(&mut log).await?;
                    return Ok(());
                }
                message = messages.next() => match message {
                    Some(Ok(message)) => {
                        let next = log.tree.size() + 1;
                        if message.seq < next {
                            continue;
                        }
                        for missing in next..message.seq {
                            self.record_gap(&mut log, missing);
                        }
                        log.push(&Leaf::message(message.seq, &message.subject, &message.payload));
                        self.stats.size.store(log.tree.size(), Ordering::Relaxed);
                    }
                    Some(Err(err)) => warn!("reading the events stream: {err}"),
                    None => return Err(NotaryError::StreamEnded),
                },
                Some(request) = requests.next() => {
                    let answer = answer(&log, &request);
                    if let Err(err) = self.bus.answer_log_proof(&request, &answer).await {
                        warn!("answering a proof request: {err}");
                    }
                }
                Some(cosigned) = cosignatures.next() => {
                    // Witnesses' cosignatures of the latest checkpoint join it (served, and
                    // in receipts); auditors check them against their witness keys.
                    let merged = log
                        .checkpoint
                        .as_deref()
                        .and_then(|ours| crate::note::merge_signatures(ours, &cosigned));
                    if let Some(merged) = merged {
                        log.dir.write_checkpoint(&merged)?;
                        log.checkpoint = Some(merged);
                    }
                }
                _ = ticker.tick() => self.publish(&mut log).await?,
            }
        }
    }

    fn record_gap(&self, log: &mut Log, seq: u64) {
        error!(
            seq,
            "LOG GAP: the events stream skipped seq {seq} (a message deleted before the notary \
             read it); recorded in the log as a missing leaf"
        );
        self.stats.gaps.fetch_add(1, Ordering::Relaxed);
        log.push(&Leaf::missing(seq));
    }

    /// Reads the log's checkpoint, then the whole stream as it is now, and checks that the
    /// stream still holds what the log signed; the tree is rebuilt from the stream.
    async fn resume(&self) -> Result<Log, NotaryError> {
        let dir = TileDir::new(self.settings.dir.clone());
        std::fs::create_dir_all(dir.root())?;
        let checkpoint = match dir.read("checkpoint")? {
            None => None,
            Some(note) => Some(self.own_checkpoint(&note)?),
        };
        let leaves = stream_leaves(&self.bus).await?;
        let logged = checkpoint.as_ref().map_or(0, |c| c.size);
        if let Some(checkpoint) = &checkpoint {
            let problems: Vec<Problem> = verify::check_stream(&leaves, checkpoint, &dir)
                .into_iter()
                .filter(|p| !matches!(p, Problem::NotInLog { .. } | Problem::LoggedGap { .. }))
                .collect();
            if !problems.is_empty() {
                for problem in &problems {
                    error!("LOG TAMPERED: {problem}");
                }
                self.stats
                    .mismatches
                    .fetch_add(problems.len() as u64, Ordering::Relaxed);
                return Err(NotaryError::Tampered(problems));
            }
        }
        let tail_start = logged / BUNDLE * BUNDLE;
        let mut log = Log {
            dir,
            tree: Tree::default(),
            tail: Vec::new(),
            tail_start,
            published: logged,
            checkpoint: checkpoint.map(|c| c.note),
        };
        for leaf in &leaves {
            if leaf.is_missing() && leaf.seq > logged {
                self.record_gap(&mut log, leaf.seq);
                continue;
            }
            log.tree.push(leaf.hash());
            if leaf.seq > tail_start {
                log.tail.push(leaf.encode());
            }
        }
        self.stats.size.store(log.tree.size(), Ordering::Relaxed);
        self.stats.checkpointed.store(logged, Ordering::Relaxed);
        info!(
            logged,
            size = log.tree.size(),
            "notary resumed: the stream matches the log"
        );
        Ok(log)
    }

    fn own_checkpoint(&self, note: &[u8]) -> Result<SignedCheckpoint, NotaryError> {
        let verifier = notary_verifier(&self.key.verifier_key())
            .map_err(|err| NotaryError::Checkpoint(err.to_string()))?;
        open_checkpoint(note, &self.settings.origin, &verifier, &[])
            .map(|(checkpoint, _)| checkpoint)
            .map_err(|err| {
                NotaryError::Checkpoint(format!("{}: {err}", self.settings.dir.display()))
            })
    }

    /// Tiles, then the signed checkpoint (both durable), then the announcement.
    async fn publish(&self, log: &mut Log) -> Result<(), NotaryError> {
        let size = log.tree.size();
        if size == log.published && log.checkpoint.is_some() {
            return Ok(());
        }
        log.dir.write_tiles(&log.tree, log.published, &log.tail)?;
        let root = log
            .tree
            .root(size)
            .unwrap_or_else(|err| unreachable!("the tree has {size} leaves: {err}"));
        let note = self.key.sign_checkpoint(&self.settings.origin, size, root);
        log.dir.write_checkpoint(&note)?;
        log.published = size;
        log.checkpoint = Some(note.clone());
        let start = size / BUNDLE * BUNDLE;
        let drop = usize::try_from(start - log.tail_start).unwrap_or(usize::MAX);
        log.tail.drain(..drop.min(log.tail.len()));
        log.tail_start = start;
        self.stats.checkpointed.store(size, Ordering::Relaxed);
        if let Err(err) = self.bus.publish_log_checkpoint(note).await {
            warn!("publishing checkpoint {size}: {err}");
        }
        Ok(())
    }
}

/// Checks the events stream's settings again every `every` while the notary runs: the start-up
/// check (`Bus::connect`) refuses a stream that can lose events, and this one reports a stream
/// altered under a running notary, at ERROR at every check and in
/// `refbus_notary_stream_differences`, until it is put right. The notary goes on logging: what
/// it has logged stays provable, and a message lost from now on shows in its log as a missing
/// leaf (`LOG GAP`) and to an auditor's `audit verify`.
async fn recheck_stream(bus: Bus, stats: Arc<Stats>, every: Duration) {
    let mut ticks = tokio::time::interval(every);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // The first tick is now: the start-up check has just been made.
    ticks.tick().await;
    loop {
        ticks.tick().await;
        match bus.stream_differences().await {
            Ok(differences) => {
                if !differences.is_empty() {
                    error!(
                        differences = %differences.join("; "),
                        "the events stream no longer is as configured: it can lose or alter \
                         events before the notary logs them; tell the refbus administrator \
                         (the notary goes on logging)"
                    );
                }
                stats
                    .stream_differences
                    .store(differences.len() as u64, Ordering::Relaxed);
                stats.stream_checks.fetch_add(1, Ordering::Relaxed);
            }
            Err(err) => warn!(error = %err, "could not check the events stream again"),
        }
    }
}

/// The stream as it is now, as leaves ([`verify::leaves`]): what the notary checks its log
/// against at start, and what an auditor passes to [`verify::check_stream`].
pub async fn stream_leaves(bus: &Bus) -> Result<Vec<Leaf>, ReadError> {
    let mut leaves = Vec::new();
    let mut messages = Box::pin(bus.raw_messages(0, false).await?);
    while let Some(message) = messages.next().await {
        let message = message?;
        verify::push_message(&mut leaves, message.seq, &message.subject, &message.payload);
    }
    Ok(leaves)
}

/// The receipt for one stream sequence, against the latest signed checkpoint.
fn answer(log: &Log, request: &ProofRequest) -> ProofAnswer {
    let seq = request.seq;
    let Some(checkpoint) = &log.checkpoint else {
        return ProofAnswer::NotYet;
    };
    if seq == 0 || seq > log.tree.size() {
        return if seq == 0 {
            ProofAnswer::Unknown
        } else {
            ProofAnswer::NotYet
        };
    }
    if seq > log.published {
        return ProofAnswer::NotYet;
    }
    let index = seq - 1;
    let Ok(proof) = log.tree.prove_leaf(log.published, index) else {
        return ProofAnswer::NotYet;
    };
    match entry(log, index) {
        Some(entry) => ProofAnswer::Proof(
            Receipt {
                entry,
                index,
                proof,
                checkpoint: checkpoint.clone(),
            }
            .encode(),
        ),
        None => ProofAnswer::NotYet,
    }
}

/// The entry of leaf `index`: in memory if recent, else from its bundle on disk.
fn entry(log: &Log, index: u64) -> Option<Vec<u8>> {
    if index >= log.tail_start {
        return log
            .tail
            .get(usize::try_from(index - log.tail_start).ok()?)
            .cloned();
    }
    let bundle = crate::tiles::bundle_for(index, log.published);
    let bytes = log.dir.read(&crate::tiles::path(&bundle)).ok()??;
    crate::tiles::decode_bundle(&bytes)?
        .get(usize::try_from(index % BUNDLE).ok()?)
        .cloned()
}
