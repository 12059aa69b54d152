//! The coordinator's HTTP listener (`http.listen`): `/metrics`
//! (`metrics::http`) and the web dashboard (`dashboard`), until the
//! coordinator stops taking calls.

use std::sync::Arc;

use axum::Router;
use tokio::net::TcpListener;

use crate::app::App;

/// Serves the HTTP routes on `listener`.
///
/// # Errors
/// When the listener fails.
pub(crate) async fn serve(app: App, listener: TcpListener) -> std::io::Result<()> {
    let shutdown = app.rpc_shutdown.clone();
    let router =
        Router::new().merge(crate::metrics::http::routes()).merge(crate::dashboard::routes()).with_state(Arc::new(app));
    axum::serve(listener, router).with_graceful_shutdown(async move { shutdown.cancelled().await }).await
}
