//! OpenTelemetry traces: one trace per task, exported over OTLP/gRPC when
//! the standard `OTEL_*` environment asks for it (off otherwise: nothing is
//! recorded or sent).
//!
//! Ids come from the task itself, so every process derives the same ones
//! with nothing stored or handed on but the task and attempt ids: the trace
//! id is the task id's 16 bytes, the task's root span id its last 8 bytes,
//! and each attempt's span id the last 8 bytes of the attempt id. A trace
//! therefore survives retries on other workers, coordinator restarts and
//! long-lived streams, and a log line's `task_id` is its trace id (without
//! dashes). The context also travels in `Assignment.traceparent`, and the
//! worker hands it to the agent as `TRACEPARENT` (W3C trace context).
//!
//! Spans are recorded after the fact, with their own times, into a bounded
//! queue ([`Tracer::record`] never waits; when the queue is full the span
//! is dropped and counted), and a background task exports them in batches.
//! A collector that is down or slow costs failed exports (logged, at most
//! one line a minute), never a wait on the caller.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::transport::{ClientTlsConfig, Endpoint};
use uuid::Uuid;

use crate::config::Secret;

/// The generated OTLP trace-export messages and service (a subset of OTLP, see `shared/otlp/trace.proto`).
#[allow(missing_docs, unreachable_pub, clippy::all, clippy::pedantic)]
pub mod otlp {
    tonic::include_proto!("opentelemetry.proto.collector.trace.v1");
}

/// A trace id: 16 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceId(pub [u8; 16]);

/// A span id: 8 bytes, never all zero.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SpanId(pub [u8; 8]);

impl SpanId {
    fn from_tail(id: Uuid) -> Self {
        let bytes = id.as_bytes();
        let mut span = [0_u8; 8];
        span.copy_from_slice(&bytes[8..]);
        if span == [0; 8] {
            span[7] = 1;
        }
        Self(span)
    }

    /// A random span id.
    pub fn random() -> Self {
        Self::from_tail(Uuid::new_v4())
    }
}

/// The trace of `task`.
pub fn task_trace(task: Uuid) -> TraceId {
    TraceId(*task.as_bytes())
}

/// The root span of `task`'s trace (its submission).
pub fn task_span(task: Uuid) -> SpanId {
    SpanId::from_tail(task)
}

/// The span of one attempt.
pub fn attempt_span(attempt: Uuid) -> SpanId {
    SpanId::from_tail(attempt)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::with_capacity(bytes.len() * 2), |mut text, byte| {
        let _ = write!(text, "{byte:02x}");
        text
    })
}

/// A W3C `traceparent` value naming `span` of `trace`, sampled.
pub fn traceparent(trace: TraceId, span: SpanId) -> String {
    format!("00-{}-{}-01", hex(&trace.0), hex(&span.0))
}

/// The trace and parent span a `traceparent` value names; `None` when malformed.
pub fn parse_traceparent(value: &str) -> Option<(TraceId, SpanId)> {
    let mut parts = value.trim().split('-');
    let (version, trace, span, _flags) = (parts.next()?, parts.next()?, parts.next()?, parts.next()?);
    if version.len() != 2 || version == "ff" || trace.len() != 32 || span.len() != 16 {
        return None;
    }
    let byte = |text: &str, at: usize| u8::from_str_radix(text.get(at * 2..at * 2 + 2)?, 16).ok();
    let mut trace_id = [0_u8; 16];
    for (at, slot) in trace_id.iter_mut().enumerate() {
        *slot = byte(trace, at)?;
    }
    let mut span_id = [0_u8; 8];
    for (at, slot) in span_id.iter_mut().enumerate() {
        *slot = byte(span, at)?;
    }
    (trace_id != [0; 16] && span_id != [0; 8]).then_some((TraceId(trace_id), SpanId(span_id)))
}

/// An attribute's value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// Text.
    Str(String),
    /// A whole number.
    Int(i64),
    /// True or false.
    Bool(bool),
}

impl From<&str> for Value {
    fn from(text: &str) -> Self {
        Self::Str(text.to_owned())
    }
}

impl From<String> for Value {
    fn from(text: String) -> Self {
        Self::Str(text)
    }
}

impl From<i64> for Value {
    fn from(number: i64) -> Self {
        Self::Int(number)
    }
}

impl From<bool> for Value {
    fn from(flag: bool) -> Self {
        Self::Bool(flag)
    }
}

/// One finished span.
#[derive(Debug, Clone)]
pub struct Span {
    /// Its trace.
    pub trace: TraceId,
    /// Its id.
    pub id: SpanId,
    /// Its parent; none for a trace's root.
    pub parent: Option<SpanId>,
    /// What it is (`hive.attempt`).
    pub name: &'static str,
    /// Server (handling a call), client, consumer (a task taken from the
    /// queue) or internal.
    pub kind: Kind,
    /// When it began.
    pub start: SystemTime,
    /// When it ended.
    pub end: SystemTime,
    /// What else it says.
    pub attributes: Vec<(&'static str, Value)>,
    /// Why it failed, when it did.
    pub error: Option<String>,
}

/// A span's kind, as OTLP has them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Work inside a process.
    Internal,
    /// Handling a call.
    Server,
    /// Making a call, or running a child process.
    Client,
    /// Producing a message (a task submitted).
    Producer,
    /// Consuming one (a task claimed).
    Consumer,
}

/// Where and how spans are exported, from the `OTEL_*` environment.
#[derive(Debug, Clone, PartialEq)]
pub struct ExportConfig {
    /// The collector's OTLP/gRPC endpoint (`http://host:4317`).
    pub endpoint: String,
    /// Metadata sent with each export (`OTEL_EXPORTER_OTLP_HEADERS`);
    /// values are often credentials, so they never appear in logs.
    pub headers: Vec<(String, Secret<String>)>,
    /// Longest wait for an export (`OTEL_EXPORTER_OTLP_TIMEOUT`, ms).
    pub timeout: Duration,
    /// Longest a span waits to be exported (`OTEL_BSP_SCHEDULE_DELAY`, ms).
    pub delay: Duration,
    /// Most spans waiting; more are dropped (`OTEL_BSP_MAX_QUEUE_SIZE`).
    pub max_queue: usize,
    /// Most spans per export (`OTEL_BSP_MAX_EXPORT_BATCH_SIZE`).
    pub max_batch: usize,
    /// `service.name` (`OTEL_SERVICE_NAME`, else the binary's name).
    pub service_name: String,
    /// More resource attributes (`OTEL_RESOURCE_ATTRIBUTES`).
    pub resource: Vec<(String, String)>,
}

impl ExportConfig {
    /// The export the `OTEL_*` variables among `vars` ask for; `None` when
    /// they ask for none (no endpoint and no `OTEL_TRACES_EXPORTER=otlp`,
    /// `OTEL_TRACES_EXPORTER=none`, or `OTEL_SDK_DISABLED=true`).
    ///
    /// # Errors
    /// Every malformed or unsupported setting, each named.
    pub fn from_env(
        service: &str,
        vars: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Option<Self>, Vec<String>> {
        let vars: BTreeMap<String, String> = vars.into_iter().filter(|(key, _)| key.starts_with("OTEL_")).collect();
        let get = |key: &str| vars.get(key).map(|value| value.trim()).filter(|value| !value.is_empty());
        let mut problems = Vec::new();
        if get("OTEL_SDK_DISABLED").is_some_and(|value| value.eq_ignore_ascii_case("true")) {
            return Ok(None);
        }
        let endpoint = get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT").or_else(|| get("OTEL_EXPORTER_OTLP_ENDPOINT"));
        match get("OTEL_TRACES_EXPORTER") {
            Some("none") => return Ok(None),
            Some("otlp") => {}
            None if endpoint.is_none() => return Ok(None),
            None => {}
            Some(other) => problems.push(format!("OTEL_TRACES_EXPORTER={other}: only otlp (or none) is supported")),
        }
        let protocol = get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or_else(|| get("OTEL_EXPORTER_OTLP_PROTOCOL"));
        if let Some(protocol) = protocol.filter(|protocol| *protocol != "grpc") {
            problems.push(format!("OTEL_EXPORTER_OTLP_PROTOCOL={protocol}: only grpc is supported"));
        }
        let endpoint = endpoint.unwrap_or("http://localhost:4317").to_owned();
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://"))
            || Endpoint::from_shared(endpoint.clone()).is_err()
        {
            problems.push(format!("OTEL_EXPORTER_OTLP_ENDPOINT={endpoint}: not an http:// or https:// URL"));
        }
        let mut number = |key: &str, default: u64| match get(key) {
            None => default,
            Some(text) => text.parse().unwrap_or_else(|_| {
                problems.push(format!("{key}={text}: not a whole number"));
                default
            }),
        };
        let timeout = Duration::from_millis(number("OTEL_EXPORTER_OTLP_TIMEOUT", 10_000).max(1));
        let delay = Duration::from_millis(number("OTEL_BSP_SCHEDULE_DELAY", 5_000).max(1));
        let max_queue = usize::try_from(number("OTEL_BSP_MAX_QUEUE_SIZE", 2048)).unwrap_or(2048).max(1);
        let max_batch = usize::try_from(number("OTEL_BSP_MAX_EXPORT_BATCH_SIZE", 512)).unwrap_or(512).max(1);
        let pairs = |key: &str, problems: &mut Vec<String>| -> Vec<(String, String)> {
            let Some(text) = get(key) else { return Vec::new() };
            text.split(',')
                .filter(|pair| !pair.trim().is_empty())
                .filter_map(|pair| match pair.split_once('=') {
                    Some((name, value)) => Some((name.trim().to_owned(), value.trim().to_owned())),
                    None => {
                        problems.push(format!("{key}: {pair:?} is not key=value"));
                        None
                    }
                })
                .collect()
        };
        let mut headers = pairs("OTEL_EXPORTER_OTLP_HEADERS", &mut problems);
        headers.extend(pairs("OTEL_EXPORTER_OTLP_TRACES_HEADERS", &mut problems));
        let headers = headers.into_iter().map(|(name, value)| (name, Secret::new(value))).collect();
        let resource = pairs("OTEL_RESOURCE_ATTRIBUTES", &mut problems);
        let service_name = get("OTEL_SERVICE_NAME")
            .map(str::to_owned)
            .or_else(|| resource.iter().find(|(key, _)| key == "service.name").map(|(_, value)| value.clone()))
            .unwrap_or_else(|| service.to_owned());
        if !problems.is_empty() {
            return Err(problems);
        }
        let config = Self {
            endpoint,
            headers,
            timeout,
            delay,
            max_queue,
            max_batch: max_batch.min(max_queue),
            service_name,
            resource,
        };
        Ok(Some(config))
    }
}

/// Where spans are recorded; cheap to clone.
#[derive(Debug, Clone)]
pub struct Tracer {
    spans: mpsc::Sender<Span>,
    dropped: Arc<AtomicU64>,
}

impl Tracer {
    /// A tracer exporting as `config` says, and the task that exports (run
    /// it until `stop`; it then exports what waits, within the timeout).
    pub fn start(config: ExportConfig, stop: CancellationToken) -> (Self, impl Future<Output = ()> + Send) {
        let (spans, queue) = mpsc::channel(config.max_queue);
        let dropped = Arc::new(AtomicU64::new(0));
        let tracer = Self { spans, dropped: Arc::clone(&dropped) };
        (tracer, export(config, queue, dropped, stop))
    }

    /// Queues `span` for export; drops it when the queue is full.
    pub fn record(&self, span: Span) {
        if self.spans.try_send(span).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// Exports queued spans in batches until `stop`, then what is left.
async fn export(
    config: ExportConfig,
    mut queue: mpsc::Receiver<Span>,
    dropped: Arc<AtomicU64>,
    stop: CancellationToken,
) {
    let mut client = match channel(&config) {
        Ok(channel) => otlp::trace_service_client::TraceServiceClient::new(channel),
        Err(err) => {
            tracing::error!(endpoint = %config.endpoint, error = %err, "cannot export traces to this endpoint");
            return;
        }
    };
    let resource = resource(&config);
    let mut complaint = Complaint::default();
    loop {
        let mut batch = Vec::new();
        let deadline = tokio::time::sleep(config.delay);
        tokio::pin!(deadline);
        let stopping = loop {
            tokio::select! {
                span = queue.recv() => match span {
                    Some(span) => {
                        batch.push(span);
                        if batch.len() >= config.max_batch {
                            break false;
                        }
                    }
                    None => break true,
                },
                () = &mut deadline => break false,
                () = stop.cancelled() => break true,
            }
        };
        if stopping {
            while let Ok(span) = queue.try_recv() {
                batch.push(span);
            }
        }
        for chunk in batch.chunks(config.max_batch) {
            let request = request(&resource, chunk);
            let mut request = tonic::Request::new(request);
            request.set_timeout(config.timeout);
            for (name, value) in &config.headers {
                if let (Ok(name), Ok(value)) = (
                    tonic::metadata::MetadataKey::from_bytes(name.to_ascii_lowercase().as_bytes()),
                    value.expose().parse(),
                ) {
                    request.metadata_mut().insert(name, value);
                }
            }
            let sent = tokio::time::timeout(config.timeout, client.export(request)).await;
            let failure = match sent {
                Ok(Ok(_)) => None,
                Ok(Err(status)) => Some(format!("{:?}: {}", status.code(), status.message())),
                Err(_) => Some(format!("no answer within {:?}", config.timeout)),
            };
            if let Some(failure) = failure {
                complaint.say(&config.endpoint, chunk.len(), &failure);
            }
        }
        let lost = dropped.swap(0, Ordering::Relaxed);
        if lost > 0 {
            complaint.say(&config.endpoint, usize::try_from(lost).unwrap_or(usize::MAX), "the span queue was full");
        }
        if stopping {
            return;
        }
    }
}

/// Logs failed exports at most once a minute.
#[derive(Debug, Default)]
struct Complaint {
    last: Option<Instant>,
    lost: usize,
}

impl Complaint {
    fn say(&mut self, endpoint: &str, spans: usize, why: &str) {
        self.lost += spans;
        if self.last.is_some_and(|last| last.elapsed() < Duration::from_secs(60)) {
            return;
        }
        tracing::warn!(endpoint, spans_lost = self.lost, why, "traces could not be exported; spans were dropped");
        self.last = Some(Instant::now());
        self.lost = 0;
    }
}

fn channel(config: &ExportConfig) -> Result<tonic::transport::Channel, tonic::transport::Error> {
    let mut endpoint = Endpoint::from_shared(config.endpoint.clone())?.connect_timeout(config.timeout);
    if config.endpoint.starts_with("https://") {
        endpoint = endpoint.tls_config(ClientTlsConfig::new().with_native_roots())?;
    }
    Ok(endpoint.connect_lazy())
}

fn resource(config: &ExportConfig) -> otlp::Resource {
    let mut attributes = vec![key_value("service.name", &Value::Str(config.service_name.clone()))];
    attributes.push(key_value("service.version", &Value::Str(crate::VERSION.to_owned())));
    for (key, value) in config.resource.iter().filter(|(key, _)| key != "service.name") {
        attributes.push(key_value(key, &Value::Str(value.clone())));
    }
    otlp::Resource { attributes }
}

fn key_value(key: &str, value: &Value) -> otlp::KeyValue {
    use otlp::any_value::Value as Any;
    let value = match value {
        Value::Str(text) => Any::StringValue(text.clone()),
        Value::Int(number) => Any::IntValue(*number),
        Value::Bool(flag) => Any::BoolValue(*flag),
    };
    otlp::KeyValue { key: key.to_owned(), value: Some(otlp::AnyValue { value: Some(value) }) }
}

fn nanos(time: SystemTime) -> u64 {
    time.duration_since(UNIX_EPOCH).map_or(0, |since| u64::try_from(since.as_nanos()).unwrap_or(u64::MAX))
}

fn request(resource: &otlp::Resource, spans: &[Span]) -> otlp::ExportTraceServiceRequest {
    use otlp::span::SpanKind;
    use otlp::status::StatusCode;
    let spans = spans
        .iter()
        .map(|span| otlp::Span {
            trace_id: span.trace.0.to_vec(),
            span_id: span.id.0.to_vec(),
            parent_span_id: span.parent.map(|parent| parent.0.to_vec()).unwrap_or_default(),
            name: span.name.to_owned(),
            kind: match span.kind {
                Kind::Internal => SpanKind::Internal,
                Kind::Server => SpanKind::Server,
                Kind::Client => SpanKind::Client,
                Kind::Producer => SpanKind::Producer,
                Kind::Consumer => SpanKind::Consumer,
            } as i32,
            start_time_unix_nano: nanos(span.start),
            end_time_unix_nano: nanos(span.end).max(nanos(span.start)),
            attributes: span.attributes.iter().map(|(key, value)| key_value(key, value)).collect(),
            status: Some(match &span.error {
                Some(message) => otlp::Status { message: message.clone(), code: StatusCode::Error as i32 },
                None => otlp::Status { message: String::new(), code: StatusCode::Unset as i32 },
            }),
            flags: 0x0000_0100 | 1,
            trace_state: String::new(),
        })
        .collect();
    let scope = otlp::InstrumentationScope { name: "hive".into(), version: crate::VERSION.into() };
    otlp::ExportTraceServiceRequest {
        resource_spans: vec![otlp::ResourceSpans {
            resource: Some(resource.clone()),
            scope_spans: vec![otlp::ScopeSpans { scope: Some(scope), spans }],
        }],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn vars(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(key, value)| ((*key).to_owned(), (*value).to_owned())).collect()
    }

    #[test]
    fn ids_come_from_the_task_and_round_trip_through_traceparent() {
        let task: Uuid = "0192f1e4-7b5c-7d3e-8a9b-0c1d2e3f4a5b".parse().unwrap();
        let parent = traceparent(task_trace(task), task_span(task));
        assert_eq!(parent, "00-0192f1e47b5c7d3e8a9b0c1d2e3f4a5b-8a9b0c1d2e3f4a5b-01");
        assert_eq!(parse_traceparent(&parent), Some((task_trace(task), task_span(task))));
        for bad in [
            "",
            "00-xyz-abc-01",
            "ff-0192f1e47b5c7d3e8a9b0c1d2e3f4a5b-8a9b0c1d2e3f4a5b-01",
            "00-00000000000000000000000000000000-8a9b0c1d2e3f4a5b-01",
        ] {
            assert_eq!(parse_traceparent(bad), None, "{bad}");
        }
    }

    #[test]
    fn the_environment_turns_export_on_and_names_each_bad_setting() {
        assert_eq!(ExportConfig::from_env("hive-worker", vars(&[])), Ok(None));
        let on = ExportConfig::from_env(
            "hive-worker",
            vars(&[
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4317"),
                ("OTEL_RESOURCE_ATTRIBUTES", "deployment.environment=prod"),
                ("OTEL_EXPORTER_OTLP_HEADERS", "x-api-key=secret"),
            ]),
        )
        .unwrap()
        .unwrap();
        assert_eq!((on.endpoint.as_str(), on.service_name.as_str()), ("http://collector:4317", "hive-worker"));
        assert_eq!(on.headers, [("x-api-key".to_owned(), Secret::new("secret".to_owned()))]);
        assert!(!format!("{on:?}").contains("secret"), "header values stay out of logs: {on:?}");
        let off = vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"), ("OTEL_TRACES_EXPORTER", "none")]);
        assert_eq!(ExportConfig::from_env("w", off), Ok(None));
        let bad = ExportConfig::from_env(
            "w",
            vars(&[
                ("OTEL_TRACES_EXPORTER", "zipkin"),
                ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
                ("OTEL_BSP_SCHEDULE_DELAY", "soon"),
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4317"),
            ]),
        )
        .unwrap_err();
        let said = bad.join("\n");
        for expected in [
            "OTEL_TRACES_EXPORTER=zipkin",
            "OTEL_EXPORTER_OTLP_PROTOCOL=http/json",
            "OTEL_BSP_SCHEDULE_DELAY=soon",
            "collector:4317: not an http",
        ] {
            assert!(said.contains(expected), "{expected} in {said}");
        }
    }
}
