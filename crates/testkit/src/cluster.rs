//! [`NatsCluster`]: several nats-servers routed together on loopback, with clustered JetStream.

use std::net::{Ipv4Addr, TcpListener};
use std::time::{Duration, Instant};

use crate::Error;
use crate::server::{ClusterSettings, NatsServer, Settings, poll_until};

/// The cluster name every test cluster uses; clusters never meet, each has its own ports.
const CLUSTER_NAME: &str = "refbus-test";

/// Electing a meta leader takes about a second on an idle machine; a busy one needs more.
const DEFAULT_CLUSTER_READY_TIMEOUT: Duration = Duration::from_secs(60);

/// Ports are reserved by binding and releasing them, so another process can take one in
/// between; a start that failed that way is tried again with new ports.
const START_ATTEMPTS: usize = 3;

/// A JetStream cluster of nats-servers named `n1`, `n2`, ... on 127.0.0.1, each with its own
/// temporary store. Dropping it kills every node and removes their directories.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsServer>,
    ready_timeout: Duration,
}

// === impl NatsCluster ===

impl NatsCluster {
    /// Starts `size` nodes and waits until JetStream has a meta leader that every node follows.
    pub fn start(size: usize) -> Result<NatsCluster, Error> {
        NatsCluster::builder().size(size).start()
    }

    /// Options for a cluster: size, `sync_always`, extra configuration.
    pub fn builder() -> NatsClusterBuilder {
        NatsClusterBuilder::default()
    }

    /// The nodes, in order `n1`, `n2`, ...
    pub fn nodes(&self) -> &[NatsServer] {
        &self.nodes
    }

    /// Every node's client URL; `async_nats::connect(cluster.urls())` connects to any of them.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsServer::url).collect()
    }

    /// Kills node `index` (0-based) with SIGKILL, as a crash would. The others keep running;
    /// call [`NatsCluster::wait_until_healthy`] to wait until the survivors lead every group.
    pub fn kill_node(&mut self, index: usize) -> Result<(), Error> {
        self.node_mut(index)?.kill()
    }

    /// Starts node `index` again on its ports and store, then waits until the whole cluster is
    /// healthy again (the node caught up with the meta leader and its streams).
    pub fn restart_node(&mut self, index: usize) -> Result<(), Error> {
        self.node_mut(index)?.restart()?;
        self.wait_until_healthy()
    }

    /// Waits until every running node answers `/healthz` OK, one of them is the JetStream meta
    /// leader with all running nodes current, and every stream and consumer they host has a
    /// running leader. After a node crash that takes a raft election timeout (seconds) if the
    /// node led something; a group that lost its quorum (R2 with one node down) never recovers,
    /// and the wait fails.
    pub fn wait_until_healthy(&self) -> Result<(), Error> {
        self.wait_until_healthy_by(Instant::now() + self.ready_timeout)
    }

    /// The index (0-based) of the node leading stream `stream`, as the running nodes report
    /// it; `None` while no running node names a leader (an election under way) or the stream
    /// does not exist. For tests that kill the leader in particular.
    pub fn stream_leader(&self, stream: &str) -> Result<Option<usize>, Error> {
        self.group_leader(stream, None)
    }

    /// The index (0-based) of the node leading consumer `consumer` of stream `stream`, as
    /// [`NatsCluster::stream_leader`] reports a stream's.
    pub fn consumer_leader(&self, stream: &str, consumer: &str) -> Result<Option<usize>, Error> {
        self.group_leader(stream, Some(consumer))
    }

    fn group_leader(&self, stream: &str, consumer: Option<&str>) -> Result<Option<usize>, Error> {
        for node in self.nodes.iter().filter(|n| n.is_running()) {
            let body = node.monitor("/jsz?accounts=true&streams=true&consumers=true")?;
            let report: serde_json::Value =
                serde_json::from_str(&body).unwrap_or(serde_json::Value::Null);
            for account in items(&report["account_details"]) {
                for stream_detail in items(&account["stream_detail"]) {
                    if stream_detail["name"].as_str() != Some(stream) {
                        continue;
                    }
                    let detail = match consumer {
                        None => stream_detail,
                        Some(consumer) => match items(&stream_detail["consumer_detail"])
                            .iter()
                            .find(|detail| detail["name"].as_str() == Some(consumer))
                        {
                            Some(detail) => detail,
                            None => continue,
                        },
                    };
                    let leader = detail["cluster"]["leader"].as_str();
                    let index = self
                        .nodes
                        .iter()
                        .position(|n| n.is_running() && n.name().is_some() && n.name() == leader);
                    if index.is_some() {
                        return Ok(index);
                    }
                }
            }
        }
        Ok(None)
    }

    fn wait_until_healthy_by(&self, deadline: Instant) -> Result<(), Error> {
        poll_until(
            "the cluster healthy with a JetStream meta leader",
            deadline,
            self.ready_timeout,
            || self.health_problem(),
            || self.log_tails(),
        )
    }

    fn node_mut(&mut self, index: usize) -> Result<&mut NatsServer, Error> {
        let size = self.nodes.len();
        self.nodes
            .get_mut(index)
            .ok_or(Error::NoSuchNode { index, size })
    }

    fn health_problem(&self) -> Result<Option<String>, Error> {
        let running: Vec<&NatsServer> = self.nodes.iter().filter(|n| n.is_running()).collect();
        if running.is_empty() {
            return Ok(Some("no node is running".to_owned()));
        }
        for node in &running {
            if let Some(problem) = node.health_problem()? {
                return Ok(Some(format!("{}: {problem}", node.label())));
            }
        }
        let running_names: Vec<&str> = running.iter().filter_map(|n| n.name()).collect();
        if let Some(problem) = meta_leader_problem(&running, self.nodes.len()) {
            return Ok(Some(problem));
        }
        // Right after a crash the survivors still name the dead node as leader of the streams
        // it led, until their raft election timeout; healthz does not show that.
        for node in &running {
            let report = match node.monitor("/jsz?accounts=true&streams=true&consumers=true") {
                Ok(body) => serde_json::from_str(&body).unwrap_or(serde_json::Value::Null),
                Err(error) => return Ok(Some(error.to_string())),
            };
            if let Some(problem) = group_leader_problem(&report, &running_names) {
                return Ok(Some(format!("{}: {problem}", node.label())));
            }
        }
        Ok(None)
    }

    fn log_tails(&self) -> String {
        self.nodes
            .iter()
            .map(|node| format!("--- {} ---\n{}", node.label(), node.log_tail()))
            .collect::<Vec<_>>()
            .join("\n")
    }
}

/// Why no running node leads the JetStream meta group with every running node current, if
/// none does: placing an R3 stream needs a leader that knows every peer.
fn meta_leader_problem(running: &[&NatsServer], size: usize) -> Option<String> {
    // A node that is not the leader answers `leader-only` with something other than the report.
    let leader_report = running.iter().find_map(|node| {
        let body = node.monitor("/jsz?leader-only=true").ok()?;
        let report: serde_json::Value = serde_json::from_str(&body).ok()?;
        let leads = report["meta_cluster"]["leader"].as_str() == node.name();
        leads.then_some(report)
    });
    let Some(report) = leader_report else {
        return Some("no running node reports itself as the JetStream meta leader".to_owned());
    };
    let meta = &report["meta_cluster"];
    let leader = meta["leader"].as_str().unwrap_or_default();
    let known_size = meta["cluster_size"].as_u64();
    if known_size != u64::try_from(size).ok() {
        return Some(format!(
            "meta leader {leader} knows a cluster of {known_size:?} nodes, expected {size}"
        ));
    }
    let replicas = items(&meta["replicas"]);
    for name in running.iter().filter_map(|node| node.name()) {
        if name == leader {
            continue;
        }
        let current = replicas
            .iter()
            .any(|r| r["name"].as_str() == Some(name) && r["current"].as_bool() == Some(true));
        if !current {
            return Some(format!("{name} is not current with meta leader {leader}"));
        }
    }
    None
}

/// Which stream or consumer, in one node's `/jsz` report, has no leader among the running nodes.
fn group_leader_problem(report: &serde_json::Value, running: &[&str]) -> Option<String> {
    for account in items(&report["account_details"]) {
        for stream in items(&account["stream_detail"]) {
            let stream_name = stream["name"].as_str().unwrap_or_default();
            if let Some(problem) = leader_problem(stream, running) {
                return Some(format!("stream {stream_name} {problem}"));
            }
            for consumer in items(&stream["consumer_detail"]) {
                if let Some(problem) = leader_problem(consumer, running) {
                    let consumer_name = consumer["name"].as_str().unwrap_or_default();
                    return Some(format!("consumer {stream_name}/{consumer_name} {problem}"));
                }
            }
        }
    }
    None
}

fn items(value: &serde_json::Value) -> &[serde_json::Value] {
    value.as_array().map(Vec::as_slice).unwrap_or(&[])
}

fn leader_problem(group: &serde_json::Value, running: &[&str]) -> Option<String> {
    match group["cluster"]["leader"].as_str() {
        Some(leader) if running.contains(&leader) => None,
        Some(leader) => Some(format!("is led by {leader}, which is not running")),
        None => Some("has no leader".to_owned()),
    }
}

// === impl NatsClusterBuilder ===

/// Options for a [`NatsCluster`]; start it with [`NatsClusterBuilder::start`].
#[derive(Debug, Clone)]
pub struct NatsClusterBuilder {
    size: usize,
    sync_always: bool,
    extra_config: String,
    ready_timeout: Duration,
}

impl Default for NatsClusterBuilder {
    fn default() -> Self {
        NatsClusterBuilder {
            size: 3,
            sync_always: false,
            extra_config: String::new(),
            ready_timeout: DEFAULT_CLUSTER_READY_TIMEOUT,
        }
    }
}

impl NatsClusterBuilder {
    /// The number of nodes (3 by default; at least 1).
    pub fn size(mut self, size: usize) -> Self {
        self.size = size.max(1);
        self
    }

    /// JetStream `sync_interval: always` on every node.
    pub fn sync_always(mut self, sync_always: bool) -> Self {
        self.sync_always = sync_always;
        self
    }

    /// Configuration text appended to every node's generated file.
    pub fn extra_config(mut self, text: impl Into<String>) -> Self {
        self.extra_config = text.into();
        self
    }

    /// How long a start, or [`NatsCluster::wait_until_healthy`], waits.
    pub fn ready_timeout(mut self, timeout: Duration) -> Self {
        self.ready_timeout = timeout;
        self
    }

    /// Starts every node and waits until the cluster is healthy. Blocks the calling thread
    /// meanwhile (about a second usually).
    pub fn start(self) -> Result<NatsCluster, Error> {
        let mut attempt = 1;
        loop {
            match self.try_start() {
                Err(error) if attempt < START_ATTEMPTS && lost_a_port(&error) => attempt += 1,
                result => return result,
            }
        }
    }

    fn try_start(&self) -> Result<NatsCluster, Error> {
        let deadline = Instant::now() + self.ready_timeout;
        // Every port is chosen here, none left to the servers: a server picking its own could
        // take a route port reserved for a node that has not started yet.
        let ports = reserve_ports(3 * self.size)?;
        let (route_ports, other_ports) = ports.split_at(self.size);
        let mut nodes = Vec::with_capacity(self.size);
        for (index, &port) in route_ports.iter().enumerate() {
            let settings = Settings {
                server_name: Some(format!("n{}", index + 1)),
                sync_always: self.sync_always,
                extra_config: self.extra_config.clone(),
                config_files: Vec::new(),
                cluster: Some(ClusterSettings {
                    name: CLUSTER_NAME.to_owned(),
                    port,
                    route_ports: route_ports.iter().copied().filter(|&p| p != port).collect(),
                }),
                ready_timeout: self.ready_timeout,
            };
            let client_port = other_ports[2 * index];
            let monitor_port = other_ports[2 * index + 1];
            nodes.push(NatsServer::prepare(
                settings,
                None,
                Some(client_port),
                Some(monitor_port),
            )?);
        }
        // All nodes start before any is waited for: none can elect a meta leader alone.
        for node in &mut nodes {
            node.spawn()?;
        }
        for node in &mut nodes {
            node.wait_ready(deadline)?;
        }
        let cluster = NatsCluster {
            nodes,
            ready_timeout: self.ready_timeout,
        };
        cluster.wait_until_healthy_by(deadline)?;
        Ok(cluster)
    }
}

fn lost_a_port(error: &Error) -> bool {
    match error {
        Error::ExitedEarly { log, .. } | Error::Exited { log, .. } => {
            log.contains("address already in use")
        }
        _ => false,
    }
}

/// Free loopback ports, found by binding port 0; all are held until every one is found, so
/// they are distinct.
fn reserve_ports(count: usize) -> Result<Vec<u16>, Error> {
    let listeners = (0..count)
        .map(|_| TcpListener::bind((Ipv4Addr::LOCALHOST, 0)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::NoFreePort)?;
    listeners
        .iter()
        .map(|listener| listener.local_addr().map(|address| address.port()))
        .collect::<Result<Vec<_>, _>>()
        .map_err(Error::NoFreePort)
}
