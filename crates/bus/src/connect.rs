//! How a component reaches NATS, in refbus's own terms: callers never see async-nats types, so
//! this crate stays the only one that depends on it.

use std::fmt;
use std::path::PathBuf;

use refbus_core::AgencyId;

use crate::error::{ConnectError, ConnectErrorKind};

/// Where NATS is and who connects.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Server URLs (`nats://host:4222`); several for a cluster, tried in turn.
    pub servers: Vec<String>,
    pub credentials: Credentials,
    /// The connection's name, shown in the server's monitoring (`connz`).
    pub name: String,
    /// TLS to the server: the CA that signed its certificate, a client certificate.
    pub tls: Tls,
    /// Allow a plain-text connection (`nats://` without TLS) to a host other than this
    /// machine: passwords and events would cross the network in clear. Off unless asked for.
    pub insecure_plaintext: bool,
    /// The agency whose user this is, when that user may read only the agency's own subjects
    /// (an adapter on the shipped permissions, deploy/nats/README.md): the bus then never asks
    /// for the stream's information (it can list every subject), checks only that the stream
    /// answers the agency's reads, and learns the stream's end through the agency's subjects.
    pub confined_to: Option<AgencyId>,
}

/// TLS to NATS. A `tls://` URL, a CA or a client certificate each make TLS required: the
/// connection fails rather than fall back to plain text.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tls {
    /// PEM file of the CA the server's certificate must chain to; without it, the operating
    /// system's store.
    pub ca_file: Option<PathBuf>,
    /// PEM files of the certificate (chain) and private key this component presents.
    pub client_cert: Option<ClientCert>,
    /// TLS even for `nats://` URLs.
    pub required: bool,
}

/// A client certificate and its key, both PEM files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientCert {
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl Tls {
    /// Whether these settings make the client insist on TLS.
    pub fn is_required(&self) -> bool {
        self.required || self.ca_file.is_some() || self.client_cert.is_some()
    }
}

/// Whether `host` is this machine: the only place a plain-text connection stays.
fn is_loopback(host: &str) -> bool {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    host.eq_ignore_ascii_case("localhost")
        || host
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// How a component proves who it is to NATS.
#[derive(Clone, PartialEq, Eq)]
pub enum Credentials {
    /// No authentication (a local server).
    None,
    /// A credentials (JWT and NKey seed) file, read when connecting.
    File(PathBuf),
    /// A user and password (deploy/nats/permissions.conf has one user per component).
    UserPassword { user: String, password: String },
    /// An NKey seed (`refbus up` makes one per component): the server knows only its public
    /// key, and the seed signs the server's challenge.
    Nkey(String),
}

impl ConnectOptions {
    /// No credentials, to `servers`.
    pub fn new(servers: impl IntoIterator<Item = impl Into<String>>) -> ConnectOptions {
        ConnectOptions {
            servers: servers.into_iter().map(Into::into).collect(),
            credentials: Credentials::None,
            name: "refbus".to_owned(),
            tls: Tls::default(),
            insecure_plaintext: false,
            confined_to: None,
        }
    }

    pub fn with_tls(mut self, tls: Tls) -> ConnectOptions {
        self.tls = tls;
        self
    }

    /// See [`ConnectOptions::confined_to`].
    pub fn confined_to(mut self, agency: AgencyId) -> ConnectOptions {
        self.confined_to = Some(agency);
        self
    }

    /// See [`ConnectOptions::insecure_plaintext`].
    pub fn with_insecure_plaintext(mut self, allowed: bool) -> ConnectOptions {
        self.insecure_plaintext = allowed;
        self
    }

    pub fn with_credentials(mut self, credentials: Credentials) -> ConnectOptions {
        self.credentials = credentials;
        self
    }

    pub fn with_name(mut self, name: impl Into<String>) -> ConnectOptions {
        self.name = name.into();
        self
    }

    /// The async-nats options and server addresses these options stand for.
    pub(crate) async fn to_async_nats(
        &self,
    ) -> Result<(async_nats::ConnectOptions, Vec<async_nats::ServerAddr>), ConnectError> {
        let options = match &self.credentials {
            Credentials::None => async_nats::ConnectOptions::new(),
            Credentials::File(path) => async_nats::ConnectOptions::with_credentials_file(path)
                .await
                .map_err(|err| {
                    ConnectError::with_source(
                        ConnectErrorKind::Options,
                        format!("reading the credentials file {}: {err}", path.display()),
                    )
                })?,
            Credentials::UserPassword { user, password } => {
                async_nats::ConnectOptions::with_user_and_password(user.clone(), password.clone())
            }
            Credentials::Nkey(seed) => async_nats::ConnectOptions::with_nkey(seed.clone()),
        };
        if self.servers.is_empty() {
            return Err(ConnectError::with_source(
                ConnectErrorKind::Options,
                "no NATS server given",
            ));
        }
        let servers = self
            .servers
            .iter()
            .map(|server| {
                server.trim().parse().map_err(|err| {
                    ConnectError::with_source(
                        ConnectErrorKind::Options,
                        format!("the NATS server address {server:?}: {err}"),
                    )
                })
            })
            .collect::<Result<Vec<async_nats::ServerAddr>, _>>()?;
        let tls_required = self.tls.is_required();
        if !self.insecure_plaintext
            && let Some(remote) = servers.iter().find(|server| {
                !tls_required && !server.tls_required() && !is_loopback(server.host())
            })
        {
            return Err(ConnectError::with_source(
                ConnectErrorKind::Options,
                format!(
                    "{} is another machine and the connection would not be encrypted: use a \
                     tls:// URL (with --nats-ca), or allow plain text explicitly with \
                     --insecure-nats-plaintext",
                    remote.as_url_str()
                ),
            ));
        }
        let mut options = options.name(&self.name);
        if let Some(agency) = &self.confined_to {
            // Replies to this agency's requests (its reads) arrive under its own prefix, the
            // only inbox its user may subscribe to: no other user sees them.
            options = options.custom_inbox_prefix(format!("_INBOX.{agency}"));
        }
        if tls_required {
            options = options.require_tls(true);
        }
        if let Some(ca) = &self.tls.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some(cert) = &self.tls.client_cert {
            options = options.add_client_certificate(cert.cert_file.clone(), cert.key_file.clone());
        }
        Ok((options, servers))
    }
}

// By hand, so that a password never reaches a log.
impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("servers", &self.servers)
            .field("credentials", &self.credentials)
            .field("name", &self.name)
            .field("tls", &self.tls)
            .field("insecure_plaintext", &self.insecure_plaintext)
            .field("confined_to", &self.confined_to)
            .finish()
    }
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credentials::None => f.write_str("None"),
            Credentials::File(path) => f.debug_tuple("File").field(path).finish(),
            Credentials::UserPassword { user, .. } => f
                .debug_struct("UserPassword")
                .field("user", user)
                .field("password", &"<hidden>")
                .finish(),
            Credentials::Nkey(_) => f.write_str("Nkey(<hidden>)"),
        }
    }
}

/// One server, no credentials: `Bus::connect(&server.url(), ...)` in tests and local runs.
impl From<&str> for ConnectOptions {
    fn from(url: &str) -> ConnectOptions {
        ConnectOptions::new([url])
    }
}

impl From<&String> for ConnectOptions {
    fn from(url: &String) -> ConnectOptions {
        ConnectOptions::new([url.as_str()])
    }
}

impl From<String> for ConnectOptions {
    fn from(url: String) -> ConnectOptions {
        ConnectOptions::new([url])
    }
}

impl From<&ConnectOptions> for ConnectOptions {
    fn from(options: &ConnectOptions) -> ConnectOptions {
        options.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_password_never_shows_in_debug_output() {
        let options = ConnectOptions::from("nats://127.0.0.1:4222").with_credentials(
            Credentials::UserPassword {
                user: "router".to_owned(),
                password: "s3cret".to_owned(),
            },
        );
        let shown = format!("{options:?}");
        assert!(
            shown.contains("router") && !shown.contains("s3cret"),
            "{shown}"
        );
        let nkey = format!("{:?}", Credentials::Nkey("SUAFAKESEED".to_owned()));
        assert!(!nkey.contains("SUAFAKESEED"), "{nkey}");
    }

    #[tokio::test]
    async fn a_bad_server_address_is_an_options_error() {
        let err = ConnectOptions::new(["nats://127.0.0.1:4222", "nats://:bad:port"])
            .to_async_nats()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ConnectErrorKind::Options);
        assert!(err.to_string().contains(":bad:port"), "{err}");
        let none = ConnectOptions::new(Vec::<String>::new())
            .to_async_nats()
            .await
            .unwrap_err();
        assert_eq!(none.kind(), ConnectErrorKind::Options);
    }

    #[tokio::test]
    async fn plain_text_to_another_machine_is_refused_unless_asked_for() {
        let remote = ConnectOptions::from("nats://refbus-1.maros.lan:4222");
        let err = remote.to_async_nats().await.unwrap_err();
        assert_eq!(err.kind(), ConnectErrorKind::Options);
        assert!(
            err.to_string().contains("--insecure-nats-plaintext"),
            "{err}"
        );
        // A host name without a scheme is nats:// too.
        assert!(
            ConnectOptions::from("10.0.0.5:4222")
                .to_async_nats()
                .await
                .is_err()
        );
        // Asked for, or encrypted, or on this machine: accepted.
        for accepted in [
            remote.clone().with_insecure_plaintext(true),
            ConnectOptions::from("tls://refbus-1.maros.lan:4222"),
            remote.clone().with_tls(Tls {
                ca_file: Some("/etc/refbus/nats-ca.pem".into()),
                ..Tls::default()
            }),
            remote.clone().with_tls(Tls {
                required: true,
                ..Tls::default()
            }),
            ConnectOptions::from("nats://127.0.0.1:4222"),
            ConnectOptions::from("nats://localhost:4222"),
            ConnectOptions::from("nats://[::1]:4222"),
        ] {
            assert!(accepted.to_async_nats().await.is_ok(), "{accepted:?}");
        }
        // One remote plain-text server among several is enough to refuse.
        assert!(
            ConnectOptions::new(["tls://a.lan:4222", "nats://b.lan:4222"])
                .to_async_nats()
                .await
                .is_err()
        );
    }

    #[tokio::test]
    async fn a_missing_credentials_file_is_an_options_error_naming_it() {
        let err = ConnectOptions::from("nats://127.0.0.1:4222")
            .with_credentials(Credentials::File("/nonexistent/router.creds".into()))
            .to_async_nats()
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ConnectErrorKind::Options);
        assert!(
            err.to_string().contains("/nonexistent/router.creds"),
            "{err}"
        );
    }
}
