//! An OpenTelemetry collector in the test process: it serves OTLP's
//! `TraceService/Export` over real gRPC on loopback and keeps every span it
//! is sent, with the `service.name` of the process that sent it.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use hive_shared::traces::otlp;
use otlp::trace_service_server::{TraceService, TraceServiceServer};
use tokio_stream::wrappers::TcpListenerStream;

/// One span as a collector received it.
#[derive(Debug, Clone)]
pub struct Received {
    /// The sender's `service.name`.
    pub service: String,
    /// The span.
    pub span: otlp::Span,
}

/// A running collector.
#[derive(Debug, Clone)]
pub struct Collector {
    /// Where it listens.
    pub addr: SocketAddr,
    spans: Arc<Mutex<Vec<Received>>>,
}

#[derive(Debug, Clone)]
struct Keep(Arc<Mutex<Vec<Received>>>);

#[tonic::async_trait]
impl TraceService for Keep {
    async fn export(
        &self,
        request: tonic::Request<otlp::ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<otlp::ExportTraceServiceResponse>, tonic::Status> {
        let mut kept = self.0.lock().expect("the collector's spans");
        for resource in request.into_inner().resource_spans {
            let service = resource
                .resource
                .iter()
                .flat_map(|resource| &resource.attributes)
                .find(|attribute| attribute.key == "service.name")
                .and_then(|attribute| match attribute.value.as_ref()?.value.as_ref()? {
                    otlp::any_value::Value::StringValue(name) => Some(name.clone()),
                    _ => None,
                })
                .unwrap_or_default();
            for scope in resource.scope_spans {
                kept.extend(scope.spans.into_iter().map(|span| Received { service: service.clone(), span }));
            }
        }
        Ok(tonic::Response::new(otlp::ExportTraceServiceResponse::default()))
    }
}

impl Collector {
    /// Starts one on 127.0.0.1:0.
    ///
    /// # Panics
    /// When it cannot bind.
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind the collector");
        let addr = listener.local_addr().expect("its address");
        let spans = Arc::new(Mutex::new(Vec::new()));
        let service = TraceServiceServer::new(Keep(Arc::clone(&spans)));
        tokio::spawn(
            tonic::transport::Server::builder()
                .add_service(service)
                .serve_with_incoming(TcpListenerStream::new(listener)),
        );
        Self { addr, spans }
    }

    /// `http://ADDR`, for `OTEL_EXPORTER_OTLP_ENDPOINT`.
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<Received> {
        self.spans.lock().expect("the collector's spans").clone()
    }
}
