//! `trace_id` and `span_id` on every JSON log line inside a request (or an
//! event's consumer span), as flat keys a log search can filter on.
//!
//! The ids are written once, as a `traceparent`, when a request's (or
//! consumer's) span starts, into that span's registry data; each log line copies
//! them from the nearest span that has them, and the request's answer carries
//! the whole `traceparent`. json-subscriber's own `openTelemetry` object would nest them
//! and look them up in the OpenTelemetry layer for every line.

use opentelemetry::trace::SpanContext;
use tracing::{Span, Subscriber};
use tracing_subscriber::registry::LookupSpan;

use crate::telemetry::{insert_span_data, nearest_span_data};

/// A span's trace context as its `traceparent`, formatted once: its log lines'
/// ids are slices of it, and a request's answer carries it whole.
struct TraceIds {
    traceparent: String,
    sampled: bool,
}

impl TraceIds {
    /// `00-<trace id>-<span id>-<flags>`
    fn trace_id(&self) -> &str {
        &self.traceparent[3..35]
    }

    fn span_id(&self) -> &str {
        &self.traceparent[36..52]
    }
}

/// Notes `span_context` for `span`'s log lines and answer.
pub(crate) fn remember(span: &Span, span_context: &SpanContext) {
    if span_context.is_valid() {
        insert_span_data(
            span,
            TraceIds {
                traceparent: super::propagation::format_traceparent(span_context),
                sampled: span_context.is_sampled(),
            },
        );
    }
}

/// The `traceparent` noted for `span` or the nearest of its parents, and
/// whether that trace is sampled.
pub(crate) fn remembered<R>(span: &Span, read: impl Fn(&str, bool) -> R) -> Option<R> {
    super::sampling::exported_span_data(span, |ids: &TraceIds| read(&ids.traceparent, ids.sampled))
}

/// Adds `trace_id` and `span_id` to each line `layer` writes inside a span
/// whose ids were remembered.
pub fn add_to<S, W>(layer: &mut json_subscriber::JsonLayer<S, W>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    layer.add_from_span("trace_id", |span| {
        nearest_span_data(span, |ids: &TraceIds| ids.trace_id().to_owned())
    });
    layer.add_from_span("span_id", |span| {
        nearest_span_data(span, |ids: &TraceIds| ids.span_id().to_owned())
    });
}
