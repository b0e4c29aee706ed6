//! The layer every dashboard request passes: it finds who makes the request (a trusted proxy's
//! header, or the session cookie), checks the CSRF token of anything that may change state, and
//! hands the handler an [`Operator`] and a [`CsrfToken`] in the request's extensions. A request
//! with no identity is sent to the login page (a browser's page load) or answered 401 (the live
//! feed, scripts).

use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::task::{Context, Poll};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::response::{IntoResponse, Redirect, Response};
use futures::future::BoxFuture;
use http::{Method, Request, StatusCode, header};
use tower::{Layer, Service};

use crate::access::Operator;
use crate::accounts::Username;
use crate::csrf::{self, CSRF_FIELD, CSRF_HEADER, CsrfToken};
use crate::login::{self, LOGIN_PATH};
use crate::{Operators, session};

/// The largest form body the CSRF check reads (the dashboard's forms are a few fields).
const MAX_FORM_BYTES: usize = 64 * 1024;

/// [`Operators::layer`]: apply it to the whole dashboard router, login routes included (they
/// are let through).
#[derive(Clone)]
pub struct OperatorsLayer {
    operators: Operators,
}

impl OperatorsLayer {
    pub(crate) fn new(operators: Operators) -> OperatorsLayer {
        OperatorsLayer { operators }
    }
}

impl<S> Layer<S> for OperatorsLayer {
    type Service = OperatorsService<S>;

    fn layer(&self, inner: S) -> OperatorsService<S> {
        OperatorsService {
            operators: self.operators.clone(),
            inner,
        }
    }
}

/// The service [`OperatorsLayer`] wraps around the dashboard.
#[derive(Clone)]
pub struct OperatorsService<S> {
    operators: Operators,
    inner: S,
}

impl<S> Service<Request<Body>> for OperatorsService<S>
where
    S: Service<Request<Body>, Response = Response, Error = Infallible> + Clone + Send + 'static,
    S::Future: Send + 'static,
{
    type Response = Response;
    type Error = Infallible;
    type Future = BoxFuture<'static, Result<Response, Infallible>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Infallible>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        // The clone that was driven ready serves this request (tower's rule for cloned services).
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let operators = self.operators.clone();
        Box::pin(async move {
            match operators.admit(request).await {
                Ok(request) => inner.call(request).await,
                Err(response) => Ok(response),
            }
        })
    }
}

/// The trusted proxy named an operator the accounts file does not hold.
pub(crate) struct NoAccount;

/// Who a request is made by, and the CSRF binding of that identity.
pub(crate) struct Identity {
    pub(crate) operator: Operator,
    pub(crate) binding: String,
    /// The session, if the identity is one (logout ends it).
    pub(crate) session: Option<session::SessionKey>,
    pub(crate) end: session::SessionEnd,
}

impl Operators {
    fn is_public(&self, path: &str) -> bool {
        path == LOGIN_PATH
            || self
                .inner
                .config
                .public_prefixes
                .iter()
                .any(|prefix| path.starts_with(prefix.as_str()))
    }

    /// The request with its operator, or the response that refuses it.
    async fn admit(&self, request: Request<Body>) -> Result<Request<Body>, Response> {
        if self.is_public(request.uri().path()) {
            return Ok(request);
        }
        let identity = match self.identify(&request) {
            Ok(Some(identity)) => identity,
            Ok(None) => return Err(unauthenticated(&request)),
            Err(NoAccount) => {
                return Err((
                    StatusCode::FORBIDDEN,
                    "403: your single sign-on account has no refbus dashboard account; ask the \
                     dashboard's administrator\n",
                )
                    .into_response());
            }
        };
        let token = self.inner.csrf.token(&identity.binding);
        let mut request = if changes_state(request.method()) {
            match checked(request, &token).await {
                Some(mut request) => {
                    request.extensions_mut().insert(csrf::Verified);
                    request
                }
                None => {
                    tracing::warn!(operator = %identity.operator.username, "a state-changing request without its CSRF token was refused");
                    return Err(csrf::forbidden());
                }
            }
        } else {
            request
        };
        let extensions = request.extensions_mut();
        extensions.insert(identity.operator);
        extensions.insert(CsrfToken(token));
        extensions.insert(identity.end);
        if let Some(session) = identity.session {
            extensions.insert(login::CurrentSession(session));
        }
        Ok(request)
    }

    /// The request's identity: the trusted proxy's header if the request came from a trusted
    /// proxy and carries it, else the session cookie.
    pub(crate) fn identify<B>(&self, request: &Request<B>) -> Result<Option<Identity>, NoAccount> {
        let accounts = self.accounts();
        if let Some(proxy) = &self.inner.proxy
            && let Some(value) = request.headers().get(&proxy.header)
        {
            if proxy.trusts(peer(request)) {
                let account = value
                    .to_str()
                    .ok()
                    .and_then(|name| Username::new(name.trim().to_ascii_lowercase()).ok())
                    .and_then(|username| accounts.get(&username));
                let Some(account) = account else {
                    tracing::warn!(
                        "the trusted proxy named an operator who has no dashboard account"
                    );
                    return Err(NoAccount);
                };
                return Ok(Some(Identity {
                    binding: format!("proxy:{}", account.username),
                    operator: operator_of(account),
                    session: None,
                    end: session::SessionEnd::never(),
                }));
            }
            // From anyone but the proxy the header is a claim anybody can make: ignored, and
            // the request needs a session like any other.
            tracing::debug!(peer = ?peer(request), "an identity header from an untrusted address was ignored");
        }
        let now = self.now();
        for token in login::session_cookies(request.headers(), self.secure_cookies()) {
            let Some(session) = self.inner.sessions.resolve(token, now) else {
                continue;
            };
            match accounts.get(&session.username) {
                Some(account) if account.password_hash.fingerprint() == session.fingerprint => {
                    return Ok(Some(Identity {
                        binding: format!(
                            "session:{}",
                            data_encoding::HEXLOWER.encode(&session.key)
                        ),
                        operator: operator_of(account),
                        session: Some(session.key),
                        end: session.end,
                    }));
                }
                // The account was removed or its password changed since login.
                _ => self.inner.sessions.remove(&session.key),
            }
        }
        Ok(None)
    }

    pub(crate) fn secure_cookies(&self) -> bool {
        !self.inner.config.insecure_plaintext_cookies
    }
}

fn operator_of(account: &crate::Account) -> Operator {
    Operator {
        username: account.username.clone(),
        agency: account.agency.clone(),
        role: account.role,
    }
}

/// The address the connection came from, if the server records it
/// (`into_make_service_with_connect_info::<SocketAddr>`).
pub(crate) fn peer<B>(request: &Request<B>) -> Option<IpAddr> {
    request
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|ConnectInfo(address)| address.ip())
}

fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// The request if it carries `expected` in the CSRF header or in its urlencoded form body (read
/// and put back for the handler).
async fn checked(request: Request<Body>, expected: &str) -> Option<Request<Body>> {
    if let Some(value) = request.headers().get(CSRF_HEADER) {
        return value
            .to_str()
            .is_ok_and(|submitted| csrf::same(expected, submitted))
            .then_some(request);
    }
    let is_form = request
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return None;
    }
    let (parts, body) = request.into_parts();
    let bytes = axum::body::to_bytes(body, MAX_FORM_BYTES).await.ok()?;
    let submitted = form_urlencoded::parse(&bytes)
        .find(|(name, _)| name == CSRF_FIELD)
        .map(|(_, value)| value.into_owned())?;
    if !csrf::same(expected, &submitted) {
        return None;
    }
    Some(Request::from_parts(parts, Body::from(bytes)))
}

/// No identity: a browser loading a page goes to the login page and comes back afterwards;
/// the live feed and scripts get 401, which they can show as "logged out".
fn unauthenticated<B>(request: &Request<B>) -> Response {
    let wants_html = request
        .headers()
        .get(header::ACCEPT)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|accept| accept.contains("text/html"));
    if wants_html {
        // A form posted after the session ended cannot be replayed: back to the board.
        let next = match *request.method() {
            Method::GET => request
                .uri()
                .path_and_query()
                .map_or("/", |path| path.as_str()),
            _ => "/",
        };
        let target = format!(
            "{LOGIN_PATH}?next={}",
            form_urlencoded::byte_serialize(next.as_bytes()).collect::<String>()
        );
        Redirect::to(&target).into_response()
    } else {
        (
            StatusCode::UNAUTHORIZED,
            [(header::CACHE_CONTROL, "no-store")],
            "401: log in to the dashboard first\n",
        )
            .into_response()
    }
}
