//! refbus-bench: what the bus costs, measured in one run against one nats-server.
//!
//! `refbus bench ingest` (crates/cli) starts a nats-server and calls [`ingest`], then
//! [`footprint::measure_up`] on a real `refbus up`; docs/BENCHMARKS.md records the figures.
//! Benchmarks are not tests: nothing here asserts a timing; the report says which goal was
//! met.
//!
//! # Layout
//!
//! - [`ingest`]: the phases in order, each on a fresh stream: raw JetStream async publish of
//!   the adapter's own messages; the floor ([`floor`]: a bare tonic handler that publishes the
//!   same messages and answers after the ack); CreateReferral through gRPC without and with
//!   sealed identity data; the sealing primitives and the signatures ([`signatures`]) alone;
//!   latency at a steady rate against the floor and raw synchronous publish.
//! - [`harness`]: the runtimes (named threads, so CPU time can be told apart) and an adapter
//!   on a free port; [`load`]: the gRPC callers; [`raw`]: the raw publishers; [`pace`]: the
//!   steady rate and latency histograms; [`sealing`]: the primitives alone.
//! - [`fixture`]: the requests and the exact messages the adapter publishes.
//! - [`cpu`]: thread CPU clocks and `/proc`; [`footprint`]: `refbus up`'s resident memory.
//! - [`report`]: the figures, the goals, the printed report.

pub mod audit;
pub mod child;

/// The signing keys of every benchmark in this process: one set, so records written by any
/// writer verify in any router of the run.
pub fn signing_keys(
    registry: &refbus_core::Registry,
) -> &'static refbus_seal::signing::SigningKeys {
    static KEYS: std::sync::OnceLock<refbus_seal::signing::SigningKeys> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| refbus_seal::signing::SigningKeys::generate(registry))
}

/// A verifier for records the benchmarks wrote (time checked against JetStream's).
pub fn verifier(registry: &std::sync::Arc<refbus_core::Registry>) -> refbus_bus::Verifier {
    refbus_bus::Verifier::new(
        registry.clone(),
        std::sync::Arc::new(signing_keys(registry).signers()),
        Some(refbus_core::integrity::DEFAULT_MAX_SKEW),
    )
}
pub mod clocks;
pub mod cpu;
pub mod dashboard;
pub mod fixture;
pub mod floor;
pub mod footprint;
pub mod harness;
pub mod histories;
pub mod http;
pub mod indicators;
pub mod ingest;
pub mod load;
pub mod notary;
pub mod pace;
pub mod raw;
pub mod report;
pub mod router;
pub mod schedules;
pub mod sealing;
pub mod signatures;
pub mod timing;
pub mod tls;

pub use ingest::{IngestOptions, Server, ingest};
pub use report::IngestReport;

/// Why a benchmark could not run to the end.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error("setting up: {0}")]
    Setup(String),
    #[error("NATS: {0}")]
    Nats(String),
    #[error("a CreateReferral failed: {}: {}", .0.code(), .0.message())]
    Grpc(Box<tonic::Status>),
    /// Fewer (or more) messages stored than acknowledged: the figures would be wrong.
    #[error("{phase}: {expected} messages acknowledged but {stored} stored")]
    Stored {
        phase: String,
        expected: u64,
        stored: u64,
    },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl From<tonic::Status> for BenchError {
    fn from(status: tonic::Status) -> BenchError {
        BenchError::Grpc(Box::new(status))
    }
}
