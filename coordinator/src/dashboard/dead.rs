//! The dead-letter queue: dead tasks grouped by the start of their error,
//! each group with a bulk retry that shows how many tasks it would retry
//! and asks before it does (`tasks::retry` by error text, as
//! `hivectl retry --error` does, audited as `RetryTasks`).

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::actions::Posted;
use super::html::{Refresh, error_page, error_response, escape, page, urlencode};
use super::session::Session;
use crate::app::App;
use crate::db;
use crate::error::Error;
use crate::tasks;

/// Characters of an error that make its group.
const GROUP_CHARS: i32 = 200;
/// Groups shown.
const GROUPS: i64 = 50;

/// The dead tasks by error.
pub(crate) async fn list(session: Session, State(app): State<Arc<App>>) -> Response {
    let read =
        tokio::try_join!(db::filters::dead_by_error(&app.pool, GROUP_CHARS, GROUPS), db::events::head(&app.pool));
    let (groups, head) = match read {
        Ok(read) => read,
        Err(err) => return error_response(Error::from(err)),
    };
    let mut body = String::from(
        "<h1>Dead letters</h1><table id=\"dead\"><tr><th>tasks</th><th>error (its start)</th><th></th></tr>",
    );
    for group in &groups {
        let retry = if session.may_act() && !group.error.is_empty() {
            format!(r#"<a class="retry" href="/dead/retry?error={}">Retry…</a>"#, escape(&urlencode(&group.error)))
        } else {
            String::new()
        };
        let _ = write!(
            body,
            r#"<tr><td class="n">{}</td><td class="error">{}</td><td>{retry}</td></tr>"#,
            group.tasks,
            escape(&group.error)
        );
    }
    body.push_str("</table>");
    if groups.is_empty() {
        body.push_str(r#"<p class="empty">No dead tasks.</p>"#);
    }
    page("Dead letters", &session, head.last_seq, ("kinds=task.dead,task.retried", Refresh::Banner), &body)
}

/// Which dead tasks a bulk retry takes.
#[derive(Debug, Deserialize)]
pub(crate) struct ErrorQuery {
    #[serde(default)]
    error: String,
}

/// How many dead tasks the retry would take, and the form that does it.
pub(crate) async fn confirm(
    session: Session,
    State(app): State<Arc<App>>,
    Query(query): Query<ErrorQuery>,
) -> Response {
    let filter = match filter(&query) {
        Ok(filter) => filter,
        Err(problem) => return error_page(StatusCode::BAD_REQUEST, problem),
    };
    let read = tokio::try_join!(db::filters::count_dead(&app.pool, &filter), db::events::head(&app.pool));
    let (count, head) = match read {
        Ok(read) => read,
        Err(err) => return error_response(Error::from(err)),
    };
    let mut body = format!(
        r#"<h1>Retry dead tasks</h1><p><strong id="count">{count}</strong> dead tasks have an error containing:</p><pre class="error">{}</pre>"#,
        escape(&query.error)
    );
    if session.may_act() && count > 0 {
        let _ = write!(
            body,
            r#"<form method="post" action="/dead/retry?error={}" class="control"><input type="hidden" name="csrf" value="{}"><button name="do" value="retry-all">Retry {count} tasks</button></form>"#,
            escape(&urlencode(&query.error)),
            escape(&session.csrf)
        );
    }
    body.push_str(r#"<p><a href="/dead">Back to the dead letters</a></p>"#);
    page("Retry dead tasks", &session, head.last_seq, ("kinds=task.dead,task.retried", Refresh::Banner), &body)
}

/// Retries the dead tasks whose error contains the text.
pub(crate) async fn retry(
    State(app): State<Arc<App>>,
    Query(query): Query<ErrorQuery>,
    Posted(session, _): Posted,
) -> Response {
    let filter = match filter(&query) {
        Ok(filter) => filter,
        Err(problem) => return error_page(StatusCode::BAD_REQUEST, problem),
    };
    match tasks::retry(&app.pool, &session.caller, &filter).await {
        Ok(_) => Redirect::to("/dead").into_response(),
        Err(err) => error_response(err),
    }
}

fn filter(query: &ErrorQuery) -> Result<db::filters::TaskFilter, &'static str> {
    if query.error.is_empty() {
        return Err("error: give the text the dead tasks' errors contain");
    }
    Ok(db::filters::TaskFilter { error_contains: Some(query.error.clone()), ..db::filters::TaskFilter::default() })
}
