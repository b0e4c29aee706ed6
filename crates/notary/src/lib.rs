//! refbus-notary: a verifiable log over the events stream.
//!
//! - [`leaf`]: how one stream message becomes a leaf (versioned encoding).
//! - [`tree`]: the RFC 6962 tree in memory; [`tiles`]: its C2SP tlog-tiles files on disk.
//! - [`note`]: signed-note keys, checkpoints (tlog-checkpoint) and cosignatures
//!   (tlog-cosignature).
//! - [`notary`]: the notary's loop ([`Notary::run`]); [`http`]: the files served read-only.
//! - [`witness`]: `refbus witness`, which cosigns only checkpoints consistent with the last.
//! - [`verify`]: what an auditor checks, pure; [`proof`]: receipts (tlog-proof).
//!
//! The Merkle hashing and proofs are `tlog_tiles`' (cloudflare/azul, BSD-3-Clause), the note
//! signatures `signed_note`'s; none is written here.

pub mod http;
pub mod leaf;
pub mod notary;
pub mod note;
pub mod proof;
pub mod tiles;
pub mod tree;
pub mod verify;
pub mod witness;

pub use notary::{Notary, NotaryError, Settings, Stats};
pub use tlog_tiles::Hash;
