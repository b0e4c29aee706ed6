//! The router's snapshot of its timer table, so a restart does not re-read every open referral.
//!
//! Every open referral's wake-up is recomputable from its last record, and a restart without a
//! snapshot does exactly that (`Router::rebuild`): one read and one signature check per open
//! referral, tens of seconds for a million. The snapshot is the table itself, written now and
//! then to a local file and signed with the router's key: a restart loads it, then reads again
//! only the referrals whose subjects received a message after the stream sequence it covers.
//!
//! It is a cache, never a source of truth: a missing, unreadable, foreign or altered file is
//! reported and the router rebuilds from the bus as before. Why a local file and not JetStream:
//! docs/ARCHITECTURE.md, "The router's snapshot of timers".
//!
//! Format (little endian): the magic line, the stream sequence covered (u64), the number of
//! entries (u64), each entry (referral id: 16 bytes, sequence: u64, wake-up in Unix
//! milliseconds: i64, subject length: u16, subject), then the signing key's id (8 bytes) and
//! the Ed25519 signature (64 bytes) over SHA-256 of everything before them.

use std::io::Write;
use std::path::Path;

use refbus_core::format::{self, RecordKind, UnknownFormat};
use refbus_core::signature::{KeyId, Signature, Signer, Signers, SigningKey};
use refbus_core::{ReferralId, Timestamp};
use sha2::{Digest, Sha256};

/// The first bytes of a snapshot file: its title and format (`refbus_core::format`); a new
/// layout gets a new format, named in this line and covered by the signature.
const MAGIC: &[u8] = b"refbus router timers v1\n";
/// The first line's title, before its ` v<format>`.
const TITLE: &str = "refbus router timers";
/// What the signature names instead of a subject: with spaces, so no stream subject (which
/// cannot contain one) can ever share a signature with a snapshot.
const SIGNED_AS: &str = "router timers snapshot";
const SIGNATURE_LEN: usize = 8 + 64;

/// One referral's wake-up, as the timer table holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    pub(crate) referral: ReferralId,
    pub(crate) subject: std::sync::Arc<str>,
    pub(crate) seq: u64,
    pub(crate) wake: Timestamp,
}

/// The table as of a stream sequence: every message up to `covers` was applied to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Snapshot {
    pub(crate) covers: u64,
    pub(crate) entries: Vec<Entry>,
}

/// Why a snapshot file is not used.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SnapshotError {
    #[error("reading it: {0}")]
    Io(#[from] std::io::Error),
    #[error("it is not a refbus router snapshot")]
    NotASnapshot,
    #[error("{0}")]
    Format(refbus_core::format::UnknownFormat),
    #[error("it is cut short or has bytes beyond its entries")]
    Truncated,
    #[error("its signature is not this router's: altered, or written with another key")]
    Signature,
}

impl Snapshot {
    /// The signed bytes of the snapshot.
    pub(crate) fn encode(&self, key: &SigningKey) -> Vec<u8> {
        let mut out = Vec::with_capacity(MAGIC.len() + 16 + self.entries.len() * 96);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&self.covers.to_le_bytes());
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for entry in &self.entries {
            // A subject is at most a few hundred bytes (NATS limits them far below u16::MAX).
            let subject = entry.subject.as_bytes();
            let len = u16::try_from(subject.len()).unwrap_or(u16::MAX);
            out.extend_from_slice(entry.referral.as_bytes());
            out.extend_from_slice(&entry.seq.to_le_bytes());
            out.extend_from_slice(&entry.wake.as_millis().to_le_bytes());
            out.extend_from_slice(&len.to_le_bytes());
            out.extend_from_slice(&subject[..usize::from(len)]);
        }
        let signature = key.sign(SIGNED_AS, &Sha256::digest(&out));
        out.extend_from_slice(&signature.key.0);
        out.extend_from_slice(&signature.value);
        out
    }

    /// The snapshot in `bytes`, if `key` (the router's own) signed it.
    pub(crate) fn decode(bytes: &[u8], key: &SigningKey) -> Result<Snapshot, SnapshotError> {
        // The format first: a newer router's file may be laid out (and signed) otherwise.
        let found = format::read_first_line(bytes, TITLE).ok_or(SnapshotError::NotASnapshot)?;
        format::check(RecordKind::RouterSnapshot, Some(found), || {
            "this snapshot".to_owned()
        })
        .map_err(SnapshotError::Format)?;
        if !bytes.starts_with(MAGIC) {
            return Err(SnapshotError::NotASnapshot);
        }
        let Some(split) = bytes.len().checked_sub(SIGNATURE_LEN) else {
            return Err(SnapshotError::Truncated);
        };
        let (body, signature) = bytes.split_at(split);
        let signature = Signature {
            by: Signer::Router,
            key: KeyId(
                signature[..8]
                    .try_into()
                    .map_err(|_| SnapshotError::Truncated)?,
            ),
            value: signature[8..]
                .try_into()
                .map_err(|_| SnapshotError::Truncated)?,
        };
        Signers::new()
            .with(Signer::Router, key.verifying_key())
            .verify(
                &Signer::Router,
                Some(&signature),
                SIGNED_AS,
                &Sha256::digest(body),
            )
            .map_err(|_| SnapshotError::Signature)?;
        let mut reader = Reader {
            rest: &body[MAGIC.len()..],
        };
        let covers = reader.u64()?;
        let count = usize::try_from(reader.u64()?).map_err(|_| SnapshotError::Truncated)?;
        // Bounded by what the file can hold, whatever the count says.
        let mut entries = Vec::with_capacity(count.min(reader.rest.len() / 34));
        for _ in 0..count {
            let referral = ReferralId::from_bytes(
                reader
                    .take(16)?
                    .try_into()
                    .map_err(|_| SnapshotError::Truncated)?,
            );
            let seq = reader.u64()?;
            let wake = Timestamp::from_millis(i64::from_le_bytes(reader.array()?));
            let len = u16::from_le_bytes(reader.array()?);
            let subject = std::str::from_utf8(reader.take(usize::from(len))?)
                .map_err(|_| SnapshotError::NotASnapshot)?;
            entries.push(Entry {
                referral,
                subject: subject.into(),
                seq,
                wake,
            });
        }
        if !reader.rest.is_empty() {
            return Err(SnapshotError::Truncated);
        }
        Ok(Snapshot { covers, entries })
    }

    /// Writes the snapshot to `path` so that a crash leaves either the old file or the new one
    /// whole: a temporary file beside it, flushed to disk, then renamed over it.
    pub(crate) fn write(&self, path: &Path, key: &SigningKey) -> std::io::Result<()> {
        let bytes = self.encode(key);
        let temporary = temporary_beside(path);
        {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(&bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, path)?;
        if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
            std::fs::File::open(dir)?.sync_all()?;
        }
        Ok(())
    }

    /// The snapshot at `path`: `Ok(None)` if there is none yet.
    pub(crate) fn read(path: &Path, key: &SigningKey) -> Result<Option<Snapshot>, SnapshotError> {
        match std::fs::read(path) {
            Ok(bytes) => Snapshot::decode(&bytes, key)
                .map(Some)
                .map_err(|err| match err {
                    // Named by its path, as every refusal of a format names its record.
                    SnapshotError::Format(unknown) => SnapshotError::Format(UnknownFormat {
                        at: path.display().to_string(),
                        ..unknown
                    }),
                    err => err,
                }),
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err.into()),
        }
    }
}

/// A temporary file name beside `path` of this writer alone: replicas sharing a directory may
/// write one partition's snapshot at the same moment (one giving it up, one taking it), and a
/// shared temporary name would interleave their bytes.
fn temporary_beside(path: &Path) -> std::path::PathBuf {
    static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let mut name = path.file_name().unwrap_or_default().to_os_string();
    name.push(format!(".{}-{n}.tmp", std::process::id()));
    path.with_file_name(name)
}

struct Reader<'a> {
    rest: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], SnapshotError> {
        if self.rest.len() < n {
            return Err(SnapshotError::Truncated);
        }
        let (taken, rest) = self.rest.split_at(n);
        self.rest = rest;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], SnapshotError> {
        self.take(N)?
            .try_into()
            .map_err(|_| SnapshotError::Truncated)
    }

    fn u64(&mut self) -> Result<u64, SnapshotError> {
        Ok(u64::from_le_bytes(self.array()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(seed: u8) -> SigningKey {
        SigningKey::from_seed(&[seed; 32], Signer::Router)
    }

    fn snapshot() -> Snapshot {
        Snapshot {
            covers: 42,
            entries: (0..3u8)
                .map(|n| Entry {
                    referral: ReferralId::from_bytes([n; 16]),
                    subject: format!("refbus.v1.ref.a.b.{n}").into(),
                    seq: u64::from(n) + 7,
                    wake: Timestamp::from_millis(1_000 * i64::from(n)),
                })
                .collect(),
        }
    }

    #[test]
    fn a_snapshot_of_an_unknown_format_is_refused_by_its_path_and_one_of_format_1_read() {
        assert_eq!(
            MAGIC,
            format::first_line(TITLE, RecordKind::RouterSnapshot.written()).as_bytes()
        );
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("router-a.timers");
        let mut bytes = snapshot().encode(&key(1));
        bytes[MAGIC.len() - 2] = b'2';
        std::fs::write(&path, &bytes).unwrap();
        let err = Snapshot::read(&path, &key(1)).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: router timers snapshot format 2 is unknown; this refbus reads format 1; \
                 upgrade this reader before the writers (docs/ARCHITECTURE.md, \"Record \
                 formats and versions\")",
                path.display()
            )
        );
    }

    #[test]
    fn a_snapshot_reads_back_as_written() {
        let bytes = snapshot().encode(&key(1));
        assert_eq!(Snapshot::decode(&bytes, &key(1)).unwrap(), snapshot());
    }

    #[test]
    fn another_key_or_any_altered_byte_is_refused() {
        let bytes = snapshot().encode(&key(1));
        assert!(matches!(
            Snapshot::decode(&bytes, &key(2)),
            Err(SnapshotError::Signature)
        ));
        for at in [
            MAGIC.len(),
            MAGIC.len() + 20,
            bytes.len() - 80,
            bytes.len() - 1,
        ] {
            let mut altered = bytes.clone();
            altered[at] ^= 1;
            assert!(
                Snapshot::decode(&altered, &key(1)).is_err(),
                "a change at byte {at} went unnoticed"
            );
        }
        assert!(Snapshot::decode(&bytes[..bytes.len() - 1], &key(1)).is_err());
        assert!(matches!(
            Snapshot::decode(b"something else", &key(1)),
            Err(SnapshotError::NotASnapshot)
        ));
    }

    #[test]
    fn written_files_replace_the_old_one_whole() {
        let dir = std::env::temp_dir().join(format!("refbus-snapshot-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("timers");
        assert!(Snapshot::read(&path, &key(1)).unwrap().is_none());
        snapshot().write(&path, &key(1)).unwrap();
        let mut later = snapshot();
        later.covers = 99;
        later.write(&path, &key(1)).unwrap();
        assert_eq!(Snapshot::read(&path, &key(1)).unwrap(), Some(later));
        // Nothing left beside it.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
