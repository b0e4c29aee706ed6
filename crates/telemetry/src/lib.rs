//! refbus-telemetry: logs and traces for every refbus process, set up in one place.
//!
//! [`init`] installs, once per process: logs to stderr (filtered by `REFBUS_LOG`), the W3C
//! trace-context propagator (the bus carries `traceparent` in message headers, the adapter reads
//! it from agency systems' gRPC calls), and an OpenTelemetry tracer behind `tracing`'s spans.
//! Spans are exported over OTLP/gRPC only when an endpoint is configured ([`Settings::otlp`]);
//! otherwise they still get trace and span ids, so trace context flows through the bus, but
//! nothing leaves the process.
//!
//! What is traced (docs/OPERATIONS.md, "Traces"): refbus's own spans at `info` (the adapter's
//! gRPC calls and inbox deliveries, the bus's appends and notices, the router's consumption and
//! firings) and refbus's warnings and errors inside them. No span carries identity: span
//! fields are ids, kinds and sequence numbers, never a request's content.

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_sdk::trace::SdkTracerProvider;
use tracing::Level;
use tracing_subscriber::Layer as _;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// The standard variables that name a collector, most specific first.
pub const ENDPOINT_VARIABLES: [&str; 2] = [
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
];

/// A CA certificate (PEM) an `https://` collector's certificate must chain to, instead of the
/// operating system's roots (the standard variable).
pub const CERTIFICATE_VARIABLE: &str = "OTEL_EXPORTER_OTLP_CERTIFICATE";

/// How a process logs and traces.
#[derive(Debug, Clone)]
pub struct Settings {
    /// OpenTelemetry's `service.name`: one per component (`refbus-adapter`, `refbus-router`...).
    /// `OTEL_SERVICE_NAME`, when set, wins.
    pub service_name: String,
    /// Where to export spans (OTLP over gRPC, e.g. `http://127.0.0.1:4317`); `None`: spans are
    /// not exported.
    pub otlp: Option<String>,
    /// The log filter when `REFBUS_LOG` is not set (`tracing_subscriber::EnvFilter` syntax).
    pub default_log_filter: String,
}

/// The collector named by `flag` (`--otlp-endpoint`), else by the standard variables
/// ([`ENDPOINT_VARIABLES`]); `None` when nothing names one, or `OTEL_SDK_DISABLED=true`.
pub fn endpoint(flag: Option<&str>) -> Option<String> {
    endpoint_from(flag, |name| std::env::var(name).ok())
}

/// [`endpoint`] over any source of variables (tests pass a map).
pub fn endpoint_from(
    flag: Option<&str>,
    variable: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    if variable("OTEL_SDK_DISABLED").is_some_and(|value| value.trim().eq_ignore_ascii_case("true"))
    {
        return None;
    }
    flag.map(str::to_owned)
        .into_iter()
        .chain(ENDPOINT_VARIABLES.iter().filter_map(|name| variable(name)))
        .map(|value| value.trim().to_owned())
        .find(|value| !value.is_empty())
}

/// Checks an endpoint before anything starts: an `http://` or `https://` URL with a host.
pub fn check_endpoint(endpoint: &str) -> Result<(), Error> {
    let invalid = |why: &str| Error::Endpoint(format!("{endpoint}: {why}"));
    let uri: http::Uri = endpoint
        .parse()
        .map_err(|err: http::uri::InvalidUri| invalid(&err.to_string()))?;
    match uri.scheme_str() {
        Some("http" | "https") => {}
        _ => return Err(invalid("give an http:// or https:// URL (OTLP over gRPC)")),
    }
    if uri.host().is_none_or(str::is_empty) {
        return Err(invalid("it names no host"));
    }
    Ok(())
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the OTLP endpoint {0}")]
    Endpoint(String),
    #[error("the OTLP exporter: {0}")]
    Exporter(String),
    #[error("the OTLP exporter's runtime: {0}")]
    Runtime(#[from] std::io::Error),
}

/// The process's tracer. [`Telemetry::shutdown`] (or dropping it) exports what is left.
pub struct Telemetry {
    provider: SdkTracerProvider,
    /// Runs the gRPC channel to the collector, apart from the component's own runtime: the
    /// exporter outlives every runtime a command builds, and a component's busy loop never
    /// delays an export. `None` when nothing is exported.
    runtime: Option<tokio::runtime::Runtime>,
    stopped: bool,
}

impl std::fmt::Debug for Telemetry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Telemetry")
            .field("exporting", &self.exporting())
            .finish()
    }
}

impl Telemetry {
    /// Whether spans are exported.
    pub fn exporting(&self) -> bool {
        self.runtime.is_some()
    }

    /// Exports every span ended so far, now (blocks until the collector answered or the
    /// export timed out).
    pub fn flush(&self) {
        if self.exporting()
            && let Err(err) = self.provider.force_flush()
        {
            tracing::warn!("exporting spans: {err}");
        }
    }

    /// Exports what is left and stops exporting. Blocks: call it as a process ends.
    pub fn shutdown(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        if std::mem::replace(&mut self.stopped, true) {
            return;
        }
        if let Err(err) = self.provider.shutdown_with_timeout(Duration::from_secs(10)) {
            // The process is ending: said on stderr, where its logs go.
            if self.exporting() {
                eprintln!("refbus: exporting the last spans: {err}");
            }
        }
        if let Some(runtime) = self.runtime.take() {
            // Not a blocking drop: this may run inside another runtime (a test's).
            runtime.shutdown_background();
        }
    }
}

impl Drop for Telemetry {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Installs logging and tracing for this process (see the crate's documentation). A second
/// call, or a process that installed its own subscriber first, keeps the first subscriber: its
/// spans are then not exported by this one.
pub fn init(settings: Settings) -> Result<Telemetry, Error> {
    use std::io::IsTerminal as _;

    opentelemetry::global::set_text_map_propagator(
        opentelemetry_sdk::propagation::TraceContextPropagator::new(),
    );
    let mut builder = SdkTracerProvider::builder().with_resource(resource(&settings.service_name));
    let mut runtime = None;
    if let Some(endpoint) = &settings.otlp {
        check_endpoint(endpoint)?;
        let exporting = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name("refbus-otlp")
            .enable_all()
            .build()?;
        // The tonic channel spawns its connection task on the runtime it is built in (entered,
        // not blocked on: `init` may be called inside another runtime, as tests do).
        let exporter = {
            let _entered = exporting.enter();
            exporter(endpoint)?
        };
        builder = builder.with_batch_exporter(exporter);
        runtime = Some(exporting);
    }
    let provider = builder.build();
    let tracer = provider.tracer("refbus");
    opentelemetry::global::set_tracer_provider(provider.clone());

    // refbus's own messages at info; libraries only when something is wrong.
    let log_filter = tracing_subscriber::EnvFilter::try_from_env("REFBUS_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&settings.default_log_filter));
    // Colours only for a person at a terminal: in a log file they are escape-code noise.
    let ansi = std::io::stderr().is_terminal();
    let logs = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(ansi)
        .with_filter(log_filter);
    // Traces have their own filter: a component that logs only warnings (the router beside
    // its activity lines) still traces every span.
    let traces = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_filter(tracing_subscriber::filter::filter_fn(traced));
    let _ = tracing_subscriber::registry()
        .with(logs)
        .with(traces)
        .try_init();
    Ok(Telemetry {
        provider,
        runtime,
        stopped: false,
    })
}

/// What reaches the tracer: refbus's spans at info and above, and its warnings and errors (as
/// span events). Libraries' spans and refbus's chatter stay out of traces.
fn traced(metadata: &tracing::Metadata<'_>) -> bool {
    if !metadata.target().starts_with("refbus") {
        return false;
    }
    let most_detailed = if metadata.is_span() {
        Level::INFO
    } else {
        Level::WARN
    };
    *metadata.level() <= most_detailed
}

fn resource(service_name: &str) -> opentelemetry_sdk::Resource {
    let builder = opentelemetry_sdk::Resource::builder().with_attribute(
        opentelemetry::KeyValue::new("service.version", env!("CARGO_PKG_VERSION")),
    );
    // The standard variable names the service when an operator set it.
    let named = std::env::var("OTEL_SERVICE_NAME").is_ok_and(|name| !name.trim().is_empty());
    if named {
        builder.build()
    } else {
        builder.with_service_name(service_name.to_owned()).build()
    }
}

fn exporter(endpoint: &str) -> Result<opentelemetry_otlp::SpanExporter, Error> {
    use opentelemetry_otlp::{WithExportConfig as _, WithTonicConfig as _};
    let mut builder = opentelemetry_otlp::SpanExporter::builder()
        .with_tonic()
        .with_endpoint(endpoint);
    if endpoint.starts_with("https://") {
        let mut tls = tonic::transport::ClientTlsConfig::new();
        tls = match std::env::var_os(CERTIFICATE_VARIABLE) {
            Some(path) => {
                let pem = std::fs::read(&path).map_err(|err| {
                    Error::Exporter(format!(
                        "reading {CERTIFICATE_VARIABLE} ({}): {err}",
                        std::path::Path::new(&path).display()
                    ))
                })?;
                tls.ca_certificate(tonic::transport::Certificate::from_pem(pem))
            }
            None => tls.with_native_roots(),
        };
        builder = builder.with_tls_config(tls);
    }
    builder
        .build()
        .map_err(|err| Error::Exporter(err.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn from(flag: Option<&str>, variables: &[(&str, &str)]) -> Option<String> {
        endpoint_from(flag, |name| {
            variables
                .iter()
                .find(|(key, _)| *key == name)
                .map(|(_, value)| (*value).to_owned())
        })
    }

    #[test]
    fn export_is_off_unless_an_endpoint_is_named() {
        assert_eq!(from(None, &[]), None);
        assert_eq!(from(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]), None);
        assert_eq!(
            from(None, &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://otel:4317")]).as_deref(),
            Some("http://otel:4317")
        );
        // The traces' own variable is more specific than the general one; the flag wins.
        let both = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://all:4317"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://traces:4317"),
        ];
        assert_eq!(from(None, &both).as_deref(), Some("http://traces:4317"));
        assert_eq!(
            from(Some("http://flag:4317"), &both).as_deref(),
            Some("http://flag:4317")
        );
        let disabled = [
            ("OTEL_SDK_DISABLED", "true"),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://all:4317"),
        ];
        assert_eq!(from(Some("http://flag:4317"), &disabled), None);
    }

    #[test]
    fn an_endpoint_is_an_http_url_with_a_host() {
        assert!(check_endpoint("http://127.0.0.1:4317").is_ok());
        assert!(check_endpoint("https://collector.example:4317").is_ok());
        for bad in ["127.0.0.1:4317", "grpc://x:4317", "http://", "not a url"] {
            assert!(check_endpoint(bad).is_err(), "{bad} was accepted");
        }
    }

    #[test]
    fn only_refbus_spans_and_warnings_are_traced() {
        use tracing::callsite::Identifier;
        use tracing::field::FieldSet;
        use tracing::metadata::Kind;
        struct Site;
        impl tracing::Callsite for Site {
            fn set_interest(&self, _: tracing::subscriber::Interest) {}
            fn metadata(&self) -> &tracing::Metadata<'_> {
                unreachable!()
            }
        }
        static SITE: Site = Site;
        let meta = |target: &'static str, level, kind| {
            tracing::Metadata::new(
                "m",
                target,
                level,
                None,
                None,
                None,
                FieldSet::new(&[], Identifier(&SITE)),
                kind,
            )
        };
        assert!(traced(&meta("refbus_router", Level::INFO, Kind::SPAN)));
        assert!(!traced(&meta("refbus_router", Level::DEBUG, Kind::SPAN)));
        assert!(traced(&meta("refbus_adapter", Level::WARN, Kind::EVENT)));
        assert!(!traced(&meta("refbus_adapter", Level::INFO, Kind::EVENT)));
        assert!(!traced(&meta("h2::codec", Level::ERROR, Kind::SPAN)));
    }
}
