//! The W3C trace context (`traceparent`, `tracestate`) across boundaries: read
//! from incoming requests into the server span, written into outgoing requests
//! and event headers, answered to the client. Every function here is a cheap
//! no-op when no OpenTelemetry layer is installed.

use std::collections::HashMap;

use axum::http::{HeaderMap, HeaderValue, Request};
use axum::response::Response;
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, Status, TraceContextExt};
use opentelemetry_http::{HeaderExtractor, HeaderInjector};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header name of the W3C trace context.
pub const TRACEPARENT: &str = "traceparent";

/// Makes `span` the server span of `request`: the child of the caller's span
/// when the request carries a `traceparent`, else the root of a new trace;
/// named `METHOD route` with the HTTP semantic conventions' attributes.
/// `route` is the matched route template, `None` when no route matched.
///
/// The span starts here (its name and kind must be known by then), so the
/// sampler's decision is known at once: an unsampled request skips the
/// attributes and is marked so that its debug-level spans are not created.
pub fn start_server_span<B>(span: &Span, request: &Request<B>, route: Option<&str>) {
    let parent = if request.headers().contains_key(TRACEPARENT) {
        TraceContextPropagator::new().extract(&HeaderExtractor(request.headers()))
    } else {
        Context::new()
    };
    // Fails when no OpenTelemetry layer exists: then there is nothing to name.
    if span.set_parent(parent).is_err() {
        return;
    }
    let method = request.method().as_str();
    let name = match route {
        Some(route) => format!("{method} {route}"),
        None => method.to_owned(),
    };
    record_name_and_kind(span, &name, "server");
    if !super::log_ids::remember(span).is_sampled() {
        super::filter::mark_unsampled(span);
        return;
    }
    span.set_attribute("http.request.method", method.to_owned());
    span.set_attribute("url.path", request.uri().path().to_owned());
    if let Some(route) = route {
        span.set_attribute("http.route", route.to_owned());
    }
}

/// Records `otel.name` and `otel.kind` in one go: each record makes the JSON
/// log layer serialise the span's fields again.
fn record_name_and_kind(span: &Span, name: &str, kind: &str) {
    let Some(fields) = span.metadata().map(tracing::Metadata::fields) else {
        return;
    };
    let (Some(name_field), Some(kind_field)) =
        (fields.field("otel.name"), fields.field("otel.kind"))
    else {
        return;
    };
    span.record_all(&fields.value_set(&[
        (&name_field, Some(&name as &dyn tracing::Value)),
        (&kind_field, Some(&kind as &dyn tracing::Value)),
    ]));
}

/// Middleware (`map_response`, inside the request span): the status on the
/// server span, an error status for 5xx, and a `traceparent` answer header
/// naming the span, which a client can quote in a bug report.
pub async fn record_server_response(mut response: Response) -> Response {
    let span = Span::current();
    let context = span.context();
    let span_context = context.span().span_context().clone();
    if !span_context.is_valid() {
        return response;
    }
    let status = response.status();
    span.set_attribute("http.response.status_code", i64::from(status.as_u16()));
    if status.is_server_error() {
        span.set_status(Status::error(status.to_string()));
    }
    if let Ok(value) = HeaderValue::from_str(&format_traceparent(&span_context)) {
        response.headers_mut().insert(TRACEPARENT, value);
    }
    response
}

/// Writes `span`'s trace context into `headers` (an outgoing request).
pub fn inject(span: &Span, headers: &mut HeaderMap) {
    let context = span.context();
    if context.span().span_context().is_valid() {
        TraceContextPropagator::new().inject_context(&context, &mut HeaderInjector(headers));
    }
}

/// `span`'s trace context as a `traceparent` value, for what crosses a
/// boundary that has no HTTP headers (the outbox row, the in-process bus).
pub fn traceparent(span: &Span) -> Option<String> {
    let context = span.context();
    let span_context = context.span().span_context().clone();
    span_context
        .is_valid()
        .then(|| format_traceparent(&span_context))
}

/// The parent context a `traceparent` value names (an empty context when it
/// is unreadable, so the span starts a trace of its own).
pub fn context_from_traceparent(value: &str) -> Context {
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), value.to_owned())]);
    TraceContextPropagator::new().extract(&carrier)
}

fn format_traceparent(span_context: &SpanContext) -> String {
    format!(
        "00-{}-{}-{:02x}",
        span_context.trace_id(),
        span_context.span_id(),
        span_context.trace_flags().to_u8()
    )
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
