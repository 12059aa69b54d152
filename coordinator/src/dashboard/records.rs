//! The fleet's records, for viewers and admins alike: locks held, the audit
//! log (newest first, a keyset page at a time) and the alert webhooks'
//! deliveries, which an admin may resend. Each reads through the same use
//! case as its `hivectl` command (`locks`, `audit`, `webhooks deliveries`).

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, Query, State};
use axum::response::{IntoResponse, Redirect, Response};
use serde::Deserialize;

use super::actions::Posted;
use super::html::{Refresh, error_response, escape, page, time, urlencode};
use super::pages::head;
use super::session::Session;
use crate::app::App;
use crate::audit::{self, PageStart};
use crate::db;
use crate::tasks;

/// Audit rows on one page.
const AUDIT_PAGE: u32 = 100;
/// Deliveries listed.
const DELIVERIES: u32 = 100;

/// The locks held, by key, with the task holding each.
pub(crate) async fn locks(session: Session, State(app): State<Arc<App>>) -> Response {
    let (locks, head) = match tokio::try_join!(tasks::locks::list(&app.pool), head(&app.pool)) {
        Ok(read) => read,
        Err(err) => return error_response(err),
    };
    let mut body = String::from(
        r#"<h1>Locks</h1><table id="locks"><tr><th>key</th><th>held by task</th><th>attempt</th><th>since</th></tr>"#,
    );
    for lock in &locks {
        let _ = write!(
            body,
            r#"<tr><td><code>{}</code></td><td><a href="/tasks/{task}">{task}</a></td><td>{}</td><td>{}</td></tr>"#,
            escape(&lock.key),
            lock.attempt_id,
            time(lock.acquired_at),
            task = lock.task_id,
        );
    }
    body.push_str("</table>");
    if locks.is_empty() {
        body.push_str(r#"<p class="empty">No lock is held.</p>"#);
    }
    page("Locks", &session, head, ("kinds=task.*", Refresh::Banner), &body)
}

/// Where an audit page starts, and what it shows.
#[derive(Debug, Deserialize)]
pub(crate) struct AuditQuery {
    /// Rows below this position (a keyset cursor).
    #[serde(default)]
    before: Option<i64>,
    #[serde(default)]
    actor: String,
    #[serde(default)]
    action: String,
}

/// A page of the audit log, newest first.
pub(crate) async fn audit(session: Session, State(app): State<Arc<App>>, Query(query): Query<AuditQuery>) -> Response {
    let some = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    let filter = db::audit::AuditFilter { since: None, actor: some(&query.actor), action: some(&query.action) };
    let rows = audit::list(&app.pool, &filter, PageStart::Before(query.before), AUDIT_PAGE);
    let (rows, head) = match tokio::try_join!(rows, head(&app.pool)) {
        Ok(read) => read,
        Err(err) => return error_response(err),
    };
    let mut body = format!(
        r#"<h1>Audit log</h1><form method="get" action="/audit" class="filters"><label>actor <input name="actor" value="{}"></label><label>action <input name="action" value="{}"></label><button>Filter</button></form>
<table id="audit"><tr><th>#</th><th>at</th><th>actor</th><th>role</th><th>action</th><th>target</th><th>affected</th><th>outcome</th><th>peer</th></tr>"#,
        escape(&query.actor),
        escape(&query.action)
    );
    for row in &rows {
        let outcome = match &row.reason {
            Some(reason) => format!("{}: {}", row.outcome, reason),
            None => row.outcome.clone(),
        };
        let _ = write!(
            body,
            r#"<tr><td class="n">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td class="n">{}</td><td class="outcome {}">{}</td><td>{}</td></tr>"#,
            row.seq,
            time(row.at),
            escape(&row.actor),
            escape(row.role.as_deref().unwrap_or("")),
            escape(&row.action),
            escape(&row.target.to_string()),
            row.affected,
            escape(&row.outcome),
            escape(&outcome),
            escape(row.peer.as_deref().unwrap_or("")),
        );
    }
    body.push_str("</table>");
    if rows.is_empty() {
        body.push_str(r#"<p class="empty">No audit rows match.</p>"#);
    }
    if let Some(last) = rows.last().filter(|_| rows.len() == audit::page_size(AUDIT_PAGE)) {
        let _ = write!(
            body,
            r#"<p><a class="next" href="/audit?actor={}&action={}&before={}">Older rows →</a></p>"#,
            escape(&urlencode(&query.actor)),
            escape(&urlencode(&query.action)),
            last.seq
        );
    }
    page("Audit log", &session, head, ("kinds=admin.*", Refresh::Banner), &body)
}

/// Which deliveries are listed.
#[derive(Debug, Deserialize)]
pub(crate) struct DeliveryQuery {
    #[serde(default)]
    webhook: String,
    #[serde(default)]
    status: String,
}

/// The newest deliveries of the alert webhooks.
pub(crate) async fn deliveries(
    session: Session,
    State(app): State<Arc<App>>,
    Query(query): Query<DeliveryQuery>,
) -> Response {
    let rows = crate::webhooks::deliveries::list(&app.pool, &query.webhook, &query.status, DELIVERIES);
    let (rows, head) = match tokio::try_join!(rows, head(&app.pool)) {
        Ok(read) => read,
        Err(err) => return error_response(err),
    };
    let mut body = format!(
        r#"<h1>Webhook deliveries</h1><form method="get" action="/webhooks" class="filters"><label>webhook <input name="webhook" value="{}"></label><label>status <input name="status" value="{}" placeholder="pending, delivered, failed"></label><button>Filter</button></form>
<table id="deliveries"><tr><th>queued</th><th>webhook</th><th>events</th><th>status</th><th>posts</th><th>last answer</th><th>last error</th><th></th></tr>"#,
        escape(&query.webhook),
        escape(&query.status)
    );
    for row in &rows {
        let resend = if session.may_act() {
            format!(
                r#"<form method="post" action="/webhooks/{}/resend" class="control"><input type="hidden" name="csrf" value="{}"><button name="do" value="resend">Resend</button></form>"#,
                row.id,
                escape(&session.csrf)
            )
        } else {
            String::new()
        };
        let _ = write!(
            body,
            r#"<tr data-delivery="{}"><td>{}</td><td>{}</td><td class="n">{} (#{}–#{})</td><td class="status {}">{}</td><td class="n">{}</td><td class="n">{}</td><td class="error">{}</td><td>{resend}</td></tr>"#,
            row.id,
            time(row.created_at),
            escape(&row.webhook),
            row.events,
            row.first_seq,
            row.last_seq,
            escape(&row.status),
            escape(&row.status),
            row.attempts,
            row.last_status.map(|status| status.to_string()).unwrap_or_default(),
            escape(row.last_error.as_deref().unwrap_or("")),
        );
    }
    body.push_str("</table>");
    if rows.is_empty() {
        body.push_str(r#"<p class="empty">No deliveries match.</p>"#);
    }
    page("Webhook deliveries", &session, head, ("kinds=admin.*", Refresh::Banner), &body)
}

/// Posts a delivery again now.
pub(crate) async fn resend(
    State(app): State<Arc<App>>,
    Path(id): Path<String>,
    Posted(session, _): Posted,
) -> Response {
    match crate::webhooks::deliveries::resend(&app.pool, &session.caller, &id).await {
        Ok(()) => {
            app.webhooks_queued.notify_one();
            Redirect::to("/webhooks").into_response()
        }
        Err(err) => error_response(err),
    }
}
