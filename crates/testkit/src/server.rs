//! [`NatsServer`]: one nats-server process with JetStream, its configuration, store and ports.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use tempfile::TempDir;

use crate::config::{ClusterConfig, HOST, ServerConfig};
use crate::log::{LogBuffer, WaitFailure};
use crate::process::Process;
use crate::{Error, monitor, nats_server_binary};

/// How long a start or restart may take by default. Generous: the machine running the tests may
/// be busy compiling or running other tests on two cores.
pub(crate) const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(30);

/// Lines of the server's log quoted in an error.
const LOG_TAIL_LINES: usize = 40;

/// The interval between two polls of a monitoring endpoint while waiting for a condition.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// A nats-server with JetStream on 127.0.0.1, started for one test.
///
/// Dropping it kills the process and removes its temporary directory (the store too, unless the
/// caller supplied the store directory).
#[derive(Debug)]
pub struct NatsServer {
    process: Option<Process>,
    log: Arc<LogBuffer>,
    binary: PathBuf,
    settings: Settings,
    client_port: Option<u16>,
    monitor_port: Option<u16>,
    store_dir: PathBuf,
    /// Holds the configuration file and, unless the caller gave one, the store. Declared last
    /// so it is removed after the process is gone.
    scratch: TempDir,
}

/// What stays the same across restarts.
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub(crate) server_name: Option<String>,
    pub(crate) sync_always: bool,
    pub(crate) extra_config: String,
    /// Files written next to the configuration file, for `include` in `extra_config`.
    pub(crate) config_files: Vec<(String, String)>,
    pub(crate) cluster: Option<ClusterSettings>,
    pub(crate) ready_timeout: Duration,
}

#[derive(Debug, Clone)]
pub(crate) struct ClusterSettings {
    pub(crate) name: String,
    pub(crate) port: u16,
    pub(crate) route_ports: Vec<u16>,
}

// === impl NatsServer ===

impl NatsServer {
    /// Starts a server with the default options (fresh temporary store, ports picked by the
    /// server, default `sync_interval`) and waits until it is ready.
    pub fn start() -> Result<NatsServer, Error> {
        NatsServer::builder().start()
    }

    /// Options for a server: `sync_always`, a fixed store directory or port, extra configuration.
    pub fn builder() -> NatsServerBuilder {
        NatsServerBuilder::default()
    }

    /// The client URL, `nats://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("nats://{HOST}:{}", self.port())
    }

    /// The client port. It stays the same across [`NatsServer::restart`].
    pub fn port(&self) -> u16 {
        // Set from the log before `start` returns; 0 is never seen by a caller.
        self.client_port.unwrap_or(0)
    }

    /// The monitoring URL, `http://127.0.0.1:<port>` (`/healthz`, `/varz`, `/jsz`, ...).
    pub fn monitor_url(&self) -> String {
        format!("http://{HOST}:{}", self.monitor_port.unwrap_or(0))
    }

    /// The JetStream store directory (the server keeps its data in `jetstream/` below it).
    pub fn store_dir(&self) -> &Path {
        &self.store_dir
    }

    /// The process id, or `None` after [`NatsServer::kill`].
    pub fn pid(&self) -> Option<u32> {
        self.process.as_ref().map(Process::pid)
    }

    /// The server's `server_name`, if it has one (cluster nodes do).
    pub fn name(&self) -> Option<&str> {
        self.settings.server_name.as_deref()
    }

    /// The lines the current (or, after a kill, the last) process logged.
    pub fn log(&self) -> Vec<String> {
        self.log.lines()
    }

    /// `GET` on the monitoring port, e.g. `monitor("/varz")`: the body of a 200 response.
    pub fn monitor(&self, path_and_query: &str) -> Result<String, Error> {
        let port = self
            .monitor_port
            .ok_or_else(|| Error::NotRunning(self.label()))?;
        match monitor::get(port, path_and_query) {
            Ok((200, body)) => Ok(body),
            Ok((status, body)) => Err(Error::Monitor {
                url: format!("{}{path_and_query}", self.monitor_url()),
                problem: format!("HTTP {status}: {body}"),
            }),
            Err(problem) => Err(Error::Monitor {
                url: format!("{}{path_and_query}", self.monitor_url()),
                problem,
            }),
        }
    }

    /// Kills the server with SIGKILL, as a crash would, and waits until the process is gone.
    /// Data not yet fsynced may be lost, which is the point of durability tests. Killing a
    /// stopped server does nothing.
    pub fn kill(&mut self) -> Result<(), Error> {
        let Some(mut process) = self.process.take() else {
            return Ok(());
        };
        let pid = process.pid();
        process
            .kill()
            .map(drop)
            .map_err(|source| Error::Kill { pid, source })
    }

    /// Freezes the server (SIGSTOP), as a stalled disk or a paused virtual machine would:
    /// connections stay open but nothing is answered until [`NatsServer::resume`].
    pub fn pause(&self) -> Result<(), Error> {
        self.signal("-STOP")
    }

    /// Lets a paused server run again (SIGCONT).
    pub fn resume(&self) -> Result<(), Error> {
        self.signal("-CONT")
    }

    fn signal(&self, signal: &str) -> Result<(), Error> {
        let Some(pid) = self.pid() else {
            return Ok(());
        };
        let status = std::process::Command::new("kill")
            .arg(signal)
            .arg(pid.to_string())
            .status()
            .map_err(|source| Error::Kill { pid, source })?;
        if status.success() {
            Ok(())
        } else {
            Err(Error::Kill {
                pid,
                source: std::io::Error::other(format!("kill {signal} {pid}: {status}")),
            })
        }
    }

    /// Starts the server again with the same port, store and options, and waits until it is
    /// ready. A server still running is killed first.
    pub fn restart(&mut self) -> Result<(), Error> {
        self.kill()?;
        let deadline = Instant::now() + self.settings.ready_timeout;
        self.spawn()?;
        self.wait_ready(deadline)?;
        self.wait_healthy(deadline)
    }

    /// A server configured but not started yet.
    pub(crate) fn prepare(
        settings: Settings,
        store_dir: Option<PathBuf>,
        client_port: Option<u16>,
        monitor_port: Option<u16>,
    ) -> Result<NatsServer, Error> {
        let binary = nats_server_binary()?;
        let scratch = tempfile::Builder::new()
            .prefix("refbus-nats-")
            .tempdir()
            .map_err(|source| Error::Io {
                what: "creating a temporary directory in",
                path: std::env::temp_dir(),
                source,
            })?;
        let store_dir = store_dir.unwrap_or_else(|| scratch.path().join("store"));
        Ok(NatsServer {
            process: None,
            log: Arc::default(),
            binary,
            settings,
            client_port,
            monitor_port,
            store_dir,
            scratch,
        })
    }

    /// Writes the configuration and starts the process, without waiting for it.
    pub(crate) fn spawn(&mut self) -> Result<(), Error> {
        let cluster = self.settings.cluster.as_ref().map(|c| ClusterConfig {
            name: &c.name,
            port: c.port,
            route_ports: &c.route_ports,
        });
        let text = ServerConfig {
            server_name: self.settings.server_name.as_deref(),
            client_port: self.client_port,
            monitor_port: self.monitor_port,
            store_dir: &self.store_dir,
            sync_always: self.settings.sync_always,
            cluster,
            extra: &self.settings.extra_config,
        }
        .render()?;
        for (name, contents) in &self.settings.config_files {
            let path = self.scratch.path().join(name);
            fs::write(&path, contents).map_err(|source| Error::Io {
                what: "writing a file included by the nats-server configuration",
                path: path.clone(),
                source,
            })?;
        }
        let config = self.scratch.path().join("nats-server.conf");
        fs::write(&config, text).map_err(|source| Error::Io {
            what: "writing the nats-server configuration",
            path: config.clone(),
            source,
        })?;

        self.log = Arc::default();
        let process = Process::spawn(&self.binary, &config, &self.label(), Arc::clone(&self.log))
            .map_err(|source| Error::Spawn {
            binary: self.binary.clone(),
            source,
        })?;
        self.process = Some(process);
        Ok(())
    }

    /// Waits until the log says the server is ready (and, for a cluster node, listens for
    /// routes, which it binds only after that), then learns the ports the server picked.
    pub(crate) fn wait_ready(&mut self, deadline: Instant) -> Result<(), Error> {
        self.wait_for_log("Server is ready", deadline)?;
        if self.settings.cluster.is_some() {
            self.wait_for_log("Listening for route connections on", deadline)?;
        }
        let learned = (
            self.log.port_after("Listening for client connections on"),
            self.log.port_after("Starting http monitor on"),
        );
        let (Some(client_port), Some(monitor_port)) = learned else {
            return Err(Error::NotReady {
                what: format!("nats-server {} ready", self.label()),
                timeout: self.settings.ready_timeout,
                last_problem: "its log did not name its client and monitoring ports".to_owned(),
                log: self.log_tail(),
            });
        };
        self.client_port = Some(client_port);
        self.monitor_port = Some(monitor_port);
        Ok(())
    }

    fn wait_for_log(&mut self, needle: &str, deadline: Instant) -> Result<(), Error> {
        match self.log.wait_for(needle, deadline) {
            Ok(_) => Ok(()),
            Err(WaitFailure::Closed) => {
                let server = self.label();
                let Some(mut process) = self.process.take() else {
                    return Err(Error::NotRunning(server));
                };
                let pid = process.pid();
                match process.kill() {
                    Ok(status) => Err(Error::ExitedEarly {
                        server,
                        status,
                        log: self.log_tail(),
                    }),
                    Err(source) => Err(Error::Kill { pid, source }),
                }
            }
            Err(WaitFailure::TimedOut) => Err(Error::NotReady {
                what: format!("nats-server {} ready", self.label()),
                timeout: self.settings.ready_timeout,
                last_problem: format!("it never logged {needle:?}"),
                log: self.log_tail(),
            }),
        }
    }

    /// Waits until `/healthz` answers 200: JetStream is up, its streams recovered, and in a
    /// cluster the node is current with the meta leader.
    pub(crate) fn wait_healthy(&self, deadline: Instant) -> Result<(), Error> {
        poll_until(
            &format!("nats-server {} healthy", self.label()),
            deadline,
            self.settings.ready_timeout,
            || self.health_problem(),
            || self.log_tail(),
        )
    }

    /// Why `/healthz` is not OK (`Ok(None)` when it is); an error if the process is gone, since
    /// waiting longer cannot help then.
    pub(crate) fn health_problem(&self) -> Result<Option<String>, Error> {
        if self.log.is_closed() {
            return Err(Error::Exited {
                server: self.label(),
                log: self.log_tail(),
            });
        }
        Ok(self.monitor("/healthz").err().map(|e| e.to_string()))
    }

    pub(crate) fn is_running(&self) -> bool {
        self.process.is_some()
    }

    pub(crate) fn log_tail(&self) -> String {
        self.log.tail(LOG_TAIL_LINES)
    }

    /// How errors name this server: its name, else its address once known.
    pub(crate) fn label(&self) -> String {
        match (&self.settings.server_name, self.client_port) {
            (Some(name), _) => name.clone(),
            (None, Some(port)) => format!("{HOST}:{port}"),
            (None, None) => "(starting)".to_owned(),
        }
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        // The process must be gone before `scratch` removes the store it writes into.
        let _ = self.kill();
    }
}

/// Polls `problem` until it reports none, or fails with the last problem when `deadline`
/// passes, or at once when `problem` fails. For conditions only a monitoring endpoint can tell;
/// log lines are waited for instead.
pub(crate) fn poll_until(
    what: &str,
    deadline: Instant,
    timeout: Duration,
    mut problem: impl FnMut() -> Result<Option<String>, Error>,
    log: impl FnOnce() -> String,
) -> Result<(), Error> {
    loop {
        let Some(last_problem) = problem()? else {
            return Ok(());
        };
        if Instant::now() >= deadline {
            return Err(Error::NotReady {
                what: what.to_owned(),
                timeout,
                last_problem,
                log: log(),
            });
        }
        thread::sleep(POLL_INTERVAL);
    }
}

// === impl NatsServerBuilder ===

/// Options for a [`NatsServer`]; start it with [`NatsServerBuilder::start`].
#[derive(Debug, Clone)]
pub struct NatsServerBuilder {
    sync_always: bool,
    store_dir: Option<PathBuf>,
    port: Option<u16>,
    server_name: Option<String>,
    extra_config: String,
    config_files: Vec<(String, String)>,
    ready_timeout: Duration,
}

impl Default for NatsServerBuilder {
    fn default() -> Self {
        NatsServerBuilder {
            sync_always: false,
            store_dir: None,
            port: None,
            server_name: None,
            extra_config: String::new(),
            config_files: Vec::new(),
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }
}

impl NatsServerBuilder {
    /// JetStream `sync_interval: always`: fsync before every acknowledgement, as production
    /// refbus runs. Needed for tests that kill the server and expect acknowledged data back.
    pub fn sync_always(mut self, sync_always: bool) -> Self {
        self.sync_always = sync_always;
        self
    }

    /// Use this store directory instead of a fresh temporary one. It is left in place on drop,
    /// so a later server can start on the same data.
    pub fn store_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.store_dir = Some(dir.into());
        self
    }

    /// Listen on this client port instead of one the server picks.
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// The server's `server_name`.
    pub fn server_name(mut self, name: impl Into<String>) -> Self {
        self.server_name = Some(name.into());
        self
    }

    /// Configuration text appended to the generated file (accounts, permissions, limits).
    pub fn extra_config(mut self, text: impl Into<String>) -> Self {
        self.extra_config = text.into();
        self
    }

    /// A file written next to the generated configuration file before every start, so that
    /// `extra_config` can `include "<name>"` it: nats-server resolves an include relative to the
    /// including file and ignores a leading `/`, so a deployment's own files (which include
    /// each other by relative name) can only be used from there. `name` is a plain file name.
    pub fn config_file(mut self, name: impl Into<String>, contents: impl Into<String>) -> Self {
        self.config_files.push((name.into(), contents.into()));
        self
    }

    /// How long [`NatsServerBuilder::start`] and [`NatsServer::restart`] wait for readiness.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Starts the server and waits until it is ready. Blocks the calling thread meanwhile
    /// (tens of milliseconds usually).
    pub fn start(self) -> Result<NatsServer, Error> {
        let settings = Settings {
            server_name: self.server_name,
            sync_always: self.sync_always,
            extra_config: self.extra_config,
            config_files: self.config_files,
            cluster: None,
            ready_timeout: self.ready_timeout,
        };
        let deadline = Instant::now() + settings.ready_timeout;
        let mut server = NatsServer::prepare(settings, self.store_dir, self.port, None)?;
        server.spawn()?;
        server.wait_ready(deadline)?;
        server.wait_healthy(deadline)?;
        Ok(server)
    }
}
