//! Which requests are traced, decided before a request's span exists, and
//! what a request the sampler dropped still carries.
//!
//! A dropped request gets no OpenTelemetry span at all: its span is made at a
//! callsite the OpenTelemetry layer does not see ([`UNTRACED_TARGET`]); its
//! trace context (the caller's trace id or a new one, a span id of its own,
//! not sampled) is kept in its registry data, for its log lines, its answer's
//! `traceparent` and the calls it makes (so the services it calls drop the
//! trace too); and no debug-level span the traces would take (client calls,
//! statements) is made inside it ([`RequestSampling`] is also a global
//! filter). Counted with callgrind, building, entering, timing and ending
//! spans that were never going to be exported was most of tracing's cost per
//! request at a sampling ratio of 0.1.

use std::cell::Cell;

use axum::http::HeaderMap;
use opentelemetry::Context;
use opentelemetry::propagation::TextMapPropagator;
use opentelemetry::trace::{SpanContext, SpanId, SpanKind, TraceContextExt, TraceFlags, TraceId};
use opentelemetry_http::HeaderExtractor;
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    IdGenerator, RandomIdGenerator, Sampler, SamplingDecision, ShouldSample,
};
use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Level, Metadata, Span, Subscriber};
use tracing_subscriber::filter::Targets;
use tracing_subscriber::layer::{Context as LayerContext, Layer};
use tracing_subscriber::registry::{LookupSpan, Registry};

use super::log_ids::TraceIds;
use super::propagation::TRACEPARENT;
use crate::telemetry::nearest_span_data;

/// The target of a request span that is not traced: the OpenTelemetry layer
/// never sees spans of this target ([`super::targets`]).
pub const UNTRACED_TARGET: &str = "platform::untraced";

/// The sampler's decision for a request, before its span is made.
pub enum ServerTrace {
    /// Traced: the server span continues `parent` (an empty context: a new trace).
    Sampled(Context),
    /// Not traced: the request's own trace context, not sampled.
    Unsampled(SpanContext),
}

thread_local! {
    /// The trace id a new trace was sampled on, for the SDK to start its server
    /// span with ([`DecidedIds`]).
    static DECIDED_TRACE_ID: Cell<Option<TraceId>> = const { Cell::new(None) };
}

/// The SDK's random ids, except that the root span of a request takes the
/// trace id its sampling decision was made on: a ratio sampler decides by the
/// trace id, so a second draw would sample a ratio of the ratio.
#[derive(Debug, Default)]
pub(super) struct DecidedIds(RandomIdGenerator);

impl IdGenerator for DecidedIds {
    fn new_trace_id(&self) -> TraceId {
        DECIDED_TRACE_ID
            .take()
            .unwrap_or_else(|| self.0.new_trace_id())
    }

    fn new_span_id(&self) -> SpanId {
        self.0.new_span_id()
    }
}

/// Drops a decided trace id the SDK did not take (no span was started).
pub(super) fn forget_decided_trace_id() {
    DECIDED_TRACE_ID.set(None);
}

/// A layer that makes the sampling decision for requests ([`decide`]) and, as
/// a global filter, turns the debug (and trace) spans and events of the
/// traces' [`Targets`] off inside a request (or event consumer) whose trace is
/// not sampled, known by its noted trace context ([`super::log_ids`]).
/// Everything else is left to the layers' own filters. Part of the subscriber
/// only when spans are exported.
pub struct RequestSampling {
    traced: Targets,
    /// The most detailed level the logs take (all, when unknown).
    logged: LevelFilter,
    sampler: Sampler,
    ids: RandomIdGenerator,
}

impl RequestSampling {
    /// `traced`: what the OpenTelemetry layer takes; `logged`: the most
    /// detailed level the logs take (`None`: unknown, so any).
    pub(super) fn new(traced: Targets, logged: Option<LevelFilter>, sampler: Sampler) -> Self {
        Self {
            traced,
            logged: logged.unwrap_or(LevelFilter::TRACE),
            sampler,
            ids: RandomIdGenerator::default(),
        }
    }

    fn decide(&self, headers: &HeaderMap) -> ServerTrace {
        let parent = if headers.contains_key(TRACEPARENT) {
            TraceContextPropagator::new().extract(&HeaderExtractor(headers))
        } else {
            Context::new()
        };
        let parent_span = parent.span().span_context().clone();
        let trace_id = if parent_span.is_valid() {
            parent_span.trace_id()
        } else {
            self.ids.new_trace_id()
        };
        let result = self.sampler.should_sample(
            Some(&parent),
            trace_id,
            "request",
            &SpanKind::Server,
            &[],
            &[],
        );
        if result.decision == SamplingDecision::Drop {
            return ServerTrace::Unsampled(SpanContext::new(
                trace_id,
                self.ids.new_span_id(),
                TraceFlags::default(),
                false,
                result.trace_state,
            ));
        }
        if !parent_span.is_valid() {
            DECIDED_TRACE_ID.set(Some(trace_id));
        }
        ServerTrace::Sampled(parent)
    }
}

/// The sampling decision for a request with `headers`: the caller's
/// `traceparent` when it sends one (parent-based samplers follow its sampled
/// flag), else a new trace id and the configured ratio. `None` when spans are
/// not exported.
pub fn decide(headers: &HeaderMap) -> Option<ServerTrace> {
    tracing::dispatcher::get_default(|dispatch| {
        dispatch
            .downcast_ref::<RequestSampling>()
            .map(|sampling| sampling.decide(headers))
    })
}

/// The trace context noted for the untraced request `span` is part of (a
/// disabled span, a debug span such a request did not make, stands for the
/// current span).
pub(super) fn unsampled_context(span: &Span) -> Option<SpanContext> {
    let current;
    let span = if span.is_disabled() {
        current = Span::current();
        &current
    } else {
        span
    };
    exported_span_data(span, |ids: &TraceIds| {
        (!ids.context.is_sampled()).then(|| ids.context.clone())
    })
    .flatten()
}

/// `read` of the `T` noted for `span` or the nearest of its parents, when spans
/// are exported (otherwise nothing is noted, and nothing is looked up).
pub(super) fn exported_span_data<T: 'static, R>(span: &Span, read: impl Fn(&T) -> R) -> Option<R> {
    span.with_subscriber(|(id, dispatch)| {
        if !dispatch.is::<RequestSampling>() {
            return None;
        }
        let registry = dispatch.downcast_ref::<Registry>()?;
        nearest_span_data(&registry.span(id)?, read)
    })
    .flatten()
}

impl<S> Layer<S> for RequestSampling
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    fn register_callsite(&self, meta: &'static Metadata<'static>) -> Interest {
        let level = *meta.level();
        if level < Level::DEBUG {
            Interest::always()
        } else if self.traced.would_enable(meta.target(), &level) {
            // Made or not, depending on the request it comes in.
            Interest::sometimes()
        } else if self.logged < level {
            // Neither traced nor logged (a store's span, with the logs at
            // info): never looked at again. Left to the layers' filters, it
            // would be made and entered for nobody, since per-layer filters
            // that all say no still let a span be made.
            Interest::never()
        } else {
            // The logs' filter decides.
            Interest::always()
        }
    }

    fn enabled(&self, meta: &Metadata<'_>, cx: LayerContext<'_, S>) -> bool {
        // In a request: its noted context first, the targets only when it
        // is unsampled (the walk is the cheaper of the two).
        *meta.level() < Level::DEBUG
            || cx.lookup_current().is_none_or(|current| {
                nearest_span_data(&current, |ids: &TraceIds| ids.context.is_sampled())
                    != Some(false)
            })
            || !self.traced.would_enable(meta.target(), meta.level())
    }
}

#[cfg(test)]
mod tests {
    use axum::http::Request;
    use tracing::Dispatch;
    use tracing_opentelemetry::OpenTelemetrySpanExt;
    use tracing_subscriber::EnvFilter;

    use super::*;
    use crate::config::LogFormat;
    use crate::otel::{TracingSettings, inject, traceparent};
    use crate::telemetry::{request_span, subscriber};

    /// Runs `f` under a subscriber exporting (nowhere) with `sampler` and `ratio`.
    fn with_sampler<R>(sampler: &str, ratio: &str, f: impl FnOnce() -> R) -> R {
        let settings = TracingSettings::from_lookup(&crate::config::pairs(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9"),
            ("OTEL_TRACES_SAMPLER", sampler),
            ("OTEL_TRACES_SAMPLER_ARG", ratio),
        ]))
        .unwrap();
        let (layer, tracing) = crate::otel::layer(&settings, "test").unwrap().unwrap();
        let dispatch: Dispatch = subscriber(
            EnvFilter::new("info"),
            LogFormat::Json,
            layer,
            std::io::sink,
        );
        let result = tracing::dispatcher::with_default(&dispatch, f);
        drop(tracing);
        result
    }

    fn request(traceparent: Option<&str>) -> Request<()> {
        let mut request = Request::get("/x");
        if let Some(value) = traceparent {
            request = request.header(TRACEPARENT, value);
        }
        request.body(()).unwrap()
    }

    /// The trace id, span id and flags of a `traceparent` value.
    fn parts(traceparent: &str) -> (String, String, String) {
        let parts: Vec<&str> = traceparent.split('-').collect();
        (
            parts[1].to_owned(),
            parts[2].to_owned(),
            parts[3].to_owned(),
        )
    }

    #[test]
    fn a_dropped_request_has_no_opentelemetry_span_but_keeps_a_trace_context_it_passes_on() {
        with_sampler("parentbased_traceidratio", "0.0", || {
            let span = request_span("test")(&request(None));
            let _entered = span.enter();
            assert!(
                !span.context().span().span_context().is_valid(),
                "no OpenTelemetry span"
            );
            let own = traceparent(&span).expect("the request's own trace context");
            let (trace_id, _, flags) = parts(&own);
            assert_eq!(flags, "00", "{own}");
            assert_ne!(trace_id, TraceId::INVALID.to_string());

            // A call made from a debug span the request did not make carries
            // the request's context, unsampled, so the callee drops it too.
            let client = tracing::debug_span!("client");
            assert!(client.is_disabled());
            let mut headers = HeaderMap::new();
            inject(&client, &mut headers);
            assert_eq!(headers[TRACEPARENT], own.as_str());
        });
    }

    #[test]
    fn a_callers_unsampled_trace_stays_unsampled_and_keeps_its_trace_id() {
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-00";
        with_sampler("parentbased_always_on", "1.0", || {
            let span = request_span("test")(&request(Some(caller)));
            assert!(!span.context().span().span_context().is_valid());
            let (trace_id, span_id, flags) = parts(&traceparent(&span).unwrap());
            assert_eq!(trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
            assert_ne!(span_id, "00f067aa0ba902b7", "a span id of its own");
            assert_eq!(flags, "00");
        });
    }

    #[test]
    fn a_new_trace_is_sampled_on_the_trace_id_it_carries() {
        let ratio = Sampler::TraceIdRatioBased(0.5);
        let outcomes: Vec<bool> = with_sampler("traceidratio", "0.5", || {
            (0..64)
                .map(|_| {
                    let span = request_span("test")(&request(None));
                    let (trace_id, _, flags) = parts(&traceparent(&span).unwrap());
                    let trace_id = TraceId::from_hex(&trace_id).unwrap();
                    let traced = span.context().span().span_context().clone();
                    let sampled = flags == "01";
                    assert_eq!(
                        traced.is_valid(),
                        sampled,
                        "an OpenTelemetry span iff sampled"
                    );
                    if sampled {
                        assert!(traced.is_sampled());
                        assert_eq!(traced.trace_id(), trace_id);
                    }
                    let expected =
                        ratio.should_sample(None, trace_id, "request", &SpanKind::Server, &[], &[]);
                    assert_eq!(
                        expected.decision == SamplingDecision::RecordAndSample,
                        sampled,
                        "the ratio's decision for {trace_id}"
                    );
                    sampled
                })
                .collect()
        });
        assert!(outcomes.contains(&true) && outcomes.contains(&false));
    }
}
