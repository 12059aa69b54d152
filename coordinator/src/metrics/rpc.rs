//! The tower layer that times every RPC into `hive_rpc_duration_seconds`,
//! labelled by method and gRPC status code. The method label takes only the
//! RPCs the coordinator serves (others are `unknown`), so no caller can
//! grow the label set.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Instant;

use http::{Request, Response};
use tonic::body::Body;
use tower::{Layer, Service};

use super::Metrics;
use crate::auth::rules::{self, Rule};

/// Times each call into [`Metrics`].
#[derive(Debug, Clone)]
pub(crate) struct RpcTimingLayer {
    metrics: Arc<Metrics>,
}

impl RpcTimingLayer {
    /// A layer recording into `metrics`.
    pub(crate) fn new(metrics: Arc<Metrics>) -> Self {
        Self { metrics }
    }
}

impl<S> Layer<S> for RpcTimingLayer {
    type Service = RpcTiming<S>;

    fn layer(&self, inner: S) -> Self::Service {
        RpcTiming { inner, metrics: Arc::clone(&self.metrics) }
    }
}

/// The service [`RpcTimingLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub(crate) struct RpcTiming<S> {
    inner: S,
    metrics: Arc<Metrics>,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> Service<Request<Body>> for RpcTiming<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, request: Request<Body>) -> Self::Future {
        let method = method_label(request.uri().path());
        let metrics = Arc::clone(&self.metrics);
        let started = Instant::now();
        let future = self.inner.call(request);
        Box::pin(async move {
            let response = future.await?;
            let code = response.headers().get("grpc-status").map_or("OK", |value| code_label(value.as_bytes()));
            metrics.rpc(&method, code, started.elapsed().as_secs_f64());
            Ok(response)
        })
    }
}

/// The path of an RPC the coordinator serves; the service alone for health
/// and reflection (whose methods are not checked); `unknown` otherwise.
fn method_label(path: &str) -> String {
    match rules::rule(path) {
        Rule::Roles { roles, .. } if !roles.is_empty() => path.trim_start_matches('/').to_owned(),
        Rule::Open => path.trim_start_matches('/').split('/').next().unwrap_or("unknown").to_owned(),
        Rule::Roles { .. } => "unknown".to_owned(),
    }
}

/// A gRPC status code's name, as the `grpc-status` header carries its number.
fn code_label(value: &[u8]) -> &'static str {
    const NAMES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    std::str::from_utf8(value)
        .ok()
        .and_then(|text| text.parse::<usize>().ok())
        .and_then(|n| NAMES.get(n))
        .copied()
        .unwrap_or("UNKNOWN")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_served_rpcs_get_their_own_label() {
        assert_eq!(method_label("/hive.v1.WorkerService/Claim"), "hive.v1.WorkerService/Claim");
        assert_eq!(method_label("/grpc.health.v1.Health/Whatever"), "grpc.health.v1.Health");
        assert_eq!(method_label("/hive.v1.AdminService/DropEverything"), "unknown");
        assert_eq!(method_label("/x.Y/Z"), "unknown");
    }

    #[test]
    fn status_codes_are_named_and_nonsense_is_unknown() {
        assert_eq!(code_label(b"5"), "NOT_FOUND");
        assert_eq!(code_label(b"16"), "UNAUTHENTICATED");
        assert_eq!(code_label(b"99"), "UNKNOWN");
        assert_eq!(code_label(b"x"), "UNKNOWN");
    }
}
