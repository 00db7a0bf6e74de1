//! A request's (or an event consumer's) trace context, noted once in its span's
//! registry data when the span starts: `trace_id` and `span_id` on each of its
//! JSON log lines (flat keys a log search can filter on), the whole
//! `traceparent` on the request's answer, and, for a request the sampler
//! dropped, the context its calls pass on and the sign that turns its debug
//! spans off ([`super::sampling`]). json-subscriber's own `openTelemetry`
//! object would nest the ids and look them up in the OpenTelemetry layer for
//! every line.

use json_subscriber::FieldWriter;
use opentelemetry::trace::SpanContext;
use tracing::Span;
use tracing_subscriber::registry::Extensions;

use crate::telemetry::insert_span_data;

/// A span's trace context, with its `traceparent` formatted once: log lines
/// copy their ids out of it, and a request's answer carries it whole.
pub(super) struct TraceIds {
    /// `00-<trace id>-<span id>-<flags>`, ASCII.
    traceparent: [u8; 55],
    pub(super) context: SpanContext,
}

impl TraceIds {
    fn traceparent(&self) -> &str {
        std::str::from_utf8(&self.traceparent).expect("a traceparent is ASCII")
    }
}

/// Notes `span_context` for `span`'s log lines, answer and calls.
pub(crate) fn remember(span: &Span, span_context: &SpanContext) {
    if span_context.is_valid() {
        insert_span_data(
            span,
            TraceIds {
                traceparent: super::propagation::traceparent_bytes(span_context),
                context: span_context.clone(),
            },
        );
    }
}

/// The `traceparent` noted for `span` or the nearest of its parents, and
/// whether that trace is sampled.
pub(crate) fn remembered<R>(span: &Span, read: impl Fn(&str, bool) -> R) -> Option<R> {
    super::sampling::exported_span_data(span, |ids: &TraceIds| {
        read(ids.traceparent(), ids.context.is_sampled())
    })
}

/// Writes `trace_id` and `span_id` into a log line when `extensions` (a span's
/// registry data) hold its noted ids; whether they did.
pub(crate) fn write_ids(extensions: &Extensions<'_>, writer: &mut FieldWriter<'_>) -> bool {
    let Some(ids) = extensions.get::<TraceIds>() else {
        return false;
    };
    let traceparent = ids.traceparent();
    // A field the writer cannot take is left out of the line; the line stays.
    let _ = writer.write_field("trace_id", &traceparent[3..35]);
    let _ = writer.write_field("span_id", &traceparent[36..52]);
    true
}
