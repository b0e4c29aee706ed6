//! refbus-audit: the auditor's tool. Read-only: it connects with the auditor's NATS user and
//! never writes to the bus.
//!
//! # Layout
//!
//! - [`problem`]: what verification reports: typed problems, each naming the referral, the
//!   stream sequence and what was expected.
//! - [`checks`]: the independent checks `verify` runs over the stream, each a [`checks::Check`]
//!   seeing every stored message in order with the record check's verdict: the record check
//!   (`refbus_core::integrity`, through `refbus_bus::Replayer`), the sequence check (no gap, no
//!   deleted message, JetStream's own count), and the clock check (the router's records
//!   against `refbus_core::audit`).
//! - [`log`]: the Merkle log's check (one more `Check`): every message the log's leaf at its
//!   place, the checkpoint signed, cosigned by the quorum, consistent with those kept earlier.
//! - [`verify`]: the run: reads the stream (or a JSONL export) once, feeds every check, shows
//!   progress, stops on request and resumes from a small state file.
//! - [`replay`]: one referral's state at any time with its timeline; a case's referrals and
//!   whether it is fully served.
//! - [`export`]: JSONL (the stored messages exactly as stored), CSV (one row per referral) and
//!   an HL7 FHIR R4 Bundle of Task resources; never identity.
//!
//! # Invariants
//!
//! - No identity plaintext leaves this crate: sealed payloads stay sealed in JSONL (they are
//!   the stored bytes), and CSV and FHIR carry metadata only (no sealed field at all).
//! - Every decision about a record or a clock is the core's: the one record check and
//!   `evaluate`, as the router runs them. Nothing here re-implements either.

pub mod checks;
pub mod export;
pub mod log;
pub mod problem;
pub mod replay;
pub mod verify;

pub use problem::{Problem, Report};
