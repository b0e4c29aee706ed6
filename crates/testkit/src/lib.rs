//! refbus-testkit: real nats-server processes for refbus's integration tests.
//!
//! Every test that touches JetStream starts its own server (or cluster) through this crate, on
//! free loopback ports with a fresh store, so tests run in parallel and leave nothing behind:
//! dropping the handle kills the process and removes its temporary directory.
//!
//! # Getting the binary
//!
//! `scripts/install-tools.sh` installs the pinned nats-server into `.tools/bin/`, and
//! `scripts/test.sh` runs it before the tests. The harness looks for the binary in this order:
//!
//! 1. `$REFBUS_NATS_SERVER` (set by `scripts/test.sh`);
//! 2. `<workspace>/.tools/bin/nats-server`, so a plain `cargo test` works once the tools are
//!    installed;
//! 3. `nats-server` on `PATH` (scripts such as pyenv shims are skipped: the harness must kill
//!    the server itself, not a wrapper).
//!
//! # Usage
//!
//! ```no_run
//! use refbus_testkit::{NatsCluster, NatsServer};
//!
//! # async fn example() -> Result<(), Box<dyn std::error::Error>> {
//! // One server with JetStream, default options.
//! let server = NatsServer::start()?;
//! let client = async_nats::connect(server.url()).await?;
//!
//! // Durability: fsync on every write, crash it, bring it back on the same port and store.
//! let mut server = NatsServer::builder().sync_always(true).start()?;
//! server.kill()?;
//! server.restart()?;
//!
//! // Three routed nodes; returns once JetStream has a meta leader that every node follows.
//! let mut cluster = NatsCluster::start(3)?;
//! let client = async_nats::connect(cluster.urls()).await?;
//! cluster.kill_node(0)?;
//! cluster.wait_until_healthy()?;
//! cluster.restart_node(0)?;
//! # Ok(())
//! # }
//! ```
//!
//! Starting and restarting block the calling thread until the server is ready: it reads the
//! server's log until "Server is ready", then polls `/healthz` (and, for a cluster, the meta
//! leader's `/jsz`). That takes tens of milliseconds for one server and about a second for a
//! cluster. Calling them straight from a `#[tokio::test]` is fine; use
//! `tokio::task::spawn_blocking` if other tasks on a current-thread runtime must keep running
//! meanwhile. Because the waits use real time, they also work in tests with paused tokio time.
//!
//! Set `REFBUS_TESTKIT_LOG=1` to copy the servers' logs to the test's stderr. Errors quote the
//! end of the log themselves.
//!
//! # Layout
//!
//! - [`binary`]: finding the nats-server binary.
//! - [`NatsServer`], [`NatsServerBuilder`] (`server`): one process, its config, ports and store.
//! - [`NatsCluster`], [`NatsClusterBuilder`] (`cluster`): routed nodes with clustered JetStream.
//! - `process`, `log`, `config`, `monitor`: spawning and killing, the captured log, the
//!   generated configuration file, and the HTTP GET for the monitoring endpoints.
//! - [`browser`] (feature `browser`): a headless Chromium driven through chromedriver, for the
//!   dashboard's browser tests.
//! - [`otlp`] (feature `otlp`): an in-process OpenTelemetry collector, for trace tests.

pub mod binary;
#[cfg(feature = "browser")]
pub mod browser;
mod cluster;
mod config;
mod error;
pub mod hostile;
mod log;
mod monitor;
#[cfg(feature = "otlp")]
pub mod otlp;
pub mod pki;
mod ports;
mod process;
mod server;

pub use binary::{BINARY_ENV, nats_server_binary};
pub use cluster::{NatsCluster, NatsClusterBuilder};
pub use error::Error;
pub use pki::Pki;
pub use ports::{free_port, free_ports};
pub use server::{NatsServer, NatsServerBuilder};
