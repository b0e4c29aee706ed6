//! The log's files in the C2SP tlog-tiles layout (<https://c2sp.org/tlog-tiles>), height 8:
//!
//! ```text
//! checkpoint                      the latest signed checkpoint
//! tile/<L>/<N>[.p/<W>]            hash tiles: 256 (or W) hashes of level 8·L
//! tile/entries/<N>[.p/<W>]        entry bundles: each entry as u16 big-endian length || entry
//! ```
//!
//! `<N>` is written in groups of three digits, all but the last prefixed with `x`
//! (`x001/x234/067`). Every file is written whole to a temporary name, synced, renamed and its
//! directory synced, tiles before the checkpoint that covers them, so a crash never leaves a
//! checkpoint whose tiles are missing.

use std::cell::RefCell;
use std::collections::{BTreeSet, HashMap};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use tlog_tiles::{Hash, Tile, TileHashReader, TileReader};

use crate::tree::Tree;

/// The tiles' height: C2SP tlog-tiles fixes it at 8.
pub const HEIGHT: u8 = 8;
/// Entries per full entry bundle.
pub const BUNDLE: u64 = 1 << HEIGHT;

/// The C2SP path of a hash tile or an entry bundle (`tlog_tiles` writes Go's sumdb paths,
/// `tile/8/<L>/...` and `tile/8/data/...`, which name the height; C2SP's do not).
pub fn path(tile: &Tile) -> String {
    let go = tile.path();
    let rest = go
        .strip_prefix(&format!("tile/{HEIGHT}/"))
        .unwrap_or(go.as_str());
    match rest.strip_prefix("data/") {
        Some(n) => format!("tile/entries/{n}"),
        None => format!("tile/{rest}"),
    }
}

/// The entry bundle holding leaf `index` in a tree of `size` leaves.
pub fn bundle_for(index: u64, size: u64) -> Tile {
    let n = index / BUNDLE;
    let width = (size - n * BUNDLE).min(BUNDLE);
    Tile::new(HEIGHT, 0, n, u32::try_from(width).unwrap_or(u32::MAX), true)
}

/// Encodes entries as an entry bundle.
pub fn encode_bundle(entries: &[Vec<u8>]) -> Vec<u8> {
    let mut out = Vec::new();
    for entry in entries {
        let len = u16::try_from(entry.len()).unwrap_or(u16::MAX);
        out.extend_from_slice(&len.to_be_bytes());
        out.extend_from_slice(&entry[..usize::from(len)]);
    }
    out
}

/// Decodes an entry bundle; `None` if it is malformed.
pub fn decode_bundle(mut bytes: &[u8]) -> Option<Vec<Vec<u8>>> {
    let mut entries = Vec::new();
    while !bytes.is_empty() {
        let len = usize::from(u16::from_be_bytes(bytes.get(..2)?.try_into().ok()?));
        entries.push(bytes.get(2..2 + len)?.to_vec());
        bytes = &bytes[2 + len..];
    }
    Some(entries)
}

/// Where tiles are read from: the notary's directory, or a copy an auditor fetched.
pub trait TileSource {
    /// The file at a C2SP path, `None` if there is none.
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>>;
}

/// A log's directory on disk.
#[derive(Debug, Clone)]
pub struct TileDir {
    root: PathBuf,
}

impl TileSource for TileDir {
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        if !is_log_path(path) {
            return Ok(None);
        }
        match std::fs::read(self.root.join(path)) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(err),
        }
    }
}

/// Whether `path` is one a log serves: `checkpoint` or a tile path, nothing that could leave
/// the directory.
pub fn is_log_path(path: &str) -> bool {
    path == "checkpoint"
        || (path.starts_with("tile/")
            && path.len() <= 64
            && path
                .split('/')
                .all(|part| !part.is_empty() && part != "." && part != "..")
            && path
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'/' || b == b'.'))
}

impl TileDir {
    pub fn new(root: impl Into<PathBuf>) -> TileDir {
        TileDir { root: root.into() }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes the hash tiles and entry bundles that grow the log from `old` to the tree's
    /// size. `tail` holds the entries from the last full bundle boundary at or before `old` up
    /// to the tree's size.
    pub fn write_tiles(&self, tree: &Tree, old: u64, tail: &[Vec<u8>]) -> io::Result<()> {
        let size = tree.size();
        for tile in Tile::new_tiles(HEIGHT, old, size) {
            let data = tile
                .read_data(tree)
                .map_err(|err| io::Error::other(err.to_string()))?;
            self.write_file(&path(&tile), &data)?;
        }
        let first = old / BUNDLE * BUNDLE;
        let mut at = first;
        while at < size {
            let tile = bundle_for(at, size);
            let from = usize::try_from(at - first).unwrap_or(usize::MAX);
            let to = from + tile.width() as usize;
            let entries = tail.get(from..to).ok_or_else(|| {
                io::Error::other(format!("entries {at}..{size} are not in memory"))
            })?;
            self.write_file(&path(&tile), &encode_bundle(entries))?;
            at += BUNDLE;
        }
        Ok(())
    }

    /// Replaces the checkpoint (after the tiles it covers).
    pub fn write_checkpoint(&self, note: &[u8]) -> io::Result<()> {
        self.write_file("checkpoint", note)
    }

    /// Writes one file durably: temporary file, sync, rename, sync of the directory.
    pub fn write_file(&self, path: &str, bytes: &[u8]) -> io::Result<()> {
        let target = self.root.join(path);
        let dir = target.parent().unwrap_or(&self.root).to_owned();
        std::fs::create_dir_all(&dir)?;
        let name = target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let temporary = dir.join(format!(".{name}.tmp"));
        {
            let mut file = std::fs::File::create(&temporary)?;
            file.write_all(bytes)?;
            file.sync_all()?;
        }
        std::fs::rename(&temporary, &target)?;
        std::fs::File::open(&dir)?.sync_all()
    }
}

/// Tiles read through a [`TileSource`], checked against a tree's root by
/// [`tlog_tiles::TileHashReader`]. Records the paths it lacked, so an async caller can fetch
/// them (over HTTP) and try again.
pub struct SourceTiles<'a, S: TileSource> {
    source: &'a S,
    missing: RefCell<BTreeSet<String>>,
    problem: RefCell<Option<String>>,
}

impl<'a, S: TileSource> SourceTiles<'a, S> {
    pub fn new(source: &'a S) -> Self {
        SourceTiles {
            source,
            missing: RefCell::default(),
            problem: RefCell::default(),
        }
    }

    /// A hash reader over the tree of `size` leaves with root `root`: every hash it returns
    /// was proven to be in that tree.
    pub fn reader(&self, size: u64, root: Hash) -> TileHashReader<'_> {
        TileHashReader::new(size, root, self)
    }

    /// The paths the last reads lacked.
    pub fn missing(&self) -> Vec<String> {
        self.missing.borrow().iter().cloned().collect()
    }

    /// Why the last read failed, if it was not a missing tile.
    pub fn problem(&self) -> Option<String> {
        self.problem.borrow().clone()
    }
}

impl<S: TileSource> TileReader for SourceTiles<'_, S> {
    fn height(&self) -> u8 {
        HEIGHT
    }

    fn read_tiles(&self, tiles: &[Tile]) -> Result<Vec<Vec<u8>>, tlog_tiles::Error> {
        let mut out = Vec::with_capacity(tiles.len());
        let mut failed = false;
        for tile in tiles {
            let want = tile.width() as usize * tlog_tiles::HASH_SIZE;
            // The exact (partial) tile, or the full one it is a prefix of.
            let mut candidates = vec![path(tile)];
            if tile.width() < 1 << HEIGHT {
                candidates.push(path(&Tile::new(
                    HEIGHT,
                    tile.level(),
                    tile.level_index(),
                    1 << HEIGHT,
                    false,
                )));
            }
            let mut found = None;
            for candidate in &candidates {
                match self.source.read(candidate) {
                    Ok(Some(bytes)) if bytes.len() >= want => {
                        found = Some(bytes[..want].to_vec());
                        break;
                    }
                    Ok(_) => {}
                    Err(err) => {
                        *self.problem.borrow_mut() = Some(format!("{candidate}: {err}"));
                    }
                }
            }
            match found {
                Some(bytes) => out.push(bytes),
                None => {
                    self.missing.borrow_mut().insert(candidates.remove(0));
                    failed = true;
                }
            }
        }
        if failed {
            return Err(tlog_tiles::Error::InvalidTile);
        }
        Ok(out)
    }

    fn save_tiles(&self, _tiles: &[Tile], _data: &[Vec<u8>]) {}
}

/// Tiles fetched into memory (by the witness, from the log's HTTP server).
#[derive(Debug, Default)]
pub struct MemoryTiles {
    files: RefCell<HashMap<String, Vec<u8>>>,
}

impl MemoryTiles {
    pub fn insert(&self, path: String, bytes: Vec<u8>) {
        self.files.borrow_mut().insert(path, bytes);
    }
}

impl TileSource for MemoryTiles {
    fn read(&self, path: &str) -> io::Result<Option<Vec<u8>>> {
        Ok(self.files.borrow().get(path).cloned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_are_c2sp_ones() {
        assert_eq!(
            path(&Tile::new(8, 0, 1_234_067, 256, false)),
            "tile/0/x001/x234/067"
        );
        assert_eq!(path(&Tile::new(8, 1, 3, 5, false)), "tile/1/003.p/5");
        assert_eq!(path(&Tile::new(8, 0, 2, 7, true)), "tile/entries/002.p/7");
        assert!(is_log_path("tile/entries/002.p/7"));
        assert!(!is_log_path("tile/../secret"));
        assert!(!is_log_path("notary.key"));
    }
}
