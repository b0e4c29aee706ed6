//! The tiny dashboard the operators' tests serve over real TCP, and a small HTTP/1.1 client.

// Each test binary uses some of these helpers.
#![allow(dead_code)]

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::extract::{Extension, Form};
use axum::routing::{get, post};
use futures::StreamExt as _;
use refbus_core::AgencyId;
use refbus_operators::accounts::{self, Accounts, Role, Username};
use refbus_operators::{
    Clock, CsrfChecked, CsrfToken, ManualClock, Operator, Operators, OperatorsConfig, SessionEnd,
};
use serde::Deserialize;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

pub(crate) const PASSWORD: &str = "correct horse battery";

// === A tiny dashboard ===

#[derive(Deserialize)]
pub(crate) struct ActForm {
    referral: String,
}

pub(crate) struct App {
    pub(crate) address: SocketAddr,
    pub(crate) clock: ManualClock,
    pub(crate) accounts: PathBuf,
    /// How many times the state-changing handler ran.
    pub(crate) acted: Arc<AtomicUsize>,
    _dir: tempfile::TempDir,
}

pub(crate) fn accounts_file(dir: &std::path::Path) -> PathBuf {
    let path = dir.join("operators.toml");
    let mut accounts = Accounts::new();
    for (username, agency, role) in [
        ("siti.dp3a", "maros-dp3a", Role::Head),
        ("andi", "maros-bappeda", Role::Coordinator),
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
    path
}

pub(crate) async fn start(configure: impl FnOnce(&mut OperatorsConfig)) -> App {
    let dir = tempfile::tempdir().unwrap();
    let path = accounts_file(dir.path());
    let mut config = OperatorsConfig::new(&path);
    config.failed_login_delay_ms = 0;
    configure(&mut config);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let address = listener.local_addr().unwrap();
    let clock = ManualClock::new();
    let operators = Operators::new(config, None, address)
        .unwrap()
        .with_clock(Clock::Manual(clock.clone()));
    let acted = Arc::new(AtomicUsize::new(0));
    let counter = acted.clone();
    let app = Router::new()
        .route(
            "/",
            get(
                |Extension(operator): Extension<Operator>,
                 Extension(csrf): Extension<CsrfToken>| async move {
                    format!(
                        "operator={} agency={} role={} csrf={}",
                        operator.username, operator.agency, operator.role, csrf
                    )
                },
            ),
        )
        .route("/events", get(|| async { "data: live\n\n" }))
        .route(
            "/feed",
            get(|Extension(end): Extension<SessionEnd>| async move {
                // A live feed: one line now, one when the session ends, then the end.
                let open = futures::stream::once(async { Ok::<_, Infallible>("open\n") });
                let closed = futures::stream::once(async move {
                    end.ended().await;
                    Ok::<_, Infallible>("closed\n")
                });
                axum::body::Body::from_stream(open.chain(closed))
            }),
        )
        .route("/static/app.css", get(|| async { "body{}" }))
        .route(
            "/act",
            post(
                move |_: CsrfChecked,
                      Extension(operator): Extension<Operator>,
                      Form(form): Form<ActForm>| {
                    let counter = counter.clone();
                    async move {
                        counter.fetch_add(1, Ordering::SeqCst);
                        format!("{} acknowledged {}", operator.username, form.referral)
                    }
                },
            ),
        )
        .merge(operators.routes())
        .layer(operators.layer());
    tokio::spawn(async move {
        axum::serve(
            listener,
            app.into_make_service_with_connect_info::<SocketAddr>(),
        )
        .await
        .unwrap();
    });
    App {
        address,
        clock,
        accounts: path,
        acted,
        _dir: dir,
    }
}

// === A small HTTP/1.1 client (one request per connection) ===

#[derive(Debug)]
pub(crate) struct Reply {
    pub(crate) status: u16,
    pub(crate) headers: Vec<(String, String)>,
    pub(crate) body: String,
}

impl Reply {
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub(crate) fn set_cookies(&self) -> Vec<&str> {
        self.headers
            .iter()
            .filter(|(n, _)| n.eq_ignore_ascii_case("set-cookie"))
            .map(|(_, v)| v.as_str())
            .collect()
    }

    /// `name=value` of the Set-Cookie named `name`.
    pub(crate) fn cookie(&self, name: &str) -> Option<String> {
        self.set_cookies()
            .into_iter()
            .find(|c| c.starts_with(&format!("{name}=")))
            .map(|c| c.split(';').next().unwrap().to_owned())
    }

    /// The value of the page's hidden `csrf` field.
    pub(crate) fn csrf_field(&self) -> String {
        let start = self.body.find("name=\"csrf\" value=\"").unwrap() + 19;
        self.body[start..].split('"').next().unwrap().to_owned()
    }
}

pub(crate) async fn send(
    app: &App,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Reply {
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let mut request = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n",
        app.address
    );
    for (name, value) in headers {
        request.push_str(&format!("{name}: {value}\r\n"));
    }
    if !body.is_empty() || method == "POST" {
        request.push_str(&format!("Content-Length: {}\r\n", body.len()));
    }
    request.push_str("\r\n");
    request.push_str(body);
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await.unwrap();
    let raw = String::from_utf8(raw).unwrap();
    let (head, body) = raw.split_once("\r\n\r\n").unwrap();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .unwrap()
        .split(' ')
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .map(|line| {
            let (name, value) = line.split_once(':').unwrap();
            (name.trim().to_owned(), value.trim().to_owned())
        })
        .collect();
    Reply {
        status,
        headers,
        body: body.to_owned(),
    }
}

pub(crate) fn form(fields: &[(&str, &str)]) -> String {
    form_urlencoded::Serializer::new(String::new())
        .extend_pairs(fields)
        .finish()
}

pub(crate) const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");

/// Loads the login page and posts it: the reply to the POST.
pub(crate) async fn login(app: &App, username: &str, password: &str) -> Reply {
    let page = send(
        app,
        "GET",
        "/login?next=%2Fboard%3Fagency%3Dmaros-dp3a",
        &[],
        "",
    )
    .await;
    let cookie = page.cookie("__Host-refbus_login").unwrap();
    let body = form(&[
        ("csrf", &page.csrf_field()),
        ("next", "/board?agency=maros-dp3a"),
        ("username", username),
        ("password", password),
    ]);
    send(app, "POST", "/login", &[FORM, ("Cookie", &cookie)], &body).await
}

/// Logs in and gives the session's `Cookie` header value and the page's CSRF token.
pub(crate) async fn session(app: &App) -> (String, String) {
    let reply = login(app, "siti.dp3a", PASSWORD).await;
    assert_eq!(reply.status, 303, "{reply:?}");
    let cookie = reply.cookie("__Host-refbus_session").unwrap();
    let home = send(app, "GET", "/", &[("Cookie", &cookie)], "").await;
    let csrf = home.body.split("csrf=").nth(1).unwrap().to_owned();
    (cookie, csrf)
}

/// A request whose response streams: its first bytes have arrived when this returns.
pub(crate) struct Streaming {
    stream: TcpStream,
    pub(crate) received: Vec<u8>,
}

pub(crate) async fn open_stream(app: &App, path: &str, cookie: &str, until: &str) -> Streaming {
    let mut stream = TcpStream::connect(app.address).await.unwrap();
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {}\r\nConnection: close\r\nCookie: {cookie}\r\n\r\n",
        app.address
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut received = Vec::new();
    let mut buffer = [0u8; 4096];
    while !String::from_utf8_lossy(&received).contains(until) {
        let n = stream.read(&mut buffer).await.unwrap();
        assert!(
            n > 0,
            "the stream ended before `{until}`: {}",
            String::from_utf8_lossy(&received)
        );
        received.extend_from_slice(&buffer[..n]);
    }
    Streaming { stream, received }
}

impl Streaming {
    /// Everything until the server closes the response.
    pub(crate) async fn rest(mut self) -> String {
        // A guard against a hang, not a measure: the test waits for the event itself.
        tokio::time::timeout(
            std::time::Duration::from_secs(60),
            self.stream.read_to_end(&mut self.received),
        )
        .await
        .expect("the stream ends")
        .unwrap();
        String::from_utf8_lossy(&self.received).into_owned()
    }
}
