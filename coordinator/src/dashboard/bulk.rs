//! Bulk controls by filter (swarm, agent, error text): cancel the unfinished
//! tasks a filter matches, or retry the dead ones. A page first says how
//! many tasks the control would take and asks; only its form post acts, by
//! the use cases `hivectl cancel` and `hivectl retry` call (audited as
//! `CancelTasks` and `RetryTasks`).

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use hive_shared::ids::SwarmId;
use serde::Deserialize;

use super::actions::Posted;
use super::html::{Refresh, error_page, error_response, escape, page, urlencode};
use super::session::Session;
use crate::app::App;
use crate::db;
use crate::db::filters::TaskFilter;
use crate::error::Error;
use crate::tasks;

/// A bulk control and the filter it takes.
#[derive(Debug, Default, Deserialize)]
pub(crate) struct BulkQuery {
    /// `cancel` or `retry`.
    #[serde(default)]
    pub action: String,
    #[serde(default)]
    pub swarm: String,
    #[serde(default)]
    pub agent: String,
    #[serde(default)]
    pub error: String,
}

/// The two bulk controls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Action {
    Cancel,
    Retry,
}

impl BulkQuery {
    /// The query string naming this control and filter.
    pub(crate) fn query_string(&self) -> String {
        format!(
            "action={}&swarm={}&agent={}&error={}",
            urlencode(&self.action),
            urlencode(&self.swarm),
            urlencode(&self.agent),
            urlencode(&self.error)
        )
    }

    fn parse(&self) -> Result<(Action, TaskFilter), String> {
        let action = match self.action.as_str() {
            "cancel" => Action::Cancel,
            "retry" => Action::Retry,
            other => return Err(format!("action: `{other}` is not a bulk control (cancel, retry)")),
        };
        let swarm_id = match self.swarm.as_str() {
            "" => None,
            text => Some(SwarmId::parse(text).map_err(|_| format!("swarm: `{text}` is not an id"))?.0),
        };
        let filter = TaskFilter {
            task_ids: None,
            swarm_id,
            agent: (!self.agent.is_empty()).then(|| self.agent.clone()),
            error_contains: (!self.error.is_empty()).then(|| self.error.clone()),
        };
        if filter.swarm_id.is_none() && filter.agent.is_none() && filter.error_contains.is_none() {
            return Err("a bulk control needs a filter: a swarm, an agent or error text".into());
        }
        Ok((action, filter))
    }
}

/// How many tasks the control would take, and (for an admin) the form that makes it.
pub(crate) async fn confirm(session: Session, State(app): State<Arc<App>>, Query(query): Query<BulkQuery>) -> Response {
    let (action, filter) = match query.parse() {
        Ok(parsed) => parsed,
        Err(problem) => return error_page(StatusCode::BAD_REQUEST, &problem),
    };
    let count = async {
        match action {
            Action::Cancel => db::filters::count_unfinished(&app.pool, &filter).await,
            Action::Retry => db::filters::count_dead(&app.pool, &filter).await,
        }
    };
    let (count, head) = match tokio::try_join!(count, db::events::head(&app.pool)) {
        Ok(read) => read,
        Err(err) => return error_response(Error::from(err)),
    };
    let (title, which, button, value) = match action {
        Action::Cancel => ("Cancel tasks", "unfinished tasks (and what depends on them)", "Cancel", "cancel-all"),
        Action::Retry => ("Retry dead tasks", "dead tasks", "Retry", "retry-all"),
    };
    let mut body =
        format!(r#"<h1>{title}</h1><p><strong id="count">{count}</strong> {which} match:</p><dl class="task">"#);
    for (name, value) in [("swarm", &query.swarm), ("agent", &query.agent), ("error contains", &query.error)] {
        if !value.is_empty() {
            let _ = write!(body, "<dt>{name}</dt><dd><code>{}</code></dd>", escape(value));
        }
    }
    body.push_str("</dl>");
    if session.may_act() && count > 0 {
        let _ = write!(
            body,
            r#"<form method="post" action="/bulk?{}" class="control"><input type="hidden" name="csrf" value="{}"><button name="do" value="{value}" class="danger">{button} {count} tasks</button></form>"#,
            escape(&query.query_string()),
            escape(&session.csrf)
        );
    }
    let _ = write!(body, r#"<p><a href="{}">Back</a></p>"#, escape(&back(action, &query)));
    page(title, &session, head.last_seq, ("kinds=task.*", Refresh::Banner), &body)
}

/// Makes the control, then shows the tasks it took.
pub(crate) async fn act(
    State(app): State<Arc<App>>,
    Query(query): Query<BulkQuery>,
    Posted(session, _): Posted,
) -> Response {
    let (action, filter) = match query.parse() {
        Ok(parsed) => parsed,
        Err(problem) => return error_page(StatusCode::BAD_REQUEST, &problem),
    };
    let done = match action {
        Action::Cancel => tasks::cancel_matching(&app.pool, &session.caller, &filter, "cancelled from the dashboard")
            .await
            .map(|_| ()),
        Action::Retry => tasks::retry(&app.pool, &session.caller, &filter).await.map(|_| ()),
    };
    match done {
        Ok(()) => Redirect::to(&back(action, &query)).into_response(),
        Err(err) => error_response(err),
    }
}

/// The page a control's filter came from: the dead letters for a retry by
/// error alone, else the task list with the same filter.
fn back(action: Action, query: &BulkQuery) -> String {
    if action == Action::Retry && query.swarm.is_empty() && query.agent.is_empty() {
        return "/dead".into();
    }
    format!(
        "/tasks?swarm={}&agent={}&error={}",
        urlencode(&query.swarm),
        urlencode(&query.agent),
        urlencode(&query.error)
    )
}
