//! Server-side sessions: the cookie holds 256 random bits; the server keeps, under the SHA-256
//! of that value, who logged in and when, and forgets a session at its absolute expiry, after
//! its idle timeout, at logout, or when the operator's account changes.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use sha2::{Digest, Sha256};
use tokio::sync::watch;

use crate::accounts::{Accounts, Username};

/// The key a session is kept under: the SHA-256 of its cookie value. Looking a session up by
/// the hash of what the browser sent means no comparison ever runs on the secret itself.
pub(crate) type SessionKey = [u8; 32];

struct Session {
    username: Username,
    /// The account's password hash fingerprint at login: a new password ends the session.
    fingerprint: [u8; 16],
    created: Instant,
    last_seen: Instant,
    /// Dropped with the session: every [`SessionEnd`] of it then completes.
    alive: watch::Sender<()>,
}

/// A live session, as a request resolves it.
pub(crate) struct Resolved {
    pub(crate) key: SessionKey,
    pub(crate) username: Username,
    pub(crate) fingerprint: [u8; 16],
    pub(crate) end: SessionEnd,
}

/// The end of the session a request was made in, for responses that outlive the request (the
/// board's live feed): [`SessionEnd::ended`] completes at logout, when the operator's account
/// is removed or changed (noticed at the dashboard's next request), and at the session's
/// lifetime. The idle timeout does not end an open feed: a board on a wall is being watched.
/// The layer puts it in each request's extensions; a request by a proxy-named operator has no
/// session, and its `ended` never completes.
#[derive(Debug, Clone)]
pub struct SessionEnd {
    alive: Option<watch::Receiver<()>>,
    /// On the system clock only: a manual clock's time is not tokio's.
    deadline: Option<Instant>,
}

impl SessionEnd {
    pub(crate) fn never() -> SessionEnd {
        SessionEnd {
            alive: None,
            deadline: None,
        }
    }

    /// Completes when the session ends.
    pub async fn ended(self) {
        let dropped = async {
            match self.alive {
                // Nothing is ever sent: `changed` returns only when the sender is dropped.
                Some(mut alive) => while alive.changed().await.is_ok() {},
                None => std::future::pending().await,
            }
        };
        let deadline = async {
            match self.deadline {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            () = dropped => {}
            () = deadline => {}
        }
    }
}

pub(crate) struct Sessions {
    lifetime: Duration,
    idle: Duration,
    system_clock: bool,
    sessions: Mutex<HashMap<SessionKey, Session>>,
}

pub(crate) fn key_of(token: &str) -> SessionKey {
    Sha256::digest(token.as_bytes()).into()
}

impl Sessions {
    pub(crate) fn new(lifetime: Duration, idle: Duration, system_clock: bool) -> Sessions {
        Sessions {
            lifetime,
            idle,
            system_clock,
            sessions: Mutex::new(HashMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionKey, Session>> {
        self.sessions.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn live(&self, session: &Session, now: Instant) -> bool {
        now.saturating_duration_since(session.created) < self.lifetime
            && now.saturating_duration_since(session.last_seen) < self.idle
    }

    /// A new session; the returned token is the cookie's value (43 characters of base64url).
    pub(crate) fn create(&self, username: Username, fingerprint: [u8; 16], now: Instant) -> String {
        let mut random = [0u8; 32];
        getrandom::fill(&mut random).expect("the operating system provides randomness");
        let token = data_encoding::BASE64URL_NOPAD.encode(&random);
        let mut sessions = self.lock();
        // Logins are rare: forgetting expired sessions here bounds the table without a task.
        sessions.retain(|_, session| self.live(session, now));
        sessions.insert(
            key_of(&token),
            Session {
                username,
                fingerprint,
                created: now,
                last_seen: now,
                alive: watch::channel(()).0,
            },
        );
        token
    }

    /// The session `token` names if it is live, which this request keeps alive.
    pub(crate) fn resolve(&self, token: &str, now: Instant) -> Option<Resolved> {
        let key = key_of(token);
        let mut sessions = self.lock();
        let session = sessions.get_mut(&key)?;
        if !self.live(session, now) {
            sessions.remove(&key);
            return None;
        }
        session.last_seen = now;
        Some(Resolved {
            key,
            username: session.username.clone(),
            fingerprint: session.fingerprint,
            end: SessionEnd {
                alive: Some(session.alive.subscribe()),
                deadline: self.system_clock.then(|| session.created + self.lifetime),
            },
        })
    }

    pub(crate) fn remove(&self, key: &SessionKey) {
        self.lock().remove(key);
    }

    /// Ends every session whose account is gone or has another password now.
    pub(crate) fn keep_accounts(&self, accounts: &Accounts) {
        self.lock().retain(|_, session| {
            accounts
                .get(&session.username)
                .is_some_and(|account| account.password_hash.fingerprint() == session.fingerprint)
        });
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sessions() -> Sessions {
        Sessions::new(Duration::from_secs(3600), Duration::from_secs(600), false)
    }

    #[test]
    fn a_session_ends_after_its_idle_timeout_unless_used() {
        let sessions = sessions();
        let start = Instant::now();
        let token = sessions.create(Username::new("siti").unwrap(), [0; 16], start);
        let later = start + Duration::from_secs(599);
        assert!(sessions.resolve(&token, later).is_some());
        assert!(
            sessions
                .resolve(&token, later + Duration::from_secs(599))
                .is_some()
        );
        assert!(
            sessions
                .resolve(&token, later + Duration::from_secs(599 + 600))
                .is_none()
        );
        assert_eq!(sessions.len(), 0, "an expired session is forgotten");
    }

    #[test]
    fn a_session_ends_at_its_lifetime_however_busy() {
        let sessions = sessions();
        let start = Instant::now();
        let token = sessions.create(Username::new("siti").unwrap(), [0; 16], start);
        for minute in 1..60 {
            assert!(
                sessions
                    .resolve(&token, start + Duration::from_secs(minute * 60))
                    .is_some()
            );
        }
        assert!(
            sessions
                .resolve(&token, start + Duration::from_secs(3600))
                .is_none()
        );
    }

    #[test]
    fn tokens_are_random_and_unknown_ones_resolve_to_nothing() {
        let sessions = sessions();
        let now = Instant::now();
        let a = sessions.create(Username::new("a").unwrap(), [0; 16], now);
        let b = sessions.create(Username::new("a").unwrap(), [0; 16], now);
        assert_ne!(a, b);
        assert_eq!(a.len(), 43);
        assert!(sessions.resolve("not-a-session", now).is_none());
    }
}
