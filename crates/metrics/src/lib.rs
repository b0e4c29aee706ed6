//! refbus-metrics: a component's Prometheus metrics, served on `/metrics` over HTTP.
//!
//! Every long-running component (adapter, router, dashboard) owns one
//! [`prometheus_client`] registry (no global registry: two adapters in one process, as
//! `refbus up` runs them, count apart) and serves it with this crate while it runs.
//!
//! # Layout
//!
//! - [`Exposition`]: a component's registry, and what to bring up to date before each scrape
//!   (a value read from elsewhere, such as the router's lag behind the stream).
//! - [`Endpoint`]: where to serve, a socket bound by whoever starts the component (`--metrics-addr`
//!   in a deployment, `127.0.0.1:0` in tests and `refbus up`), so the address is known before
//!   the component runs and nothing races for a port.
//! - [`serve`] and [`spawn`]: a tiny HTTP/1 server (`GET /metrics`, Prometheus text format
//!   0.0.4 with its content type; anything else 404) that stops with the component.
//! - [`latency_histogram`]: the buckets every latency histogram of refbus uses.
//!
//! Adding a component's metrics: build a `Registry::with_prefix("refbus_<component>")`,
//! register its families, wrap it in an [`Exposition`], and [`spawn`] it on the component's
//! [`Endpoint`] inside the component's `run`:
//!
//! ```no_run
//! use refbus_metrics::prometheus_client::metrics::gauge::Gauge;
//! use refbus_metrics::prometheus_client::registry::Registry;
//! # async fn run(endpoint: refbus_metrics::Endpoint) -> std::io::Result<()> {
//! let mut registry = Registry::with_prefix("refbus_dashboard");
//! let boards = Gauge::<i64>::default();
//! registry.register("board_clients_connected", "Boards connected now", boards.clone());
//! let server = refbus_metrics::spawn(refbus_metrics::Exposition::new(registry), &endpoint)?;
//! boards.inc(); // a board connected
//! // ... the component runs ...
//! server.stop().await; // stopped with the component
//! # Ok(())
//! # }
//! ```
//!
//! A component that already serves HTTP may answer `/metrics` itself instead:
//! [`Exposition::render`] gives the body, [`CONTENT_TYPE`] its content type.
//!
//! # Invariant
//!
//! Labels carry registry ids, gRPC method names, codes and levels only: never anything a
//! caller writes freely, and never identity (the e2e test scans a scrape for it).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::Bytes;
use hyper::{Method, Request, Response, StatusCode};
use prometheus_client::encoding::prometheus_text;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;
use tokio::sync::oneshot;
use tokio::task::{JoinHandle, JoinSet};

pub use prometheus_client;

/// The content type of the Prometheus text format, version 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// The path metrics are served on.
pub const PATH: &str = "/metrics";

/// `registry` in the Prometheus text format.
pub fn encode(registry: &Registry) -> String {
    let mut text = String::new();
    // Writing into a `String` cannot fail; a metric's own encoder failing is a bug, and a
    // partial scrape is still better than none.
    if let Err(err) = prometheus_text::encode(&mut text, registry) {
        tracing::error!("encoding metrics: {err}");
    }
    text
}

/// A latency histogram in seconds, with buckets from 1 ms to about 16 s (doubling): wide enough
/// for a JetStream acknowledgement on a quiet machine and for one that waits out its timeout.
pub fn latency_histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 2.0, 15))
}

/// Brings values read from elsewhere up to date just before a scrape.
pub type Refresh =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = ()> + Send + 'static>> + Send + Sync + 'static>;

/// A component's registry and what to refresh before each scrape. Cloning is cheap.
#[derive(Clone)]
pub struct Exposition {
    registry: Arc<Registry>,
    refresh: Option<Refresh>,
}

impl std::fmt::Debug for Exposition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Exposition")
            .field("refresh", &self.refresh.is_some())
            .finish_non_exhaustive()
    }
}

impl Exposition {
    pub fn new(registry: Registry) -> Exposition {
        Exposition {
            registry: Arc::new(registry),
            refresh: None,
        }
    }

    /// Runs `refresh` before every scrape (it should be quick, and bound its own waiting).
    pub fn refreshed_by<F, Fut>(mut self, refresh: F) -> Exposition
    where
        F: Fn() -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.refresh = Some(Arc::new(move || Box::pin(refresh())));
        self
    }

    /// The scrape's body: refreshed, then encoded.
    pub async fn render(&self) -> String {
        if let Some(refresh) = &self.refresh {
            refresh().await;
        }
        encode(&self.registry)
    }
}

/// Where a component serves its metrics: a socket already bound, shared by clones (components'
/// `Options` are `Clone`). It listens from [`Endpoint::bind`] on, so its address can be printed
/// and scraped before the component runs; connections wait until the component serves them.
#[derive(Clone, Debug)]
pub struct Endpoint {
    listener: Arc<std::net::TcpListener>,
}

impl Endpoint {
    /// Binds `address` (port 0: any free port, see [`Endpoint::address`]).
    pub fn bind(address: SocketAddr) -> std::io::Result<Endpoint> {
        Endpoint::from_listener(std::net::TcpListener::bind(address)?)
    }

    pub fn from_listener(listener: std::net::TcpListener) -> std::io::Result<Endpoint> {
        listener.set_nonblocking(true)?;
        Ok(Endpoint {
            listener: Arc::new(listener),
        })
    }

    /// The address bound.
    pub fn address(&self) -> std::io::Result<SocketAddr> {
        self.listener.local_addr()
    }

    /// The URL to scrape.
    pub fn url(&self) -> std::io::Result<String> {
        Ok(format!("http://{}{PATH}", self.address()?))
    }

    /// A tokio listener on the same socket (must be called inside a tokio runtime).
    fn tokio_listener(&self) -> std::io::Result<tokio::net::TcpListener> {
        tokio::net::TcpListener::from_std(self.listener.try_clone()?)
    }
}

/// Serves `exposition` on `endpoint` until `shutdown` completes; scrapes in progress are then
/// dropped (a scrape is one short request; Prometheus tries again at the next interval).
pub async fn serve(
    exposition: Exposition,
    endpoint: &Endpoint,
    shutdown: impl Future<Output = ()> + Send,
) -> std::io::Result<()> {
    let listener = endpoint.tokio_listener()?;
    let mut connections = JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let stream = tokio::select! {
            () = &mut shutdown => break,
            Some(_) = connections.join_next(), if !connections.is_empty() => continue,
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before it was taken.
                    tracing::warn!("metrics: accepting a connection: {err}");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let exposition = exposition.clone();
        connections.spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let exposition = exposition.clone();
                async move { Ok::<_, Infallible>(answer(&exposition, &request).await) }
            });
            let io = hyper_util::rt::TokioIo::new(stream);
            if let Err(err) = hyper::server::conn::http1::Builder::new()
                .serve_connection(io, service)
                .await
            {
                tracing::debug!("metrics: a connection ended: {err}");
            }
        });
    }
    connections.shutdown().await;
    Ok(())
}

/// The answer to one request: the metrics on `GET /metrics`, nothing else.
async fn answer<B>(exposition: &Exposition, request: &Request<B>) -> Response<Full<Bytes>> {
    let (status, content_type, body) = if request.uri().path() != PATH {
        (
            StatusCode::NOT_FOUND,
            "text/plain",
            "not found: metrics are served on /metrics\n".to_owned(),
        )
    } else if request.method() != Method::GET && request.method() != Method::HEAD {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            "text/plain",
            "GET /metrics\n".to_owned(),
        )
    } else {
        (StatusCode::OK, CONTENT_TYPE, exposition.render().await)
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static(content_type),
    );
    response
}

/// [`serve`] in its own task, until [`Server::stop`] (or until dropped).
pub fn spawn(exposition: Exposition, endpoint: &Endpoint) -> std::io::Result<Server> {
    let (stop, stopped) = oneshot::channel();
    // Said now rather than logged later: a socket that cannot be taken over (no runtime, out of
    // file descriptors).
    drop(endpoint.tokio_listener()?);
    let endpoint = endpoint.clone();
    let task = tokio::spawn(async move {
        let shutdown = async move {
            let _ = stopped.await;
        };
        if let Err(err) = serve(exposition, &endpoint, shutdown).await {
            tracing::error!("metrics: the server stopped: {err}");
        }
    });
    Ok(Server {
        stop: Some(stop),
        task,
    })
}

/// What one scrape answered (see [`scrape`]).
#[derive(Debug, Clone)]
pub struct Scrape {
    pub status: u16,
    pub content_type: String,
    pub body: String,
}

/// `GET /metrics` on `address` over a plain HTTP/1.1 connection, as Prometheus does: for tests
/// and scripts, which then see exactly the bytes an operator's Prometheus would.
pub async fn scrape(address: SocketAddr) -> std::io::Result<Scrape> {
    get(address, PATH).await
}

/// `GET path` on `address` (see [`scrape`]).
pub async fn get(address: SocketAddr, path: &str) -> std::io::Result<Scrape> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let invalid =
        |what: &str| std::io::Error::new(std::io::ErrorKind::InvalidData, what.to_owned());
    let mut stream = tokio::net::TcpStream::connect(address).await?;
    let request = format!("GET {path} HTTP/1.1\r\nHost: {address}\r\nConnection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).await?;
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).await?;
    let raw = String::from_utf8(raw).map_err(|_| invalid("the answer is not UTF-8"))?;
    let (head, body) = raw
        .split_once("\r\n\r\n")
        .ok_or_else(|| invalid("no end of headers"))?;
    let mut lines = head.lines();
    let status = lines
        .next()
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| invalid("no status line"))?;
    let content_type = lines
        .filter_map(|line| line.split_once(':'))
        .find(|(name, _)| name.eq_ignore_ascii_case("content-type"))
        .map(|(_, value)| value.trim().to_owned())
        .unwrap_or_default();
    Ok(Scrape {
        status,
        content_type,
        body: body.to_owned(),
    })
}

/// The sum of the samples of `name` in a scrape's body whose labels include every one of
/// `labels` (`None` if there is none). For tests and scripts.
pub fn sample(body: &str, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
    let wanted: Vec<String> = labels
        .iter()
        .map(|(key, value)| format!("{key}=\"{value}\""))
        .collect();
    let mut found = None;
    for line in body.lines().filter(|line| !line.starts_with('#')) {
        let Some((series, value)) = line.rsplit_once(' ') else {
            continue;
        };
        let (series_name, series_labels) = match series.split_once('{') {
            Some((series_name, rest)) => (series_name, rest.trim_end_matches('}')),
            None => (series, ""),
        };
        let have: Vec<&str> = series_labels.split(',').collect();
        if series_name == name && wanted.iter().all(|label| have.contains(&label.as_str())) {
            let value: f64 = value.parse().ok()?;
            found = Some(found.unwrap_or(0.0) + value);
        }
    }
    found
}

/// A metrics server running in its own task; dropping it stops it too.
#[derive(Debug)]
pub struct Server {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
}

impl Server {
    /// Stops serving and waits until the server is gone.
    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = (&mut self.task).await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.task.abort();
    }
}
