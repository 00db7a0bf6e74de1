//! Events in the trace of the request that caused them: the outbox row keeps
//! the writer's `traceparent`, the relay publishes in a producer span that is
//! its child and sends the context in the message's `traceparent` header, and
//! each consumer handles the event in a consumer span that is the child of
//! that. Debug-level spans: they exist only when traces are exported.

use std::sync::Arc;

use tracing::Span;

use super::Handler;
use super::consumer::BatchHandler;
use super::outbox::Pending;
use crate::otel::context_from_traceparent;
use opentelemetry::trace::TraceContextExt;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The span the relay publishes `pending` in: the child of the span that
/// wrote it to the outbox, when it was written in a trace.
pub(super) fn publish_span(pending: &Pending) -> Span {
    let span = tracing::debug_span!(
        "publish",
        otel.name = format!("publish {}", pending.subject),
        otel.kind = "producer",
        messaging.system = "nats",
        messaging.operation.type = "send",
        messaging.destination.name = %pending.subject,
        messaging.message.id = %pending.event_id,
    );
    if let Some(parent) = &pending.trace_context
        && !span.is_disabled()
    {
        let _ = span.set_parent(context_from_traceparent(parent));
    }
    span
}

/// The span a consumer handles one event in; `traceparent` is the message's
/// header (NATS), `None` in-process, where the publish span is already current.
pub(super) fn consume_span(
    durable: &str,
    subject: &str,
    event_id: &str,
    traceparent: Option<&str>,
) -> Span {
    let span = tracing::debug_span!(
        "consume",
        otel.name = format!("process {subject}"),
        otel.kind = "consumer",
        messaging.system = "nats",
        messaging.operation.type = "process",
        messaging.destination.name = subject,
        messaging.consumer.group.name = durable,
        messaging.message.id = event_id,
    );
    if let Some(parent) = traceparent
        && !span.is_disabled()
    {
        let _ = span.set_parent(context_from_traceparent(parent));
    }
    if !span.is_disabled() {
        let span_context = span.context().span().span_context().clone();
        crate::otel::log_ids::remember(&span, &span_context);
    }
    span
}

/// `handler` as the in-process bus calls it: each event alone, in a consumer
/// span of `durable`.
pub(super) fn traced_handler(durable: &'static str, handler: BatchHandler) -> Handler {
    Arc::new(move |event| {
        let span = consume_span(durable, &event.subject(), &event.id.to_string(), None);
        handler(vec![(event, span)])
    })
}
