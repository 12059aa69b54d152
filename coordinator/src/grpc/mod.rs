//! The gRPC server: WorkerService, AdminService, standard health, and server
//! reflection (v1 and v1alpha, so grpcurl of any age can `list` and
//! `describe`). Every call passes the auth layer (`crate::auth::layer`)
//! first; refused calls of state-changing RPCs go to the audit log. With
//! `tls.cert` set it speaks TLS ([`tls`]), else plaintext.

pub(crate) mod admin_api;
pub(crate) mod audit_api;
pub(crate) mod convert;
pub(crate) mod identity;
pub(crate) mod status;
pub(crate) mod tls;
pub(crate) mod watch_api;
pub(crate) mod worker_api;

use std::sync::Arc;

use anyhow::Context;
use hive_shared::pb::FILE_DESCRIPTOR_SET;
use hive_shared::pb::admin_service_server::AdminServiceServer;
use hive_shared::pb::worker_service_server::WorkerServiceServer;
use tokio::net::TcpListener;
use tonic::transport::Server;
use tonic::transport::server::TcpIncoming;

use crate::app::App;
use crate::audit::refusals::AuditRefusals;
use crate::auth::layer::AuthLayer;
use crate::metrics::rpc::RpcTimingLayer;
use admin_api::AdminApi;
use worker_api::WorkerApi;

/// Serves every service on `listener` until `app.rpc_shutdown`, then waits for in-flight calls.
///
/// # Errors
/// When reflection cannot be built or the transport fails.
pub(crate) async fn serve(app: App, listener: TcpListener) -> anyhow::Result<()> {
    let max_message = usize::try_from(app.config.limits.max_message_size.as_u64()).unwrap_or(usize::MAX);
    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<WorkerServiceServer<WorkerApi>>().await;
    health.set_serving::<AdminServiceServer<AdminApi>>().await;

    let reflection = || {
        tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
    };
    let reflection_v1 = reflection().build_v1().context("build reflection v1")?;
    let reflection_v1alpha = reflection().build_v1alpha().context("build reflection v1alpha")?;

    let workers = WorkerServiceServer::new(WorkerApi::new(app.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);
    let admin = AdminServiceServer::new(AdminApi::new(app.clone()))
        .max_decoding_message_size(max_message)
        .max_encoding_message_size(max_message);

    let shutdown = app.rpc_shutdown.clone();
    let stopping = async move {
        shutdown.cancelled().await;
        health.set_not_serving::<WorkerServiceServer<WorkerApi>>().await;
        health.set_not_serving::<AdminServiceServer<AdminApi>>().await;
    };
    let refusals = AuditRefusals::new(app.pool.clone(), app.tracker.clone());
    let auth = AuthLayer::new(app.tokens.clone(), Some(Arc::new(refusals)));
    let router = Server::builder()
        .layer(RpcTimingLayer::new(Arc::clone(&app.metrics)))
        .layer(auth)
        .tcp_nodelay(true)
        .http2_keepalive_interval(Some(std::time::Duration::from_secs(20)))
        .trace_fn(|request| tracing::debug_span!("rpc", path = %request.uri().path()))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .add_service(workers)
        .add_service(admin);
    let served = match tls::TlsFiles::from_config(&app.config.tls) {
        // Our own listener: nodelay must be set on it (the builder's applies only to listeners tonic binds).
        None => {
            router.serve_with_incoming_shutdown(TcpIncoming::from(listener).with_nodelay(Some(true)), stopping).await
        }
        Some(files) => {
            let tls = tls::ServerTls::start(files, &app.tracker, app.rpc_shutdown.clone()).await?;
            let incoming = tls.incoming(listener, &app.tracker, app.rpc_shutdown.clone());
            router.serve_with_incoming_shutdown(incoming, stopping).await
        }
    };
    served.context("gRPC server failed")
}
