//! The whole tree in memory: every stored hash (`tlog_tiles`' numbering), so appending, tiles,
//! roots and proofs never touch the disk. 64 bytes per leaf (about 512 MB for 8 million
//! events): the limit is recorded in docs/ARCHITECTURE.md.

use tlog_tiles::{Hash, HashReader, RecordProof, TreeProof};

/// An append-only RFC 6962 tree.
#[derive(Debug, Default, Clone)]
pub struct Tree {
    /// Stored hashes, indexed by `tlog_tiles::stored_hash_index`.
    hashes: Vec<Hash>,
    size: u64,
}

impl HashReader for Tree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|&index| {
                usize::try_from(index)
                    .ok()
                    .and_then(|index| self.hashes.get(index).copied())
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

impl Tree {
    /// The number of leaves.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// Appends a leaf by its hash.
    pub fn push(&mut self, leaf_hash: Hash) {
        let hashes = tlog_tiles::stored_hashes_for_record_hash(self.size, leaf_hash, self)
            // The tree reads only hashes it stored before.
            .unwrap_or_else(|err| unreachable!("a tree reads only its own hashes: {err}"));
        self.hashes.extend(hashes);
        self.size += 1;
    }

    /// The root of the first `size` leaves.
    pub fn root(&self, size: u64) -> Result<Hash, tlog_tiles::Error> {
        if size > self.size {
            return Err(tlog_tiles::Error::IndexesNotInTree);
        }
        tlog_tiles::tree_hash(size, self)
    }

    /// The leaf hash at `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        if index >= self.size {
            return None;
        }
        self.read_hashes(&[tlog_tiles::stored_hash_index(0, index)])
            .ok()
            .map(|hashes| hashes[0])
    }

    /// The inclusion proof of leaf `index` in the tree of the first `size` leaves.
    pub fn prove_leaf(&self, size: u64, index: u64) -> Result<RecordProof, tlog_tiles::Error> {
        tlog_tiles::prove_record(size, index, self)
    }

    /// The consistency proof of the tree of `old` leaves within the tree of `size` leaves.
    pub fn prove_consistency(&self, size: u64, old: u64) -> Result<TreeProof, tlog_tiles::Error> {
        tlog_tiles::prove_tree(size, old, self)
    }
}
