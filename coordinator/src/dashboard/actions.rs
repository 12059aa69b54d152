//! The dashboard's controls: form posts that run the same use cases as the
//! gRPC API (`tasks::cancel`, `tasks::retry`, `workers::stop`), audited
//! under the signed-in token's name. Each control takes a [`Posted`]: the
//! post passed the session's checks (same site, the page's CSRF token, an
//! admin) before the handler runs. Each answers with a redirect back to the
//! page, which then shows the change.

use std::collections::HashMap;
use std::sync::Arc;

use axum::Form;
use axum::extract::{FromRequest, FromRequestParts, Path, Request, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use hive_shared::ids::TaskId;

use super::html::{error_page, error_response};
use super::session::Session;
use crate::app::App;
use crate::db;
use crate::tasks;

/// A control's form post from a session that may make it, with the
/// form's other fields.
#[derive(Debug)]
pub(crate) struct Posted(pub Session, pub Fields);

/// A form's fields by name.
#[derive(Debug, Default)]
pub(crate) struct Fields(HashMap<String, String>);

impl Fields {
    /// The field `name`; empty when the form has none.
    pub(crate) fn get(&self, name: &str) -> &str {
        self.0.get(name).map_or("", String::as_str)
    }
}

impl FromRequest<Arc<App>> for Posted {
    type Rejection = Response;

    async fn from_request(request: Request, app: &Arc<App>) -> Result<Self, Response> {
        let (mut parts, body) = request.into_parts();
        let session = Session::from_request_parts(&mut parts, app).await?;
        let headers = parts.headers.clone();
        let Form(fields) = Form::<HashMap<String, String>>::from_request(Request::from_parts(parts, body), app)
            .await
            .map_err(IntoResponse::into_response)?;
        let fields = Fields(fields);
        session
            .check_post(&headers, fields.get("csrf"))
            .map_err(|refusal| error_page(StatusCode::FORBIDDEN, &refusal))?;
        Ok(Self(session, fields))
    }
}

/// Runs the control `action` (`cancel`: a running task's worker is told to
/// stop its agent; `retry`: a dead task runs again) on a task.
pub(crate) async fn act(
    State(app): State<Arc<App>>,
    Path((id, action)): Path<(String, String)>,
    Posted(session, _): Posted,
) -> Response {
    let Ok(task) = TaskId::parse(&id) else {
        return error_page(StatusCode::NOT_FOUND, &format!("`{id}` is not a task id"));
    };
    let done = match action.as_str() {
        "cancel" => tasks::cancel(&app.pool, &session.caller, task, "cancelled from the dashboard").await.map(|_| true),
        "retry" => {
            let filter = db::filters::TaskFilter { task_ids: Some(vec![task.0]), ..db::filters::TaskFilter::default() };
            tasks::retry(&app.pool, &session.caller, &filter).await.map(|retried| !retried.is_empty())
        }
        other => return error_page(StatusCode::NOT_FOUND, &format!("`{other}` is not a control (cancel, retry)")),
    };
    match done {
        Ok(true) => Redirect::to(&format!("/tasks/{}", task.0)).into_response(),
        Ok(false) => error_page(StatusCode::CONFLICT, "the task is not dead: only dead tasks are retried"),
        Err(err) => error_response(err),
    }
}
