//! OpenTelemetry traces: the `tracing` spans of a process exported over OTLP
//! (HTTP/protobuf), configured by the standard `OTEL_*` variables.
//!
//! Without an endpoint (or with `OTEL_SDK_DISABLED=true`) no OpenTelemetry layer
//! exists at all: spans stay what they were, log context, and cost what they did.
//! With one, a [`tracing_opentelemetry`] layer turns spans into OpenTelemetry
//! spans, sampled by the configured sampler, batched and sent by the SDK's batch
//! processor from its own thread with a blocking HTTP client (no async runtime
//! is needed there, and a slow collector never holds up a request).
//!
//! [`propagation`] carries the W3C trace context across every boundary: HTTP
//! requests in and out, and events through the outbox and the bus.

pub(crate) mod log_ids;
pub mod propagation;
pub mod sampling;

use std::time::Duration;

use opentelemetry::trace::TracerProvider as _;
use opentelemetry_otlp::{Protocol, WithExportConfig};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracer, SdkTracerProvider,
};
use tracing::Level;
use tracing::level_filters::LevelFilter;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::{Filtered, Targets};
use tracing_subscriber::layer::{Layered, SubscriberExt};
use tracing_subscriber::registry::Registry;

use crate::config::{ConfigError, Env, Lookup};
use sampling::{DecidedIds, RequestSampling};

pub use propagation::{
    context_from_traceparent, inject, record_server_response, server_span_name, start_server_span,
    traceparent,
};

/// The tracing layer with its filter, and the requests' sampling: put over
/// the registry by [`OtelLayer::over_registry`], once the logs' level is known.
pub struct OtelLayer {
    traces:
        Filtered<tracing_opentelemetry::OpenTelemetryLayer<Registry, SdkTracer>, Targets, Registry>,
    /// What `traces` takes, for the sampling filter.
    traced: Targets,
    sampler: Sampler,
}

/// The registry with the tracing layer and the requests' sampling.
pub(crate) type TracedRegistry = Layered<
    RequestSampling,
    Layered<
        Filtered<tracing_opentelemetry::OpenTelemetryLayer<Registry, SdkTracer>, Targets, Registry>,
        Registry,
    >,
>;

impl OtelLayer {
    /// The registry with both, for logs that go down to `logged` at most.
    pub(crate) fn over_registry(self, logged: Option<LevelFilter>) -> TracedRegistry {
        tracing_subscriber::registry()
            .with(self.traces)
            .with(RequestSampling::new(self.traced, logged, self.sampler))
    }
}

/// How traces are exported, from the standard variables (read once, at start).
#[derive(Debug, Clone, PartialEq)]
pub struct TracingSettings {
    /// The OTLP/HTTP traces URL: `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` as given,
    /// else `OTEL_EXPORTER_OTLP_ENDPOINT` + `/v1/traces`. `None`: no tracing.
    pub endpoint: Option<String>,
    /// `OTEL_SERVICE_NAME`; the binary's name when unset.
    pub service_name: Option<String>,
    /// `OTEL_TRACES_SAMPLER` / `OTEL_TRACES_SAMPLER_ARG`.
    pub sampling: Sampling,
    /// `OTEL_BSP_SCHEDULE_DELAY` (milliseconds): how long spans wait in the batch.
    pub batch_delay: Duration,
}

/// Which traces are kept: a ratio of new traces, and whether a caller's
/// decision (the sampled flag of its `traceparent`) wins.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sampling {
    pub parent_based: bool,
    pub ratio: f64,
}

impl Default for Sampling {
    fn default() -> Self {
        Self {
            parent_based: true,
            ratio: 1.0,
        }
    }
}

const SAMPLERS: [&str; 6] = [
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
];

impl TracingSettings {
    /// Reads the `OTEL_*` variables through `lookup`.
    ///
    /// # Errors
    /// A [`ConfigError`] naming the variable: an endpoint that is not an
    /// `http(s)://` URL, a protocol other than `http/protobuf`, an unknown
    /// sampler or a ratio outside 0..=1.
    pub fn from_lookup(lookup: Lookup<'_>) -> Result<Self, ConfigError> {
        let env = Env::new("", lookup);
        let disabled = env.choice_or("OTEL_SDK_DISABLED", &["true", "false"], "false")? == "true"
            || env.raw("OTEL_TRACES_EXPORTER").as_deref() == Some("none");
        // Only OTLP over HTTP/protobuf is built in; a wrong protocol fails at start.
        env.choice_or(
            "OTEL_EXPORTER_OTLP_PROTOCOL",
            &["http/protobuf"],
            "http/protobuf",
        )?;
        env.choice_or(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            &["http/protobuf"],
            "http/protobuf",
        )?;
        let endpoint = match (
            env.raw("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"),
            env.raw("OTEL_EXPORTER_OTLP_ENDPOINT"),
        ) {
            _ if disabled => None,
            (Some(traces), _) => Some(http_url(
                &env,
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                traces,
            )?),
            (None, Some(base)) => Some(format!(
                "{}/v1/traces",
                http_url(&env, "OTEL_EXPORTER_OTLP_ENDPOINT", base)?.trim_end_matches('/')
            )),
            (None, None) => None,
        };
        Ok(Self {
            endpoint,
            service_name: env.raw("OTEL_SERVICE_NAME").map(|s| s.trim().to_owned()),
            sampling: sampling(&env)?,
            batch_delay: env.millis_or("OTEL_BSP_SCHEDULE_DELAY", 5_000)?,
        })
    }

    /// Whether spans are exported at all.
    pub fn exporting(&self) -> bool {
        self.endpoint.is_some()
    }
}

impl Default for TracingSettings {
    fn default() -> Self {
        Self {
            endpoint: None,
            service_name: None,
            sampling: Sampling::default(),
            batch_delay: Duration::from_secs(5),
        }
    }
}

fn http_url(env: &Env<'_>, variable: &str, value: String) -> Result<String, ConfigError> {
    let value = value.trim().to_owned();
    if value.starts_with("http://") || value.starts_with("https://") {
        Ok(value)
    } else {
        Err(env.invalid(
            variable,
            &value,
            "must be an http:// URL (OTLP over HTTP/protobuf, e.g. http://otel-collector:4318)",
        ))
    }
}

fn sampling(env: &Env<'_>) -> Result<Sampling, ConfigError> {
    let name = env.choice_or("OTEL_TRACES_SAMPLER", &SAMPLERS, "parentbased_always_on")?;
    let ratio = match name.trim_start_matches("parentbased_") {
        "always_on" => 1.0,
        "always_off" => 0.0,
        _ => {
            let ratio: f64 = env.parse_or("OTEL_TRACES_SAMPLER_ARG", 1.0)?;
            if !(0.0..=1.0).contains(&ratio) {
                return Err(env.invalid(
                    "OTEL_TRACES_SAMPLER_ARG",
                    &ratio.to_string(),
                    "must be a ratio between 0 and 1",
                ));
            }
            ratio
        }
    };
    Ok(Sampling {
        parent_based: name.starts_with("parentbased_"),
        ratio,
    })
}

impl Sampling {
    fn sampler(self) -> Sampler {
        let root = if self.ratio >= 1.0 {
            Sampler::AlwaysOn
        } else if self.ratio <= 0.0 {
            Sampler::AlwaysOff
        } else {
            Sampler::TraceIdRatioBased(self.ratio)
        };
        if self.parent_based {
            Sampler::ParentBased(Box::new(root))
        } else {
            root
        }
    }
}

/// The exporting side of tracing, alive for as long as spans may be exported:
/// dropping it sends what is still queued and stops the exporter.
pub struct Tracing {
    provider: SdkTracerProvider,
}

impl Tracing {
    /// Sends every finished span now (tests, and before exit).
    pub fn flush(&self) {
        if let Err(err) = self.provider.force_flush() {
            tracing::warn!(error = %err, "spans could not be flushed");
        }
    }
}

impl Drop for Tracing {
    fn drop(&mut self) {
        let _ = self.provider.shutdown();
    }
}

impl std::fmt::Debug for Tracing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tracing")
    }
}

/// The OpenTelemetry layer and its exporter, or `None` when `settings` export
/// nothing. `default_name` is the `service.name` unless `OTEL_SERVICE_NAME` is set.
///
/// # Errors
/// When the exporter cannot be built (its HTTP client).
pub fn layer(
    settings: &TracingSettings,
    default_name: &str,
) -> anyhow::Result<Option<(OtelLayer, Tracing)>> {
    let Some(endpoint) = &settings.endpoint else {
        return Ok(None);
    };
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .with_protocol(Protocol::HttpBinary)
        .with_endpoint(endpoint)
        .with_timeout(Duration::from_secs(10))
        .build()?;
    let batch = BatchConfigBuilder::default()
        .with_scheduled_delay(settings.batch_delay)
        .build();
    let name = settings.service_name.as_deref().unwrap_or(default_name);
    let provider = SdkTracerProvider::builder()
        .with_span_processor(
            BatchSpanProcessor::builder(exporter)
                .with_batch_config(batch)
                .build(),
        )
        .with_sampler(settings.sampling.sampler())
        .with_id_generator(DecidedIds::default())
        .with_resource(
            Resource::builder()
                .with_service_name(name.to_owned())
                .build(),
        )
        .build();
    let tracer = provider.tracer("platform");
    let traced = targets();
    // Source locations, thread names and busy/idle times would add attributes
    // to every span; the span names and fields already say where it was.
    // Nothing reads OpenTelemetry's current context (spans find their parent
    // through `tracing`), so entering a span need not attach one: that cost a
    // context clone and a thread-local push and pop at every poll of a request.
    let layer = tracing_opentelemetry::layer()
        .with_tracer(tracer)
        .with_location(false)
        .with_threads(false)
        .with_tracked_inactivity(false)
        .with_level(false)
        .with_target(false)
        .with_context_activation(false)
        .with_filter(traced.clone());
    Ok(Some((
        OtelLayer {
            traces: layer,
            traced,
            sampler: settings.sampling.sampler(),
        },
        Tracing { provider },
    )))
}

/// What becomes part of a trace: our own spans down to the SQL statements
/// (debug), other crates' from info; never a request the sampler dropped, the
/// exporter's own diagnostics (they would feed back into it), the drivers'
/// statement logs (they may hold values) or the per-request "finished" line
/// (the span has it).
fn targets() -> Targets {
    let ours = [
        "platform",
        "user_service",
        "order_service",
        "audit_log_service",
        "microservices",
    ];
    let quiet = [
        ("opentelemetry", Level::ERROR),
        ("sqlx", Level::WARN),
        ("tokio_postgres", Level::WARN),
        ("tower_http", Level::WARN),
        ("async_nats", Level::WARN),
    ];
    // The stores' function spans (debug, for a log at debug) would only wrap
    // the spans of their statements, which the trace keeps: each costs as much
    // to build and export as a statement's.
    let stores = [
        "user_service::store",
        "order_service::store",
        "audit_log_service::store",
    ];
    Targets::new()
        .with_default(Level::INFO)
        .with_targets(ours.map(|target| (target, Level::DEBUG)))
        .with_targets(stores.map(|target| (target, Level::INFO)))
        .with_targets(quiet)
        .with_target(sampling::UNTRACED_TARGET, LevelFilter::OFF)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(vars: &[(&str, &str)]) -> Result<TracingSettings, ConfigError> {
        TracingSettings::from_lookup(&crate::config::pairs(vars))
    }

    #[test]
    fn nothing_is_exported_without_an_endpoint_or_when_disabled() {
        assert!(!read(&[]).unwrap().exporting());
        let disabled = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ])
        .unwrap();
        assert!(!disabled.exporting());
        assert!(layer(&disabled, "svc").unwrap().is_none());
    }

    #[test]
    fn the_base_endpoint_gets_the_traces_path_and_the_signal_endpoint_is_kept() {
        let base = read(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/")]).unwrap();
        assert_eq!(
            base.endpoint.as_deref(),
            Some("http://collector:4318/v1/traces")
        );
        let traces = read(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://ignored:4318"),
            ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://c:4318/custom"),
        ])
        .unwrap();
        assert_eq!(traces.endpoint.as_deref(), Some("http://c:4318/custom"));
    }

    #[test]
    fn samplers_follow_the_specification_names() {
        let ratio = read(&[
            ("OTEL_TRACES_SAMPLER", "parentbased_traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.1"),
        ])
        .unwrap();
        assert_eq!(
            ratio.sampling,
            Sampling {
                parent_based: true,
                ratio: 0.1
            }
        );
        let off = read(&[("OTEL_TRACES_SAMPLER", "always_off")]).unwrap();
        assert_eq!(
            off.sampling,
            Sampling {
                parent_based: false,
                ratio: 0.0
            }
        );
        assert_eq!(read(&[]).unwrap().sampling, Sampling::default());
    }

    #[test]
    fn bad_values_name_their_variable() {
        for (vars, variable) in [
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317")][..],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")][..],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
            ),
            (
                &[("OTEL_TRACES_SAMPLER", "sometimes")][..],
                "OTEL_TRACES_SAMPLER",
            ),
            (
                &[
                    ("OTEL_TRACES_SAMPLER", "traceidratio"),
                    ("OTEL_TRACES_SAMPLER_ARG", "1.5"),
                ][..],
                "OTEL_TRACES_SAMPLER_ARG",
            ),
            (&[("OTEL_SDK_DISABLED", "yes")][..], "OTEL_SDK_DISABLED"),
        ] {
            assert_eq!(read(vars).unwrap_err().variable, variable, "{vars:?}");
        }
    }
}
