//! What the operators' side writes to the logs: never a password, a hash, or what was typed as
//! a username. Alone in its binary so that its subscriber is the process's only one.

mod common;

use std::sync::Arc;

use common::*;
use refbus_operators::accounts::{Accounts, Username};

#[derive(Clone, Default)]
struct Capture(Arc<std::sync::Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn logs_hold_no_password_no_hash_and_no_typed_username() {
    let capture = Capture::default();
    let writer = capture.clone();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(move || writer.clone())
        .with_max_level(tracing::Level::TRACE)
        .with_ansi(false)
        .finish();
    tracing::subscriber::set_global_default(subscriber).unwrap();
    let app = start(|_| {}).await;
    // A password typed in the username box, then a wrong password, then the right one.
    assert_eq!(login(&app, "my-secret-pass", "x").await.status, 401);
    assert_eq!(
        login(&app, "siti.dp3a", "wrong password typed")
            .await
            .status,
        401
    );
    assert_eq!(login(&app, "siti.dp3a", PASSWORD).await.status, 303);
    let hash = Accounts::load(&app.accounts)
        .unwrap()
        .get(&Username::new("siti.dp3a").unwrap())
        .unwrap()
        .password_hash
        .phc_string()
        .to_owned();
    let logs = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    assert!(logs.contains("a login failed"), "{logs}");
    assert!(
        logs.contains("an operator logged in") && logs.contains("siti.dp3a"),
        "{logs}"
    );
    for secret in [
        PASSWORD,
        "wrong password typed",
        "my-secret-pass",
        "$argon2",
        &hash,
    ] {
        assert!(!logs.contains(secret), "`{secret}` in the logs:\n{logs}");
    }
}
