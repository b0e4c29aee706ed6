//! How a component reaches NATS, in refbus's own terms: callers never see async-nats types, so
//! this crate stays the only one that depends on it.

use std::fmt;
use std::path::PathBuf;

use crate::error::{ConnectError, ConnectErrorKind};

/// Where NATS is and who connects.
#[derive(Clone, PartialEq, Eq)]
pub struct ConnectOptions {
    /// Server URLs (`nats://host:4222`); several for a cluster, tried in turn.
    pub servers: Vec<String>,
    pub credentials: Credentials,
    /// The connection's name, shown in the server's monitoring (`connz`).
    pub name: String,
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
}

impl ConnectOptions {
    /// No credentials, to `servers`.
    pub fn new(servers: impl IntoIterator<Item = impl Into<String>>) -> ConnectOptions {
        ConnectOptions {
            servers: servers.into_iter().map(Into::into).collect(),
            credentials: Credentials::None,
            name: "refbus".to_owned(),
        }
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
        Ok((options.name(&self.name), servers))
    }
}

// By hand, so that a password never reaches a log.
impl fmt::Debug for ConnectOptions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConnectOptions")
            .field("servers", &self.servers)
            .field("credentials", &self.credentials)
            .field("name", &self.name)
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
