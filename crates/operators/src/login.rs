//! The login page, login and logout: a small server-rendered form in Bahasa Indonesia (English
//! with `?lang=en`), readable on a phone. The form is protected from cross-site posting by a
//! double-submit token (a cookie and a field that must match); failures answer exactly alike
//! whether or not the username exists, after the same argon2id work and the same delay.

use std::time::Duration;

use askama::Template;
use axum::Router;
use axum::extract::{Extension, Form, Query, State};
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::{get, post};
use http::{HeaderMap, HeaderValue, StatusCode, header};
use serde::Deserialize;
use zeroize::Zeroize;

use crate::Operators;
use crate::accounts::Username;
use crate::csrf::{self, CsrfChecked};
use crate::session::SessionKey;
use crate::throttle::Key;

/// The login page (GET) and form (POST); served without a session.
pub const LOGIN_PATH: &str = "/login";
/// Ends the session (POST, with the CSRF token).
pub const LOGOUT_PATH: &str = "/logout";

// `__Host-` cookies are only accepted by browsers when Secure, for the whole host, from no
// other domain: a neighbouring subdomain cannot plant one.
const SESSION_SECURE: &str = "__Host-refbus_session";
const SESSION_PLAIN: &str = "refbus_session";
const LOGIN_SECURE: &str = "__Host-refbus_login";
const LOGIN_PLAIN: &str = "refbus_login";

/// The session a request resolved to, for logout.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CurrentSession(pub(crate) SessionKey);

pub(crate) fn routes<S: Clone + Send + Sync + 'static>(operators: Operators) -> Router<S> {
    Router::new()
        .route(LOGIN_PATH, get(page).post(submit))
        .route(LOGOUT_PATH, post(logout))
        .with_state(operators)
}

// === Language ===

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lang {
    Id,
    En,
}

impl Lang {
    fn from_query(lang: Option<&str>) -> Lang {
        match lang {
            Some("en") => Lang::En,
            _ => Lang::Id,
        }
    }

    fn code(self) -> &'static str {
        match self {
            Lang::Id => "id",
            Lang::En => "en",
        }
    }

    fn other(self) -> Lang {
        match self {
            Lang::Id => Lang::En,
            Lang::En => Lang::Id,
        }
    }

    fn texts(self) -> &'static Texts {
        match self {
            Lang::Id => &ID,
            Lang::En => &EN,
        }
    }
}

struct Texts {
    title: &'static str,
    heading: &'static str,
    username: &'static str,
    password: &'static str,
    submit: &'static str,
    wrong: &'static str,
    hint: &'static str,
    switch_label: &'static str,
}

const ID: Texts = Texts {
    title: "Masuk · refbus",
    heading: "Masuk ke papan eskalasi",
    username: "Nama pengguna",
    password: "Kata sandi",
    submit: "Masuk",
    wrong: "Nama pengguna atau kata sandi salah.",
    hint: "Lupa kata sandi? Hubungi administrator dasbor di instansi Anda.",
    switch_label: "English",
};

const EN: Texts = Texts {
    title: "Log in · refbus",
    heading: "Log in to the escalation board",
    username: "Username",
    password: "Password",
    submit: "Log in",
    wrong: "Wrong username or password.",
    hint: "Forgot your password? Ask your agency's dashboard administrator.",
    switch_label: "Bahasa Indonesia",
};

fn too_many(lang: Lang, wait: Duration) -> String {
    let minutes = wait.as_secs().div_ceil(60).max(1);
    match lang {
        Lang::Id => {
            format!("Terlalu banyak percobaan yang gagal. Coba lagi dalam {minutes} menit.")
        }
        Lang::En => format!("Too many failed attempts. Try again in {minutes} minutes."),
    }
}

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    lang: &'static str,
    t: &'static Texts,
    csrf: &'a str,
    next: &'a str,
    error: Option<&'a str>,
    switch_href: String,
    switch_lang: &'static str,
}

fn render(
    lang: Lang,
    token: &str,
    next: &str,
    error: Option<&str>,
    status: StatusCode,
) -> Response {
    let other = lang.other();
    let page = LoginPage {
        lang: lang.code(),
        t: lang.texts(),
        csrf: token,
        next,
        error,
        switch_href: format!(
            "{LOGIN_PATH}?lang={}&next={}",
            other.code(),
            form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        ),
        switch_lang: other.code(),
    };
    match page.render() {
        Ok(html) => (status, page_headers(), Html(html)).into_response(),
        Err(error) => {
            tracing::error!(%error, "the login page did not render");
            StatusCode::INTERNAL_SERVER_ERROR.into_response()
        }
    }
}

/// No caching (the page holds a token), no framing (clickjacking), no scripts at all.
fn page_headers() -> [(header::HeaderName, &'static str); 4] {
    [
        (header::CACHE_CONTROL, "no-store"),
        (
            header::CONTENT_SECURITY_POLICY,
            "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (header::X_FRAME_OPTIONS, "DENY"),
        (header::REFERRER_POLICY, "no-referrer"),
    ]
}

// === Cookies ===

fn cookie(name: &str, value: &str, secure: bool, max_age: u64) -> HeaderValue {
    let secure = if secure { "; Secure" } else { "" };
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Max-Age={max_age}; HttpOnly; SameSite=Strict{secure}"
    ))
    .expect("cookie names and base64url values are valid header text")
}

fn cookies<'a>(headers: &'a HeaderMap, wanted: &'a str) -> impl Iterator<Item = &'a str> + 'a {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(move |pair| {
            let (name, value) = pair.trim().split_once('=')?;
            (name == wanted).then_some(value)
        })
}

/// Every value of the session cookie the request carries (a browser may send more than one).
pub(crate) fn session_cookies(headers: &HeaderMap, secure: bool) -> impl Iterator<Item = &str> {
    cookies(
        headers,
        if secure {
            SESSION_SECURE
        } else {
            SESSION_PLAIN
        },
    )
}

fn random_token() -> String {
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).expect("the operating system provides randomness");
    data_encoding::BASE64URL_NOPAD.encode(&random)
}

fn is_token(text: &str) -> bool {
    text.len() == 43
        && text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Where to go after login: a path of this site only, never another site (`//host`, `/\host`)
/// and never back to login or logout.
fn safe_next(next: Option<&str>) -> String {
    match next {
        Some(next)
            if next.starts_with('/')
                && !next.starts_with("//")
                && !next.starts_with("/\\")
                && next.len() <= 2048
                && next.bytes().all(|b| b.is_ascii_graphic())
                && !next.starts_with(LOGIN_PATH)
                && !next.starts_with(LOGOUT_PATH) =>
        {
            next.to_owned()
        }
        _ => "/".to_owned(),
    }
}

// === Handlers ===

#[derive(Deserialize)]
struct PageQuery {
    lang: Option<String>,
    next: Option<String>,
}

async fn page(
    State(operators): State<Operators>,
    Query(query): Query<PageQuery>,
    headers: HeaderMap,
) -> Response {
    let lang = Lang::from_query(query.lang.as_deref());
    let next = safe_next(query.next.as_deref());
    let secure = operators.secure_cookies();
    let name = if secure { LOGIN_SECURE } else { LOGIN_PLAIN };
    let token = cookies(&headers, name)
        .find(|value| is_token(value))
        .map_or_else(random_token, str::to_owned);
    let mut response = render(lang, &token, &next, None, StatusCode::OK);
    response
        .headers_mut()
        .append(header::SET_COOKIE, cookie(name, &token, secure, 3600));
    response
}

#[derive(Deserialize)]
struct LoginForm {
    username: String,
    password: String,
    #[serde(default)]
    csrf: String,
    #[serde(default)]
    next: String,
    #[serde(default)]
    lang: String,
}

async fn submit(
    State(operators): State<Operators>,
    headers: HeaderMap,
    request_peer: Peer,
    Form(mut form): Form<LoginForm>,
) -> Response {
    let lang = Lang::from_query(Some(form.lang.as_str()));
    let next = safe_next(Some(form.next.as_str()));
    let secure = operators.secure_cookies();
    let login_cookie = if secure { LOGIN_SECURE } else { LOGIN_PLAIN };
    // The form must come from the login page this browser loaded: its cookie and its field
    // match. A page on another site can post the form but cannot read or set the cookie.
    if !cookies(&headers, login_cookie).any(|value| csrf::same(value, &form.csrf)) {
        form.password.zeroize();
        return csrf::forbidden();
    }
    let token = form.csrf.clone();
    let config = &operators.inner.config;
    let typed: String = form
        .username
        .trim()
        .to_lowercase()
        .chars()
        .take(64)
        .collect();
    let mut keys = vec![Key {
        name: format!("user:{typed}"),
        limit: config.failures_per_username,
    }];
    // Behind a reverse proxy every login comes from the proxy's address: counting them together
    // would let one attacker lock everybody out, so a trusted proxy's address is not counted.
    if let Some(peer) = request_peer.0
        && !operators
            .inner
            .proxy
            .as_ref()
            .is_some_and(|proxy| proxy.trusts(Some(peer)))
    {
        keys.push(Key {
            name: format!("addr:{}", peer.to_canonical()),
            limit: config.failures_per_address,
        });
    }
    let now = operators.now();
    if let Some(wait) = operators.inner.throttle.blocked(&keys, now) {
        form.password.zeroize();
        tracing::warn!(peer = ?request_peer.0, "a login was refused: too many failed logins for its username or address");
        let mut response = render(
            lang,
            &token,
            &next,
            Some(&too_many(lang, wait)),
            StatusCode::TOO_MANY_REQUESTS,
        );
        response.headers_mut().insert(
            header::RETRY_AFTER,
            HeaderValue::from(wait.as_secs().max(1)),
        );
        return response;
    }
    let accounts = operators.accounts();
    let account = Username::new(typed)
        .ok()
        .and_then(|username| accounts.get(&username).cloned());
    let hash = account
        .as_ref()
        .map(|account| account.password_hash.clone());
    let password = std::mem::take(&mut form.password);
    // argon2id takes tens of milliseconds of CPU: off the async workers.
    let verified = tokio::task::spawn_blocking(move || {
        let mut password = password;
        let verified = crate::password::verify_or_waste(hash.as_ref(), &password);
        password.zeroize();
        verified
    })
    .await
    .unwrap_or(false);
    let Some(account) = account.filter(|_| verified) else {
        operators.inner.throttle.fail(&keys, now);
        // The typed username is never logged: it is often a password typed in the wrong box.
        tracing::warn!(peer = ?request_peer.0, "a login failed (unknown username or wrong password)");
        let delay = Duration::from_millis(config.failed_login_delay_ms);
        if !delay.is_zero() {
            tokio::time::sleep(delay).await;
        }
        return render(
            lang,
            &token,
            &next,
            Some(lang.texts().wrong),
            StatusCode::UNAUTHORIZED,
        );
    };
    operators.inner.throttle.clear(&keys[0].name);
    // A session this browser held before (another operator's, or one planted in it) ends:
    // after login the browser holds exactly the new one.
    let presented: Vec<String> = session_cookies(&headers, secure)
        .map(str::to_owned)
        .collect();
    for presented in presented {
        operators
            .inner
            .sessions
            .remove(&crate::session::key_of(&presented));
    }
    let session = operators.inner.sessions.create(
        account.username.clone(),
        account.password_hash.fingerprint(),
        now,
    );
    tracing::info!(operator = %account.username, agency = %account.agency, role = %account.role, "an operator logged in");
    let mut response = Redirect::to(&next).into_response();
    let headers = response.headers_mut();
    headers.append(
        header::SET_COOKIE,
        cookie(
            if secure {
                SESSION_SECURE
            } else {
                SESSION_PLAIN
            },
            &session,
            secure,
            config.session_hours * 3600,
        ),
    );
    headers.append(header::SET_COOKIE, cookie(login_cookie, "", secure, 0));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

async fn logout(
    State(operators): State<Operators>,
    _checked: CsrfChecked,
    session: Option<Extension<CurrentSession>>,
    operator: Option<Extension<crate::Operator>>,
) -> Response {
    if let Some(Extension(CurrentSession(key))) = session {
        operators.inner.sessions.remove(&key);
    }
    if let Some(Extension(operator)) = operator {
        tracing::info!(operator = %operator.username, "an operator logged out");
    }
    let secure = operators.secure_cookies();
    let mut response = Redirect::to(LOGIN_PATH).into_response();
    response.headers_mut().append(
        header::SET_COOKIE,
        cookie(
            if secure {
                SESSION_SECURE
            } else {
                SESSION_PLAIN
            },
            "",
            secure,
            0,
        ),
    );
    response
}

/// The connection's peer address, when the server records it.
struct Peer(Option<std::net::IpAddr>);

impl<S: Send + Sync> axum::extract::FromRequestParts<S> for Peer {
    type Rejection = std::convert::Infallible;

    async fn from_request_parts(
        parts: &mut http::request::Parts,
        _state: &S,
    ) -> Result<Self, Self::Rejection> {
        Ok(Peer(
            parts
                .extensions
                .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
                .map(|info| info.0.ip()),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(
            safe_next(Some("/board?agency=maros-dp3a")),
            "/board?agency=maros-dp3a"
        );
        for bad in [
            "//evil.example/",
            "/\\evil.example",
            "https://evil.example/",
            "board",
            "/login?next=/",
            "/logout",
            "/a b",
        ] {
            assert_eq!(safe_next(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_next(None), "/");
    }
}
