//! What the long-running subcommands share: logging and trace context, the registry, agency
//! keys, and a local nats-server child for `refbus up`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use refbus_core::signature::{Signer, Signers, SigningKey, VerifyingKey};
use refbus_core::{AgencyId, Registry};
use refbus_seal::signing::{
    read_signing_key, signing_key_file_name, verifying_key_file_name, write_new_signing_key,
};
use refbus_seal::{KeyPair, Keyring, PublicKey, SecretKey};

/// Logs to stderr (`REFBUS_LOG` filters, default `info`), and gives every span a W3C trace
/// context that the bus carries in `traceparent` headers; exported over OTLP when
/// [`configure_traces`] named a collector (refbus-telemetry does the setup).
pub(crate) fn init_tracing() {
    init_tracing_with("warn,refbus=info,refbus_adapter=info,refbus_router=info,refbus_bus=info");
}

/// [`init_tracing`] for commands that print the router's activity on stdout (`router`, `up`):
/// the router's own info lines say the same, so only its warnings and errors are logged, and
/// each action shows once.
pub(crate) fn init_tracing_beside_router_activity() {
    init_tracing_with("warn,refbus=info,refbus_adapter=info,refbus_router=warn,refbus_bus=info");
}

/// Where traces go, as `main` read it before the command ran: the service name and the
/// collector, if any.
static TRACES: std::sync::OnceLock<(String, Option<String>)> = std::sync::OnceLock::new();
/// The tracer installed by [`init_tracing`], flushed by [`shutdown_traces`].
static TRACER: std::sync::Mutex<Option<refbus_telemetry::Telemetry>> = std::sync::Mutex::new(None);

/// Names this process's component (`adapter` traces as `refbus-adapter`) and its collector
/// (`--otlp-endpoint`, or the standard variables), checked before the command runs.
pub(crate) fn configure_traces(component: &str, flag: Option<&str>) -> anyhow::Result<()> {
    let endpoint = refbus_telemetry::endpoint(flag);
    if let Some(endpoint) = &endpoint {
        refbus_telemetry::check_endpoint(endpoint)?;
    }
    let _ = TRACES.set((format!("refbus-{component}"), endpoint));
    Ok(())
}

/// Exports the spans still buffered and stops exporting; called once as the process ends.
pub(crate) fn shutdown_traces() {
    let tracer = TRACER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(tracer) = tracer {
        tracer.shutdown();
    }
}

fn init_tracing_with(default_filter: &str) {
    if TRACER
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .is_some()
    {
        // Already installed (a command that runs another): one tracer per process.
        return;
    }
    let (service_name, otlp) = TRACES
        .get()
        .cloned()
        .unwrap_or_else(|| ("refbus".to_owned(), None));
    let settings = refbus_telemetry::Settings {
        service_name,
        otlp,
        default_log_filter: default_filter.to_owned(),
    };
    match refbus_telemetry::init(settings) {
        Ok(tracer) => {
            if tracer.exporting() {
                tracing::info!("traces exported over OTLP");
            }
            *TRACER
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(tracer);
        }
        // The endpoint was checked before the command ran; the component runs without export
        // rather than not at all.
        Err(err) => eprintln!("refbus: traces are not exported: {err}"),
    }
}

/// Completes when the process is asked to stop: Ctrl-C (SIGINT), SIGTERM (`kill`, service
/// managers, container runtimes) or SIGHUP (the terminal went away). The handlers are installed
/// when this is called, not when it is first awaited, so a signal arriving in between is not
/// lost (nor does it kill the process with its children left running).
#[cfg(unix)]
pub(crate) fn stop_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    use tokio::signal::unix::{SignalKind, signal};

    let mut signals = Vec::new();
    for kind in [
        SignalKind::interrupt(),
        SignalKind::terminate(),
        SignalKind::hangup(),
    ] {
        match signal(kind) {
            Ok(stream) => signals.push(stream),
            Err(err) => tracing::warn!("cannot handle signal {kind:?}: {err}"),
        }
    }
    async move {
        if signals.is_empty() {
            // Nothing to wait for: stopping is then up to SIGKILL.
            std::future::pending::<()>().await;
        }
        let received = signals.iter_mut().map(|stream| Box::pin(stream.recv()));
        futures::future::select_all(received).await;
    }
}

/// [`stop_signal`] where there are no Unix signals: Ctrl-C only.
#[cfg(not(unix))]
pub(crate) fn stop_signal() -> impl std::future::Future<Output = ()> + Send + 'static {
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

/// Loads and checks a registry, reporting every problem, and warns loudly when its holiday
/// files do not cover the clocks that start today.
pub(crate) fn load_registry(path: &Path) -> anyhow::Result<Arc<Registry>> {
    let registry = refbus_config::load(path).map_err(|report| {
        anyhow::anyhow!("{} is not a valid registry:\n{report}", path.display())
    })?;
    if let Some(gap) = refbus_core::coverage::holiday_gap(&registry, system_now()) {
        tracing::warn!("HOLIDAYS: {}: {gap}", path.display());
    }
    Ok(Arc::new(registry))
}

/// The system clock, read here at the edge.
pub(crate) fn system_now() -> refbus_core::Timestamp {
    (refbus_adapter::system_now())()
}

/// The public key file of an agency in a keys directory.
pub(crate) fn public_key_file(dir: &Path, agency: &AgencyId) -> PathBuf {
    dir.join(format!("{agency}.pub"))
}

/// Writes a new key pair for `agency` into `dir`: `<agency>.key` (secret, mode 0600, never
/// overwritten) and `<agency>.pub`, and its signing keys `<agency>.sign.key` and
/// `<agency>.sign.pub`.
pub(crate) fn generate_keys(
    dir: &Path,
    agency: &AgencyId,
) -> anyhow::Result<(PublicKey, VerifyingKey)> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let pair = KeyPair::generate();
    pair.write_secret(dir.join(refbus_seal::secret_key_file_name(agency)))?;
    std::fs::write(
        public_key_file(dir, agency),
        format!("{}\n", pair.public().to_base64()),
    )
    .with_context(|| format!("writing the public key of {agency}"))?;
    let signing = generate_signing_key(dir, &Signer::Agency(agency.clone()))?;
    Ok((pair.public().clone(), signing))
}

/// Writes a new signing key for `signer` into `dir` (`<name>.sign.key`, mode 0600, never
/// overwritten; and `<name>.sign.pub`).
pub(crate) fn generate_signing_key(dir: &Path, signer: &Signer) -> anyhow::Result<VerifyingKey> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    let key = write_new_signing_key(&dir.join(signing_key_file_name(signer)), signer.clone())?;
    let public = key.verifying_key();
    std::fs::write(
        dir.join(verifying_key_file_name(signer)),
        format!("{}\n", public.to_base64()),
    )
    .with_context(|| format!("writing the public signing key of {signer}"))?;
    Ok(public)
}

/// Reads `signer`'s secret signing key.
pub(crate) fn signing_key(path: &Path, signer: Signer) -> anyhow::Result<SigningKey> {
    read_signing_key(path, signer.clone())
        .with_context(|| format!("the signing key of {signer} ({})", path.display()))
}

/// Refuses to start a writer whose signing key the readers do not list (a key rotated with
/// `refbus keys rotate` before the registry lists it): every record it signed would be refused.
pub(crate) fn check_signing_key_listed(
    signers: &Signers,
    key: &SigningKey,
    path: &Path,
) -> anyhow::Result<()> {
    let signer = key.signer();
    let public = key.verifying_key();
    if signers.knows(signer) && !signers.accepts(signer, &public) {
        bail!(
            "the signing key in {} (key {}) is not among the signing keys listed for {signer}: \
             every record signed with it would be refused. After `refbus keys rotate`, put the \
             printed `signing_keys` line in the registry first (new key, then the old ones)",
            path.display(),
            public.id()
        );
    }
    Ok(())
}

/// Everyone's public signing keys: the registry's, then `<name>.sign.pub` files in `keys_dir`
/// for signers the registry lists no key for.
pub(crate) fn signers(registry: &Registry, keys_dir: Option<&Path>) -> anyhow::Result<Signers> {
    let mut signers = Signers::from_registry(registry).map_err(|(signer, err)| {
        anyhow::anyhow!("the registry's signing key of {signer}: {err}")
    })?;
    let Some(dir) = keys_dir else {
        return Ok(signers);
    };
    let all = registry
        .agencies
        .keys()
        .map(|agency| Signer::Agency(agency.clone()))
        .chain([Signer::Router]);
    for signer in all {
        let path = dir.join(verifying_key_file_name(&signer));
        if signers.knows(&signer) || !path.exists() {
            continue;
        }
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let key = VerifyingKey::from_base64(&text)
            .map_err(|err| anyhow::anyhow!("the signing key in {}: {err}", path.display()))?;
        signers.add(signer, key);
    }
    warn_unknown_signers(registry, &signers);
    Ok(signers)
}

/// Says loudly which writers have no public signing key: every record they write is refused by
/// every reader (and the coordinator is told of each), so their referrals go nowhere.
fn warn_unknown_signers(registry: &Registry, signers: &Signers) {
    let missing: Vec<String> = registry
        .agencies
        .keys()
        .map(|agency| Signer::Agency(agency.clone()))
        .chain([Signer::Router])
        .filter(|signer| !signers.knows(signer))
        .map(|signer| signer.to_string())
        .collect();
    if !missing.is_empty() {
        tracing::warn!(
            "SIGNING KEYS: no public signing key for {}: every record they write will be refused \
             as unsigned; add `signing_keys` to their [[agency]] tables (and \
             `router_signing_keys` to [deployment]) from `refbus keys generate`, or give \
             --public-keys",
            missing.join(", ")
        );
    }
}

/// Every agency's public keys: online and backup.
#[derive(Debug, Default, Clone)]
pub(crate) struct Directory {
    pub(crate) online: BTreeMap<AgencyId, PublicKey>,
    pub(crate) backup: BTreeMap<AgencyId, PublicKey>,
}

/// Every agency's public key: the registry's, then `<agency>.pub` files in `keys_dir`; and its
/// backup key: the registry's, then `<agency>.backup.pub` in `keys_dir`.
pub(crate) fn public_keys(
    registry: &Registry,
    keys_dir: Option<&Path>,
) -> anyhow::Result<Directory> {
    let mut keys = Directory::default();
    for agency in registry.agencies.values() {
        let read = |registered: &Option<String>, file: PathBuf, what: &str| {
            if let Some(text) = registered {
                return PublicKey::from_base64(text)
                    .with_context(|| format!("the registry's {what} of {}", agency.id))
                    .map(Some);
            }
            if keys_dir.is_some() && file.exists() {
                let text = std::fs::read_to_string(&file)
                    .with_context(|| format!("reading {}", file.display()))?;
                let key = text.split_whitespace().next().unwrap_or_default();
                return PublicKey::from_base64(key)
                    .with_context(|| format!("the {what} in {}", file.display()))
                    .map(Some);
            }
            Ok(None)
        };
        let dir = keys_dir.unwrap_or(Path::new("."));
        if let Some(key) = read(
            &agency.public_key,
            public_key_file(dir, &agency.id),
            "public key",
        )? {
            keys.online.insert(agency.id.clone(), key);
        }
        if let Some(key) = read(
            &agency.backup_public_key,
            backup_public_key_file(dir, &agency.id),
            "backup public key",
        )? {
            keys.backup.insert(agency.id.clone(), key);
        }
    }
    Ok(keys)
}

/// The backup public key file of an agency in a keys directory.
pub(crate) fn backup_public_key_file(dir: &Path, agency: &AgencyId) -> PathBuf {
    dir.join(format!("{agency}.backup.pub"))
}

/// The name `refbus keys rotate` gives an agency's earlier sealing key:
/// `<agency>.<key id>.old.key`, beside the current `<agency>.key`.
pub(crate) fn earlier_key_file_name(agency: &AgencyId, key: &PublicKey) -> String {
    format!("{agency}.{}.old.key", key.key_id())
}

/// The earlier sealing keys of `agency` beside its current key file (see
/// [`earlier_key_file_name`]), in name order.
fn earlier_key_files(secret_file: &Path, agency: &AgencyId) -> anyhow::Result<Vec<PathBuf>> {
    let dir = secret_file
        .parent()
        .filter(|dir| !dir.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let prefix = format!("{agency}.");
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let name = entry?.file_name();
        let Some(name) = name.to_str() else { continue };
        let Some(id) = name
            .strip_prefix(&prefix)
            .and_then(|rest| rest.strip_suffix(".old.key"))
        else {
            continue;
        };
        if id.len() == 16 && id.bytes().all(|b| b.is_ascii_hexdigit()) {
            files.push(dir.join(name));
        }
    }
    files.sort();
    Ok(files)
}

/// An agency's keyring: its secret key from `secret_file`, the earlier keys `refbus keys
/// rotate` kept beside it, and everyone's public keys (backup keys included: everything
/// sealed for an agency that has one is wrapped for it too).
pub(crate) fn keyring(
    agency: &AgencyId,
    secret_file: &Path,
    public_keys: &Directory,
) -> anyhow::Result<Keyring> {
    let mut secrets = vec![
        SecretKey::from_file(secret_file).with_context(|| format!("the secret key of {agency}"))?,
    ];
    for file in earlier_key_files(secret_file, agency)? {
        secrets.push(
            SecretKey::from_file(&file)
                .with_context(|| format!("an earlier secret key of {agency}"))?,
        );
    }
    let keyring = Keyring::with_keys(
        agency.clone(),
        secrets,
        public_keys
            .online
            .iter()
            .map(|(id, key)| (id.clone(), key.clone())),
    )?
    .with_backup_keys(
        public_keys
            .backup
            .iter()
            .map(|(id, key)| (id.clone(), key.clone())),
    );
    let held = keyring.key_ids();
    if held.len() > 1 {
        tracing::info!(%agency, current = %held[0], earlier = held.len() - 1, "sealing keys loaded");
    }
    Ok(keyring)
}

// === a local nats-server for `refbus up` ===

/// Finds the nats-server binary: `--nats-server`, `$REFBUS_NATS_SERVER`, the project's
/// `.tools/bin/nats-server`, then `PATH`.
pub(crate) fn nats_server_binary(explicit: Option<&Path>) -> anyhow::Result<PathBuf> {
    let candidates = explicit
        .map(Path::to_path_buf)
        .into_iter()
        .chain(std::env::var_os("REFBUS_NATS_SERVER").map(PathBuf::from))
        .chain(Some(PathBuf::from(".tools/bin/nats-server")))
        .chain(
            std::env::var_os("PATH")
                .map(|path| {
                    std::env::split_paths(&path)
                        .map(|dir| dir.join("nats-server"))
                        .collect::<Vec<_>>()
                })
                .unwrap_or_default(),
        );
    for candidate in candidates {
        if candidate.is_file() {
            return Ok(candidate);
        }
    }
    bail!(
        "no nats-server found: run scripts/install-tools.sh (it installs the pinned version into .tools/bin), or pass --nats-server"
    )
}

/// How a local nats-server writes JetStream data to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Durability {
    /// fsync before every acknowledgement (`sync_interval: always`), as refbus runs.
    FsyncEveryWrite,
    /// nats-server's default: fsync every two minutes (the setting of its usual publish figures).
    FsyncEveryTwoMinutes,
}

/// A nats-server child process with JetStream, its data kept in a directory across restarts.
pub(crate) struct LocalNats {
    child: tokio::process::Child,
    pub(crate) url: String,
    pub(crate) monitor: String,
    /// TLS and the users' keys (`refbus up`); `None`: open to any local client (benchmarks).
    pub(crate) security: Option<crate::nats_security::NatsSecurity>,
}

impl LocalNats {
    /// A server for `refbus up`: TLS with client certificates, and only `users` (by NKey), as
    /// [`NatsSecurity`](crate::nats_security::NatsSecurity) makes them in `data_dir`.
    pub(crate) async fn start(
        binary: &Path,
        data_dir: &Path,
        port: u16,
        monitor_port: u16,
        users: &[String],
    ) -> anyhow::Result<LocalNats> {
        let security = crate::nats_security::NatsSecurity::ensure(data_dir, users)?;
        let mut nats = LocalNats::start_secured(
            binary,
            data_dir,
            port,
            monitor_port,
            Durability::FsyncEveryWrite,
            &security.server_config(),
        )
        .await?;
        nats.url = format!("tls://127.0.0.1:{port}");
        nats.security = Some(security);
        Ok(nats)
    }

    /// Connection options for component `user` of this server.
    pub(crate) fn connect_options(&self, user: &str) -> anyhow::Result<refbus_bus::ConnectOptions> {
        match &self.security {
            Some(security) => security.connect_options(std::slice::from_ref(&self.url), user),
            None => Ok(refbus_bus::ConnectOptions::from(&self.url)),
        }
    }

    pub(crate) async fn start_with(
        binary: &Path,
        data_dir: &Path,
        port: u16,
        monitor_port: u16,
        durability: Durability,
    ) -> anyhow::Result<LocalNats> {
        LocalNats::start_secured(binary, data_dir, port, monitor_port, durability, "").await
    }

    async fn start_secured(
        binary: &Path,
        data_dir: &Path,
        port: u16,
        monitor_port: u16,
        durability: Durability,
        security: &str,
    ) -> anyhow::Result<LocalNats> {
        let store = data_dir.join("nats");
        std::fs::create_dir_all(&store).with_context(|| format!("creating {}", store.display()))?;
        let config = data_dir.join("nats-server.conf");
        let sync = match durability {
            Durability::FsyncEveryWrite => "\n  sync_interval: always",
            Durability::FsyncEveryTwoMinutes => "",
        };
        std::fs::write(
            &config,
            format!(
                "# Written by `refbus up` or `refbus bench`: a single local server.\n\
                 # Production uses deploy/nats/ (fsync on every write, three nodes).\n\
                 listen: \"127.0.0.1:{port}\"\n\
                 http: \"127.0.0.1:{monitor_port}\"\n\
                 server_name: \"refbus-local\"\n\
                 jetstream {{\n  store_dir: \"{}\"{sync}\n}}\n{security}",
                store.display()
            ),
        )?;
        let child = spawn_nats_server(binary, &config, &data_dir.join("nats-server.log"))?;
        let url = format!("nats://127.0.0.1:{port}");
        let monitor = format!("127.0.0.1:{monitor_port}");
        let mut nats = LocalNats {
            child,
            url,
            monitor,
            security: None,
        };
        nats.wait_until_ready(data_dir).await?;
        Ok(nats)
    }

    /// Waits for `/healthz` to answer, or for the child to exit (with its log's end).
    async fn wait_until_ready(&mut self, data_dir: &Path) -> anyhow::Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        wait_until_healthy(
            &mut self.child,
            &self.monitor,
            JETSTREAM_ENABLED,
            &data_dir.join("nats-server.log"),
            deadline,
        )
        .await
    }

    pub(crate) fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Stops the server: SIGTERM-like graceful stop is not needed for a store that fsyncs every
    /// write, so this kills and waits.
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        self.child.start_kill()?;
        self.child.wait().await?;
        Ok(())
    }
}

/// Starts nats-server with `config`, its log in `log`: killed when the handle is dropped and,
/// where `setpriv` allows, when the thread that started it dies (see [`parent_death_signal`]).
fn spawn_nats_server(
    binary: &Path,
    config: &Path,
    log: &Path,
) -> anyhow::Result<tokio::process::Child> {
    let log = std::fs::File::create(log).with_context(|| format!("creating {}", log.display()))?;
    let mut command = match parent_death_signal() {
        // setpriv sets the signal, then becomes nats-server (same pid).
        Some(setpriv) => {
            let mut command = tokio::process::Command::new(setpriv);
            command.args(["--pdeathsig", "TERM", "--"]).arg(binary);
            command
        }
        None => tokio::process::Command::new(binary),
    };
    // kill_on_drop covers every way this process ends that unwinds or returns (errors,
    // panics, signals handled by `up`); the parent-death signal covers SIGKILL.
    command
        .arg("-c")
        .arg(config)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))
}

/// The health check of a single server: JetStream is up.
const JETSTREAM_ENABLED: &str = "/healthz?js-enabled-only=true";
/// The health check of a cluster node: JetStream is up and the node is current with the meta
/// leader (a stream can be placed on every node only then).
const CLUSTER_NODE_HEALTHY: &str = "/healthz";

/// Waits until `check` on `monitor` answers 200, or fails when `child` exits (with its log's
/// end) or `deadline` passes.
async fn wait_until_healthy(
    child: &mut tokio::process::Child,
    monitor: &str,
    check: &str,
    log: &Path,
    deadline: tokio::time::Instant,
) -> anyhow::Result<()> {
    let mut poll = tokio::time::interval(Duration::from_millis(25));
    loop {
        poll.tick().await;
        if let Some(status) = child.try_wait()? {
            let text = std::fs::read_to_string(log).unwrap_or_default();
            let tail: Vec<&str> = text.lines().rev().take(8).collect();
            bail!(
                "nats-server exited ({status}) before it was ready:\n{}",
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
        if healthz(monitor, check).await {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("nats-server was not ready in time; see {}", log.display());
        }
    }
}

// === a local cluster for `refbus up --cluster` ===

/// Where the nodes of a local cluster listen: node `i` (from 0) on each first port plus `i`,
/// all on 127.0.0.1.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ClusterPorts {
    pub(crate) client: u16,
    pub(crate) monitor: u16,
    pub(crate) route: u16,
}

impl ClusterPorts {
    fn of(self, node: usize) -> anyhow::Result<ClusterPorts> {
        let offset = u16::try_from(node)?;
        let add = |port: u16| {
            port.checked_add(offset)
                .context("the NATS ports leave no room for every node of the cluster")
        };
        Ok(ClusterPorts {
            client: add(self.client)?,
            monitor: add(self.monitor)?,
            route: add(self.route)?,
        })
    }
}

/// The name of the local cluster's node `node` (from 0), its store and its files.
pub(crate) fn cluster_node_name(node: usize) -> String {
    format!("refbus-local-{}", node + 1)
}

/// The configuration of node `node` of a local cluster of `size` nodes: its own store under
/// `store_root`, routes to every other node, fsync before every acknowledgement, and
/// `security` (clients: TLS with certificates and NKey users; routes: `route_tls`) as a
/// single local server has it. Pure: the text only.
pub(crate) fn cluster_node_config(
    node: usize,
    size: usize,
    ports: ClusterPorts,
    store_root: &Path,
    security: &str,
    route_tls: &str,
) -> anyhow::Result<String> {
    let own = ports.of(node)?;
    let routes = (0..size)
        .filter(|&other| other != node)
        .map(|other| {
            ports
                .of(other)
                .map(|theirs| format!("\"nats-route://127.0.0.1:{}\"", theirs.route))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    let name = cluster_node_name(node);
    Ok(format!(
        "# Written by `refbus up --cluster {size}`: node {} of {size} on this machine.\n\
         # Production uses deploy/nats/cluster/ (one node per machine).\n\
         server_name: \"{name}\"\n\
         listen: \"127.0.0.1:{}\"\n\
         http: \"127.0.0.1:{}\"\n\
         jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
         cluster {{\n  name: \"refbus-local\"\n  listen: \"127.0.0.1:{}\"\n  routes: [{}]\n{route_tls}}}\n\
         {security}",
        node + 1,
        own.client,
        own.monitor,
        store_root.join(&name).display(),
        own.route,
        routes.join(", "),
    ))
}

/// Nodes of a local JetStream cluster, each its own nats-server child with its own store
/// under the data directory, secured as [`LocalNats::start`] secures one server.
pub(crate) struct LocalCluster {
    nodes: Vec<tokio::process::Child>,
    /// Each node's client URL, in node order.
    pub(crate) urls: Vec<String>,
    /// Each node's monitoring address.
    pub(crate) monitors: Vec<String>,
    pub(crate) security: crate::nats_security::NatsSecurity,
}

impl LocalCluster {
    /// Starts `size` nodes and waits until every one is current with a JetStream meta leader.
    pub(crate) async fn start(
        binary: &Path,
        data_dir: &Path,
        size: usize,
        ports: ClusterPorts,
        users: &[String],
    ) -> anyhow::Result<LocalCluster> {
        let security = crate::nats_security::NatsSecurity::ensure(data_dir, users)?;
        let (server, routes) = (security.server_config(), security.route_tls_config());
        let store_root = data_dir.join("nats-cluster");
        let mut cluster = LocalCluster {
            nodes: Vec::with_capacity(size),
            urls: Vec::with_capacity(size),
            monitors: Vec::with_capacity(size),
            security,
        };
        // Every node starts before any is waited for: none elects a meta leader alone.
        for node in 0..size {
            let name = cluster_node_name(node);
            std::fs::create_dir_all(store_root.join(&name))
                .with_context(|| format!("creating {}", store_root.join(&name).display()))?;
            let config = store_root.join(format!("{name}.conf"));
            let text = cluster_node_config(node, size, ports, &store_root, &server, &routes)?;
            std::fs::write(&config, text)
                .with_context(|| format!("writing {}", config.display()))?;
            let log = store_root.join(format!("{name}.log"));
            cluster
                .nodes
                .push(spawn_nats_server(binary, &config, &log)?);
            let own = ports.of(node)?;
            cluster.urls.push(format!("tls://127.0.0.1:{}", own.client));
            cluster.monitors.push(format!("127.0.0.1:{}", own.monitor));
        }
        // Electing a meta leader takes a second or two; a busy machine needs more.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
        for (node, child) in cluster.nodes.iter_mut().enumerate() {
            let log = store_root.join(format!("{}.log", cluster_node_name(node)));
            wait_until_healthy(
                child,
                &cluster.monitors[node],
                CLUSTER_NODE_HEALTHY,
                &log,
                deadline,
            )
            .await?;
        }
        Ok(cluster)
    }

    /// Connection options for component `user`: every node's URL.
    pub(crate) fn connect_options(&self, user: &str) -> anyhow::Result<refbus_bus::ConnectOptions> {
        self.security.connect_options(&self.urls, user)
    }

    /// Each node's process id, in node order (0 for one that is gone).
    pub(crate) fn pids(&self) -> Vec<u32> {
        self.nodes
            .iter()
            .map(|node| node.id().unwrap_or(0))
            .collect()
    }

    /// Stops every node (each fsyncs every write, so killing loses nothing).
    pub(crate) async fn stop(mut self) -> anyhow::Result<()> {
        for node in &mut self.nodes {
            node.start_kill()?;
        }
        for node in &mut self.nodes {
            node.wait().await?;
        }
        Ok(())
    }
}

/// `setpriv` (util-linux), when it can give a child a parent-death signal: a nats-server started
/// through it gets SIGTERM when the thread that started it dies, even by SIGKILL, which no
/// handler of ours can see. Setting the signal ourselves (prctl in a pre_exec hook) would be
/// unsafe code, which the workspace forbids. Without setpriv a `kill -9` of `refbus up` leaves
/// its nats-server running (its data is safe: every write is fsynced).
///
/// The signal follows the starting *thread*: start servers from `block_on`'s thread or a
/// runtime worker (they live as long as the runtime), never from a blocking-pool thread.
fn parent_death_signal() -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    let setpriv = std::env::split_paths(&path)
        .map(|dir| dir.join("setpriv"))
        .find(|candidate| candidate.is_file())?;
    // Old util-linux (before 2.33) has no --pdeathsig: try it once.
    let works = std::process::Command::new(&setpriv)
        .args(["--pdeathsig", "TERM", "--", "true"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    works.then_some(setpriv)
}

/// `count` consecutive TCP ports free on 127.0.0.1 now (another process may take them before
/// they are used: good enough for a local run).
pub(crate) fn free_ports(count: u16) -> anyhow::Result<u16> {
    for _ in 0..100 {
        let first = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let Some(last) = first.checked_add(count.saturating_sub(1)) else {
            continue;
        };
        let held: Vec<_> = (first..=last)
            .map_while(|port| std::net::TcpListener::bind(("127.0.0.1", port)).ok())
            .collect();
        if held.len() == usize::from(count) {
            return Ok(first);
        }
    }
    bail!("found no {count} consecutive free ports on 127.0.0.1")
}

/// Whether the monitoring endpoint reports a healthy server with JetStream.
async fn healthz(monitor: &str, check: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(mut stream) = tokio::net::TcpStream::connect(monitor).await else {
        return false;
    };
    let request = format!("GET {check} HTTP/1.0\r\nHost: {monitor}\r\n\r\n");
    if stream.write_all(request.as_bytes()).await.is_err() {
        return false;
    }
    let mut response = String::new();
    let _ = stream.read_to_string(&mut response).await;
    response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200")
}

// === connecting to NATS ===

/// How a component reaches NATS: the same flags for the adapter and the router.
#[derive(Debug, clap::Args)]
pub(crate) struct NatsArgs {
    /// NATS server(s) to connect to (comma-separated for a cluster).
    #[arg(
        long = "nats",
        default_value = "nats://127.0.0.1:4222",
        env = "REFBUS_NATS_URL"
    )]
    pub(crate) url: String,
    /// A NATS credentials (JWT) file.
    #[arg(
        long,
        value_name = "FILE",
        env = "REFBUS_NATS_CREDS",
        conflicts_with = "nats_user"
    )]
    pub(crate) nats_creds: Option<PathBuf>,
    /// A NATS user (deploy/nats/permissions.conf has one per component).
    #[arg(
        long,
        value_name = "USER",
        env = "REFBUS_NATS_USER",
        requires = "nats_password_file"
    )]
    pub(crate) nats_user: Option<String>,
    /// A file holding that user's password (kept out of the command line and the environment).
    #[arg(long, value_name = "FILE", env = "REFBUS_NATS_PASSWORD_FILE")]
    pub(crate) nats_password_file: Option<PathBuf>,
    /// A file holding this component's NATS NKey seed (`refbus up` makes one per component).
    #[arg(
        long,
        value_name = "FILE",
        env = "REFBUS_NATS_NKEY_FILE",
        conflicts_with_all = ["nats_user", "nats_creds"]
    )]
    pub(crate) nats_nkey_file: Option<PathBuf>,
    /// The CA certificate (PEM) the NATS server's certificate must chain to; makes TLS
    /// required. Without it, the operating system's certificate store.
    #[arg(long, value_name = "FILE", env = "REFBUS_NATS_CA")]
    pub(crate) nats_ca: Option<PathBuf>,
    /// A client certificate (PEM) to present to NATS, with --nats-key; makes TLS required.
    #[arg(
        long,
        value_name = "FILE",
        env = "REFBUS_NATS_CERT",
        requires = "nats_key"
    )]
    pub(crate) nats_cert: Option<PathBuf>,
    /// The private key (PEM) of --nats-cert.
    #[arg(
        long,
        value_name = "FILE",
        env = "REFBUS_NATS_KEY",
        requires = "nats_cert"
    )]
    pub(crate) nats_key: Option<PathBuf>,
    /// Use TLS even with nats:// URLs (a tls:// URL says the same).
    #[arg(long, env = "REFBUS_NATS_TLS")]
    pub(crate) nats_tls: bool,
    /// Allow a plain-text connection to a NATS server on another machine: passwords and
    /// referral events would cross the network unencrypted. Refused without this flag.
    #[arg(long, env = "REFBUS_INSECURE_NATS_PLAINTEXT")]
    pub(crate) insecure_nats_plaintext: bool,
    /// Replicas of the events stream: 1 on a single server, 3 on a production cluster. A
    /// missing stream is created with this many; an existing one with another number is
    /// refused (never changed), like any other difference from refbus's configuration, so
    /// every component of a cluster needs it.
    #[arg(long, default_value_t = 1, env = "REFBUS_STREAM_REPLICAS")]
    pub(crate) stream_replicas: usize,
}

impl NatsArgs {
    /// Connects; an adapter passes its agency (`confined_to`): its user may read only that
    /// agency's subjects on the shipped permissions (deploy/nats/README.md).
    pub(crate) async fn connect(
        &self,
        confined_to: Option<refbus_core::AgencyId>,
    ) -> anyhow::Result<refbus_bus::Bus> {
        self.open(confined_to, None).await
    }

    /// Connects the router: its verdict on the stream is stored, signed with `key`, for the
    /// adapters ([`refbus_bus::Bus::connect_attesting`]).
    pub(crate) async fn connect_attesting(
        &self,
        key: &refbus_core::signature::SigningKey,
    ) -> anyhow::Result<refbus_bus::Bus> {
        self.open(None, Some(key)).await
    }

    async fn open(
        &self,
        confined_to: Option<refbus_core::AgencyId>,
        attest: Option<&refbus_core::signature::SigningKey>,
    ) -> anyhow::Result<refbus_bus::Bus> {
        let credentials = match (&self.nats_creds, &self.nats_user, &self.nats_password_file) {
            _ if let Some(file) = &self.nats_nkey_file => {
                let seed = std::fs::read_to_string(file)
                    .with_context(|| format!("reading the NATS NKey seed in {}", file.display()))?;
                refbus_bus::Credentials::Nkey(seed.trim().to_owned())
            }
            (Some(creds), _, _) => refbus_bus::Credentials::File(creds.clone()),
            (None, Some(user), Some(file)) => {
                let password = std::fs::read_to_string(file)
                    .with_context(|| format!("reading the NATS password in {}", file.display()))?;
                refbus_bus::Credentials::UserPassword {
                    user: user.clone(),
                    password: password.trim().to_owned(),
                }
            }
            _ => refbus_bus::Credentials::None,
        };
        let mut options = refbus_bus::ConnectOptions::new(self.url.split(',').map(str::trim))
            .with_credentials(credentials)
            .with_tls(refbus_bus::Tls {
                ca_file: self.nats_ca.clone(),
                client_cert: self.nats_cert.clone().zip(self.nats_key.clone()).map(
                    |(cert_file, key_file)| refbus_bus::ClientCert {
                        cert_file,
                        key_file,
                    },
                ),
                required: self.nats_tls,
            })
            .with_insecure_plaintext(self.insecure_nats_plaintext);
        if let Some(agency) = confined_to {
            options = options.confined_to(agency);
        }
        let settings = refbus_bus::StreamSettings {
            replicas: self.stream_replicas,
            ..refbus_bus::StreamSettings::default()
        };
        let connected = match attest {
            Some(key) => refbus_bus::Bus::connect_attesting(&options, &settings, key).await,
            None => refbus_bus::Bus::connect(&options, &settings).await,
        };
        connected.with_context(|| format!("connecting to NATS at {}", self.url))
    }
}

/// The socket a component serves its Prometheus metrics on (`--metrics-addr`), bound now so
/// that a taken port is said before anything starts; `None`: metrics are not served.
pub(crate) fn metrics_endpoint(
    address: Option<std::net::SocketAddr>,
) -> anyhow::Result<Option<refbus_metrics::Endpoint>> {
    use anyhow::Context as _;
    let Some(address) = address else {
        return Ok(None);
    };
    let endpoint = refbus_metrics::Endpoint::bind(address)
        .with_context(|| format!("serving metrics on {address} (--metrics-addr)"))?;
    tracing::info!(url = %endpoint.url()?, "metrics served");
    Ok(Some(endpoint))
}

/// The time a component runs on: the system's, or for demonstrations and tests a pretended
/// clock started at `start` (RFC 3339, `--clock-start`) running `speed` times as fast.
pub(crate) fn clock(
    start: Option<&str>,
    speed: f64,
) -> anyhow::Result<std::sync::Arc<dyn refbus_router::Clock>> {
    Ok(match start {
        Some(start) => {
            let start = refbus_core::Timestamp::parse_rfc3339(start)
                .map_err(|err| crate::commands::UsageError(format!("--clock-start: {err}")))?;
            std::sync::Arc::new(refbus_router::ScaledClock::new(start, speed))
        }
        None => std::sync::Arc::new(refbus_router::SystemClock::new()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_cluster_node_routes_to_the_others_keeps_its_own_store_and_fsyncs_every_write() {
        let ports = ClusterPorts {
            client: 4222,
            monitor: 8222,
            route: 6222,
        };
        let text = cluster_node_config(
            1,
            3,
            ports,
            Path::new("/data/nats-cluster"),
            "authorization {}\n",
            "  tls {}\n",
        )
        .unwrap();
        assert!(text.contains("server_name: \"refbus-local-2\""), "{text}");
        assert!(text.contains("listen: \"127.0.0.1:4223\""), "{text}");
        assert!(text.contains("http: \"127.0.0.1:8223\""), "{text}");
        assert!(
            text.contains("store_dir: \"/data/nats-cluster/refbus-local-2\""),
            "{text}"
        );
        assert!(text.contains("sync_interval: always"), "{text}");
        assert!(text.contains("listen: \"127.0.0.1:6223\""), "{text}");
        assert!(
            text.contains(
                "routes: [\"nats-route://127.0.0.1:6222\", \"nats-route://127.0.0.1:6224\"]"
            ),
            "{text}"
        );
        assert!(text.contains("  tls {}\n}") && text.ends_with("authorization {}\n"));
        // Ports past the end of the range are refused, not wrapped around.
        let high = ClusterPorts {
            client: u16::MAX - 1,
            ..ports
        };
        assert!(cluster_node_config(2, 3, high, Path::new("/d"), "", "").is_err());
    }
}
