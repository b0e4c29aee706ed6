//! The adapter's spans: one per `ReferralService` call, a child of the W3C `traceparent` the
//! agency's system sent, and one per inbox item delivered, a child of the context its writer
//! appended it in. Fields are names, ids and sequences: never a request's content.

use opentelemetry::propagation::Extractor;
use refbus_bus::Item;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The contract's service, as gRPC paths name it.
const SERVICE: &str = "refbus.v1.ReferralService";

/// The span of one gRPC call (tonic's `trace_fn`): it covers the handler, so the append it
/// makes descends from the caller's span. Health checks and reflection get none: probes would
/// bury the calls agencies make.
pub(crate) fn call(request: &http::Request<()>) -> Span {
    let Some(method) = request
        .uri()
        .path()
        .strip_prefix("/")
        .and_then(|path| path.strip_prefix(SERVICE))
        .and_then(|path| path.strip_prefix('/'))
    else {
        return Span::none();
    };
    // The path is the caller's: a name that is not a method name is not copied into traces.
    let method = if !method.is_empty()
        && method.len() <= 64
        && method.bytes().all(|byte| byte.is_ascii_alphanumeric())
    {
        method
    } else {
        "other"
    };
    let span = tracing::info_span!(
        parent: None,
        "adapter.call",
        otel.name = %format!("{SERVICE}/{method}"),
        otel.kind = "server",
        rpc.system = "grpc",
        rpc.service = SERVICE,
        rpc.method = method,
    );
    let parent = opentelemetry::global::get_text_map_propagator(|propagator| {
        propagator.extract(&HttpHeaders(request.headers()))
    });
    // Fails only when no tracer is installed: nothing is traced then anyway.
    let _ = span.set_parent(parent);
    span
}

/// The span of delivering one inbox item to the agency's system, a child of the context the
/// item was written in (`trace`, from its message's headers).
pub(crate) fn delivery(trace: opentelemetry::Context, item: &Item) -> Span {
    let kind = match item {
        Item::Event(_) => "event",
        Item::Notice(_) => "notice",
        Item::Integrity(_) => "integrity",
    };
    let span = tracing::info_span!(
        parent: None,
        "adapter.deliver",
        otel.kind = "consumer",
        refbus.item = kind,
        refbus.stream_seq = item.seq(),
    );
    let _ = span.set_parent(trace);
    span
}

/// gRPC metadata as the propagator reads it.
struct HttpHeaders<'a>(&'a http::HeaderMap);

impl Extractor for HttpHeaders<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0.get(key).and_then(|value| value.to_str().ok())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.keys().map(http::HeaderName::as_str).collect()
    }
}
