//! What an auditor checks of the log, pure: a checkpoint's signatures and quorum, its
//! consistency with every checkpoint kept earlier, and the stream's messages against the log.
//! Every problem is a [`Problem`] naming the sequence, subject and what was expected.

use std::fmt;

use signed_note::StandardVerifier;
use tlog_tiles::Hash;

use crate::leaf::Leaf;
use crate::note::{CheckpointError, CosignatureVerifier, SignedCheckpoint, open_checkpoint};
use crate::tiles::{SourceTiles, TileSource, bundle_for, decode_bundle, path};
use crate::tree::Tree;

/// One problem found.
#[derive(Debug, Clone, PartialEq)]
pub enum Problem {
    /// The latest checkpoint is malformed, for another log, or not signed by the notary.
    Checkpoint(CheckpointError),
    /// Fewer valid witness cosignatures than the quorum.
    QuorumNotMet {
        required: usize,
        cosigned_by: Vec<String>,
    },
    /// Two checkpoints signed by the notary for the same size with different roots: the
    /// notary showed two different logs.
    Equivocation {
        size: u64,
        first: Hash,
        second: Hash,
    },
    /// An earlier checkpoint is not a prefix of the latest (or is larger than it).
    Inconsistent {
        earlier_size: u64,
        earlier_root: Hash,
        size: u64,
        reason: String,
    },
    /// An earlier checkpoint the auditor kept is malformed or not signed by the notary.
    EarlierCheckpoint {
        index: usize,
        error: CheckpointError,
    },
    /// The stream holds a message at this sequence that the log holds differently.
    LeafDiffers {
        seq: u64,
        subject: String,
        expected: String,
    },
    /// The log holds a message at this sequence that the stream no longer holds (deleted).
    MissingFromStream { seq: u64, logged: String },
    /// The stream ends before the log does: messages were deleted at its end (a cut tail, a
    /// stream restored from an older backup).
    StreamShorter { log_size: u64, stream_last_seq: u64 },
    /// The log itself records that the stream skipped this sequence when the notary read it
    /// (a message deleted before it was logged).
    LoggedGap { seq: u64 },
    /// A stream message the checkpoint does not cover (newer than it).
    NotInLog { seq: u64, subject: String },
    /// Tiles needed to check could not be read or do not match the checkpoint.
    Tiles(String),
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Problem::Checkpoint(err) => write!(f, "checkpoint: {err}"),
            Problem::QuorumNotMet {
                required,
                cosigned_by,
            } => write!(
                f,
                "quorum not met: {required} witness cosignature(s) required, {} valid ({})",
                cosigned_by.len(),
                cosigned_by.join(", ")
            ),
            Problem::Equivocation {
                size,
                first,
                second,
            } => write!(
                f,
                "equivocation: the notary signed two trees of size {size} with different roots \
                 ({first} and {second})"
            ),
            Problem::Inconsistent {
                earlier_size,
                earlier_root,
                size,
                reason,
            } => write!(
                f,
                "inconsistent: the checkpoint of size {earlier_size} (root {earlier_root}) is not \
                 a prefix of the log of size {size}: {reason}"
            ),
            Problem::EarlierCheckpoint { index, error } => {
                write!(f, "earlier checkpoint #{index}: {error}")
            }
            Problem::LeafDiffers {
                seq,
                subject,
                expected,
            } => write!(
                f,
                "seq {seq} subject {subject}: the stored message differs from the log, which \
                 holds {expected}"
            ),
            Problem::MissingFromStream { seq, logged } => write!(
                f,
                "seq {seq}: the stream no longer holds this message (deleted); the log holds \
                 {logged}"
            ),
            Problem::StreamShorter {
                log_size,
                stream_last_seq,
            } => write!(
                f,
                "the stream ends at seq {stream_last_seq} but the log holds {log_size} messages: \
                 seq {}..={log_size} were deleted (cut, or a stale backup restored)",
                stream_last_seq + 1
            ),
            Problem::LoggedGap { seq } => write!(
                f,
                "seq {seq}: the stream skipped this sequence when the notary read it (a message \
                 deleted before it was logged)"
            ),
            Problem::NotInLog { seq, subject } => write!(
                f,
                "seq {seq} subject {subject}: not covered by the checkpoint (newer than it)"
            ),
            Problem::Tiles(reason) => write!(f, "tiles: {reason}"),
        }
    }
}

/// Whom the auditor trusts.
#[derive(Clone)]
pub struct Trust {
    /// The log's origin (the checkpoint's first line).
    pub origin: String,
    pub notary: StandardVerifier,
    pub witnesses: Vec<CosignatureVerifier>,
    /// How many of `witnesses` must have cosigned the latest checkpoint.
    pub quorum: usize,
}

/// Checks the latest checkpoint: the notary's signature, the witnesses' quorum, and that every
/// earlier checkpoint (as the auditor kept them) is consistent with it, proven from `tiles`.
/// Returns the checkpoint if its signature holds, and every problem.
pub fn check_checkpoints(
    latest: &[u8],
    earlier: &[Vec<u8>],
    trust: &Trust,
    tiles: &impl TileSource,
) -> (Option<SignedCheckpoint>, Vec<Problem>) {
    let mut problems = Vec::new();
    let (checkpoint, cosigned_by) =
        match open_checkpoint(latest, &trust.origin, &trust.notary, &trust.witnesses) {
            Ok(opened) => opened,
            Err(err) => return (None, vec![Problem::Checkpoint(err)]),
        };
    if cosigned_by.len() < trust.quorum {
        problems.push(Problem::QuorumNotMet {
            required: trust.quorum,
            cosigned_by,
        });
    }
    let mut kept: Vec<SignedCheckpoint> = Vec::new();
    for (index, note) in earlier.iter().enumerate() {
        match open_checkpoint(note, &trust.origin, &trust.notary, &[]) {
            Ok((earlier, _)) => kept.push(earlier),
            Err(error) => problems.push(Problem::EarlierCheckpoint { index, error }),
        }
    }
    // Equivocation among everything signed.
    let mut all = kept.clone();
    all.push(checkpoint.clone());
    for (i, a) in all.iter().enumerate() {
        for b in &all[i + 1..] {
            if a.size == b.size && a.root != b.root {
                let problem = Problem::Equivocation {
                    size: a.size,
                    first: a.root,
                    second: b.root,
                };
                if !problems.contains(&problem) {
                    problems.push(problem);
                }
            }
        }
    }
    for earlier in &kept {
        if earlier.size == checkpoint.size {
            continue;
        }
        if let Err(reason) = consistent(earlier, &checkpoint, tiles) {
            problems.push(Problem::Inconsistent {
                earlier_size: earlier.size,
                earlier_root: earlier.root,
                size: checkpoint.size,
                reason,
            });
        }
    }
    (Some(checkpoint), problems)
}

/// Whether `earlier` is a prefix of `latest`, proven with a consistency proof built from
/// tiles that are themselves checked against `latest`'s root.
pub fn consistent(
    earlier: &SignedCheckpoint,
    latest: &SignedCheckpoint,
    tiles: &impl TileSource,
) -> Result<(), String> {
    consistency(earlier, latest, tiles).map_err(|err| match err {
        Consistency::MissingTiles(paths) => format!("tile {} is missing", paths.join(", ")),
        Consistency::Fails(reason) => reason,
    })
}

/// Why a consistency check did not succeed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Consistency {
    /// Tiles the proof needs are not in the source (yet): fetch them and ask again.
    MissingTiles(Vec<String>),
    /// The logs are not consistent, or the tiles do not match the checkpoint.
    Fails(String),
}

/// [`consistent`], telling missing tiles apart so a caller fetching them can retry.
pub fn consistency(
    earlier: &SignedCheckpoint,
    latest: &SignedCheckpoint,
    tiles: &impl TileSource,
) -> Result<(), Consistency> {
    if earlier.size > latest.size {
        return Err(Consistency::Fails(format!(
            "it is larger ({} > {}): the log went back",
            earlier.size, latest.size
        )));
    }
    let source = SourceTiles::new(tiles);
    let reader = source.reader(latest.size, latest.root);
    let proof = tlog_tiles::prove_tree(latest.size, earlier.size, &reader).map_err(|err| {
        let missing = source.missing();
        if missing.is_empty() {
            Consistency::Fails(source.problem().unwrap_or_else(|| err.to_string()))
        } else {
            Consistency::MissingTiles(missing)
        }
    })?;
    tlog_tiles::check_tree(&proof, latest.size, latest.root, earlier.size, earlier.root)
        .map_err(|_| Consistency::Fails("the consistency proof fails".to_owned()))
}

/// Turns the stream's messages (in stream order) into leaves, with a missing leaf for every
/// skipped sequence.
pub fn leaves<'a>(messages: impl IntoIterator<Item = (u64, &'a str, &'a [u8])>) -> Vec<Leaf> {
    let mut out: Vec<Leaf> = Vec::new();
    for (seq, subject, payload) in messages {
        push_message(&mut out, seq, subject, payload);
    }
    out
}

/// Appends the next stream message to `leaves`: missing leaves first for every sequence the
/// stream skipped; a sequence already there (a redelivery) is ignored.
pub fn push_message(leaves: &mut Vec<Leaf>, seq: u64, subject: &str, payload: &[u8]) {
    let next = leaves.len() as u64 + 1;
    if seq < next {
        return;
    }
    for missing in next..seq {
        leaves.push(Leaf::missing(missing));
    }
    leaves.push(Leaf::message(seq, subject, payload));
}

/// Checks the stream's leaves (from [`leaves`]) against the log of `checkpoint`: every message
/// the checkpoint covers must be the log's leaf at its place; where the roots differ, each
/// differing leaf is named from the log's entry bundles.
pub fn check_stream(
    stream: &[Leaf],
    checkpoint: &SignedCheckpoint,
    tiles: &impl TileSource,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let size = checkpoint.size;
    let covered = usize::try_from(size)
        .unwrap_or(usize::MAX)
        .min(stream.len());
    let mut tree = Tree::default();
    for leaf in &stream[..covered] {
        tree.push(leaf.hash());
    }
    let agrees = stream.len() as u64 >= size && tree.root(size).ok() == Some(checkpoint.root);
    if !agrees {
        problems.extend(name_differences(&stream[..covered], checkpoint, tiles));
        if (stream.len() as u64) < size {
            problems.push(Problem::StreamShorter {
                log_size: size,
                stream_last_seq: stream.len() as u64,
            });
        }
        if problems.is_empty() {
            problems.push(Problem::Tiles(
                "the stream's tree differs from the checkpoint's root but no entry bundle \
                 names the difference (the tiles do not match the checkpoint)"
                    .to_owned(),
            ));
        }
    }
    for leaf in &stream[..covered] {
        if leaf.is_missing() && agrees {
            problems.push(Problem::LoggedGap { seq: leaf.seq });
        }
    }
    for leaf in &stream[covered..] {
        problems.push(match leaf.is_missing() {
            true => Problem::LoggedGap { seq: leaf.seq },
            false => Problem::NotInLog {
                seq: leaf.seq,
                subject: leaf.subject.clone(),
            },
        });
    }
    problems
}

/// Which of the stream's leaves differ from the log's, read from the entry bundles (whose leaf
/// hashes are checked against the checkpoint's tree first, so a doctored bundle cannot hide
/// a difference or invent one).
fn name_differences(
    stream: &[Leaf],
    checkpoint: &SignedCheckpoint,
    tiles: &impl TileSource,
) -> Vec<Problem> {
    let mut problems = Vec::new();
    let source = SourceTiles::new(tiles);
    let reader = source.reader(checkpoint.size, checkpoint.root);
    let mut index = 0u64;
    while index < checkpoint.size {
        let bundle = bundle_for(index, checkpoint.size);
        let entries = match tiles.read(&path(&bundle)) {
            Ok(Some(bytes)) => decode_bundle(&bytes),
            _ => None,
        };
        let Some(entries) = entries else {
            problems.push(Problem::Tiles(format!(
                "entry bundle {} is missing or malformed",
                path(&bundle)
            )));
            return problems;
        };
        let indexes: Vec<u64> = (0..entries.len() as u64)
            .map(|i| tlog_tiles::stored_hash_index(0, index + i))
            .collect();
        let proven = match tlog_tiles::HashReader::read_hashes(&reader, &indexes) {
            Ok(hashes) => hashes,
            Err(err) => {
                problems.push(Problem::Tiles(format!(
                    "hash tiles for leaves from {index}: {err}"
                )));
                return problems;
            }
        };
        for (i, entry) in entries.iter().enumerate() {
            let at = index + i as u64;
            if tlog_tiles::record_hash(entry) != proven[i] {
                problems.push(Problem::Tiles(format!(
                    "entry {at} in {} does not match the checkpoint's tree",
                    path(&bundle)
                )));
                return problems;
            }
            let logged = match Leaf::decode(entry) {
                Ok(leaf) => leaf,
                Err(err) => {
                    problems.push(Problem::Tiles(format!("entry {at}: {err}")));
                    continue;
                }
            };
            let Some(ours) = usize::try_from(at).ok().and_then(|at| stream.get(at)) else {
                continue;
            };
            if *ours == logged {
                continue;
            }
            problems.push(match (ours.is_missing(), logged.is_missing()) {
                (true, false) => Problem::MissingFromStream {
                    seq: logged.seq,
                    logged: logged.to_string(),
                },
                _ => Problem::LeafDiffers {
                    seq: ours.seq,
                    subject: ours.subject.clone(),
                    expected: logged.to_string(),
                },
            });
        }
        index += entries.len().max(1) as u64;
    }
    problems
}
