//! The Merkle log's check: every stream message is the log's leaf at its place, the latest
//! checkpoint is signed by the notary and cosigned by the witnesses' quorum, and every
//! checkpoint the auditor kept from earlier runs is a prefix of it (or it equivocated).
//!
//! The decisions are `refbus_notary::verify`'s (the same code a witness and a receipt use);
//! this check only feeds it the stream's messages as the verification reads them, and keeps
//! the latest checkpoint after a run for the next one, so a log rewritten between two audits
//! is caught even when every file of it is consistent with itself.

use std::path::{Path, PathBuf};

use refbus_notary::leaf::Leaf;
use refbus_notary::tiles::{TileDir, TileSource};
use refbus_notary::verify::{self, Trust};

use crate::checks::{Check, End, Seen};
use crate::problem::Problem;

/// Where the log is and whom to trust.
#[derive(Clone)]
pub struct LogSource {
    /// The log's files (C2SP tlog-tiles layout: `checkpoint`, `tile/...`), as mirrored or
    /// served by the notary.
    pub tiles: PathBuf,
    pub trust: Trust,
    /// A directory of checkpoints this auditor kept from earlier runs (one note per file);
    /// the latest checkpoint of a run is added to it when the run found nothing wrong with
    /// the log.
    pub kept: Option<PathBuf>,
}

/// The check: the stream's leaves as read, compared at the end.
pub struct LogCheck {
    source: LogSource,
    leaves: Vec<Leaf>,
}

impl LogCheck {
    pub fn new(source: LogSource) -> LogCheck {
        LogCheck {
            source,
            leaves: Vec::new(),
        }
    }

    fn problem(finding: &verify::Problem) -> Problem {
        use verify::Problem as P;
        let (kind, seq) = match finding {
            P::Checkpoint(_) => ("checkpoint", None),
            P::QuorumNotMet { .. } => ("quorum", None),
            P::Equivocation { .. } => ("equivocation", None),
            P::Inconsistent { .. } => ("inconsistent", None),
            P::EarlierCheckpoint { .. } => ("earlier_checkpoint", None),
            P::LeafDiffers { seq, .. } => ("leaf_differs", Some(*seq)),
            P::MissingFromStream { seq, .. } => ("missing_from_stream", Some(*seq)),
            P::StreamShorter { .. } => ("stream_shorter", None),
            P::LoggedGap { seq } => ("logged_gap", Some(*seq)),
            P::NotInLog { seq, .. } => ("not_in_log", Some(*seq)),
            P::Tiles(_) => ("tiles", None),
        };
        Problem::Log {
            kind: kind.to_owned(),
            seq,
            detail: finding.to_string(),
        }
    }

    /// The checkpoints kept earlier, oldest first by file name; unreadable files are problems.
    fn kept(dir: &Path, problems: &mut Vec<Problem>) -> Vec<Vec<u8>> {
        let mut files: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(entries) => entries
                .filter_map(Result::ok)
                .map(|entry| entry.path())
                .filter(|path| path.is_file())
                .collect(),
            // No directory yet: the first audit keeps the first checkpoint.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(err) => {
                problems.push(Problem::Log {
                    kind: "kept_checkpoints".to_owned(),
                    seq: None,
                    detail: format!("reading {}: {err}", dir.display()),
                });
                return Vec::new();
            }
        };
        files.sort();
        let mut notes = Vec::new();
        for file in files {
            match std::fs::read(&file) {
                Ok(bytes) => notes.push(bytes),
                Err(err) => problems.push(Problem::Log {
                    kind: "kept_checkpoints".to_owned(),
                    seq: None,
                    detail: format!("reading {}: {err}", file.display()),
                }),
            }
        }
        notes
    }

    /// Keeps `note` for the next audit, named by its size so the directory reads in order.
    fn keep(dir: &Path, size: u64, note: &[u8], problems: &mut Vec<Problem>) {
        let path = dir.join(format!("checkpoint-{size:020}"));
        if path.exists() {
            return;
        }
        if let Err(err) = std::fs::create_dir_all(dir).and_then(|()| std::fs::write(&path, note)) {
            problems.push(Problem::Log {
                kind: "kept_checkpoints".to_owned(),
                seq: None,
                detail: format!("keeping the checkpoint in {}: {err}", path.display()),
            });
        }
    }
}

impl Check for LogCheck {
    fn name(&self) -> &'static str {
        "log"
    }

    fn message(&mut self, seen: Seen<'_>, _problems: &mut Vec<Problem>) {
        let message = seen.message;
        verify::push_message(
            &mut self.leaves,
            message.seq,
            &message.subject,
            &message.payload,
        );
    }

    fn finish(&mut self, _end: End<'_>, problems: &mut Vec<Problem>) {
        let tiles = TileDir::new(&self.source.tiles);
        let latest = match tiles.read("checkpoint") {
            Ok(Some(note)) => note,
            Ok(None) => {
                problems.push(Problem::Log {
                    kind: "checkpoint".to_owned(),
                    seq: None,
                    detail: format!(
                        "no checkpoint in {}: expected the notary's latest signed checkpoint",
                        self.source.tiles.display()
                    ),
                });
                return;
            }
            Err(err) => {
                problems.push(Problem::Log {
                    kind: "checkpoint".to_owned(),
                    seq: None,
                    detail: format!("reading {}: {err}", self.source.tiles.display()),
                });
                return;
            }
        };
        let earlier = match &self.source.kept {
            Some(dir) => Self::kept(dir, problems),
            None => Vec::new(),
        };
        let (checkpoint, findings) =
            verify::check_checkpoints(&latest, &earlier, &self.source.trust, &tiles);
        let before = problems.len();
        problems.extend(findings.iter().map(Self::problem));
        let Some(checkpoint) = checkpoint else {
            return;
        };
        problems.extend(
            verify::check_stream(&self.leaves, &checkpoint, &tiles)
                .iter()
                .map(Self::problem),
        );
        // Only a log found sound is kept as the reference for the next audit.
        if problems.len() == before
            && let Some(dir) = &self.source.kept
        {
            Self::keep(dir, checkpoint.size, &checkpoint.note, problems);
        }
    }

    fn save(&self) -> serde_json::Value {
        let leaves: Vec<(u64, &str, Option<String>)> = self
            .leaves
            .iter()
            .map(|leaf| (leaf.seq, leaf.subject.as_str(), leaf.digest.map(hex_of)))
            .collect();
        serde_json::json!({ "leaves": leaves })
    }

    fn restore(&mut self, saved: serde_json::Value) -> Result<(), serde_json::Error> {
        #[derive(serde::Deserialize)]
        struct Saved {
            leaves: Vec<(u64, String, Option<String>)>,
        }
        let saved: Saved = serde_json::from_value(saved)?;
        let mut leaves = Vec::with_capacity(saved.leaves.len());
        for (seq, subject, digest) in saved.leaves {
            let digest = match digest {
                Some(text) => Some(digest_of(&text).ok_or_else(|| {
                    <serde_json::Error as serde::de::Error>::custom(format!(
                        "leaf {seq}: a digest is 64 hex digits"
                    ))
                })?),
                None => None,
            };
            leaves.push(Leaf {
                seq,
                subject,
                digest,
            });
        }
        self.leaves = leaves;
        Ok(())
    }
}

fn hex_of(digest: [u8; 32]) -> String {
    data_encoding::HEXLOWER.encode(&digest)
}

fn digest_of(text: &str) -> Option<[u8; 32]> {
    data_encoding::HEXLOWER
        .decode(text.as_bytes())
        .ok()?
        .try_into()
        .ok()
}
