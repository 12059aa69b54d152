//! A swarm's page: its tasks by status, times, usage and budget, its
//! dependency graph with validator rounds ([`super::graph`]), and why
//! its ready tasks wait when something stands in the way (no live worker
//! offers their agent and labels; the budget is spent), as `hivectl
//! status` says it (`tasks::progress`); for an admin, setting the budget
//! (`tasks::progress::set_budget`, audited as `SetSwarmBudget`).

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use hive_shared::ids::SwarmId;

use super::actions::Posted;
use super::html::{Refresh, error_page, error_response, escape, page, time};
use super::session::Session;
use crate::app::App;
use crate::db;
use crate::error::Error;
use crate::status::TaskStatus;
use crate::tasks;

/// One swarm.
pub(crate) async fn show(session: Session, State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let Ok(swarm) = SwarmId::parse(&id) else {
        return error_page(StatusCode::NOT_FOUND, &format!("`{id}` is not a swarm id"));
    };
    let read = tokio::try_join!(
        tasks::progress::of(&app.pool, Some(swarm.0), app.config.leases.ttl),
        super::pages::head(&app.pool),
        async { Ok::<_, Error>(db::graph::swarm_nodes(&app.pool, swarm.0, super::graph::NODES).await?) },
    );
    let (mut progress, head, nodes) = match read {
        Ok(read) => read,
        Err(err) => return error_response(err),
    };
    let Some(progress) = progress.pop() else {
        return error_response(Error::SwarmNotFound(swarm.0));
    };
    let mut body = format!("<h1>Swarm {}</h1><table class=\"counts\"><tr>", escape(&progress.name));
    for status in TaskStatus::ALL {
        let _ = write!(body, "<th>{status}</th>");
    }
    body.push_str("</tr><tr>");
    for status in TaskStatus::ALL {
        let count = progress.counts.iter().find(|(counted, _)| *counted == status).map_or(0, |(_, count)| *count);
        let _ = write!(
            body,
            r#"<td class="n"><a href="/tasks?swarm={}&status={status}" data-status="{status}">{count}</a></td>"#,
            progress.id
        );
    }
    body.push_str("</tr></table>");
    if let Some(summary) = &progress.summary {
        let at = |at: Option<chrono::DateTime<chrono::Utc>>| at.map(time).unwrap_or_else(|| "–".into());
        let budget = summary.budget.map_or_else(|| "none".to_owned(), |budget| format!("{budget:.2}"));
        let _ = write!(
            body,
            r#"<dl class="task"><dt>submitted</dt><dd>{}</dd><dt>first start</dt><dd>{}</dd><dt>last finish</dt><dd>{}</dd>
<dt>tokens in / out</dt><dd>{} / {}</dd><dt>spent</dt><dd id="spent">{:.4}</dd><dt>budget</dt><dd id="budget">{budget}</dd></dl>"#,
            time(progress.created_at),
            at(summary.started_at),
            at(summary.finished_at),
            summary.input_tokens,
            summary.output_tokens,
            summary.spent,
        );
    }
    if !progress.waiting.is_empty() {
        body.push_str(r#"<h2>Why it waits</h2><ul id="waiting">"#);
        for reason in &progress.waiting {
            let _ = write!(body, "<li>{}</li>", escape(reason));
        }
        body.push_str("</ul>");
    }
    if session.may_act() {
        let _ = write!(
            body,
            r#"<form method="post" action="/swarms/{}/budget" class="control"><input type="hidden" name="csrf" value="{}"><label>Budget <input name="budget" inputmode="decimal" size="8"></label> <button name="do" value="budget">Set</button> <span class="hint">0 clears it</span></form>"#,
            progress.id,
            escape(&session.csrf)
        );
    }
    if session.may_act() {
        body.push_str(&super::holds::pause_swarm(&session, progress.id));
    }
    let graph = super::graph::svg(&nodes);
    if !graph.is_empty() {
        let total: i64 = progress.counts.iter().map(|(_, count)| count).sum();
        let shown = if total > nodes.len() as i64 {
            format!(" (its first {} of {total} tasks)", nodes.len())
        } else {
            String::new()
        };
        let _ = write!(body, r#"<h2>Dependencies{shown}</h2><div class="graph">{graph}</div>"#);
    }
    let _ = write!(body, r#"<p><a href="/tasks?swarm={}">Its tasks</a></p>"#, progress.id);
    page(
        &format!("Swarm {}", progress.name),
        &session,
        head,
        (&format!("swarm={}", progress.id), Refresh::Reread),
        &body,
    )
}

/// Sets the swarm's budget (0 clears it).
pub(crate) async fn budget(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Posted(session, form): Posted,
) -> Response {
    let Ok(swarm) = SwarmId::parse(&id) else {
        return error_page(StatusCode::NOT_FOUND, &format!("`{id}` is not a swarm id"));
    };
    let text = form.get("budget").trim();
    let Ok(amount) = text.parse::<f64>() else {
        return error_page(StatusCode::BAD_REQUEST, &format!("budget: `{text}` is not an amount"));
    };
    let budget = (amount != 0.0).then_some(amount);
    match tasks::progress::set_budget(&app.pool, &session.caller, swarm.0, budget).await {
        Ok(_) => Redirect::to(&format!("/swarms/{}", swarm.0)).into_response(),
        Err(err) => error_response(err),
    }
}
