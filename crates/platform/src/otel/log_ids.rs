//! `trace_id` and `span_id` on every JSON log line inside a request (or an
//! event's consumer span), as flat keys a log search can filter on.
//!
//! The ids are written once, when a request's (or consumer's) span starts, into
//! that span's registry data; each log line copies them from the nearest span
//! that has them. json-subscriber's own `openTelemetry` object would nest them
//! and look them up in the OpenTelemetry layer for every line.

use opentelemetry::trace::SpanContext;
use tracing::{Span, Subscriber};
use tracing_subscriber::registry::LookupSpan;

use crate::telemetry::{insert_span_data, nearest_span_data};

/// The ids a span's log lines carry, formatted once.
struct LogIds {
    trace_id: String,
    span_id: String,
}

/// Notes `span_context`'s trace and span id for `span`'s log lines.
pub(crate) fn remember(span: &Span, span_context: &SpanContext) {
    if span_context.is_valid() {
        insert_span_data(
            span,
            LogIds {
                trace_id: span_context.trace_id().to_string(),
                span_id: span_context.span_id().to_string(),
            },
        );
    }
}

/// Adds `trace_id` and `span_id` to each line `layer` writes inside a span
/// whose ids were remembered.
pub fn add_to<S, W>(layer: &mut json_subscriber::JsonLayer<S, W>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    layer.add_from_span("trace_id", |span| {
        nearest_span_data(span, |ids: &LogIds| ids.trace_id.clone())
    });
    layer.add_from_span("span_id", |span| {
        nearest_span_data(span, |ids: &LogIds| ids.span_id.clone())
    });
}
