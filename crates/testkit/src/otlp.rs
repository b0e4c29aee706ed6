//! An in-process OpenTelemetry collector for trace tests: a tonic server implementing the
//! collector's `TraceService` (OTLP over gRPC, from `opentelemetry-proto`) on a free loopback
//! port, holding every span it receives and the bytes of every export, for a test to check
//! parent links and scan for identity.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use opentelemetry_proto::tonic::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value;
pub use opentelemetry_proto::tonic::trace::v1::Span;

/// A span as the collector received it, with the `service.name` of the process that sent it.
#[derive(Debug, Clone)]
pub struct Received {
    pub service: String,
    pub span: Span,
}

impl Received {
    pub fn name(&self) -> &str {
        &self.span.name
    }

    /// The trace id, lowercase hex as `traceparent` writes it.
    pub fn trace_id(&self) -> String {
        hex(&self.span.trace_id)
    }

    pub fn span_id(&self) -> String {
        hex(&self.span.span_id)
    }

    /// The parent's span id in hex; empty for a root span.
    pub fn parent_id(&self) -> String {
        hex(&self.span.parent_span_id)
    }

    /// An attribute's value as text (strings as they are, other values debug-printed).
    pub fn attribute(&self, key: &str) -> Option<String> {
        let value = self.span.attributes.iter().find(|kv| kv.key == key)?;
        value.value.as_ref()?.value.as_ref().map(text)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

fn text(value: &Value) -> String {
    match value {
        Value::StringValue(text) => text.clone(),
        Value::IntValue(number) => number.to_string(),
        other => format!("{other:?}"),
    }
}

#[derive(Default)]
struct Held {
    spans: Vec<Received>,
    bytes: Vec<u8>,
}

/// The collector. Cloning is cheap: clones share what was received.
#[derive(Clone, Default)]
pub struct Collector {
    held: Arc<Mutex<Held>>,
    arrived: Arc<tokio::sync::Notify>,
}

#[tonic::async_trait]
impl TraceService for Collector {
    async fn export(
        &self,
        request: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let request = request.into_inner();
        {
            let mut held = self.lock();
            held.bytes.extend(prost::Message::encode_to_vec(&request));
            for resource in &request.resource_spans {
                let service = resource
                    .resource
                    .iter()
                    .flat_map(|resource| &resource.attributes)
                    .find(|kv| kv.key == "service.name")
                    .and_then(|kv| kv.value.as_ref()?.value.as_ref())
                    .map(text)
                    .unwrap_or_default();
                for scope in &resource.scope_spans {
                    for span in &scope.spans {
                        held.spans.push(Received {
                            service: service.clone(),
                            span: span.clone(),
                        });
                    }
                }
            }
        }
        self.arrived.notify_waiters();
        Ok(tonic::Response::new(ExportTraceServiceResponse {
            partial_success: None,
        }))
    }
}

impl Collector {
    /// Serves a new collector on a free port of 127.0.0.1, for as long as the runtime runs.
    pub async fn start() -> std::io::Result<(Collector, SocketAddr)> {
        let collector = Collector::default();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let service = TraceServiceServer::new(collector.clone());
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
                .await;
            if let Err(err) = served {
                eprintln!("the test's OTLP collector stopped: {err}");
            }
        });
        Ok((collector, addr))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Held> {
        self.held.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.lock().spans.clone()
    }

    /// The bytes of every export received so far, as sent (protobuf), one after another.
    pub fn bytes(&self) -> Vec<u8> {
        self.lock().bytes.clone()
    }

    /// The spans received once `complete` holds for them; `None` if 30 s pass without a new
    /// export that completes them (exporters send ended spans in batches every few seconds).
    pub async fn wait_for(&self, complete: impl Fn(&[Received]) -> bool) -> Option<Vec<Received>> {
        loop {
            let arrived = self.arrived.notified();
            {
                let held = self.lock();
                if complete(&held.spans) {
                    return Some(held.spans.clone());
                }
            }
            tokio::time::timeout(Duration::from_secs(30), arrived)
                .await
                .ok()?;
        }
    }
}

/// The spans of trace `trace` (hex) among `spans`, by span id.
pub fn of_trace<'a>(spans: &'a [Received], trace: &str) -> HashMap<String, &'a Received> {
    spans
        .iter()
        .filter(|span| span.trace_id() == trace)
        .map(|span| (span.span_id(), span))
        .collect()
}

/// Whether `span` descends from `ancestor` through the parents found in `spans`.
pub fn descends(spans: &HashMap<String, &Received>, span: &Received, ancestor: &Received) -> bool {
    let mut parent = span.parent_id();
    while let Some(next) = spans.get(&parent) {
        if next.span_id() == ancestor.span_id() {
            return true;
        }
        parent = next.parent_id();
    }
    false
}

/// The one span of `spans` named `name` and matching `filter`; panics (naming what it found)
/// unless there is exactly one.
pub fn only<'a>(
    spans: &HashMap<String, &'a Received>,
    name: &str,
    filter: impl Fn(&Received) -> bool,
) -> &'a Received {
    let found: Vec<&'a Received> = spans
        .values()
        .copied()
        .filter(|span| span.name() == name && filter(span))
        .collect();
    assert_eq!(found.len(), 1, "one {name} span expected, found {found:#?}");
    found[0]
}

/// Whether the exported bytes `haystack` hold `needle` anywhere: what the no-identity checks
/// scan for.
pub fn contains(haystack: &[u8], needle: &str) -> bool {
    haystack
        .windows(needle.len())
        .any(|window| window == needle.as_bytes())
}
