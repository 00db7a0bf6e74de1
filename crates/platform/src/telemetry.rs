//! Structured JSON logs via `tracing`, one line per request carrying its request id
//! (and, when traces are exported, its trace id).

use axum::extract::MatchedPath;
use axum::http::Request;
use json_subscriber::FieldWriter;
use tracing::level_filters::LevelFilter;
use tracing::{Dispatch, Event, Span, Subscriber};
use tracing_subscriber::fmt::MakeWriter;
use tracing_subscriber::layer::Context as LayerContext;
use tracing_subscriber::prelude::*;
use tracing_subscriber::registry::{LookupSpan, Registry, SpanRef};
use tracing_subscriber::{EnvFilter, Layer};

use crate::config::LogFormat;
use crate::otel::OtelLayer;
use crate::otel::sampling::{self, ServerTrace};

/// Installs the global subscriber: JSON lines, or compact lines for a person at a
/// terminal. `RUST_LOG`, when set, overrides `level` (e.g. `RUST_LOG=info,sqlx=debug`).
/// With `otel`, spans are also exported ([`crate::otel`]) and each JSON line
/// inside a request carries its `trace_id` and `span_id`. Calling it twice is harmless.
pub fn init(level: &str, format: LogFormat, otel: Option<OtelLayer>) {
    let filter = log_filter(level);
    let Some(otel) = otel else {
        init_logs_only(filter, format);
        return;
    };
    let log_records = logged_level(&filter);
    if subscriber(filter, format, otel, std::io::stdout)
        .try_init()
        .is_ok()
    {
        keep_log_records_at(log_records);
    }
}

/// The `log` crate's records (tokio-postgres writes several per statement at
/// debug) only as far down as the log or the traces take them: the log's own
/// level, and info for other crates in traces ([`crate::otel`]'s targets).
/// Installing the subscriber sets `log`'s level to the subscriber's lowest,
/// which the traces' debug spans make debug: every such record would then be
/// built and turned down again (counted with callgrind, 7k instructions per GET).
fn keep_log_records_at(log_level: Option<LevelFilter>) {
    let level = match log_level.map(|level| level.max(LevelFilter::INFO)) {
        Some(LevelFilter::OFF) => log::LevelFilter::Off,
        Some(LevelFilter::ERROR) => log::LevelFilter::Error,
        Some(LevelFilter::WARN) => log::LevelFilter::Warn,
        Some(LevelFilter::INFO) => log::LevelFilter::Info,
        Some(LevelFilter::DEBUG) => log::LevelFilter::Debug,
        Some(LevelFilter::TRACE) | None => log::LevelFilter::Trace,
    };
    log::set_max_level(level);
}

/// The most detailed level `filter` lets through.
fn logged_level(filter: &EnvFilter) -> Option<LevelFilter> {
    <EnvFilter as Layer<Registry>>::max_level_hint(filter)
}

/// `RUST_LOG`, or `level` with the drivers' statement logs kept quiet.
pub fn log_filter(level: &str) -> EnvFilter {
    EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| EnvFilter::new(format!("{level},sqlx=warn,tokio_postgres=warn")))
}

/// Logs (to `writer`) and OpenTelemetry spans, each layer with its own filter:
/// the traces keep debug-level spans (the SQL statements) that the log leaves out.
pub fn subscriber<W>(filter: EnvFilter, format: LogFormat, otel: OtelLayer, writer: W) -> Dispatch
where
    W: for<'w> MakeWriter<'w> + Send + Sync + 'static,
{
    let registry = otel.over_registry(logged_level(&filter));
    match format {
        LogFormat::Json => {
            let json = json_layer().with_writer(writer);
            Dispatch::new(registry.with(json.with_filter(filter)))
        }
        LogFormat::Pretty => Dispatch::new(
            registry.with(
                tracing_subscriber::fmt::layer()
                    .compact()
                    .with_target(false)
                    .with_writer(writer)
                    .with_filter(filter),
            ),
        ),
    }
}

fn init_logs_only(filter: EnvFilter, format: LogFormat) {
    match format {
        // json-subscriber writes the same lines as tracing-subscriber's JSON format,
        // but keeps each span's fields as ready JSON instead of re-parsing them for
        // every event: the request line cost a fifth of a GET's instructions before.
        LogFormat::Json => {
            let _ = tracing_subscriber::registry()
                .with(json_layer())
                .with(filter)
                .try_init();
        }
        LogFormat::Pretty => {
            let _ = tracing_subscriber::fmt()
                .compact()
                .with_env_filter(filter)
                .with_target(false)
                .try_init();
        }
    }
}

/// The JSON lines: the current span's fields, the target, and what the spans
/// noted ([`write_noted_fields`]).
fn json_layer<S>() -> json_subscriber::fmt::Layer<S>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let mut layer = json_subscriber::layer()
        .with_current_span(true)
        .with_span_list(false)
        .with_target(true);
    layer
        .inner_layer_mut()
        .add_multiple_dynamic_fields(write_noted_fields);
    layer
}

/// The caller's `sub` and the `trace_id` and `span_id` noted by the nearest
/// spans of `event` that have them, written straight into its line: one walk
/// up the spans, and no copy (json-subscriber's `add_from_span` builds a
/// `serde_json::Value` of each key on every line).
fn write_noted_fields<S>(event: &Event<'_>, ctx: &LayerContext<'_, S>, writer: &mut FieldWriter<'_>)
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let Some(span) = ctx.event_span(event) else {
        return;
    };
    let (mut subject, mut ids) = (false, false);
    for span in span.scope() {
        let extensions = span.extensions();
        if !subject && let Some(Subject(sub)) = extensions.get() {
            // A field the writer cannot take is left out; the line stays.
            let _ = writer.write_field("sub", sub);
            subject = true;
        }
        ids = ids || crate::otel::log_ids::write_ids(&extensions, writer);
        if subject && ids {
            return;
        }
    }
}

/// The caller of a request, for its log lines.
struct Subject(String);

/// Names the verified caller (a token's `sub`, never the token) on every log line
/// of the current request from here on, the request's own line included: a
/// `sub` key beside the span's fields. Kept in the span's registry data rather
/// than recorded as a span field, which would make the JSON layer serialise all
/// of the span's fields again (about 5k instructions per request).
pub fn record_subject(subject: &str) {
    insert_span_data(&Span::current(), Subject(subject.to_owned()));
}

/// Stores `value` in `span`'s registry data (replacing an earlier `T`), where
/// layers keep theirs and log lines and filters can find it
/// ([`nearest_span_data`]). A no-op without a registry.
pub(crate) fn insert_span_data<T: Send + Sync + 'static>(span: &Span, value: T) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(data) = dispatch
            .downcast_ref::<Registry>()
            .and_then(|registry| registry.span(id))
        {
            data.extensions_mut().replace(value);
        }
    });
}

/// `read` of the `T` stored in `span` or the nearest of its parents that has one.
pub(crate) fn nearest_span_data<S, T, R>(span: &SpanRef<'_, S>, read: impl Fn(&T) -> R) -> Option<R>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
    T: 'static,
{
    span.scope()
        .find_map(|span| span.extensions().get::<T>().map(&read))
}

/// The span every request runs in: its fields appear on each log line it emits.
/// When spans are exported and the sampler keeps the request's trace, it is
/// also the OpenTelemetry server span; otherwise it is made where the
/// OpenTelemetry layer does not look ([`crate::otel::sampling`]).
pub fn request_span<B>(service: &'static str) -> impl Fn(&Request<B>) -> Span + Clone {
    move |request: &Request<B>| {
        let route = request
            .extensions()
            .get::<MatchedPath>()
            .map(MatchedPath::as_str);
        let path = route.unwrap_or_else(|| request.uri().path());
        let request_id = request
            .headers()
            .get("x-request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("");
        let method = request.method();
        let unsampled = match sampling::decide(request.headers()) {
            Some(ServerTrace::Sampled(parent)) => {
                let name = crate::otel::server_span_name(method, route);
                let span = tracing::info_span!(
                    "request",
                    service,
                    method = %method,
                    path,
                    request_id,
                    otel.name = name,
                    otel.kind = "server",
                );
                crate::otel::start_server_span(&span, parent, request, route);
                return span;
            }
            Some(ServerTrace::Unsampled(span_context)) => Some(span_context),
            None => None,
        };
        let span = tracing::info_span!(
            target: sampling::UNTRACED_TARGET,
            "request",
            service,
            method = %method,
            path,
            request_id,
        );
        if let Some(span_context) = unsampled {
            crate::otel::log_ids::remember(&span, &span_context);
        }
        span
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use opentelemetry::trace::TraceContextExt;
    use tracing_opentelemetry::OpenTelemetrySpanExt;

    use super::*;
    use crate::otel::TracingSettings;

    /// Log lines collected in memory.
    #[derive(Clone, Default)]
    struct Lines(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Lines {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn each_json_line_in_a_traced_span_names_its_trace_and_span() {
        // Nothing listens there: the exporter's failures are its own business.
        let settings = TracingSettings::from_lookup(&crate::config::pairs(&[(
            "OTEL_EXPORTER_OTLP_ENDPOINT",
            "http://127.0.0.1:9",
        )]))
        .unwrap();
        let (layer, tracing) = crate::otel::layer(&settings, "test").unwrap().unwrap();
        let lines = Lines::default();
        let writer = lines.clone();
        let dispatch = subscriber(EnvFilter::new("info"), LogFormat::Json, layer, move || {
            writer.clone()
        });
        let (trace_id, span_id) = tracing::dispatcher::with_default(&dispatch, || {
            let request = Request::get("/x")
                .header("x-request-id", "r-1")
                .body(())
                .unwrap();
            let span = request_span("test")(&request);
            let _entered = span.enter();
            tracing::info!("inside the request");
            tracing::info_span!("inner").in_scope(|| tracing::info!("deeper"));
            let context = span.context();
            let ids = context.span().span_context().clone();
            (ids.trace_id().to_string(), ids.span_id().to_string())
        });
        drop(tracing);
        let text = String::from_utf8(lines.0.lock().unwrap().clone()).unwrap();
        let line: serde_json::Value = serde_json::from_str(text.lines().next().unwrap()).unwrap();
        assert_eq!(line["fields"]["message"], "inside the request", "{line}");
        assert_eq!(line["trace_id"], trace_id.as_str(), "{line}");
        assert_eq!(line["span_id"], span_id.as_str(), "{line}");
        let deeper: serde_json::Value = serde_json::from_str(text.lines().nth(1).unwrap()).unwrap();
        assert_eq!(deeper["fields"]["message"], "deeper", "{deeper}");
        assert_eq!(deeper["trace_id"], trace_id.as_str(), "{deeper}");
        assert_eq!(line["span"]["request_id"], "r-1", "{line}");
    }

    /// Whether debug spans (a store call, its statement) inside a request span,
    /// whose trace the sampler kept (`ratio` 1.0) or dropped (0.0), are made and
    /// become OpenTelemetry spans of their own.
    fn debug_spans_traced_in_a_request_sampled_at(ratio: &str) -> bool {
        let settings = TracingSettings::from_lookup(&crate::config::pairs(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", ratio),
        ]))
        .unwrap();
        let (layer, tracing) = crate::otel::layer(&settings, "test").unwrap().unwrap();
        let dispatch = subscriber(
            EnvFilter::new("info"),
            LogFormat::Json,
            layer,
            Lines::default,
        );
        let traced = tracing::dispatcher::with_default(&dispatch, || {
            let request = Request::get("/x").body(()).unwrap();
            let span = request_span("test")(&request);
            let _entered = span.enter();
            let store = tracing::debug_span!("store");
            let _in_store = store.enter();
            let sql = tracing::debug_span!("sql");
            let traced = [&store, &sql].map(|s| s.context().span().span_context().is_valid());
            let made = [&store, &sql].map(|s| !s.is_disabled());
            assert_eq!(
                traced, made,
                "a debug span is made exactly when it is traced"
            );
            traced.contains(&true)
        });
        drop(tracing);
        traced
    }

    #[test]
    fn log_records_are_kept_down_to_the_logs_level_and_info_for_the_traces() {
        // The level is process-wide: the other tests of this binary get theirs back.
        let before = log::max_level();
        for (log_level, expected) in [
            (Some(LevelFilter::WARN), log::LevelFilter::Info),
            (Some(LevelFilter::INFO), log::LevelFilter::Info),
            (Some(LevelFilter::DEBUG), log::LevelFilter::Debug),
            (None, log::LevelFilter::Trace),
        ] {
            keep_log_records_at(log_level);
            assert_eq!(log::max_level(), expected, "{log_level:?}");
        }
        log::set_max_level(before);
    }

    #[test]
    fn debug_spans_are_traced_only_in_sampled_traces() {
        assert!(debug_spans_traced_in_a_request_sampled_at("1.0"));
        assert!(!debug_spans_traced_in_a_request_sampled_at("0.0"));
    }
}
