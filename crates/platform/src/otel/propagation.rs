//! The W3C trace context (`traceparent`, `tracestate`) across boundaries: read
//! from incoming requests into the server span, written into outgoing requests
//! and event headers, answered to the client. Every function here is a cheap
//! no-op when no OpenTelemetry layer is installed.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderValue, Method, Request};
use axum::response::Response;
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, Status, TraceContextExt};
use opentelemetry_http::HeaderInjector;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

use super::sampling::unsampled_context;

/// The header name of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// The OpenTelemetry name of a request's server span: `METHOD route`, or the
/// method alone when no route matched.
pub fn server_span_name(method: &Method, route: Option<&str>) -> String {
    match route {
        Some(route) => format!("{method} {route}"),
        None => method.as_str().to_owned(),
    }
}

/// Starts `span`, a sampled request's span (made with its `otel.name` and
/// `otel.kind`), as the server span of `request`: the child of `parent` (the
/// caller's span, or an empty context for a new trace), with the HTTP
/// semantic conventions' attributes. `route` is the matched route template.
pub fn start_server_span<B>(
    span: &Span,
    parent: Context,
    request: &Request<B>,
    route: Option<&str>,
) {
    // Fails when no OpenTelemetry layer exists: then there is nothing to start.
    if span.set_parent(parent).is_err() {
        super::sampling::forget_decided_trace_id();
        return;
    }
    let span_context = span.context().span().span_context().clone();
    super::sampling::forget_decided_trace_id();
    super::log_ids::remember(span, &span_context);
    span.set_attribute("http.request.method", request.method().as_str().to_owned());
    span.set_attribute("url.path", request.uri().path().to_owned());
    if let Some(route) = route {
        span.set_attribute("http.route", route.to_owned());
    }
}

/// Middleware (`map_response`, inside the request span): the status on the
/// server span, an error status for 5xx, and a `traceparent` answer header
/// naming the span, which a client can quote in a bug report.
pub async fn record_server_response(mut response: Response) -> Response {
    // The request span's `traceparent` was formatted when it started ([`super::log_ids`]).
    let span = Span::current();
    let Some((traceparent, sampled)) = super::log_ids::remembered(&span, |traceparent, sampled| {
        (HeaderValue::from_str(traceparent), sampled)
    }) else {
        return response;
    };
    if sampled {
        let status = response.status();
        span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
        if status.is_server_error() {
            span.set_status(Status::error(status.to_string()));
        }
    }
    if let Ok(value) = traceparent {
        response.headers_mut().insert(TRACEPARENT, value);
    }
    response
}

/// Writes `span`'s trace context into `headers` (an outgoing request).
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    if let Some(span_context) = trace_context(span) {
        let context = Context::new().with_remote_span_context(span_context);
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
    }
}

/// `span`'s trace context as a `traceparent` value, for what crosses a
/// boundary that has no HTTP headers (the outbox row, the in-process bus).
pub fn traceparent(span: &Span) -> Option<String> {
    trace_context(span).map(|span_context| format_traceparent(&span_context))
}

/// `span`'s trace context: its OpenTelemetry span's, or, in a request whose
/// trace is not sampled (it has no OpenTelemetry span), the request's own.
fn trace_context(span: &Span) -> Option<SpanContext> {
    traced_context(span).or_else(|| unsampled_context(span))
}

/// The context of `span`'s OpenTelemetry span, if it has one.
fn traced_context(span: &Span) -> Option<SpanContext> {
    let span_context = span.context().span().span_context().clone();
    span_context.is_valid().then_some(span_context)
}

/// The parent context a `traceparent` value names (an empty context when it
/// is unreadable, so the span starts a trace of its own).
pub fn context_from_traceparent(value: &str) -> Context {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), value.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

fn format_traceparent(span_context: &SpanContext) -> String {
    String::from_utf8(traceparent_bytes(span_context).to_vec()).expect("hex digits are ASCII")
}

/// `span_context` as a `traceparent` value's ASCII bytes.
pub(super) fn traceparent_bytes(span_context: &SpanContext) -> [u8; 55] {
    // The ids' bytes as hex straight into one buffer: `format!` through their
    // `LowerHex` took three times the instructions, on every request.
    let mut text = *b"00-00000000000000000000000000000000-0000000000000000-00";
    let flags = [span_context.trace_flags().to_u8()];
    hex::encode_to_slice(span_context.trace_id().to_bytes(), &mut text[3..35])
        .and_then(|()| hex::encode_to_slice(span_context.span_id().to_bytes(), &mut text[36..52]))
        .and_then(|()| hex::encode_to_slice(flags, &mut text[53..55]))
        .expect("each id fits its place");
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_traceparent_reads_back_as_the_same_remote_parent() {
        let value = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let context = context_from_traceparent(value);
        let parent = context.span().span_context().clone();
        assert!(parent.is_valid() && parent.is_remote() && parent.is_sampled());
        assert_eq!(format_traceparent(&parent), value);
        let garbage = context_from_traceparent("00-zz-yy-01");
        assert!(!garbage.span().span_context().is_valid());
    }

    #[test]
    fn without_an_opentelemetry_layer_nothing_is_written() {
        let span = tracing::info_span!("request", otel.name = tracing::field::Empty);
        assert_eq!(traceparent(&span), None);
        let mut headers = HeaderMap::new();
        inject(&span, &mut headers);
        assert!(headers.is_empty());
    }
}
