//! The operators' layer and login routes in a tiny dashboard served over real TCP, as the
//! dashboard serves them (`into_make_service_with_connect_info`): login, sessions and their
//! cookies, expiry on a manual clock, logout, CSRF, the login throttle, the trusted proxy.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use refbus_core::AgencyId;
use refbus_operators::accounts::{self, Accounts, Role, Username};
use refbus_operators::{Operators, OperatorsConfig, ProxyConfig, SetupError};

// === Login ===

#[tokio::test]
async fn the_login_page_speaks_indonesian_and_english_on_request() {
    let app = start(|_| {}).await;
    let page = send(&app, "GET", "/login", &[], "").await;
    assert_eq!(page.status, 200);
    assert!(page.body.contains("<html lang=\"id\">"));
    assert!(page.body.contains("Kata sandi"));
    assert!(
        page.body.contains("name=\"viewport\""),
        "readable on a phone"
    );
    assert_eq!(page.header("cache-control"), Some("no-store"));
    assert!(
        page.header("content-security-policy")
            .unwrap()
            .contains("frame-ancestors 'none'")
    );
    let login_cookie = page
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-refbus_login="))
        .unwrap()
        .to_owned();
    for attribute in ["HttpOnly", "SameSite=Strict", "Secure", "Path=/"] {
        assert!(login_cookie.contains(attribute), "{login_cookie}");
    }
    let english = send(&app, "GET", "/login?lang=en", &[], "").await;
    assert!(english.body.contains("<html lang=\"en\">"));
    assert!(english.body.contains("Password"));
    assert!(
        english
            .body
            .contains("href=\"/login?lang=id&#38;next=%2F\""),
        "{}",
        english.body
    );
}

#[tokio::test]
async fn a_good_password_opens_a_session_in_a_secure_cookie() {
    let app = start(|_| {}).await;
    let reply = login(&app, "siti.dp3a", PASSWORD).await;
    assert_eq!(reply.status, 303);
    assert_eq!(reply.header("location"), Some("/board?agency=maros-dp3a"));
    let set = reply
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-refbus_session="))
        .unwrap();
    let value = set.split(';').next().unwrap().split_once('=').unwrap().1;
    assert_eq!(value.len(), 43, "256 random bits");
    for attribute in [
        "HttpOnly",
        "SameSite=Strict",
        "Secure",
        "Path=/",
        "Max-Age=43200",
    ] {
        assert!(set.contains(attribute), "{set}");
    }
    assert!(!set.contains("Domain"), "{set}");
    let cookie = reply.cookie("__Host-refbus_session").unwrap();
    let home = send(&app, "GET", "/", &[("Cookie", &cookie)], "").await;
    assert_eq!(home.status, 200);
    assert!(
        home.body
            .starts_with("operator=siti.dp3a agency=maros-dp3a role=head csrf="),
        "{}",
        home.body
    );
}

#[tokio::test]
async fn usernames_are_matched_in_lower_case() {
    let app = start(|_| {}).await;
    assert_eq!(login(&app, " Siti.DP3A ", PASSWORD).await.status, 303);
}

#[tokio::test]
async fn a_wrong_password_and_an_unknown_user_get_the_same_answer() {
    let app = start(|_| {}).await;
    let page = send(&app, "GET", "/login", &[], "").await;
    let cookie = page.cookie("__Host-refbus_login").unwrap();
    let token = page.csrf_field();
    let mut replies = Vec::new();
    for (username, password) in [
        ("siti.dp3a", "wrong password"),
        ("nobody", "wrong password"),
        ("nobody", PASSWORD),
    ] {
        let body = form(&[
            ("csrf", &token),
            ("username", username),
            ("password", password),
        ]);
        replies.push(send(&app, "POST", "/login", &[FORM, ("Cookie", &cookie)], &body).await);
    }
    for reply in &replies {
        assert_eq!(reply.status, 401);
        assert!(reply.cookie("__Host-refbus_session").is_none());
        assert!(reply.body.contains("Nama pengguna atau kata sandi salah."));
        assert_eq!(
            reply.body, replies[0].body,
            "no difference tells which users exist"
        );
        let headers = |r: &Reply| {
            r.headers
                .iter()
                .filter(|(n, _)| !n.eq_ignore_ascii_case("date"))
                .cloned()
                .collect::<Vec<_>>()
        };
        assert_eq!(headers(reply), headers(&replies[0]));
    }
}

#[tokio::test]
async fn a_login_form_from_elsewhere_is_refused() {
    let app = start(|_| {}).await;
    let page = send(&app, "GET", "/login", &[], "").await;
    let body = form(&[
        ("csrf", &page.csrf_field()),
        ("username", "siti.dp3a"),
        ("password", PASSWORD),
    ]);
    // Without the cookie of the page it came from (a cross-site post).
    let reply = send(&app, "POST", "/login", &[FORM], &body).await;
    assert_eq!(reply.status, 403);
    assert!(reply.cookie("__Host-refbus_session").is_none());
    // With the cookie but another token.
    let cookie = page.cookie("__Host-refbus_login").unwrap();
    let body = form(&[
        ("csrf", "forged"),
        ("username", "siti.dp3a"),
        ("password", PASSWORD),
    ]);
    let reply = send(&app, "POST", "/login", &[FORM, ("Cookie", &cookie)], &body).await;
    assert_eq!(reply.status, 403);
}

#[tokio::test]
async fn failed_logins_are_throttled_per_username_whether_or_not_it_exists() {
    let app = start(|config| config.failures_per_username = 3).await;
    for username in ["siti.dp3a", "nobody"] {
        for _ in 0..3 {
            assert_eq!(login(&app, username, "wrong password").await.status, 401);
        }
        let blocked = login(&app, username, PASSWORD).await;
        assert_eq!(
            blocked.status, 429,
            "{username}: even the right password waits"
        );
        assert_eq!(blocked.header("retry-after"), Some("900"));
        assert!(blocked.body.contains("Coba lagi dalam 15 menit"));
    }
    app.clock.advance(Duration::from_secs(15 * 60));
    assert_eq!(login(&app, "siti.dp3a", PASSWORD).await.status, 303);
}

#[tokio::test]
async fn failed_logins_are_throttled_per_address() {
    let app = start(|config| config.failures_per_address = 2).await;
    assert_eq!(login(&app, "a", "wrong password").await.status, 401);
    assert_eq!(login(&app, "b", "wrong password").await.status, 401);
    assert_eq!(login(&app, "siti.dp3a", PASSWORD).await.status, 429);
}

#[tokio::test]
async fn logins_through_a_trusted_proxy_are_not_counted_by_address() {
    let app = start(|config| {
        proxy("127.0.0.1")(config);
        config.failures_per_address = 2;
    })
    .await;
    for username in ["a", "b", "c"] {
        assert_eq!(login(&app, username, "wrong password").await.status, 401);
    }
    assert_eq!(
        login(&app, "siti.dp3a", PASSWORD).await.status,
        303,
        "one attacker behind the proxy cannot lock everybody out"
    );
}

#[tokio::test]
async fn logging_in_ends_the_session_the_browser_held_before() {
    let app = start(|_| {}).await;
    let (planted, _) = session(&app).await;
    let page = send(&app, "GET", "/login", &[("Cookie", &planted)], "").await;
    let cookies = format!("{planted}; {}", page.cookie("__Host-refbus_login").unwrap());
    let body = form(&[
        ("csrf", &page.csrf_field()),
        ("username", "andi"),
        ("password", PASSWORD),
    ]);
    let reply = send(&app, "POST", "/login", &[FORM, ("Cookie", &cookies)], &body).await;
    assert_eq!(reply.status, 303);
    assert_eq!(
        send(&app, "GET", "/", &[("Cookie", &planted)], "")
            .await
            .status,
        401
    );
    let fresh = reply.cookie("__Host-refbus_session").unwrap();
    assert!(
        send(&app, "GET", "/", &[("Cookie", &fresh)], "")
            .await
            .body
            .starts_with("operator=andi")
    );
}

// === Without a session ===

#[tokio::test]
async fn without_a_session_pages_go_to_login_and_the_feed_gets_401() {
    let app = start(|_| {}).await;
    let page = send(
        &app,
        "GET",
        "/?agency=maros-dp3a",
        &[("Accept", "text/html,application/xhtml+xml")],
        "",
    )
    .await;
    assert_eq!(page.status, 303);
    assert_eq!(
        page.header("location"),
        Some("/login?next=%2F%3Fagency%3Dmaros-dp3a")
    );
    let feed = send(
        &app,
        "GET",
        "/events",
        &[("Accept", "text/event-stream")],
        "",
    )
    .await;
    assert_eq!(feed.status, 401);
    assert!(!feed.body.contains("live"));
    let forged = send(
        &app,
        "GET",
        "/",
        &[(
            "Cookie",
            "__Host-refbus_session=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
        )],
        "",
    )
    .await;
    assert_eq!(forged.status, 401);
    let asset = send(&app, "GET", "/static/app.css", &[], "").await;
    assert_eq!(asset.status, 200, "static assets need no session");
}

// === Expiry and logout ===

#[tokio::test]
async fn a_session_ends_after_30_idle_minutes() {
    let app = start(|_| {}).await;
    let (cookie, _) = session(&app).await;
    app.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(
        send(&app, "GET", "/", &[("Cookie", &cookie)], "")
            .await
            .status,
        200
    );
    app.clock.advance(Duration::from_secs(29 * 60));
    assert_eq!(
        send(&app, "GET", "/", &[("Cookie", &cookie)], "")
            .await
            .status,
        200,
        "use keeps it alive"
    );
    app.clock.advance(Duration::from_secs(30 * 60));
    assert_eq!(
        send(&app, "GET", "/", &[("Cookie", &cookie)], "")
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn a_session_ends_at_its_lifetime_however_busy() {
    let app = start(|config| config.session_hours = 1).await;
    let (cookie, _) = session(&app).await;
    for _ in 0..3 {
        app.clock.advance(Duration::from_secs(20 * 60 - 1));
        assert_eq!(
            send(&app, "GET", "/", &[("Cookie", &cookie)], "")
                .await
                .status,
            200
        );
    }
    app.clock.advance(Duration::from_secs(3));
    assert_eq!(
        send(&app, "GET", "/", &[("Cookie", &cookie)], "")
            .await
            .status,
        401
    );
}

#[tokio::test]
async fn logout_ends_the_session_and_needs_its_token() {
    let app = start(|_| {}).await;
    let (cookie, csrf) = session(&app).await;
    let refused = send(&app, "POST", "/logout", &[FORM, ("Cookie", &cookie)], "").await;
    assert_eq!(refused.status, 403, "a cross-site page cannot log her out");
    assert_eq!(
        send(&app, "GET", "/", &[("Cookie", &cookie)], "")
            .await
            .status,
        200
    );
    let out = send(
        &app,
        "POST",
        "/logout",
        &[FORM, ("Cookie", &cookie)],
        &form(&[("csrf", &csrf)]),
    )
    .await;
    assert_eq!(out.status, 303);
    assert_eq!(out.header("location"), Some("/login"));
    let cleared = out
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("__Host-refbus_session="))
        .unwrap();
    assert!(cleared.contains("Max-Age=0"), "{cleared}");
    assert_eq!(
        send(&app, "GET", "/", &[("Cookie", &cookie)], "")
            .await
            .status,
        401,
        "the old cookie opens nothing"
    );
}

#[tokio::test]
async fn logout_ends_the_open_live_feed_of_the_session() {
    let app = start(|_| {}).await;
    let (cookie, csrf) = session(&app).await;
    let (other, _) = session(&app).await;
    let feed = open_stream(&app, "/feed", &cookie, "open").await;
    let untouched = open_stream(&app, "/feed", &other, "open").await;
    let out = send(
        &app,
        "POST",
        "/logout",
        &[FORM, ("Cookie", &cookie)],
        &form(&[("csrf", &csrf)]),
    )
    .await;
    assert_eq!(out.status, 303);
    let rest = feed.rest().await;
    assert!(rest.contains("closed"), "{rest}");
    // The other session's feed is still open: logging it out ends it too.
    let other_csrf = send(&app, "GET", "/", &[("Cookie", &other)], "")
        .await
        .body
        .split("csrf=")
        .nth(1)
        .unwrap()
        .to_owned();
    send(
        &app,
        "POST",
        "/logout",
        &[FORM, ("Cookie", &other)],
        &form(&[("csrf", &other_csrf)]),
    )
    .await;
    assert!(untouched.rest().await.contains("closed"));
}

#[tokio::test]
async fn removing_an_account_ends_her_open_live_feed() {
    let app = start(|_| {}).await;
    let (cookie, _) = session(&app).await;
    let feed = open_stream(&app, "/feed", &cookie, "open").await;
    let mut accounts = Accounts::load(&app.accounts).unwrap();
    accounts
        .remove(&Username::new("siti.dp3a").unwrap())
        .unwrap();
    accounts.write(&app.accounts).unwrap();
    // Any request to the dashboard notices the change.
    assert_eq!(send(&app, "GET", "/", &[], "").await.status, 401);
    assert!(feed.rest().await.contains("closed"));
}

#[tokio::test]
async fn a_broken_edit_keeps_the_accounts_and_a_removed_file_logs_everyone_out() {
    use std::os::unix::fs::PermissionsExt;
    let app = start(|_| {}).await;
    let (cookie, _) = session(&app).await;
    std::fs::write(&app.accounts, "[[operator]\nthis is not toml").unwrap();
    std::fs::set_permissions(&app.accounts, std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(
        send(&app, "GET", "/", &[("Cookie", &cookie)], "")
            .await
            .status,
        200
    );
    std::fs::remove_file(&app.accounts).unwrap();
    assert_eq!(
        send(&app, "GET", "/", &[("Cookie", &cookie)], "")
            .await
            .status,
        401
    );
    assert_eq!(login(&app, "siti.dp3a", PASSWORD).await.status, 401);
}

#[tokio::test]
async fn removing_an_account_ends_her_sessions() {
    let app = start(|_| {}).await;
    let (cookie, _) = session(&app).await;
    let mut accounts = Accounts::load(&app.accounts).unwrap();
    accounts
        .remove(&Username::new("siti.dp3a").unwrap())
        .unwrap();
    accounts.write(&app.accounts).unwrap();
    assert_eq!(
        send(&app, "GET", "/", &[("Cookie", &cookie)], "")
            .await
            .status,
        401
    );
}

// === CSRF ===

#[tokio::test]
async fn a_state_changing_request_needs_its_sessions_csrf_token() {
    let app = start(|_| {}).await;
    let (cookie, csrf) = session(&app).await;
    let (_, other_sessions_csrf) = session(&app).await;
    for body in [
        form(&[("referral", "r1")]),
        form(&[("referral", "r1"), ("csrf", "")]),
        form(&[("referral", "r1"), ("csrf", "forged")]),
        form(&[("referral", "r1"), ("csrf", &other_sessions_csrf)]),
    ] {
        let reply = send(&app, "POST", "/act", &[FORM, ("Cookie", &cookie)], &body).await;
        assert_eq!(reply.status, 403, "{body}");
        assert!(!reply.body.contains("acknowledged"));
    }
    let wrong_header = send(
        &app,
        "POST",
        "/act",
        &[FORM, ("Cookie", &cookie), ("X-CSRF-Token", "forged")],
        &form(&[("referral", "r1"), ("csrf", &csrf)]),
    )
    .await;
    assert_eq!(
        wrong_header.status, 403,
        "a header, when present, is what is checked"
    );
    assert_eq!(app.acted.load(Ordering::SeqCst), 0, "nothing was done");

    let accepted = send(
        &app,
        "POST",
        "/act",
        &[FORM, ("Cookie", &cookie)],
        &form(&[("referral", "r1"), ("csrf", &csrf)]),
    )
    .await;
    assert_eq!(accepted.status, 200);
    assert_eq!(
        accepted.body, "siti.dp3a acknowledged r1",
        "the form reaches the handler whole"
    );
    let by_header = send(
        &app,
        "POST",
        "/act",
        &[FORM, ("Cookie", &cookie), ("X-CSRF-Token", &csrf)],
        &form(&[("referral", "r2")]),
    )
    .await;
    assert_eq!(by_header.status, 200);
    assert_eq!(app.acted.load(Ordering::SeqCst), 2);
}

// === The trusted proxy ===

fn proxy(trusted: &str) -> impl FnOnce(&mut OperatorsConfig) {
    let trusted = trusted.to_owned();
    move |config| {
        config.proxy = Some(ProxyConfig {
            header: "X-Remote-User".to_owned(),
            trusted_proxies: vec![trusted],
        })
    }
}

#[tokio::test]
async fn the_proxy_header_is_ignored_when_the_proxy_is_off() {
    let app = start(|_| {}).await;
    let reply = send(&app, "GET", "/", &[("X-Remote-User", "siti.dp3a")], "").await;
    assert_eq!(reply.status, 401);
}

#[tokio::test]
async fn the_proxy_header_is_ignored_from_an_untrusted_address() {
    // The test connects from 127.0.0.1; only 10.0.0.0/8 is trusted.
    let app = start(proxy("10.0.0.0/8")).await;
    let reply = send(&app, "GET", "/", &[("X-Remote-User", "andi")], "").await;
    assert_eq!(reply.status, 401);
    // A session still works, and the header does not change who she is.
    let (cookie, _) = session(&app).await;
    let reply = send(
        &app,
        "GET",
        "/",
        &[("Cookie", &cookie), ("X-Remote-User", "andi")],
        "",
    )
    .await;
    assert!(
        reply.body.starts_with("operator=siti.dp3a"),
        "{}",
        reply.body
    );
}

#[tokio::test]
async fn the_proxy_header_names_the_operator_when_trusted() {
    let app = start(proxy("127.0.0.1")).await;
    let reply = send(&app, "GET", "/", &[("X-Remote-User", "Andi")], "").await;
    assert_eq!(reply.status, 200);
    assert!(
        reply
            .body
            .starts_with("operator=andi agency=maros-bappeda role=coordinator"),
        "{}",
        reply.body
    );
    let unknown = send(&app, "GET", "/", &[("X-Remote-User", "mallory")], "").await;
    assert_eq!(
        unknown.status, 403,
        "a name without an account gets nothing"
    );
    // State changes still need the identity's token.
    let csrf = reply.body.split("csrf=").nth(1).unwrap().to_owned();
    let refused = send(
        &app,
        "POST",
        "/act",
        &[FORM, ("X-Remote-User", "andi")],
        &form(&[("referral", "r1")]),
    )
    .await;
    assert_eq!(refused.status, 403);
    let accepted = send(
        &app,
        "POST",
        "/act",
        &[FORM, ("X-Remote-User", "andi")],
        &form(&[("referral", "r1"), ("csrf", &csrf)]),
    )
    .await;
    assert_eq!(accepted.body, "andi acknowledged r1");
    let as_siti = send(
        &app,
        "POST",
        "/act",
        &[FORM, ("X-Remote-User", "siti.dp3a")],
        &form(&[("referral", "r1"), ("csrf", &csrf)]),
    )
    .await;
    assert_eq!(as_siti.status, 403, "a token is bound to its operator");
}

// === Start-up refusals ===

#[tokio::test]
async fn plaintext_cookies_only_on_loopback() {
    let dir = tempfile::tempdir().unwrap();
    let path = accounts_file(dir.path());
    let mut config = OperatorsConfig::new(&path);
    config.insecure_plaintext_cookies = true;
    let error = Operators::new(config.clone(), None, "0.0.0.0:8080".parse().unwrap()).unwrap_err();
    assert!(
        matches!(error, SetupError::PlaintextOffLoopback(_)),
        "{error}"
    );

    let app = start(|config| config.insecure_plaintext_cookies = true).await;
    let page = send(&app, "GET", "/login", &[], "").await;
    let cookie = page.cookie("refbus_login").unwrap();
    let body = form(&[
        ("csrf", &page.csrf_field()),
        ("username", "siti.dp3a"),
        ("password", PASSWORD),
    ]);
    let reply = send(&app, "POST", "/login", &[FORM, ("Cookie", &cookie)], &body).await;
    let set = reply
        .set_cookies()
        .into_iter()
        .find(|c| c.starts_with("refbus_session="))
        .unwrap();
    assert!(
        !set.contains("Secure") && set.contains("HttpOnly") && set.contains("SameSite=Strict"),
        "{set}"
    );
}

#[test]
fn an_accounts_file_others_may_read_is_refused() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = accounts_file(dir.path());
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let error = Operators::new(
        OperatorsConfig::new(&path),
        None,
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap_err();
    assert!(
        matches!(
            error,
            SetupError::Accounts(refbus_operators::AccountsError::Exposed { mode: 0o640, .. })
        ),
        "{error}"
    );
    assert!(error.to_string().contains("chmod 600"), "{error}");
}

#[test]
fn accounts_are_checked_against_the_registry() {
    let registry = refbus_config::load(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../deploy/config/refbus.toml"
    ))
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let path = accounts_file(dir.path());
    // maros-bappeda is the registry's coordinator, maros-dp3a an agency: both fit.
    Operators::new(
        OperatorsConfig::new(&path),
        Some(&registry),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap();
    let mut accounts = Accounts::load(&path).unwrap();
    for (username, agency, role) in [
        ("ghost", "maros-ghost", Role::Head),
        ("boss", "maros-dp3a", Role::Coordinator),
    ] {
        accounts
            .add(
                accounts::new_account(
                    Username::new(username).unwrap(),
                    AgencyId::new(agency).unwrap(),
                    role,
                    PASSWORD,
                )
                .unwrap(),
                None,
            )
            .unwrap();
    }
    accounts.write(&path).unwrap();
    let error = Operators::new(
        OperatorsConfig::new(&path),
        Some(&registry),
        "127.0.0.1:0".parse().unwrap(),
    )
    .unwrap_err();
    let SetupError::Registry(problems) = &error else {
        panic!("{error}")
    };
    assert_eq!(problems.len(), 2, "{problems:?}");
    assert!(
        problems[0].contains("boss")
            && problems[0].contains("coordinator's agency `maros-bappeda`")
    );
    assert!(problems[1].contains("unknown agency `maros-ghost`"));
}
