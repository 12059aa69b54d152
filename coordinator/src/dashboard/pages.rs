//! The dashboard's overview (counts the scrape reads too, never a count over
//! the tasks) and task list (newest first, a keyset page at a time, filtered
//! by status, swarm, agent, worker and error text).

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::response::Response;
use hive_shared::ids::{SwarmId, TaskId, WorkerId};
use serde::Deserialize;

use super::bulk::BulkQuery;
use super::html::{Refresh, error_page, error_response, escape, page, urlencode};
use super::session::Session;
use crate::app::App;
use crate::db;
use crate::error::Error;
use crate::status::TaskStatus;
use crate::tasks;

/// Tasks on one page of the list.
const PAGE_SIZE: u32 = 50;
/// Swarms the overview shows, newest first.
pub(crate) const SWARMS: i64 = 20;
/// Characters of an error a list row shows.
const ERROR_EXCERPT: usize = 120;

/// The overview: tasks by agent and status, the oldest ready task, workers.
pub(crate) async fn overview(session: Session, State(app): State<Arc<App>>) -> Response {
    let read = tokio::try_join!(
        db::metrics::task_totals(&app.pool),
        db::metrics::workers_by_agent(&app.pool),
        db::metrics::fleet(&app.pool),
        db::progress::newest(&app.pool, SWARMS),
        db::pauses::list(&app.pool),
        db::cooldowns::list(&app.pool),
    );
    let (totals, agents, fleet, swarms, pauses, cooldowns) = match read {
        Ok(read) => read,
        Err(err) => return error_response(Error::from(err)),
    };
    let mut by_agent: BTreeMap<&str, BTreeMap<&str, i64>> = BTreeMap::new();
    let mut oldest: BTreeMap<&str, f64> = BTreeMap::new();
    for total in &totals {
        *by_agent.entry(&total.agent).or_default().entry(&total.status).or_default() += total.tasks;
        if let Some(age) = total.oldest_ready_seconds {
            oldest.insert(&total.agent, age);
        }
    }
    let mut body = String::from("<h1>Overview</h1>");
    body.push_str(&swarm_progress(&swarms));
    body.push_str("<h2>Tasks</h2><table><tr><th>agent</th>");
    for status in TaskStatus::ALL {
        let _ = write!(body, "<th>{status}</th>");
    }
    body.push_str("<th>oldest ready</th></tr>");
    let mut sums = [0_i64; TaskStatus::ALL.len()];
    for (agent, counts) in &by_agent {
        let _ = write!(body, "<tr><td>{}</td>", escape(agent));
        for (index, status) in TaskStatus::ALL.iter().enumerate() {
            let count = counts.get(status.to_string().as_str()).copied().unwrap_or(0);
            sums[index] += count;
            let link = format!("/tasks?status={status}&agent={}", escape(&urlencode(agent)));
            let _ = write!(
                body,
                r#"<td class="n"><a href="{link}" data-agent="{}" data-status="{status}">{count}</a></td>"#,
                escape(agent)
            );
        }
        let age = oldest.get(agent).map(|age| seconds(*age)).unwrap_or_default();
        let _ = write!(
            body,
            r#"<td class="n" data-agent="{}" data-status="oldest_ready_s">{age}</td></tr>"#,
            escape(agent)
        );
    }
    body.push_str(r#"<tr class="total"><td>all</td>"#);
    for (status, sum) in TaskStatus::ALL.iter().zip(sums) {
        let _ = write!(body, r#"<td class="n"><a href="/tasks?status={status}" id="total-{status}">{sum}</a></td>"#);
    }
    body.push_str("<td></td></tr></table>");
    let _ = write!(
        body,
        r#"<h2>Workers</h2><p><span id="workers-live">{}</span> live, <span id="workers-draining">{}</span> draining; oldest heartbeat {} ago.</p>
<table><tr><th>agent</th><th>live</th><th>draining</th><th>free slots</th></tr>"#,
        fleet.live_workers,
        fleet.draining_workers,
        seconds(fleet.heartbeat_age_max_seconds),
    );
    for agent in &agents {
        let _ = write!(
            body,
            r#"<tr><td>{}</td><td class="n">{}</td><td class="n">{}</td><td class="n">{}</td></tr>"#,
            escape(&agent.agent),
            agent.live,
            agent.draining,
            agent.free_slots
        );
    }
    body.push_str("</table>");
    body.push_str(&super::holds::section(&session, &pauses, &cooldowns));
    page("Overview", &session, fleet.event_head, ("counts=1", Refresh::Counts), &body)
}

/// The newest swarms, each with a bar of its finished tasks, its counts by
/// status (cells the overview's script updates from `counts` events), its
/// pace (elapsed, tasks finished a minute, time left at that pace: worked
/// out by the script from the counts and the swarm's start, so they move
/// without a request), and what it spent against its budget.
fn swarm_progress(counts: &[db::progress::SwarmCount]) -> String {
    let mut swarms: Vec<(&db::progress::SwarmCount, BTreeMap<String, i64>)> = Vec::new();
    for count in counts {
        if swarms.last().is_none_or(|(first, _)| first.swarm_id != count.swarm_id) {
            swarms.push((count, BTreeMap::new()));
        }
        if let Some((_, by_status)) = swarms.last_mut() {
            by_status.insert(count.status.to_string(), count.count);
        }
    }
    let mut html = String::from(r#"<h2>Swarms</h2><table class="swarms"><tr><th>swarm</th><th>done</th>"#);
    for status in TaskStatus::ALL {
        let _ = write!(html, "<th>{status}</th>");
    }
    html.push_str("<th>elapsed</th><th>pace</th><th>left</th><th>spent / budget</th></tr>");
    for (swarm, by_status) in &swarms {
        let id = swarm.swarm_id;
        let total: i64 = by_status.values().sum();
        let done: i64 = TaskStatus::ALL
            .iter()
            .filter(|status| status.is_terminal())
            .map(|status| by_status.get(&status.to_string()).copied().unwrap_or(0))
            .sum();
        let percent = if total == 0 { 0 } else { done * 100 / total };
        let _ = write!(
            html,
            r#"<tr data-swarm="{id}" data-created="{}"><td><a href="/swarms/{id}">{}</a></td><td><progress max="{total}" value="{done}" data-swarm="{id}"></progress> <span class="n" data-swarm="{id}" data-done="1">{percent}%</span></td>"#,
            swarm.created_at.timestamp_millis(),
            escape(&swarm.name)
        );
        for status in TaskStatus::ALL {
            let count = by_status.get(&status.to_string()).copied().unwrap_or(0);
            let _ = write!(html, r#"<td class="n" data-swarm="{id}" data-status="{status}">{count}</td>"#);
        }
        let budget = swarm.budget.map_or_else(|| "none".to_owned(), |budget| format!("{budget:.2}"));
        let _ = write!(
            html,
            r#"<td class="n" data-pace="elapsed"></td><td class="n" data-pace="rate"></td><td class="n" data-pace="left"></td><td class="n">{:.2} / {budget}</td></tr>"#,
            swarm.spent
        );
    }
    html.push_str("</table>");
    if swarms.is_empty() {
        html.push_str(r#"<p class="empty">No swarms yet.</p>"#);
    }
    html
}

/// What the task list is filtered by, and where its page starts.
#[derive(Debug, Deserialize)]
pub(crate) struct TaskQuery {
    #[serde(default)]
    status: String,
    #[serde(default)]
    swarm: String,
    #[serde(default)]
    agent: String,
    /// The worker running the task's current attempt.
    #[serde(default)]
    worker: String,
    /// Text its error contains.
    #[serde(default)]
    error: String,
    /// The last task of the page before (a keyset cursor).
    #[serde(default)]
    before: String,
}

/// A page of tasks, newest first.
pub(crate) async fn tasks(session: Session, State(app): State<Arc<App>>, Query(query): Query<TaskQuery>) -> Response {
    let filter = match list_filter(&query) {
        Ok(filter) => filter,
        Err(problem) => return error_page(StatusCode::BAD_REQUEST, &problem),
    };
    let before = match optional(&query.before, "before", TaskId::parse) {
        Ok(before) => before.map(|id| id.0),
        Err(problem) => return error_page(StatusCode::BAD_REQUEST, &problem),
    };
    let swarm = filter.swarm_id;
    let listed = tasks::list(&app.pool, filter, tasks::Page { size: PAGE_SIZE, max_bytes: 4 << 20 }, before);
    let ((rows, next), head) = match tokio::try_join!(listed, head(&app.pool)) {
        Ok(read) => read,
        Err(err) => return error_response(err),
    };
    let mut body = String::from("<h1>Tasks</h1>");
    body.push_str(&filter_form(&query));
    body.push_str(&bulk_links(&session, &query));
    body.push_str(
        "<table id=\"tasks\"><tr><th>task</th><th>swarm</th><th>agent</th><th>status</th><th>attempts</th><th>error</th></tr>",
    );
    for row in &rows {
        let error = row.error.as_deref().map(|error| excerpt(error, ERROR_EXCERPT)).unwrap_or_default();
        let _ = write!(
            body,
            r#"<tr data-task="{id}"><td><a href="/tasks/{id}">{name}</a></td><td>{swarm}</td><td>{agent}</td><td class="status {status}">{status}</td><td class="n">{attempts}/{max}</td><td class="error">{error}</td></tr>"#,
            id = row.id,
            name = escape(row.key.as_deref().unwrap_or(&row.id.to_string())),
            swarm = escape(&row.swarm),
            agent = escape(&row.agent),
            status = row.status,
            attempts = row.attempts,
            max = row.max_attempts,
            error = escape(&error),
        );
    }
    body.push_str("</table>");
    if rows.is_empty() {
        body.push_str(r#"<p class="empty">No tasks match.</p>"#);
    }
    if let Some(next) = next {
        let _ = write!(
            body,
            r#"<p><a class="next" href="/tasks?{}&before={next}">Older tasks →</a></p>"#,
            escape(&filters_query(&query)),
        );
    }
    let live = swarm.map(|swarm| format!("swarm={swarm}")).unwrap_or_default();
    page("Tasks", &session, head, (&live, Refresh::Banner), &body)
}

/// The newest event's number: where the page's live stream starts.
pub(crate) async fn head(pool: &sqlx::PgPool) -> Result<i64, Error> {
    Ok(db::events::head(pool).await?.last_seq)
}

fn filter_form(query: &TaskQuery) -> String {
    let mut options = String::from(r#"<option value="">any</option>"#);
    for status in TaskStatus::ALL {
        let selected = if query.status == status.to_string() { " selected" } else { "" };
        let _ = write!(options, r#"<option{selected}>{status}</option>"#);
    }
    format!(
        r#"<form method="get" action="/tasks" class="filters"><label>status <select name="status">{options}</select></label>
<label>swarm <input name="swarm" value="{}" size="38"></label><label>agent <input name="agent" value="{}"></label>
<label>worker <input name="worker" value="{}" size="38"></label><label>error contains <input name="error" value="{}"></label><button>Filter</button></form>"#,
        escape(&query.swarm),
        escape(&query.agent),
        escape(&query.worker),
        escape(&query.error),
    )
}

/// The list's filters as a query string (without the page cursor).
fn filters_query(query: &TaskQuery) -> String {
    format!(
        "status={}&swarm={}&agent={}&worker={}&error={}",
        urlencode(&query.status),
        urlencode(&query.swarm),
        urlencode(&query.agent),
        urlencode(&query.worker),
        urlencode(&query.error)
    )
}

/// For an admin, when the filter is one a bulk control takes (a swarm, an
/// agent or error text, and no worker): cancel what it matches (without
/// error text, which the list matches against finished tasks' errors and a
/// cancel against unfinished tasks' last attempts), or retry its dead
/// tasks, each after a count.
fn bulk_links(session: &Session, query: &TaskQuery) -> String {
    let filtered = !(query.swarm.is_empty() && query.agent.is_empty() && query.error.is_empty());
    if !session.may_act() || !filtered || !query.worker.is_empty() {
        return String::new();
    }
    let link = |action: &str| {
        let bulk = BulkQuery {
            action: action.into(),
            swarm: query.swarm.clone(),
            agent: query.agent.clone(),
            error: query.error.clone(),
        };
        escape(&format!("/bulk?{}", bulk.query_string()))
    };
    let cancel = if query.error.is_empty() {
        format!(r#"<a class="bulk" href="{}">Cancel every unfinished task matching…</a> "#, link("cancel"))
    } else {
        String::new()
    };
    format!(
        r#"<p class="controls">{cancel}<a class="bulk" href="{}">Retry every dead task matching…</a></p>"#,
        link("retry")
    )
}

/// The list's filter, or what is wrong with the query.
fn list_filter(query: &TaskQuery) -> Result<db::tasks::ListFilter, String> {
    let status = match query.status.as_str() {
        "" => None,
        text => Some(TaskStatus::ALL.into_iter().find(|status| status.to_string() == text).ok_or_else(|| {
            format!("status: `{text}` is not a task status (blocked, ready, running, cancelling, succeeded, dead, cancelled)")
        })?),
    };
    // Dead and cancelled tasks are the ones with an error, and each status
    // has its own index: error text walks one of them, never every task.
    let status = match status {
        _ if query.error.is_empty() => status,
        None => Some(TaskStatus::Dead),
        Some(TaskStatus::Dead | TaskStatus::Cancelled) => status,
        Some(other) => {
            return Err(format!(
                "error: error text finds dead or cancelled tasks (the ones with an error), not {other} ones"
            ));
        }
    };
    Ok(db::tasks::ListFilter {
        status,
        swarm_id: optional(&query.swarm, "swarm", SwarmId::parse)?.map(|id| id.0),
        agent: (!query.agent.is_empty()).then(|| query.agent.clone()),
        worker_id: optional(&query.worker, "worker", WorkerId::parse)?.map(|id| id.0),
        error_contains: (!query.error.is_empty()).then(|| query.error.clone()),
        summary: true,
        ..db::tasks::ListFilter::default()
    })
}

/// An optional id from a query field.
fn optional<T, E>(text: &str, field: &str, parse: impl Fn(&str) -> Result<T, E>) -> Result<Option<T>, String> {
    if text.is_empty() {
        return Ok(None);
    }
    parse(text).map(Some).map_err(|_| format!("{field}: `{text}` is not an id"))
}

/// The first `chars` characters of `text`, marked when cut.
fn excerpt(text: &str, chars: usize) -> String {
    match text.char_indices().nth(chars) {
        Some((at, _)) => format!("{}…", &text[..at]),
        None => text.to_owned(),
    }
}

pub(crate) fn pretty(value: &serde_json::Value) -> String {
    serde_json::to_string_pretty(value).unwrap_or_else(|_| value.to_string())
}

/// Seconds as a short duration (`3m 20s`).
fn seconds(seconds: f64) -> String {
    humantime::format_duration(std::time::Duration::from_secs(seconds.max(0.0) as u64)).to_string()
}
