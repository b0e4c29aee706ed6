//! Receipts: C2SP tlog-proof texts (<https://c2sp.org/tlog-proof>).
//!
//! ```text
//! c2sp.org/tlog-proof@v1
//! extra <base64 of the leaf's entry (crate::leaf)>
//! index <leaf index = stream sequence - 1>
//! <base64 hash>          inclusion proof, leaf's sibling first (RFC 6962 2.1.1)
//! ...
//!
//! <the checkpoint note, with the cosignatures the notary has>
//! ```
//!
//! The `extra` line carries the entry, so the holder can recompute the leaf hash from the
//! event's stored bytes (whose SHA-256 the entry holds); it is not trusted by itself.

use data_encoding::BASE64;
use tlog_tiles::Hash;

use crate::leaf::Leaf;
use crate::note::{CheckpointError, SignedCheckpoint, open_checkpoint};
use crate::verify::Trust;

const HEADER: &str = "c2sp.org/tlog-proof@v1";

/// A receipt, parsed.
#[derive(Debug, Clone, PartialEq)]
pub struct Receipt {
    pub entry: Vec<u8>,
    pub index: u64,
    pub proof: Vec<Hash>,
    pub checkpoint: Vec<u8>,
}

impl Receipt {
    pub fn encode(&self) -> Vec<u8> {
        let mut text = format!(
            "{HEADER}\nextra {}\nindex {}\n",
            BASE64.encode(&self.entry),
            self.index
        );
        for hash in &self.proof {
            text.push_str(&BASE64.encode(&hash.0));
            text.push('\n');
        }
        text.push('\n');
        let mut out = text.into_bytes();
        out.extend_from_slice(&self.checkpoint);
        out
    }

    pub fn parse(bytes: &[u8]) -> Result<Receipt, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "not UTF-8".to_owned())?;
        let (head, checkpoint) = text
            .split_once("\n\n")
            .ok_or_else(|| "no empty line before the checkpoint".to_owned())?;
        let mut lines = head.split('\n');
        if lines.next() != Some(HEADER) {
            return Err(format!("the first line is not {HEADER}"));
        }
        let mut line = lines.next().ok_or("no index line")?;
        let mut entry = Vec::new();
        if let Some(extra) = line.strip_prefix("extra ") {
            entry = BASE64
                .decode(extra.as_bytes())
                .map_err(|_| "extra is not base64".to_owned())?;
            line = lines.next().ok_or("no index line")?;
        }
        let index = line
            .strip_prefix("index ")
            .and_then(|n| n.parse().ok())
            .ok_or_else(|| format!("not an index line: {line}"))?;
        let proof = lines
            .map(|line| {
                let bytes = BASE64
                    .decode(line.as_bytes())
                    .map_err(|_| format!("not a base64 hash: {line}"))?;
                Ok(Hash(
                    bytes.try_into().map_err(|_| "a hash is not 32 bytes")?,
                ))
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Receipt {
            entry,
            index,
            proof,
            checkpoint: checkpoint.as_bytes().to_vec(),
        })
    }
}

/// Why a receipt does not prove what it claims.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReceiptError {
    #[error("malformed receipt: {0}")]
    Malformed(String),
    #[error(transparent)]
    Checkpoint(#[from] CheckpointError),
    #[error("quorum not met: {required} witness cosignature(s) required, {found} valid")]
    Quorum { required: usize, found: usize },
    #[error("the entry is for seq {found}, not the leaf's seq {expected}")]
    WrongPlace { expected: u64, found: u64 },
    #[error("the entry is not for this message: {0}")]
    OtherMessage(String),
    #[error("the inclusion proof does not lead to the checkpoint's root")]
    Proof,
}

/// Checks a receipt against the stored message it is for (`subject`, exact `payload` bytes):
/// the checkpoint's signatures and quorum, the entry names this message at its place, and
/// the inclusion proof leads from the entry to the checkpoint's root.
pub fn verify_receipt(
    receipt: &[u8],
    subject: &str,
    payload: &[u8],
    trust: &Trust,
) -> Result<(Leaf, SignedCheckpoint), ReceiptError> {
    let receipt = Receipt::parse(receipt).map_err(ReceiptError::Malformed)?;
    let (checkpoint, cosigned_by) = open_checkpoint(
        &receipt.checkpoint,
        &trust.origin,
        &trust.notary,
        &trust.witnesses,
    )?;
    if cosigned_by.len() < trust.quorum {
        return Err(ReceiptError::Quorum {
            required: trust.quorum,
            found: cosigned_by.len(),
        });
    }
    let leaf =
        Leaf::decode(&receipt.entry).map_err(|err| ReceiptError::Malformed(err.to_string()))?;
    if leaf.seq != receipt.index + 1 {
        return Err(ReceiptError::WrongPlace {
            expected: receipt.index + 1,
            found: leaf.seq,
        });
    }
    let expected = Leaf::message(leaf.seq, subject, payload);
    if leaf != expected {
        return Err(ReceiptError::OtherMessage(format!(
            "it holds {leaf}, the message is {expected}"
        )));
    }
    tlog_tiles::check_record(
        &receipt.proof,
        checkpoint.size,
        checkpoint.root,
        receipt.index,
        leaf.hash(),
    )
    .map_err(|_| ReceiptError::Proof)?;
    Ok((leaf, checkpoint))
}
