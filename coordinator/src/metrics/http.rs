//! `GET /metrics` on the HTTP listener (`crate::http`), in the Prometheus
//! text format. With auth on, a scrape needs `authorization: Bearer` with a
//! `metrics` or `admin` token; anything else is refused (401 without a valid
//! token, 403 with another role), and a refusal says why.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hive_shared::tokens::Role;
use tracing::warn;

use crate::app::App;
use crate::auth::layer::bearer;
use crate::error::Error;

/// The content type of the Prometheus text format.
const TEXT_FORMAT: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The `/metrics` route.
pub(crate) fn routes() -> Router<Arc<App>> {
    Router::new().route("/metrics", get(metrics))
}

async fn metrics(State(app): State<Arc<App>>, headers: HeaderMap) -> Response {
    if let Err(refusal) = admit(&app, &headers).await {
        return refusal;
    }
    match app.metrics.page(&app.pool, &app.hot_pool).await {
        Ok(page) => ([(header::CONTENT_TYPE, TEXT_FORMAT)], page).into_response(),
        Err(err) => {
            warn!(error = %err, "a scrape could not read the database");
            (StatusCode::SERVICE_UNAVAILABLE, format!("metrics: the database could not be read: {err}\n"))
                .into_response()
        }
    }
}

/// Lets the scrape through when auth is off or its token is a `metrics` or `admin` one.
async fn admit(app: &App, headers: &HeaderMap) -> Result<(), Response> {
    let Some(book) = &app.tokens else { return Ok(()) };
    let refuse = |status: StatusCode, err: Error| {
        let mut response = (status, format!("metrics: {err}\n")).into_response();
        if status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, header::HeaderValue::from_static("Bearer"));
        }
        response
    };
    let token = bearer(headers.get(header::AUTHORIZATION)).map_err(|err| refuse(StatusCode::UNAUTHORIZED, err))?;
    let caller = book.authenticate(token).await.map_err(|err| match err {
        Error::Unauthenticated(_) => refuse(StatusCode::UNAUTHORIZED, err),
        other => refuse(StatusCode::SERVICE_UNAVAILABLE, other),
    })?;
    if matches!(caller.role, Role::Metrics | Role::Admin) {
        Ok(())
    } else {
        let err = Error::PermissionDenied(format!(
            "a {} token may not read /metrics (a metrics or admin token may)",
            caller.role
        ));
        Err(refuse(StatusCode::FORBIDDEN, err))
    }
}
