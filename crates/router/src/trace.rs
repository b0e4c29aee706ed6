//! The router's spans: one per event consumed, a child of the context the event was appended
//! in (its `traceparent`), and one per firing of a referral's timer, a child of the consumption
//! that set the timer while the router still holds that referral's state (otherwise the firing
//! starts a trace of its own). What a firing appends, and the notices sent when the router
//! consumes an escalation, carry these spans' context on. Fields are ids and sequences only.

use opentelemetry::trace::{SpanContext, TraceContextExt as _};
use refbus_bus::Delivery;
use refbus_core::ReferralId;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt as _;

/// The span of consuming `delivery`.
pub(crate) fn consume(delivery: &Delivery) -> Span {
    let span = tracing::info_span!(
        parent: None,
        "router.consume",
        otel.kind = "consumer",
        messaging.system = "nats",
        refbus.stream_seq = delivery.seq,
    );
    // Fails only when no tracer is installed: nothing is traced then anyway.
    let _ = span.set_parent(delivery.trace_context());
    span
}

/// The span of recording what is due on `referral`, a child of `parent` when known.
pub(crate) fn fire(referral: ReferralId, parent: Option<&SpanContext>) -> Span {
    let span = tracing::info_span!(
        parent: None,
        "router.fire",
        refbus.referral_id = %referral,
    );
    if let Some(parent) = parent.filter(|parent| parent.is_valid()) {
        let _ =
            span.set_parent(opentelemetry::Context::new().with_remote_span_context(parent.clone()));
    }
    span
}

/// The current span's context, to parent a later span on (an invalid one when none).
pub(crate) fn current() -> SpanContext {
    Span::current().context().span().span_context().clone()
}
