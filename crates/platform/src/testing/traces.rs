//! A real OTLP/HTTP receiver in the test's process, decoding what the
//! exporter sends with `opentelemetry-proto`, and the process-wide tracing
//! subscriber exporting to it.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;
use tokio::sync::oneshot;

use crate::otel::{Tracing, TracingSettings};

/// One span as the receiver got it. Ids are lowercase hex; a root span has
/// an empty `parent_span_id`.
#[derive(Debug, Clone)]
pub struct ReceivedSpan {
    /// The resource's `service.name`.
    pub service: String,
    pub trace_id: String,
    pub span_id: String,
    pub parent_span_id: String,
    pub name: String,
    /// `server`, `client`, `producer`, `consumer` or `internal`.
    pub kind: &'static str,
    pub attributes: BTreeMap<String, String>,
    /// The names of its events.
    pub events: Vec<String>,
}

impl ReceivedSpan {
    pub fn attribute(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Default)]
struct Received {
    requests: usize,
    spans: Vec<ReceivedSpan>,
}

/// An OTLP/HTTP receiver (`POST /v1/traces`, protobuf) on a loopback port,
/// served by a thread of its own, so an exporter that blocks the test's
/// thread while it flushes still gets its answer. Stops when dropped.
pub struct OtlpReceiver {
    address: SocketAddr,
    received: Arc<Mutex<Received>>,
    stop: Option<oneshot::Sender<()>>,
}

impl OtlpReceiver {
    /// # Panics
    /// When no loopback port can be bound.
    pub fn start() -> Self {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a loopback port");
        listener.set_nonblocking(true).expect("non-blocking");
        let address = listener.local_addr().expect("bound");
        let received = Arc::new(Mutex::new(Received::default()));
        let app = Router::new()
            .route("/v1/traces", post(receive))
            .with_state(Arc::clone(&received));
        let (stop, stopped) = oneshot::channel::<()>();
        std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::from_std(listener).expect("listener");
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async move {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Self {
            address,
            received,
            stop: Some(stop),
        }
    }

    /// The base URL, as `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.address)
    }

    /// How many export requests arrived.
    pub fn requests(&self) -> usize {
        self.received.lock().expect("received").requests
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.received.lock().expect("received").spans.clone()
    }

    /// The spans of one trace.
    pub fn trace(&self, trace_id: &str) -> Vec<ReceivedSpan> {
        let mut spans = self.spans();
        spans.retain(|s| s.trace_id == trace_id);
        spans
    }

    /// The spans of `trace_id` once `complete` holds for them, polling for up
    /// to 30 s (spans arrive in batches, after their requests have answered).
    ///
    /// # Panics
    /// When they never do, showing what did arrive.
    pub async fn wait_for_trace(
        &self,
        trace_id: &str,
        complete: impl Fn(&[ReceivedSpan]) -> bool,
    ) -> Vec<ReceivedSpan> {
        let done = super::poll_until(Duration::from_secs(30), || async {
            complete(&self.trace(trace_id))
        })
        .await;
        let spans = self.trace(trace_id);
        assert!(
            done.is_some(),
            "trace {trace_id} incomplete: {:#?}",
            summary(&spans)
        );
        spans
    }
}

impl Drop for OtlpReceiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// `name (kind, service) span <- parent` per span, for failure messages.
pub fn summary(spans: &[ReceivedSpan]) -> Vec<String> {
    spans
        .iter()
        .map(|s| {
            format!(
                "{} ({}, {}) {} <- {} {:?}",
                s.name, s.kind, s.service, s.span_id, s.parent_span_id, s.attributes
            )
        })
        .collect()
}

async fn receive(
    State(received): State<Arc<Mutex<Received>>>,
    body: Bytes,
) -> impl axum::response::IntoResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body) else {
        return (StatusCode::BAD_REQUEST, Vec::new());
    };
    let mut received = received.lock().expect("received");
    received.requests += 1;
    for resource_spans in request.resource_spans {
        let service = resource_spans
            .resource
            .iter()
            .flat_map(|r| &r.attributes)
            .find(|kv| kv.key == "service.name")
            .map(|kv| text(kv.value.as_ref()))
            .unwrap_or_default();
        for span in resource_spans.scope_spans.into_iter().flat_map(|s| s.spans) {
            received.spans.push(ReceivedSpan {
                service: service.clone(),
                trace_id: hex(&span.trace_id),
                span_id: hex(&span.span_id),
                parent_span_id: hex(&span.parent_span_id),
                kind: kind_name(span.kind),
                name: span.name,
                attributes: attributes(&span.attributes),
                events: span.events.into_iter().map(|e| e.name).collect(),
            });
        }
    }
    let answer = ExportTraceServiceResponse::default().encode_to_vec();
    (StatusCode::OK, answer)
}

fn kind_name(kind: i32) -> &'static str {
    match kind {
        2 => "server",
        3 => "client",
        4 => "producer",
        5 => "consumer",
        _ => "internal",
    }
}

fn attributes(values: &[KeyValue]) -> BTreeMap<String, String> {
    values
        .iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The process's receiver, with the production subscriber (JSON logs at
/// `warn`, and the OpenTelemetry layer exporting to the receiver every 50 ms)
/// installed as the global default on first use. For a test binary whose
/// tests are all traced; they tell their spans apart by trace id.
///
/// A subscriber per test (a thread's default) is not enough: `tracing` caches
/// whether a callsite is wanted process-wide, and tests without a subscriber
/// running beside it made some of its spans vanish.
///
/// # Panics
/// When the exporter cannot be built.
pub fn global_receiver() -> &'static OtlpReceiver {
    static GLOBAL: OnceLock<(OtlpReceiver, Tracing)> = OnceLock::new();
    let (receiver, _) = GLOBAL.get_or_init(|| {
        let receiver = OtlpReceiver::start();
        let endpoint = receiver.endpoint();
        let vars = [
            ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint.as_str()),
            ("OTEL_BSP_SCHEDULE_DELAY", "50"),
        ];
        let settings =
            TracingSettings::from_lookup(&crate::config::pairs(&vars)).expect("tracing settings");
        let (layer, exporter) = crate::otel::layer(&settings, "traced-test")
            .expect("exporter")
            .expect("an endpoint is set");
        let dispatch = crate::telemetry::subscriber(
            crate::telemetry::log_filter("warn"),
            crate::config::LogFormat::Json,
            layer,
            std::io::stdout,
        );
        tracing::dispatcher::set_global_default(dispatch).expect("the first subscriber");
        (receiver, exporter)
    });
    receiver
}
