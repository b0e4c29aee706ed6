//! The nats-server configuration file the harness writes before every start.

use std::fmt::Write as _;
use std::path::Path;

use crate::Error;

/// The loopback address every test server listens on.
pub(crate) const HOST: &str = "127.0.0.1";

/// Everything that varies between the servers the harness starts.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerConfig<'a> {
    pub(crate) server_name: Option<&'a str>,
    /// `None` lets the server pick a free port (`-1`); the harness reads it from the log.
    pub(crate) client_port: Option<u16>,
    pub(crate) monitor_port: Option<u16>,
    pub(crate) store_dir: &'a Path,
    pub(crate) sync_always: bool,
    pub(crate) cluster: Option<ClusterConfig<'a>>,
    /// Appended verbatim, for tests that need accounts, permissions or limits.
    pub(crate) extra: &'a str,
}

#[derive(Debug, Clone, Copy)]
pub(crate) struct ClusterConfig<'a> {
    pub(crate) name: &'a str,
    pub(crate) port: u16,
    pub(crate) route_ports: &'a [u16],
}

impl ServerConfig<'_> {
    pub(crate) fn render(&self) -> Result<String, Error> {
        let store_dir = self
            .store_dir
            .to_str()
            .ok_or_else(|| Error::NonUtf8Path(self.store_dir.to_path_buf()))?;
        let mut text = String::new();
        // Writing into a String cannot fail; the results are ignored for that reason.
        if let Some(name) = self.server_name {
            let _ = writeln!(text, "server_name: {}", quote(name));
        }
        let _ = writeln!(text, "listen: \"{HOST}:{}\"", port_or_any(self.client_port));
        let _ = writeln!(text, "http: \"{HOST}:{}\"", port_or_any(self.monitor_port));
        let _ = writeln!(text, "jetstream {{");
        let _ = writeln!(text, "  store_dir: {}", quote(store_dir));
        if self.sync_always {
            let _ = writeln!(text, "  sync_interval: always");
        }
        let _ = writeln!(text, "}}");
        if let Some(cluster) = self.cluster {
            let _ = writeln!(text, "cluster {{");
            let _ = writeln!(text, "  name: {}", quote(cluster.name));
            let _ = writeln!(text, "  listen: \"{HOST}:{}\"", cluster.port);
            let routes: Vec<String> = cluster
                .route_ports
                .iter()
                .map(|port| format!("\"nats-route://{HOST}:{port}\""))
                .collect();
            let _ = writeln!(text, "  routes: [{}]", routes.join(", "));
            let _ = writeln!(text, "}}");
        }
        if !self.extra.is_empty() {
            let _ = writeln!(text, "{}", self.extra);
        }
        Ok(text)
    }
}

fn port_or_any(port: Option<u16>) -> String {
    port.map_or_else(|| "-1".to_owned(), |port| port.to_string())
}

fn quote(value: &str) -> String {
    format!("\"{}\"", value.replace('\\', "\\\\").replace('"', "\\\""))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn standalone_lets_the_server_pick_ports() {
        let text = ServerConfig {
            server_name: None,
            client_port: None,
            monitor_port: None,
            store_dir: Path::new("/tmp/store \"x\""),
            sync_always: false,
            cluster: None,
            extra: "",
        }
        .render()
        .expect("render");
        assert_eq!(
            text,
            "listen: \"127.0.0.1:-1\"\nhttp: \"127.0.0.1:-1\"\n\
             jetstream {\n  store_dir: \"/tmp/store \\\"x\\\"\"\n}\n"
        );
    }

    #[test]
    fn cluster_node_with_sync_always() {
        let text = ServerConfig {
            server_name: Some("n1"),
            client_port: Some(4222),
            monitor_port: Some(8222),
            store_dir: Path::new("/s"),
            sync_always: true,
            cluster: Some(ClusterConfig {
                name: "c",
                port: 6222,
                route_ports: &[6223, 6224],
            }),
            extra: "max_payload: 1024",
        }
        .render()
        .expect("render");
        assert_eq!(
            text,
            "server_name: \"n1\"\nlisten: \"127.0.0.1:4222\"\nhttp: \"127.0.0.1:8222\"\n\
             jetstream {\n  store_dir: \"/s\"\n  sync_interval: always\n}\n\
             cluster {\n  name: \"c\"\n  listen: \"127.0.0.1:6222\"\n  \
             routes: [\"nats-route://127.0.0.1:6223\", \"nats-route://127.0.0.1:6224\"]\n}\n\
             max_payload: 1024\n"
        );
    }
}
