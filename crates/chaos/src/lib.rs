//! refbus-chaos: a Jepsen-style fault campaign against refbus on a 3-node JetStream cluster
//! (`refbus chaos`).
//!
//! A campaign sets up three nats-server nodes (R3 stream, `sync_interval: always`), two router
//! replicas, one adapter per agency of the workload and the notary, every one of them a child
//! process of the real `refbus` binary (the production entry points, with their own command
//! lines); runs a workload of simulated agency systems over gRPC ([`workload`]) while a
//! nemesis injects faults on a schedule drawn from the seed ([`nemesis`]): kill -9 and
//! SIGSTOP/SIGCONT of nodes, routers, adapters and the notary, partitions between nodes (network
//! namespaces, [`net`]) and router clock jumps; then heals everything, waits a quiet period,
//! and checks ([`checker`]) from the bus and with `refbus audit verify`.
//!
//! Layout of `--out`: `config/` (registry), `keys/`, `nodes/n<i>/` (configuration and store),
//! `state/` (router snapshots), `log/` (the notary's Merkle log), `logs/<process>.log`,
//! `ops.jsonl` (every operation and its outcome), `faults.jsonl`, `results.json`,
//! `results.md`.

pub mod checker;
pub mod nemesis;
pub mod net;
pub mod procs;
pub mod rng;
pub mod workload;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, bail};
use serde::Serialize;
use tokio::sync::{Mutex, watch};

use crate::net::{NODES, Network};
use crate::procs::Proc;

/// A kind of fault the nemesis injects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FaultKind {
    /// kill -9 of a nats-server node, a router or an adapter; restarted after the hold.
    Kill,
    /// SIGSTOP of one of them; SIGCONT after the hold.
    Pause,
    /// The links between nodes cut (one node isolated, or one pair split); clients still
    /// reach every node.
    Partition,
    /// A router restarted on a clock jumped by ±5..30 s, and back on the system clock after
    /// the hold (the router takes a clock only at start: `--clock-start`).
    Clock,
}

impl FaultKind {
    /// `kill,pause,partition,clock`.
    pub fn parse_list(text: &str) -> anyhow::Result<Vec<FaultKind>> {
        let mut kinds = Vec::new();
        for name in text
            .split(',')
            .map(str::trim)
            .filter(|name| !name.is_empty())
        {
            let kind = match name {
                "kill" => FaultKind::Kill,
                "pause" => FaultKind::Pause,
                "partition" => FaultKind::Partition,
                "clock" => FaultKind::Clock,
                other => bail!("unknown fault {other:?}: kill, pause, partition or clock"),
            };
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        Ok(kinds)
    }
}

/// What a campaign runs.
#[derive(Debug, Clone)]
pub struct Settings {
    /// The `refbus` binary whose components are tested.
    pub refbus: PathBuf,
    pub nats_server: PathBuf,
    /// How long faults are injected (the workload runs as long).
    pub duration: Duration,
    pub seed: u64,
    pub faults: Vec<FaultKind>,
    pub out: PathBuf,
    /// After healing: how long the system runs fault-free before the check.
    pub quiet: Duration,
    /// How late an item may be recorded beyond its due time when no fault overlaps it.
    pub slack: Duration,
    /// Time between two creates of one sending system.
    pub create_every: Duration,
    /// The routers share the referrals in this many partitions (`refbus router
    /// --partitions`); `None`: both read every event and hold every timer.
    pub router_partitions: Option<u32>,
}

/// Every process of the campaign, and the network they run on.
#[derive(Debug)]
pub struct Components {
    pub network: Network,
    pub nodes: Vec<Proc>,
    pub routers: Vec<Proc>,
    pub adapters: Vec<Proc>,
    pub notary: Proc,
    router_base_args: Vec<Vec<String>>,
}

impl Components {
    fn all_mut(&mut self) -> impl Iterator<Item = &mut Proc> {
        self.nodes
            .iter_mut()
            .chain(self.routers.iter_mut())
            .chain(self.adapters.iter_mut())
            .chain(std::iter::once(&mut self.notary))
    }

    pub fn by_name(&mut self, name: &str) -> anyhow::Result<&mut Proc> {
        self.all_mut()
            .find(|proc| proc.name == name)
            .with_context(|| format!("no process {name}"))
    }

    pub fn router_mut(&mut self, index: usize) -> anyhow::Result<&mut Proc> {
        self.routers.get_mut(index).context("no such router")
    }

    /// The router's command line on the system clock.
    pub fn router_args(&self, index: usize) -> Vec<String> {
        self.router_base_args
            .get(index)
            .cloned()
            .unwrap_or_default()
    }

    /// Heals every fault: links up, paused processes resumed, killed ones started, clocks
    /// back on the system's.
    async fn heal(&mut self) -> anyhow::Result<()> {
        if self.network.can_partition() {
            for (a, b) in net::pairs() {
                self.network.set_link(a, b, true).await?;
            }
        }
        for index in 0..self.routers.len() {
            let base = self.router_args(index);
            let router = &mut self.routers[index];
            if router.args() != base.as_slice() {
                router.kill().await?;
                router.set_args(base);
            }
        }
        for proc in self.all_mut() {
            proc.resume()?;
            if proc.is_down() {
                proc.start()?;
            }
        }
        Ok(())
    }

    async fn stop_all(&mut self) {
        for proc in self.all_mut() {
            let _ = proc.resume();
            let _ = proc.kill().await;
        }
        self.network.remove().await;
    }
}

/// What a campaign found.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub seed: u64,
    pub duration_s: u64,
    pub network: String,
    pub faults_requested: Vec<FaultKind>,
    /// The routers' `--partitions`, if they shared the referrals.
    pub router_partitions: Option<u32>,
    pub faults: Vec<nemesis::Fault>,
    /// Processes that exited on their own and were restarted by the campaign's supervisor.
    pub unexpected_exits: Vec<(String, u32)>,
    pub check: checker::Check,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.check.passed()
    }

    /// The results table (Markdown).
    pub fn table(&self) -> String {
        let c = &self.check;
        let kinds = |kind: FaultKind| self.faults.iter().filter(|f| f.kind == kind).count();
        format!(
            "| seed | duration | faults (kill/pause/partition/clock) | operations (ok/failed/unknown) | lost | duplicated | wrong answers | stale answers | clock items (recorded, late, missing) | audit verify | verdict |\n\
             |---|---|---|---|---|---|---|---|---|---|---|\n\
             | {} | {} s | {} ({}/{}/{}/{}) | {} ({}/{}/{}) | {} | {} | {} | {} | {}, {}, {} | {} | **{}** |\n",
            self.seed,
            self.duration_s,
            self.faults.len(),
            kinds(FaultKind::Kill),
            kinds(FaultKind::Pause),
            kinds(FaultKind::Partition),
            kinds(FaultKind::Clock),
            c.operations,
            c.ok,
            c.failed,
            c.unknown,
            c.lost.len(),
            c.duplicated.len(),
            c.wrong_answers.len(),
            c.stale_answers.len(),
            c.items_recorded,
            c.late.len(),
            c.missing,
            if c.audit_passed {
                "passed".to_owned()
            } else {
                format!(
                    "FAILED ({} problems, {} records refused)",
                    c.audit_problems.values().sum::<usize>(),
                    c.refused_records
                )
            },
            if self.passed() { "PASS" } else { "FAIL" },
        )
    }
}

/// Runs a campaign and checks it. The error cases are a campaign that could not run (a
/// process that would not start); a failed check is a [`Report`] that did not pass.
pub async fn run(settings: Settings) -> anyhow::Result<Report> {
    let out = &settings.out;
    std::fs::create_dir_all(out).with_context(|| format!("creating {}", out.display()))?;
    let out = out.canonicalize()?;
    for dir in ["logs", "state", "log"] {
        std::fs::create_dir_all(out.join(dir))?;
    }
    let config = write_registry(&out)?;
    let keys = out.join("keys");
    generate_keys(&settings.refbus, &config, &keys).await?;

    let want_namespaces = settings.faults.contains(&FaultKind::Partition);
    let network = Network::create(want_namespaces).await?;
    println!("chaos: nodes on {}", network.describe());
    let urls = network.client_urls();
    let nats_flags = |extra: &[&str]| -> Vec<String> {
        let mut args: Vec<String> = vec![
            "--nats".into(),
            urls.clone(),
            "--insecure-nats-plaintext".into(),
            "--stream-replicas".into(),
            "3".into(),
        ];
        args.extend(extra.iter().map(|s| (*s).to_owned()));
        args
    };

    let mut nodes = Vec::new();
    for i in 1..=NODES {
        let dir = out.join("nodes").join(format!("n{i}"));
        std::fs::create_dir_all(dir.join("store"))?;
        let conf = dir.join("nats-server.conf");
        std::fs::write(&conf, network.node_config(i, &dir.join("store")))?;
        let (program, args) = network.wrap(
            i,
            &settings.nats_server,
            &["-c".to_owned(), conf.display().to_string()],
        );
        nodes.push(Proc::new(
            &format!("n{i}"),
            &program,
            args,
            out.join("logs").join(format!("n{i}.log")),
        ));
    }
    let config_arg = config.display().to_string();
    let keys_arg = keys.display().to_string();
    let mut routers = Vec::new();
    let mut router_base_args = Vec::new();
    for replica in ["r1", "r2"] {
        let mut args = vec!["router".to_owned(), "--config".into(), config_arg.clone()];
        if let Some(partitions) = settings.router_partitions {
            args.extend(["--partitions".to_owned(), partitions.to_string()]);
        }
        args.extend(nats_flags(&[
            "--replica",
            replica,
            "--state-dir",
            &out.join("state").display().to_string(),
            "--signing-key",
            &keys.join("router.sign.key").display().to_string(),
            "--public-keys",
            &keys_arg,
        ]));
        router_base_args.push(args.clone());
        routers.push(Proc::new(
            &format!("router-{replica}"),
            &settings.refbus,
            args,
            out.join("logs").join(format!("router-{replica}.log")),
        ));
    }
    let mut adapters = Vec::new();
    let mut endpoints = Vec::new();
    for agency in workload::AGENCIES {
        let port = free_port()?;
        let listen = format!("127.0.0.1:{port}");
        let mut args = vec![
            "adapter".to_owned(),
            "--agency".into(),
            (*agency).to_owned(),
            "--config".into(),
            config_arg.clone(),
        ];
        args.extend(nats_flags(&[
            "--listen",
            &listen,
            "--key",
            &keys.join(format!("{agency}.key")).display().to_string(),
            "--public-keys",
            &keys_arg,
            "--insecure-plaintext",
        ]));
        adapters.push(Proc::new(
            &format!("adapter-{agency}"),
            &settings.refbus,
            args,
            out.join("logs").join(format!("adapter-{agency}.log")),
        ));
        endpoints.push(((*agency).to_owned(), listen));
    }
    let notary_listen = format!("127.0.0.1:{}", free_port()?);
    let mut notary_args = vec!["notary".to_owned()];
    notary_args.extend(nats_flags(&[
        "--dir",
        &out.join("log").display().to_string(),
        "--key",
        &keys.join("notary.key").display().to_string(),
        "--listen",
        &notary_listen,
    ]));
    let notary = Proc::new(
        "notary",
        &settings.refbus,
        notary_args,
        out.join("logs").join("notary.log"),
    );

    let components = Arc::new(Mutex::new(Components {
        network,
        nodes,
        routers,
        adapters,
        notary,
        router_base_args,
    }));
    // Ctrl-C still removes the namespaces and stops every child (they also die with this
    // process through their parent-death signal, but namespaces would outlive it).
    let result = tokio::select! {
        result = campaign(&settings, &out, &config, &keys, &urls, endpoints, components.clone()) => result,
        _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
    };
    components.lock().await.stop_all().await;
    result
}

#[allow(clippy::too_many_arguments)]
async fn campaign(
    settings: &Settings,
    out: &Path,
    config: &Path,
    keys: &Path,
    urls: &str,
    endpoints: Vec<(String, String)>,
    components: Arc<Mutex<Components>>,
) -> anyhow::Result<Report> {
    {
        let mut c = components.lock().await;
        for node in &mut c.nodes {
            node.start()?;
        }
    }
    wait_healthy(&components, Duration::from_secs(90))
        .await
        .context("the 3-node cluster did not become healthy")?;
    // The stream, R3, made once before any component races to make it, and checked as a
    // router's start checks it: adapters start only on the router's word that it is as
    // configured.
    let bus = checker::connect_as_router(urls, &keys.join("router.sign.key"))
        .await
        .context("creating the R3 stream")?;
    drop(bus);
    {
        let mut guard = components.lock().await;
        let c = &mut *guard;
        for proc in c.routers.iter_mut().chain(c.adapters.iter_mut()) {
            proc.start()?;
        }
        c.notary.start()?;
    }
    for (agency, address) in &endpoints {
        wait_listening(address, Duration::from_secs(60))
            .await
            .with_context(|| {
                format!("the adapter of {agency} did not start listening on {address}")
            })?;
    }
    println!(
        "chaos: cluster, 2 routers, {} adapters and the notary running; workload and faults for {} s (seed {})",
        endpoints.len(),
        settings.duration.as_secs(),
        settings.seed
    );

    let rng = rng::Rng::new(settings.seed);
    let (stop_tx, stop) = watch::channel(false);
    let (give_up_tx, give_up) = watch::channel(false);
    let log = workload::OpLog::default();
    let workload = workload::Workload {
        endpoints,
        log: log.clone(),
        run: format!("chaos{}-{}", settings.seed, workload::now_ms()),
        stop: stop.clone(),
        give_up,
        create_every: settings.create_every,
    };
    let workload_task = tokio::spawn(workload.run(rng.fork(1)));
    let nemesis_task = tokio::spawn(nemesis::run(
        components.clone(),
        settings.faults.clone(),
        rng.fork(2),
        stop.clone(),
    ));
    let supervisor = tokio::spawn(supervise(components.clone(), stop.clone()));

    tokio::time::sleep(settings.duration).await;
    stop_tx.send_replace(true);
    let faults = nemesis_task.await.context("the nemesis")?;
    components.lock().await.heal().await.context("healing")?;
    println!(
        "chaos: healed; {} faults injected; quiet period of {} s",
        faults.len(),
        settings.quiet.as_secs()
    );
    // The supervisor keeps watching during the quiet period.
    let (_quiet_tx, quiet_stop) = watch::channel(false);
    let supervisor_quiet = tokio::spawn(supervise(components.clone(), quiet_stop));
    let _ = supervisor.await;
    let healthy = wait_healthy(&components, Duration::from_secs(120)).await;
    if let Err(err) = &healthy {
        eprintln!("chaos: the cluster is not healthy after healing: {err:#}");
    }
    tokio::time::sleep(settings.quiet).await;
    // Unknown outcomes had the quiet period to be retried with their request_id; now give up.
    give_up_tx.send_replace(true);
    workload_task.await.context("the workload")??;
    supervisor_quiet.abort();
    let _ = supervisor_quiet.await;

    // Writers stop, then the notary once its log covers the whole stream: the audit and the
    // checker read a stream that no longer grows, and a log that ends where it ends.
    let stopped_at = rfc3339_in(0);
    {
        let mut guard = components.lock().await;
        let c = &mut *guard;
        for proc in c.routers.iter_mut().chain(c.adapters.iter_mut()) {
            proc.kill().await?;
        }
    }
    wait_for_notary(urls, &out.join("log"), Duration::from_secs(60)).await?;
    components.lock().await.notary.kill().await?;

    let ops = log.lock().map(|ops| ops.clone()).unwrap_or_default();
    write_jsonl(&out.join("ops.jsonl"), &ops)?;
    write_jsonl(&out.join("faults.jsonl"), &faults)?;
    let check = checker::check(
        &checker::Inputs {
            refbus: &settings.refbus,
            config,
            keys,
            urls,
            log_dir: &out.join("log"),
            slack: settings.slack,
            quiet: settings.quiet,
            now: &stopped_at,
        },
        &ops,
        &faults,
    )
    .await?;
    let unexpected_exits = {
        let mut c = components.lock().await;
        c.all_mut()
            .filter(|proc| proc.unexpected_exits > 0)
            .map(|proc| (proc.name.clone(), proc.unexpected_exits))
            .collect()
    };
    let report = Report {
        seed: settings.seed,
        duration_s: settings.duration.as_secs(),
        network: components.lock().await.network.describe(),
        faults_requested: settings.faults.clone(),
        router_partitions: settings.router_partitions,
        faults,
        unexpected_exits,
        check,
    };
    std::fs::write(
        out.join("results.json"),
        serde_json::to_string_pretty(&report)?,
    )?;
    std::fs::write(out.join("results.md"), report.table())?;
    Ok(report)
}

/// Restarts every process that exited on its own (as a service manager would), until `stop`.
async fn supervise(components: Arc<Mutex<Components>>, mut stop: watch::Receiver<bool>) {
    loop {
        tokio::select! {
            _ = stop.wait_for(|stop| *stop) => return,
            () = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
        let mut c = components.lock().await;
        for proc in c.all_mut() {
            if let Some(status) = proc.exited_unexpectedly() {
                println!(
                    "chaos: {} exited on its own ({status}); restarting it",
                    proc.name
                );
                if let Err(err) = proc.start() {
                    eprintln!("chaos: restarting {}: {err:#}", proc.name);
                }
            }
        }
    }
}

/// Waits until every running node answers `/healthz` with 200 (JetStream current with its
/// meta leader).
pub(crate) async fn wait_healthy(
    components: &Arc<Mutex<Components>>,
    timeout: Duration,
) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let monitors: Vec<String> = {
            let c = components.lock().await;
            (1..=NODES)
                .filter(|i| !c.nodes[i - 1].is_down() && !c.nodes[i - 1].is_paused())
                .map(|i| c.network.monitor(i))
                .collect()
        };
        let mut unhealthy = Vec::new();
        for monitor in &monitors {
            if !healthz(monitor).await {
                unhealthy.push(monitor.clone());
            }
        }
        if unhealthy.is_empty() {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!("not healthy: {}", unhealthy.join(", "));
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn healthz(monitor: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let attempt = async {
        let mut stream = tokio::net::TcpStream::connect(monitor).await.ok()?;
        let request = format!("GET /healthz HTTP/1.0\r\nHost: {monitor}\r\n\r\n");
        stream.write_all(request.as_bytes()).await.ok()?;
        let mut response = String::new();
        let _ = stream.read_to_string(&mut response).await;
        Some(response.starts_with("HTTP/1.0 200") || response.starts_with("HTTP/1.1 200"))
    };
    tokio::time::timeout(Duration::from_secs(2), attempt)
        .await
        .ok()
        .flatten()
        .unwrap_or(false)
}

/// Waits until the notary's checkpoint covers the stream's last message.
async fn wait_for_notary(urls: &str, log: &Path, timeout: Duration) -> anyhow::Result<()> {
    let bus = checker::connect(urls).await?;
    let last = bus.last_sequence().await?;
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let size = std::fs::read_to_string(log.join("checkpoint"))
            .ok()
            .and_then(|text| {
                text.lines()
                    .nth(1)
                    .and_then(|line| line.parse::<u64>().ok())
            })
            .unwrap_or(0);
        if size >= last {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            bail!(
                "the notary's log holds {size} messages, the stream {last}, after {} s",
                timeout.as_secs()
            );
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

async fn wait_listening(address: &str, timeout: Duration) -> anyhow::Result<()> {
    let deadline = tokio::time::Instant::now() + timeout;
    while tokio::net::TcpStream::connect(address).await.is_err() {
        if tokio::time::Instant::now() > deadline {
            bail!("nothing listens after {} s", timeout.as_secs());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

fn free_port() -> anyhow::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// Now shifted by `seconds`, in RFC 3339 (a router's `--clock-start`).
pub(crate) fn rfc3339_in(seconds: i64) -> String {
    let now = refbus_core::Timestamp::from_millis(
        i64::try_from(workload::now_ms()).unwrap_or(0) + seconds * 1000,
    );
    now.to_rfc3339()
}

fn write_jsonl<T: Serialize>(path: &Path, items: &[T]) -> anyhow::Result<()> {
    let mut text = String::new();
    for item in items {
        text.push_str(&serde_json::to_string(item)?);
        text.push('\n');
    }
    std::fs::write(path, text).with_context(|| format!("writing {}", path.display()))
}

/// The campaign's registry: the Maros agencies (deploy/config/agencies.toml, as compiled in)
/// with clocks in seconds.
fn write_registry(out: &Path) -> anyhow::Result<PathBuf> {
    let dir = out.join("config");
    std::fs::create_dir_all(dir.join("holidays"))?;
    std::fs::write(
        dir.join("agencies.toml"),
        include_str!("../../../deploy/config/agencies.toml"),
    )?;
    std::fs::write(
        dir.join("holidays").join("2026.toml"),
        include_str!("../../../deploy/config/holidays/2026.toml"),
    )?;
    let config = dir.join("chaos.toml");
    std::fs::write(&config, include_str!("chaos.toml"))?;
    Ok(config)
}

/// Every agency's keys, the router's and the notary's, made by `refbus keys` itself (as an
/// operator would), unless the directory has them from an earlier run.
async fn generate_keys(refbus: &Path, config: &Path, keys: &Path) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(config.with_file_name("agencies.toml"))?;
    let agencies: Vec<String> = text
        .lines()
        .filter_map(|line| line.strip_prefix("id = \""))
        .filter_map(|rest| rest.strip_suffix('"'))
        .map(str::to_owned)
        .collect();
    let keys_arg = keys.display().to_string();
    let mut commands: Vec<(PathBuf, Vec<String>)> = Vec::new();
    for agency in &agencies {
        // Only agency ids: services and categories are listed before [[agency]].
        if !text.contains(&format!("[[agency]]\nid = \"{agency}\"")) {
            continue;
        }
        commands.push((
            keys.join(format!("{agency}.key")),
            vec![
                "keys".into(),
                "generate".into(),
                "--agency".into(),
                agency.clone(),
                "--out".into(),
                keys_arg.clone(),
            ],
        ));
    }
    commands.push((
        keys.join("router.sign.key"),
        vec![
            "keys".into(),
            "generate-router".into(),
            "--out".into(),
            keys_arg.clone(),
        ],
    ));
    commands.push((
        keys.join("notary.key"),
        vec![
            "keys".into(),
            "generate-notary".into(),
            "--name".into(),
            "refbus.chaos/log".into(),
            "--out".into(),
            keys.join("notary.key").display().to_string(),
        ],
    ));
    for (made, args) in commands {
        if made.exists() {
            continue;
        }
        run_refbus(refbus, &args).await?;
    }
    run_refbus(
        refbus,
        &[
            "config".into(),
            "check".into(),
            config.display().to_string(),
        ],
    )
    .await?;
    Ok(())
}

/// Runs `refbus args` to the end; its output is kept only if it fails.
pub(crate) async fn run_refbus(
    refbus: &Path,
    args: &[String],
) -> anyhow::Result<std::process::Output> {
    let output = tokio::process::Command::new(refbus)
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .await
        .with_context(|| format!("running {}", refbus.display()))?;
    if !output.status.success() {
        bail!(
            "refbus {} exited with {}: {}{}",
            args.join(" "),
            output.status,
            String::from_utf8_lossy(&output.stdout),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    Ok(output)
}
