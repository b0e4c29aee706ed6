//! refbus-operators: who the dashboard's operator is and what she may see and do.
//!
//! Operators log in with a username and password from an accounts file (argon2id hashes, the
//! file readable by its owner only), or, behind single sign-on, are named by a header a trusted
//! reverse proxy sets. Every request to the dashboard then carries an [`Operator`] (username,
//! agency, role); every state-changing request must carry the session's CSRF token.
//!
//! A handler reads `Extension<Operator>`, `Extension<CsrfToken>` (for its forms) and, for a
//! response that outlives the request such as a live feed, `Extension<SessionEnd>` (end the
//! stream when `ended()` completes: logout, account removed, session lifetime).
//!
//! Wiring, in the dashboard:
//!
//! ```no_run
//! # async fn wire(config: refbus_operators::OperatorsConfig, app: axum::Router) {
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await.unwrap();
//! let operators =
//!     refbus_operators::Operators::new(config, None, listener.local_addr().unwrap()).unwrap();
//! let app = app.merge(operators.routes()).layer(operators.layer());
//! // The peer address is what the proxy check and the login throttle look at.
//! axum::serve(listener, app.into_make_service_with_connect_info::<std::net::SocketAddr>())
//!     .await
//!     .unwrap();
//! # }
//! ```
//!
//! # Layout
//!
//! - [`accounts`]: the accounts file, roles, usernames; [`password`]: argon2id hashes.
//! - [`access`]: the pure decisions: may this operator see this referral, may she act.
//! - `session`, `throttle`, `proxy`, `csrf`: the pieces of a request's identity.
//! - `web`: the layer every dashboard request passes; `login`: the login and logout routes and
//!   the login page (Bahasa Indonesia, English with `?lang=en`).

pub mod access;
pub mod accounts;
mod clock;
mod csrf;
mod login;
pub mod password;
mod proxy;
mod session;
mod throttle;
mod web;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use refbus_core::Registry;
use serde::Deserialize;

pub use access::{Operator, Parties, Refusal};
pub use accounts::{Account, Accounts, AccountsError, Role, Username};
pub use clock::{Clock, ManualClock};
pub use csrf::{CSRF_FIELD, CSRF_HEADER, CsrfChecked, CsrfToken};
pub use login::{LOGIN_PATH, LOGOUT_PATH};
pub use proxy::Network;
pub use session::SessionEnd;
pub use web::{OperatorsLayer, OperatorsService};

/// The operators' part of the dashboard's configuration (a `[operators]` table).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OperatorsConfig {
    /// The accounts file (`refbus dashboard user add`). Re-read when it changes.
    pub accounts: PathBuf,
    /// Session cookies without `Secure`, for a dashboard served over plain HTTP on a loopback
    /// address only (`refbus up`); refused on any other address.
    #[serde(default)]
    pub insecure_plaintext_cookies: bool,
    /// A session ends this long after login however busy (default 12 hours: a working day).
    #[serde(default = "default_session_hours")]
    pub session_hours: u64,
    /// A session ends after this long without a request (default 30 minutes). An open board's
    /// live feed is one long request: reconnecting it counts as activity.
    #[serde(default = "default_idle_minutes")]
    pub idle_minutes: u64,
    /// How long every failed login waits before it answers (default 1000 ms).
    #[serde(default = "default_failed_login_delay_ms")]
    pub failed_login_delay_ms: u64,
    /// Failed logins per username (existing or not) in 15 minutes before logins for it are
    /// refused (default 5).
    #[serde(default = "default_failures_per_username")]
    pub failures_per_username: usize,
    /// Failed logins from one address in 15 minutes before logins from it are refused
    /// (default 20).
    #[serde(default = "default_failures_per_address")]
    pub failures_per_address: usize,
    /// Path prefixes served without login (static assets); the login page always is.
    #[serde(default = "default_public_prefixes")]
    pub public_prefixes: Vec<String>,
    /// Identity from a trusted reverse proxy; absent (the default): never.
    #[serde(default)]
    pub proxy: Option<ProxyConfig>,
}

/// Identity from a reverse proxy that authenticates operators (single sign-on).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProxyConfig {
    /// The header naming the operator's username (e.g. `X-Remote-User`). The proxy must
    /// remove it from what clients send.
    pub header: String,
    /// Addresses or networks of the proxies believed (e.g. `["10.0.0.5", "fd00::/8"]`); the
    /// header on a connection from anywhere else is ignored.
    pub trusted_proxies: Vec<String>,
}

fn default_session_hours() -> u64 {
    12
}
fn default_idle_minutes() -> u64 {
    30
}
fn default_failed_login_delay_ms() -> u64 {
    1000
}
fn default_failures_per_username() -> usize {
    5
}
fn default_failures_per_address() -> usize {
    20
}
fn default_public_prefixes() -> Vec<String> {
    vec!["/static/".to_owned()]
}

impl OperatorsConfig {
    /// The defaults, with `accounts` as the accounts file.
    pub fn new(accounts: impl Into<PathBuf>) -> OperatorsConfig {
        OperatorsConfig {
            accounts: accounts.into(),
            insecure_plaintext_cookies: false,
            session_hours: default_session_hours(),
            idle_minutes: default_idle_minutes(),
            failed_login_delay_ms: default_failed_login_delay_ms(),
            failures_per_username: default_failures_per_username(),
            failures_per_address: default_failures_per_address(),
            public_prefixes: default_public_prefixes(),
            proxy: None,
        }
    }
}

/// Why the operators' side of the dashboard cannot start.
#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error(transparent)]
    Accounts(#[from] AccountsError),
    #[error("the operators' accounts do not match the registry:\n{}", .0.join("\n"))]
    Registry(Vec<String>),
    #[error(
        "insecure_plaintext_cookies is allowed only on a loopback address, and the dashboard \
         listens on {0}: serve it over HTTPS (or behind a TLS proxy) and drop the setting"
    )]
    PlaintextOffLoopback(SocketAddr),
    #[error("[operators.proxy]: {0}")]
    Proxy(String),
}

/// The operators' side of the dashboard: accounts, sessions, throttle, CSRF key. Cheap to
/// clone (one `Arc`).
#[derive(Clone)]
pub struct Operators {
    inner: Arc<Inner>,
}

struct Inner {
    config: OperatorsConfig,
    registry: Option<Registry>,
    accounts: RwLock<Loaded>,
    sessions: session::Sessions,
    throttle: throttle::Throttle,
    csrf: csrf::CsrfKey,
    proxy: Option<proxy::TrustedProxy>,
    clock: Clock,
}

/// The accounts in use and the file's metadata when they were read.
struct Loaded {
    accounts: Arc<Accounts>,
    stamp: Option<(SystemTime, u64)>,
}

impl std::fmt::Debug for Operators {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Operators")
            .field("accounts", &self.inner.config.accounts)
            .finish_non_exhaustive()
    }
}

impl Operators {
    /// Loads the accounts (checked against `registry` when given: unknown agencies, coordinator
    /// accounts at another agency) for a dashboard listening on `listen`.
    pub fn new(
        config: OperatorsConfig,
        registry: Option<&Registry>,
        listen: SocketAddr,
    ) -> Result<Operators, SetupError> {
        if config.insecure_plaintext_cookies && !listen.ip().is_loopback() {
            return Err(SetupError::PlaintextOffLoopback(listen));
        }
        let proxy = match &config.proxy {
            None => None,
            Some(proxy) => {
                let header = http::HeaderName::try_from(proxy.header.as_str()).map_err(|_| {
                    SetupError::Proxy(format!("`{}` is not a header name", proxy.header))
                })?;
                if proxy.trusted_proxies.is_empty() {
                    return Err(SetupError::Proxy(
                        "trusted_proxies is empty: name the proxies' addresses".to_owned(),
                    ));
                }
                let from = proxy
                    .trusted_proxies
                    .iter()
                    .map(|text| text.parse())
                    .collect::<Result<_, _>>()
                    .map_err(SetupError::Proxy)?;
                Some(proxy::TrustedProxy { header, from })
            }
        };
        let (accounts, stamp) = load_checked(&config.accounts, registry)?;
        // The first unknown username would otherwise pay for hashing the decoy password.
        password::warm_up();
        Ok(Operators {
            inner: Arc::new(Inner {
                sessions: session::Sessions::new(
                    Duration::from_secs(config.session_hours * 3600),
                    Duration::from_secs(config.idle_minutes * 60),
                    true,
                ),
                throttle: throttle::Throttle::new(Duration::from_secs(15 * 60)),
                csrf: csrf::CsrfKey::random(),
                registry: registry.cloned(),
                accounts: RwLock::new(Loaded {
                    accounts: Arc::new(accounts),
                    stamp,
                }),
                proxy,
                clock: Clock::System,
                config,
            }),
        })
    }

    /// The same, on another clock (tests move a [`ManualClock`] to expire sessions).
    pub fn with_clock(self, clock: Clock) -> Operators {
        let mut inner = Arc::try_unwrap(self.inner)
            .unwrap_or_else(|_| panic!("with_clock is called before the Operators is shared"));
        inner.sessions = session::Sessions::new(
            Duration::from_secs(inner.config.session_hours * 3600),
            Duration::from_secs(inner.config.idle_minutes * 60),
            matches!(clock, Clock::System),
        );
        inner.clock = clock;
        Operators {
            inner: Arc::new(inner),
        }
    }

    /// The accounts in use, re-read first if the file changed since. A file that became
    /// unusable (invalid, readable by others) is reported at ERROR and the last good accounts
    /// stay in use until it is fixed; a removed file leaves no accounts.
    pub fn accounts(&self) -> Arc<Accounts> {
        let path = &self.inner.config.accounts;
        let stamp = stamp_of(path);
        {
            let loaded = self
                .inner
                .accounts
                .read()
                .unwrap_or_else(|e| e.into_inner());
            if loaded.stamp == stamp {
                return loaded.accounts.clone();
            }
        }
        let mut loaded = self
            .inner
            .accounts
            .write()
            .unwrap_or_else(|e| e.into_inner());
        if loaded.stamp != stamp {
            match load_checked(path, self.inner.registry.as_ref()) {
                Ok((accounts, stamp)) => {
                    tracing::info!(accounts = accounts.len(), file = %path.display(), "operators' accounts re-read");
                    // Open live feeds of removed or changed accounts end now, not at their
                    // next request.
                    self.inner.sessions.keep_accounts(&accounts);
                    loaded.accounts = Arc::new(accounts);
                    loaded.stamp = stamp;
                }
                Err(SetupError::Accounts(AccountsError::Read { source, .. }))
                    if source.kind() == std::io::ErrorKind::NotFound =>
                {
                    // Deleting the file is a decision: nobody may log in any more.
                    tracing::error!(file = %path.display(), "the operators' accounts file was removed: every operator is logged out and nobody can log in");
                    loaded.accounts = Arc::new(Accounts::new());
                    loaded.stamp = stamp;
                    self.inner.sessions.keep_accounts(&loaded.accounts);
                }
                Err(error) => {
                    // A mistake in an edit: everyone locked out would be worse than the
                    // accounts as they were.
                    tracing::error!(%error, "the operators' accounts file changed and cannot be used; the accounts read before stay in use");
                    // Reported once per change of the file, not on every request.
                    loaded.stamp = stamp;
                }
            }
        }
        loaded.accounts.clone()
    }

    /// The layer every dashboard request passes through (see [`OperatorsLayer`]).
    pub fn layer(&self) -> OperatorsLayer {
        OperatorsLayer::new(self.clone())
    }

    /// `GET`/`POST` [`LOGIN_PATH`] and `POST` [`LOGOUT_PATH`], to merge into the dashboard's
    /// router (under the layer: logout needs the session and its CSRF token).
    pub fn routes<S: Clone + Send + Sync + 'static>(&self) -> axum::Router<S> {
        login::routes(self.clone())
    }

    fn now(&self) -> std::time::Instant {
        self.inner.clock.now()
    }
}

fn stamp_of(path: &std::path::Path) -> Option<(SystemTime, u64)> {
    let metadata = std::fs::metadata(path).ok()?;
    Some((metadata.modified().ok()?, metadata.len()))
}

fn load_checked(
    path: &std::path::Path,
    registry: Option<&Registry>,
) -> Result<(Accounts, Option<(SystemTime, u64)>), SetupError> {
    let stamp = stamp_of(path);
    let accounts = Accounts::load(path)?;
    if let Some(registry) = registry {
        let problems = accounts.check_against(registry);
        if !problems.is_empty() {
            return Err(SetupError::Registry(problems));
        }
    }
    Ok((accounts, stamp))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_settings_docs_operations_lists_parse_with_their_defaults() {
        let config: OperatorsConfig = toml::from_str(
            "accounts = \"/etc/refbus/operators.toml\"\n\
             [proxy]\nheader = \"X-Remote-User\"\ntrusted_proxies = [\"10.0.0.5\", \"fd00::/8\"]\n",
        )
        .unwrap();
        assert_eq!(config.accounts, PathBuf::from("/etc/refbus/operators.toml"));
        assert_eq!(
            (
                config.session_hours,
                config.idle_minutes,
                config.failed_login_delay_ms
            ),
            (12, 30, 1000)
        );
        assert_eq!(
            (config.failures_per_username, config.failures_per_address),
            (5, 20)
        );
        assert!(!config.insecure_plaintext_cookies);
        assert_eq!(config.public_prefixes, ["/static/"]);
        assert_eq!(config.proxy.unwrap().trusted_proxies.len(), 2);
        let misspelt = toml::from_str::<OperatorsConfig>("accounts = \"a\"\nidle_minute = 5\n");
        assert!(misspelt.unwrap_err().to_string().contains("idle_minute"));
    }
}
