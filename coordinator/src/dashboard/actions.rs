//! The dashboard's controls: form posts that run the same use cases as the
//! gRPC API (`tasks::cancel`, `tasks::retry`), audited under the signed-in
//! token's name, after the session's CSRF and role checks. Each answers
//! with a redirect back to the task, whose page then shows the change.

use std::sync::Arc;

use axum::Form;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Redirect, Response};
use hive_shared::ids::TaskId;
use serde::Deserialize;

use super::html::{error_page, error_response};
use super::session::Session;
use crate::app::App;
use crate::db;
use crate::tasks;

/// What a control's form posts.
#[derive(Debug, Deserialize)]
pub(crate) struct ControlForm {
    /// The session's CSRF token.
    #[serde(default)]
    pub csrf: String,
}

/// Runs the control `action` (`cancel`: a running task's worker is told to
/// stop its agent; `retry`: a dead task runs again) on a task.
pub(crate) async fn act(
    session: Session,
    State(app): State<Arc<App>>,
    Path((id, action)): Path<(String, String)>,
    headers: HeaderMap,
    Form(form): Form<ControlForm>,
) -> Response {
    let task = match checked(&session, &headers, &form, &id, TaskId::parse, "task") {
        Ok(task) => task,
        Err((status, refusal)) => return error_page(status, &refusal),
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

/// The id (of a `what`) a control names, once the post passed the
/// session's checks; else the refusal.
pub(crate) fn checked<T, E>(
    session: &Session,
    headers: &HeaderMap,
    form: &ControlForm,
    id: &str,
    parse: impl Fn(&str) -> Result<T, E>,
    what: &str,
) -> Result<T, (StatusCode, String)> {
    session.check_post(headers, &form.csrf).map_err(|refusal| (StatusCode::FORBIDDEN, refusal))?;
    parse(id).map_err(|_| (StatusCode::NOT_FOUND, format!("`{id}` is not a {what} id")))
}
