//! The adapter's operations metrics (`refbus_adapter_*`, documented in docs/OPERATIONS.md),
//! in the adapter's own registry, served by [`crate::run`] when `Options::metrics` names an
//! endpoint.
//!
//! gRPC calls are counted by a tower layer in front of every service (so refusals before the
//! service, by the authentication check or the size limit, count too), with the status the
//! client receives: from the response headers (a refusal) or from the trailers at the end of
//! the answer (success, and the end of an inbox stream). Labels are bounded: a method the
//! contract does not name counts as `other`.

use std::collections::HashSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{HeaderMap, Request, Response};
use http_body::{Body, Frame, SizeHint};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use refbus_core::integrity::Problem;
use refbus_metrics::Exposition;
use tower::{Layer, Service};

/// One gRPC call's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Call {
    /// `refbus.v1.ReferralService`, `grpc.health.v1.Health`, or `other`.
    service: String,
    /// The method's name as the contract spells it (`CreateReferral`), or `other`.
    method: String,
    /// The gRPC status code's canonical name (`OK`, `INVALID_ARGUMENT`, ...).
    code: &'static str,
}

/// One integrity failure's labels.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub(crate) struct Integrity {
    problem: &'static str,
}

/// The adapter's metric families. Cloning is cheap (the families are shared).
#[derive(Clone)]
pub(crate) struct Metrics {
    requests: Family<Call, Counter>,
    append_seconds: Histogram,
    inbox_streams: Gauge,
    integrity_failures: Family<Integrity, Counter>,
    stream_unvouched: Gauge,
    /// `/service/method` paths the contract names, for bounded labels.
    known: Arc<HashSet<String>>,
}

impl Metrics {
    /// The families, registered in a new registry labelled with the adapter's agency.
    pub(crate) fn new(agency: &str) -> (Metrics, Registry) {
        let mut registry = Registry::with_prefix_and_labels(
            "refbus_adapter",
            [("agency".into(), agency.to_owned().into())].into_iter(),
        );
        let metrics = Metrics {
            requests: Family::default(),
            append_seconds: refbus_metrics::latency_histogram(),
            inbox_streams: Gauge::default(),
            integrity_failures: Family::default(),
            stream_unvouched: Gauge::default(),
            known: Arc::new(known_methods()),
        };
        registry.register(
            "grpc_requests",
            "gRPC calls answered, by service, method and the status code the client received",
            metrics.requests.clone(),
        );
        registry.register_with_unit(
            "append_duration",
            "Time from handing an event to the bus to JetStream's acknowledgement",
            prometheus_client::registry::Unit::Seconds,
            metrics.append_seconds.clone(),
        );
        registry.register(
            "inbox_streams_open",
            "WatchInbox streams open now (the adapter serves at most max_inbox_streams)",
            metrics.inbox_streams.clone(),
        );
        registry.register(
            "integrity_failures",
            "Records read from the bus that failed refbus's record check, by problem",
            metrics.integrity_failures.clone(),
        );
        registry.register(
            "stream_unvouched",
            "1 while the router's last statement on the events stream refuses it (the stream altered so that it can lose events, or no statement the adapter can believe), 0 otherwise; the adapter goes on serving",
            metrics.stream_unvouched.clone(),
        );
        // A zero series for each problem, so that an alert on `increase` sees the first one.
        for problem in Problem::ALL {
            let _ = metrics.integrity_failures.get_or_create(&Integrity {
                problem: problem.as_str(),
            });
        }
        (metrics, registry)
    }

    /// Counts a record the adapter's verifier refused.
    pub(crate) fn integrity_failure(&self, problem: Problem) {
        self.integrity_failures
            .get_or_create(&Integrity {
                problem: problem.as_str(),
            })
            .inc();
    }

    /// What the adapter's last reading of the router's statement on the stream found.
    pub(crate) fn set_stream_unvouched(&self, unvouched: bool) {
        self.stream_unvouched.set(i64::from(unvouched));
    }

    /// Sets the open inbox streams (read from the adapter's permits before each scrape).
    pub(crate) fn set_inbox_streams(&self, open: usize) {
        self.inbox_streams
            .set(i64::try_from(open).unwrap_or(i64::MAX));
    }

    /// Times `append` (a `Bus::append`) into the append histogram, whatever its outcome.
    /// Boxed: an append's future is large, and it would otherwise sit inline in every
    /// command's future.
    pub(crate) fn time_append<'a, T>(
        &self,
        append: impl Future<Output = T> + Send + 'a,
    ) -> Pin<Box<dyn Future<Output = T> + Send + 'a>> {
        let histogram = self.append_seconds.clone();
        Box::pin(async move {
            let started = Instant::now();
            let outcome = append.await;
            histogram.observe(started.elapsed().as_secs_f64());
            outcome
        })
    }

    fn count(&self, path: &str, code: &'static str) {
        let (service, method) = if self.known.contains(path) {
            let mut parts = path.trim_start_matches('/').splitn(2, '/');
            (
                parts.next().unwrap_or("other").to_owned(),
                parts.next().unwrap_or("other").to_owned(),
            )
        } else {
            ("other".to_owned(), "other".to_owned())
        };
        self.requests
            .get_or_create(&Call {
                service,
                method,
                code,
            })
            .inc();
    }
}

/// The exposition of `registry`, with the open inbox streams (the permits taken) read before
/// each scrape.
pub(crate) fn exposition(
    registry: Registry,
    metrics: &Metrics,
    inbox_streams: &Arc<tokio::sync::Semaphore>,
    options: &crate::Options,
) -> Exposition {
    let metrics = metrics.clone();
    let permits = inbox_streams.clone();
    let limit = options
        .max_inbox_streams
        .min(tokio::sync::Semaphore::MAX_PERMITS);
    Exposition::new(registry).refreshed_by(move || {
        metrics.set_inbox_streams(limit.saturating_sub(permits.available_permits()));
        std::future::ready(())
    })
}

/// Every `/service/method` of the contract and of gRPC health.
fn known_methods() -> HashSet<String> {
    use prost::Message as _;
    let mut known = HashSet::new();
    for set in [
        refbus_proto::FILE_DESCRIPTOR_SET,
        tonic_health::pb::FILE_DESCRIPTOR_SET,
    ] {
        let Ok(set) = prost_types::FileDescriptorSet::decode(set) else {
            continue;
        };
        for file in &set.file {
            for service in &file.service {
                let name = format!("{}.{}", file.package(), service.name());
                for method in &service.method {
                    known.insert(format!("/{name}/{}", method.name()));
                }
            }
        }
    }
    known
}

/// The canonical name of a gRPC status code (as in the gRPC specification).
fn code_name(code: &[u8]) -> &'static str {
    match code {
        b"0" => "OK",
        b"1" => "CANCELLED",
        b"2" => "UNKNOWN",
        b"3" => "INVALID_ARGUMENT",
        b"4" => "DEADLINE_EXCEEDED",
        b"5" => "NOT_FOUND",
        b"6" => "ALREADY_EXISTS",
        b"7" => "PERMISSION_DENIED",
        b"8" => "RESOURCE_EXHAUSTED",
        b"9" => "FAILED_PRECONDITION",
        b"10" => "ABORTED",
        b"11" => "OUT_OF_RANGE",
        b"12" => "UNIMPLEMENTED",
        b"13" => "INTERNAL",
        b"14" => "UNAVAILABLE",
        b"15" => "DATA_LOSS",
        b"16" => "UNAUTHENTICATED",
        _ => "UNKNOWN",
    }
}

fn status_in(headers: &HeaderMap) -> Option<&'static str> {
    headers
        .get("grpc-status")
        .map(|code| code_name(code.as_bytes()))
}

// === impl CountLayer ===

/// Counts every gRPC call by method and final status (see the module documentation).
#[derive(Clone)]
pub(crate) struct CountLayer {
    pub(crate) metrics: Metrics,
}

impl<S> Layer<S> for CountLayer {
    type Service = CountCalls<S>;

    fn layer(&self, inner: S) -> CountCalls<S> {
        CountCalls {
            inner,
            metrics: self.metrics.clone(),
        }
    }
}

#[derive(Clone)]
pub(crate) struct CountCalls<S> {
    inner: S,
    metrics: Metrics,
}

impl<S, B, R> Service<Request<B>> for CountCalls<S>
where
    S: Service<Request<B>, Response = Response<R>>,
    S::Future: Send + 'static,
{
    type Response = Response<Counted<R>>;
    type Error = S::Error;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, S::Error>> + Send>>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), S::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<B>) -> Self::Future {
        let path = request.uri().path().to_owned();
        let metrics = self.metrics.clone();
        let response = self.inner.call(request);
        Box::pin(async move {
            let response = response.await?;
            // A refusal answers with its status in the headers and no body ("trailers only").
            let pending = match status_in(response.headers()) {
                Some(code) => {
                    metrics.count(&path, code);
                    None
                }
                None => Some((metrics, path)),
            };
            Ok(response.map(|body| Counted {
                inner: body,
                pending,
            }))
        })
    }
}

/// A response body that counts its call when the trailers carrying the status pass (or as
/// `CANCELLED` if the answer ends without any: the client went away mid-stream).
pub(crate) struct Counted<B> {
    inner: B,
    /// Set until the call is counted.
    pending: Option<(Metrics, String)>,
}

impl<B> Counted<B> {
    fn settle(&mut self, code: &'static str) {
        if let Some((metrics, path)) = self.pending.take() {
            metrics.count(&path, code);
        }
    }
}

impl<B> Drop for Counted<B> {
    fn drop(&mut self) {
        self.settle("CANCELLED");
    }
}

impl<B: Body + Unpin> Body for Counted<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<B::Data>, B::Error>>> {
        let polled = Pin::new(&mut self.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(code) = frame.trailers_ref().and_then(status_in) {
                    self.settle(code);
                }
            }
            Poll::Ready(Some(Err(_))) => self.settle("INTERNAL"),
            Poll::Ready(None) => self.settle("UNKNOWN"),
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
