//! What the OpenTelemetry layer sees: our own spans down to the SQL statements,
//! but the debug-level ones (store functions, statements) only in traces that
//! are sampled. A request whose trace the sampler drops would otherwise still
//! build, enter, time and discard a span per store call and per statement:
//! measured with callgrind, that was most of tracing's cost per request at a
//! sampling ratio of 0.1. The OpenTelemetry layer now never sees them (the
//! registry still makes a bare span when a per-layer filter says no).

use tracing::{Level, Metadata, Span, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::registry::{LookupSpan, Registry};

/// Marks a span (the request's server span) whose trace is not sampled.
struct Unsampled;

/// [`Targets`] for what is traced at all, and the sampled check for debug spans.
pub struct SpanFilter {
    targets: Targets,
}

impl SpanFilter {
    pub(super) fn new() -> Self {
        Self { targets: targets() }
    }
}

impl<S> Filter<S> for SpanFilter
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn enabled(&self, meta: &Metadata<'_>, cx: &Context<'_, S>) -> bool {
        if !Filter::<S>::enabled(&self.targets, meta, cx) {
            return false;
        }
        if *meta.level() < Level::DEBUG {
            // More severe than debug: always part of the trace.
            return true;
        }
        cx.lookup_current().is_none_or(|current| {
            !current
                .scope()
                .any(|span| span.extensions().get::<Unsampled>().is_some())
        })
    }

    fn callsite_enabled(&self, meta: &'static Metadata<'static>) -> tracing::subscriber::Interest {
        let interest = Filter::<S>::callsite_enabled(&self.targets, meta);
        if interest.is_always() && *meta.level() >= Level::DEBUG {
            // Decided per span, by its trace.
            tracing::subscriber::Interest::sometimes()
        } else {
            interest
        }
    }

    fn max_level_hint(&self) -> Option<tracing::level_filters::LevelFilter> {
        Filter::<S>::max_level_hint(&self.targets)
    }
}

/// Notes that `span`'s trace is not sampled, so that its debug-level children
/// are not created. A no-op without a registry (no subscriber installed).
pub(super) fn mark_unsampled(span: &Span) {
    span.with_subscriber(|(id, dispatch)| {
        if let Some(data) = dispatch
            .downcast_ref::<Registry>()
            .and_then(|registry| registry.span(id))
        {
            data.extensions_mut().insert(Unsampled);
        }
    });
}

/// What becomes part of a trace: our own spans down to the SQL statements
/// (debug), other crates' from info; never the exporter's own diagnostics
/// (they would feed back into it), the drivers' statement logs (they may
/// hold values) or the per-request "finished" line (the span has it).
fn targets() -> Targets {
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
