//! What can go wrong while finding, starting, waiting for or stopping a nats-server.

use std::io;
use std::path::PathBuf;
use std::process::ExitStatus;
use std::time::Duration;

/// An error of the harness. Messages carry the end of the server's log where it helps.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No usable nats-server binary was found.
    #[error(
        "no nats-server binary found: run scripts/install-tools.sh (it installs the pinned one \
         into .tools/bin), set REFBUS_NATS_SERVER to a nats-server binary, or put nats-server on \
         PATH ({searched})"
    )]
    BinaryNotFound {
        /// Where the harness looked.
        searched: String,
    },

    /// `REFBUS_NATS_SERVER` names something that cannot be used.
    #[error(
        "REFBUS_NATS_SERVER={path}: {reason}; run scripts/install-tools.sh or fix the variable"
    )]
    BadBinary {
        /// The path the variable named.
        path: PathBuf,
        /// Why it cannot be used.
        reason: &'static str,
    },

    /// A file or directory the harness needs could not be created or written.
    #[error("{what} {path}: {source}")]
    Io {
        /// What the harness was doing.
        what: &'static str,
        /// The file or directory concerned.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The generated configuration would contain a path that is not UTF-8.
    #[error("path {0} is not UTF-8 and cannot be written into a nats-server configuration")]
    NonUtf8Path(PathBuf),

    /// Free loopback ports could not be reserved.
    #[error("could not reserve a free loopback port: {0}")]
    NoFreePort(#[source] io::Error),

    /// The process could not be started.
    #[error("could not start {binary}: {source}")]
    Spawn {
        /// The binary that was run.
        binary: PathBuf,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// The server exited before it said it was ready.
    #[error(
        "nats-server {server} exited ({status}) before it was ready; its log ends with:\n{log}"
    )]
    ExitedEarly {
        /// Which server (its name, or its client port).
        server: String,
        /// How it exited.
        status: ExitStatus,
        /// The last lines it logged.
        log: String,
    },

    /// The server exited after it said it was ready, while the harness waited for it to become
    /// healthy.
    #[error(
        "nats-server {server} exited while the harness waited for it; its log ends with:\n{log}"
    )]
    Exited {
        /// Which server (its name, or its client port).
        server: String,
        /// The last lines it logged.
        log: String,
    },

    /// The server, or the cluster, did not become ready in time.
    #[error("{what} not within {timeout:?}: {last_problem}; the log ends with:\n{log}")]
    NotReady {
        /// What the harness waited for.
        what: String,
        /// How long it waited.
        timeout: Duration,
        /// The last reason it was not ready yet.
        last_problem: String,
        /// The last lines logged by the server concerned.
        log: String,
    },

    /// The server could not be killed or reaped.
    #[error("could not stop nats-server (pid {pid}): {source}")]
    Kill {
        /// The process id.
        pid: u32,
        /// The underlying error.
        #[source]
        source: io::Error,
    },

    /// An operation needs a running server, and this one is stopped.
    #[error("nats-server {0} is not running")]
    NotRunning(String),

    /// A monitoring request failed.
    #[error("monitoring request {url} failed: {problem}")]
    Monitor {
        /// The URL requested.
        url: String,
        /// What went wrong (connection error, or the HTTP status and body).
        problem: String,
    },

    /// A cluster node index out of range.
    #[error("the cluster has {size} nodes, there is no node {index}")]
    NoSuchNode {
        /// The index asked for.
        index: usize,
        /// The cluster's size.
        size: usize,
    },
}
