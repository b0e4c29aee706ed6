//! The dashboard's snapshot of its projection, so that a restart reads again only the referrals
//! that changed since, not every one: a start without it checks every referral's last record,
//! minutes for a million on two cores (docs/BENCHMARKS.md, "Dashboard").
//!
//! A cache, never a source of truth, as the router's snapshot of timers: a missing file means a
//! full rebuild; an unreadable, foreign or altered one is reported loudly and the dashboard
//! rebuilds from the bus as without one. Why a local file signed with a key of its own:
//! docs/ARCHITECTURE.md, "The dashboard".
//!
//! Format: the magic line, the stream sequence covered (u64, little endian), the projection's
//! referrals (`Projection::encode`), then the key's id (8 bytes) and the Ed25519 signature (64
//! bytes) over SHA-256 of everything before them.

use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use refbus_core::Registry;
use refbus_core::format::{self, RecordKind, UnknownFormat};
use refbus_core::signature::{KeyId, Signature, Signer, Signers, SigningKey};
use sha2::{Digest, Sha256};

use crate::projection::Projection;

/// The first bytes of a snapshot file: its title and format (`refbus_core::format`); a new
/// layout gets a new format, named in this line and covered by the signature.
const MAGIC: &[u8] = b"refbus dashboard projection v1\n";
/// The first line's title, before its ` v<format>`.
const TITLE: &str = "refbus dashboard projection";
/// What the signature names instead of a subject: with spaces, so no stream subject can ever
/// share a signature with a snapshot.
const SIGNED_AS: &str = "dashboard projection snapshot";
const SIGNATURE_LEN: usize = 8 + 64;

/// Why a snapshot file is not used.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("reading it: {0}")]
    Io(#[from] std::io::Error),
    #[error("it is not a refbus dashboard snapshot")]
    NotASnapshot,
    #[error("{0}")]
    Format(refbus_core::format::UnknownFormat),
    #[error("its signature is not this dashboard's: altered, or written with another key")]
    Signature,
    #[error("its content is not valid: {0}")]
    Content(String),
}

/// The dashboard's snapshot key: 32 secret bytes in `path`, made at first start (mode 0600),
/// never leaving the host. The core's signing key type is reused (one verification path); the
/// key signs nothing but snapshots (see `SIGNED_AS`).
pub fn key(path: &Path) -> std::io::Result<SigningKey> {
    let seed: [u8; 32] = match std::fs::read(path) {
        Ok(bytes) => bytes.try_into().map_err(|_| {
            std::io::Error::other(format!("{} is not a 32-byte key", path.display()))
        })?,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            let mut seed = [0u8; 32];
            getrandom::fill(&mut seed).map_err(std::io::Error::other)?;
            let mut options = std::fs::OpenOptions::new();
            options.write(true).create_new(true);
            #[cfg(unix)]
            std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
            let mut file = options.open(path)?;
            file.write_all(&seed)?;
            file.sync_all()?;
            seed
        }
        Err(err) => return Err(err),
    };
    Ok(SigningKey::from_seed(&seed, Signer::Router))
}

/// The signed bytes of `projection` as of stream sequence `covers`.
pub(crate) fn encode(projection: &Projection, covers: u64, key: &SigningKey) -> Vec<u8> {
    let mut out = Vec::with_capacity(MAGIC.len() + 8 + projection.len() * 120);
    out.extend_from_slice(MAGIC);
    out.extend_from_slice(&covers.to_le_bytes());
    projection.encode(&mut out);
    let signature = key.sign(SIGNED_AS, &Sha256::digest(&out));
    out.extend_from_slice(&signature.key.0);
    out.extend_from_slice(&signature.value);
    out
}

/// The projection in `bytes` and the stream sequence it covers, if `key` signed it.
pub(crate) fn decode(
    bytes: &[u8],
    key: &SigningKey,
    registry: Arc<Registry>,
) -> Result<(Projection, u64), SnapshotError> {
    // The format first: a newer dashboard's file may be laid out (and signed) otherwise.
    let found = format::read_first_line(bytes, TITLE).ok_or(SnapshotError::NotASnapshot)?;
    format::check(RecordKind::DashboardSnapshot, Some(found), || {
        "this snapshot".to_owned()
    })
    .map_err(SnapshotError::Format)?;
    if !bytes.starts_with(MAGIC) || bytes.len() < MAGIC.len() + 8 + SIGNATURE_LEN {
        return Err(SnapshotError::NotASnapshot);
    }
    let (body, signature) = bytes.split_at(bytes.len() - SIGNATURE_LEN);
    let (id, value) = signature.split_at(8);
    let signature = Signature {
        by: key.signer().clone(),
        key: KeyId(id.try_into().map_err(|_| SnapshotError::NotASnapshot)?),
        value: value.try_into().map_err(|_| SnapshotError::NotASnapshot)?,
    };
    Signers::new()
        .with(key.signer().clone(), key.verifying_key())
        .verify(
            key.signer(),
            Some(&signature),
            SIGNED_AS,
            &Sha256::digest(body),
        )
        .map_err(|_| SnapshotError::Signature)?;
    let rest = &body[MAGIC.len()..];
    let (covers, rest) = rest.split_at(8);
    let covers = u64::from_le_bytes(covers.try_into().map_err(|_| SnapshotError::NotASnapshot)?);
    let projection = Projection::decode(registry, rest).map_err(SnapshotError::Content)?;
    Ok((projection, covers))
}

/// Writes `bytes` to `path` so that a crash leaves either the old file or the new one whole: a
/// temporary file beside it, flushed to disk, then renamed over it.
pub(crate) fn write(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let temporary = path.with_extension("tmp");
    {
        let mut file = std::fs::File::create(&temporary)?;
        file.write_all(bytes)?;
        file.sync_all()?;
    }
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent().filter(|dir| !dir.as_os_str().is_empty()) {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// The snapshot at `path`: `Ok(None)` if there is none yet.
pub(crate) fn read(
    path: &Path,
    key: &SigningKey,
    registry: Arc<Registry>,
) -> Result<Option<(Projection, u64)>, SnapshotError> {
    match std::fs::read(path) {
        Ok(bytes) => decode(&bytes, key, registry)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_of_an_unknown_format_is_refused_by_its_path() {
        assert_eq!(
            MAGIC,
            format::first_line(TITLE, RecordKind::DashboardSnapshot.written()).as_bytes()
        );
        let registry = Arc::new(refbus_e2e::demo_registry());
        let key = SigningKey::from_seed(&[5; 32], Signer::Router);
        let projection = Projection::new(registry.clone());
        let mut bytes = encode(&projection, 7, &key);
        assert!(decode(&bytes, &key, registry.clone()).is_ok());
        bytes[MAGIC.len() - 2] = b'2';
        let dir =
            std::env::temp_dir().join(format!("refbus-dashboard-format-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("dashboard.snapshot");
        std::fs::write(&path, &bytes).unwrap();
        let err = read(&path, &key, registry).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{}: dashboard projection snapshot format 2 is unknown; this refbus reads \
                 format 1; upgrade this reader before the writers (docs/ARCHITECTURE.md, \
                 \"Record formats and versions\")",
                path.display()
            )
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
