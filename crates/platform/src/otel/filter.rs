//! What the OpenTelemetry layer sees ([`targets`]), and no debug-level spans
//! (store calls, statements) in requests whose trace the sampler dropped.
//! Such a request would otherwise still build, enter, time and discard a span
//! per store call and per statement: counted with callgrind, that was most of
//! tracing's cost per request at a sampling ratio of 0.1.
//!
//! The sampled check is a global filter ([`SkipUnsampled`]), not part of the
//! OpenTelemetry layer's own: when every per-layer filter turns a span down,
//! the registry still makes it (and our code still names it).

use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Span, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Layer};
use tracing_subscriber::registry::LookupSpan;

use crate::telemetry::{insert_span_data, nearest_span_data};

/// Marks a span (the request's server span) whose trace is not sampled.
struct Unsampled;

/// Notes that `span`'s trace is not sampled, so that no debug-level span is
/// made inside it.
pub(super) fn mark_unsampled(span: &Span) {
    insert_span_data(span, Unsampled);
}

/// A global filter: debug (and trace) spans and events are off inside a
/// request marked unsampled; everything else is left to the layers' filters.
pub struct SkipUnsampled;

impl<S> Layer<S> for SkipUnsampled
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        if *meta.level() < Level::DEBUG {
            Interest::always()
        } else {
            Interest::sometimes()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, cx: Context<'_, S>) -> bool {
        *meta.level() < Level::DEBUG
            || cx
                .lookup_current()
                .is_none_or(|current| nearest_span_data(&current, |_: &Unsampled| ()).is_none())
    }
}

/// What becomes part of a trace: our own spans down to the SQL statements
/// (debug), other crates' from info; never the exporter's own diagnostics
/// (they would feed back into it), the drivers' statement logs (they may
/// hold values) or the per-request "finished" line (the span has it).
pub(super) fn targets() -> Targets {
    Targets::new()
        .with_default(Level::INFO)
        .with_targets([
            ("platform", Level::DEBUG),
            ("user_service", Level::DEBUG),
            ("order_service", Level::DEBUG),
            ("audit_log_service", Level::DEBUG),
            ("microservices", Level::DEBUG),
        ])
        .with_targets([
            ("opentelemetry", Level::ERROR),
            ("sqlx", Level::WARN),
            ("tokio_postgres", Level::WARN),
            ("tower_http", Level::WARN),
            ("async_nats", Level::WARN),
        ])
}
