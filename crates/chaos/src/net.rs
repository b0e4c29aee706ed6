//! Where the three nats-server nodes live and how the nemesis cuts them apart.
//!
//! With network namespaces (root, `ip` from iproute2): each node runs in a namespace of its
//! own, `rbc<run>n<i>`. Every pair of nodes is joined by its own veth pair (the routes between
//! them: 10.B.<ij>.<i> and 10.B.<ij>.<j>), and each node has one more veth pair to the
//! campaign's namespace for its clients (10.B.<i>.2, the campaign side 10.B.<i>.1). A
//! partition sets the veth pairs between nodes down: the nodes stop hearing each other while
//! every client still reaches every node, which is the split JetStream's raft must survive.
//! Nothing outside the namespaces this creates is touched except the three client veths, which
//! disappear with their namespaces.
//!
//! Without namespaces (not root, no `ip`): the nodes share 127.0.0.1 on distinct ports and
//! partitions cannot be injected (no packet filter is installed on this machine's kind).

use std::process::Stdio;

use anyhow::{Context as _, bail};

pub const NODES: usize = 3;

/// Where every node listens and how it is reached.
#[derive(Debug)]
pub enum Network {
    Namespaces {
        /// `rbc<4 hex digits>`: the prefix of every namespace and interface made.
        run: String,
        /// The second octet of every address: 10.<base>.x.y.
        base: u8,
    },
    Loopback {
        /// Per node: client, cluster, monitoring port.
        ports: Vec<(u16, u16, u16)>,
    },
}

const CLIENT_PORT: u16 = 4222;
const CLUSTER_PORT: u16 = 6222;
const MONITOR_PORT: u16 = 8222;

impl Network {
    /// Namespaces if they can be made here, else loopback ports.
    pub async fn create(want_namespaces: bool) -> anyhow::Result<Network> {
        if want_namespaces {
            match Network::namespaces().await {
                Ok(network) => return Ok(network),
                Err(err) => bail!(
                    "network namespaces are needed for partitions and could not be made here ({err:#}); \
                     run as root with iproute2, or leave `partition` out of --faults"
                ),
            }
        }
        // Held together until all are known, so that they are distinct.
        let held = (0..3 * NODES)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0"))
            .collect::<Result<Vec<_>, _>>()?;
        let numbers = held
            .iter()
            .map(|listener| listener.local_addr().map(|address| address.port()))
            .collect::<Result<Vec<_>, _>>()?;
        let ports = numbers
            .chunks(3)
            .map(|chunk| (chunk[0], chunk[1], chunk[2]))
            .collect();
        Ok(Network::Loopback { ports })
    }

    async fn namespaces() -> anyhow::Result<Network> {
        let pid = std::process::id();
        let run = format!("rbc{:04x}", pid & 0xffff);
        let base = 200 + u8::try_from(pid % 50).unwrap_or(0);
        let network = Network::Namespaces { run, base };
        // A namespace left by an earlier campaign of the same short id (killed with SIGKILL)
        // is removed first.
        network.remove().await;
        if let Err(err) = network.build().await {
            network.remove().await;
            return Err(err);
        }
        Ok(network)
    }

    async fn build(&self) -> anyhow::Result<()> {
        let Network::Namespaces { run, base } = self else {
            return Ok(());
        };
        for i in 1..=NODES {
            let ns = self.namespace(i).unwrap_or_default();
            ip(&["netns", "add", &ns]).await?;
            ip(&["-n", &ns, "link", "set", "lo", "up"]).await?;
            let host = format!("{run}c{i}");
            ip(&[
                "link", "add", &host, "type", "veth", "peer", "name", "c0", "netns", &ns,
            ])
            .await?;
            ip(&["addr", "add", &format!("10.{base}.{i}.1/30"), "dev", &host]).await?;
            ip(&["link", "set", &host, "up"]).await?;
            ip(&[
                "-n",
                &ns,
                "addr",
                "add",
                &format!("10.{base}.{i}.2/30"),
                "dev",
                "c0",
            ])
            .await?;
            ip(&["-n", &ns, "link", "set", "c0", "up"]).await?;
        }
        for (a, b) in pairs() {
            let (ns_a, ns_b) = (
                self.namespace(a).unwrap_or_default(),
                self.namespace(b).unwrap_or_default(),
            );
            let (end_a, end_b) = (format!("p{a}{b}"), format!("p{b}{a}"));
            ip(&[
                "-n", &ns_a, "link", "add", &end_a, "type", "veth", "peer", "name", &end_b,
                "netns", &ns_b,
            ])
            .await?;
            ip(&[
                "-n",
                &ns_a,
                "addr",
                "add",
                &format!("10.{base}.{a}{b}.{a}/24"),
                "dev",
                &end_a,
            ])
            .await?;
            ip(&[
                "-n",
                &ns_b,
                "addr",
                "add",
                &format!("10.{base}.{a}{b}.{b}/24"),
                "dev",
                &end_b,
            ])
            .await?;
            ip(&["-n", &ns_a, "link", "set", &end_a, "up"]).await?;
            ip(&["-n", &ns_b, "link", "set", &end_b, "up"]).await?;
        }
        Ok(())
    }

    /// Removes the namespaces (and with them every veth made). Idempotent.
    pub async fn remove(&self) {
        for i in 1..=NODES {
            if let Some(ns) = self.namespace(i) {
                let _ = ip(&["netns", "delete", &ns]).await;
            }
        }
    }

    /// Whether partitions can be injected.
    pub fn can_partition(&self) -> bool {
        matches!(self, Network::Namespaces { .. })
    }

    pub fn describe(&self) -> String {
        match self {
            Network::Namespaces { run, base } => format!(
                "network namespaces {run}n1..{run}n{NODES}, node addresses 10.{base}.<i>.2, \
                 a veth pair between every two nodes"
            ),
            Network::Loopback { .. } => {
                "127.0.0.1, one port set per node (no partitions)".to_owned()
            }
        }
    }

    /// Node `i`'s namespace (1-based), if nodes have one.
    pub fn namespace(&self, i: usize) -> Option<String> {
        match self {
            Network::Namespaces { run, .. } => Some(format!("{run}n{i}")),
            Network::Loopback { .. } => None,
        }
    }

    fn host(&self, i: usize) -> String {
        match self {
            Network::Namespaces { base, .. } => format!("10.{base}.{i}.2"),
            Network::Loopback { .. } => "127.0.0.1".to_owned(),
        }
    }

    fn ports(&self, i: usize) -> (u16, u16, u16) {
        match self {
            Network::Namespaces { .. } => (CLIENT_PORT, CLUSTER_PORT, MONITOR_PORT),
            Network::Loopback { ports } => ports[i - 1],
        }
    }

    /// Node `i`'s client URL.
    pub fn client_url(&self, i: usize) -> String {
        format!("nats://{}:{}", self.host(i), self.ports(i).0)
    }

    /// Every node's client URL, comma-separated (`--nats`).
    pub fn client_urls(&self) -> String {
        (1..=NODES)
            .map(|i| self.client_url(i))
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Node `i`'s monitoring address (host:port).
    pub fn monitor(&self, i: usize) -> String {
        format!("{}:{}", self.host(i), self.ports(i).2)
    }

    /// Node `i`'s configuration: listen addresses and routes to the others.
    pub fn node_config(&self, i: usize, store: &std::path::Path) -> String {
        let (client, cluster, monitor) = self.ports(i);
        let (listen_host, routes) = match self {
            Network::Namespaces { base, .. } => (
                "0.0.0.0",
                (1..=NODES)
                    .filter(|&j| j != i)
                    .map(|j| {
                        let (a, b) = (i.min(j), i.max(j));
                        format!("\"nats-route://10.{base}.{a}{b}.{j}:{CLUSTER_PORT}\"")
                    })
                    .collect::<Vec<_>>(),
            ),
            Network::Loopback { ports } => (
                "127.0.0.1",
                (1..=NODES)
                    .filter(|&j| j != i)
                    .map(|j| format!("\"nats-route://127.0.0.1:{}\"", ports[j - 1].1))
                    .collect(),
            ),
        };
        format!(
            "# Written by `refbus chaos`: node n{i} of a 3-node JetStream cluster.\n\
             server_name: \"n{i}\"\n\
             listen: \"{listen_host}:{client}\"\n\
             http: \"{listen_host}:{monitor}\"\n\
             jetstream {{\n  store_dir: \"{}\"\n  sync_interval: always\n}}\n\
             cluster {{\n  name: \"refbus-chaos\"\n  listen: \"{listen_host}:{cluster}\"\n  routes: [{}]\n}}\n",
            store.display(),
            routes.join(", ")
        )
    }

    /// The program and arguments that run `program args` as node `i` (inside its namespace).
    pub fn wrap(
        &self,
        i: usize,
        program: &std::path::Path,
        args: &[String],
    ) -> (std::path::PathBuf, Vec<String>) {
        match self.namespace(i) {
            Some(ns) => {
                let mut all = vec![
                    "netns".to_owned(),
                    "exec".to_owned(),
                    ns,
                    program.display().to_string(),
                ];
                all.extend(args.iter().cloned());
                (ip_binary(), all)
            }
            None => (program.to_path_buf(), args.to_vec()),
        }
    }

    /// Cuts (or, `up`, heals) the link between nodes `a` and `b`.
    pub async fn set_link(&self, a: usize, b: usize, up: bool) -> anyhow::Result<()> {
        let (a, b) = (a.min(b), a.max(b));
        let state = if up { "up" } else { "down" };
        let (Some(ns_a), Some(ns_b)) = (self.namespace(a), self.namespace(b)) else {
            bail!("partitions need network namespaces");
        };
        ip(&["-n", &ns_a, "link", "set", &format!("p{a}{b}"), state]).await?;
        ip(&["-n", &ns_b, "link", "set", &format!("p{b}{a}"), state]).await
    }
}

/// Every pair of nodes, (1,2), (1,3), (2,3).
pub fn pairs() -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    for a in 1..=NODES {
        for b in a + 1..=NODES {
            pairs.push((a, b));
        }
    }
    pairs
}

fn ip_binary() -> std::path::PathBuf {
    ["/usr/sbin/ip", "/sbin/ip", "/usr/bin/ip", "/bin/ip"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|path| path.is_file())
        .unwrap_or_else(|| "ip".into())
}

async fn ip(args: &[&str]) -> anyhow::Result<()> {
    let output = tokio::process::Command::new(ip_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .context("running ip (iproute2)")?;
    if !output.status.success() {
        bail!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        );
    }
    Ok(())
}
