//! The workers page: each live worker's host, labels, slots, running
//! attempts, CPU, memory, its agents' resident memory, heartbeat age and
//! whether it drains, read again on each worker event and every few
//! seconds (heartbeats carry no event); for an admin, drain or stop one,
//! and stop them all (the emergency stop). The controls run
//! `workers::stop`, as `hivectl workers stop` does, audited as
//! `StopWorkers`.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use chrono::Utc;
use hive_shared::ids::WorkerId;

use super::actions::Posted;
use super::html::{Refresh, error_page, error_response, escape, page};
use super::session::Session;
use crate::app::App;

/// The live workers.
pub(crate) async fn list(session: Session, State(app): State<Arc<App>>) -> Response {
    let read =
        tokio::try_join!(crate::workers::list(&app.pool, app.config.leases.ttl, false), super::pages::head(&app.pool));
    let (workers, head) = match read {
        Ok(read) => read,
        Err(err) => return error_response(err),
    };
    let mut body = String::from("<h1>Workers</h1>");
    if session.may_act() {
        let _ = write!(
            body,
            r#"<form method="post" action="/workers/stop-all" class="control"><input type="hidden" name="csrf" value="{}"><button name="do" value="stop-all" class="danger">Stop every worker now</button></form>"#,
            escape(&session.csrf)
        );
    }
    body.push_str(
        "<table id=\"workers\"><tr><th>name</th><th>host</th><th>agents</th><th>labels</th><th>slots</th><th>running</th><th>CPU</th><th>memory</th><th>each agent's memory</th><th>heartbeat</th><th>state</th><th></th></tr>",
    );
    let now = Utc::now();
    for worker in &workers {
        let memory = match (worker.memory_used_bytes, worker.memory_total_bytes) {
            (Some(used), Some(total)) => format!("{} / {}", bytes(used), bytes(total)),
            _ => String::new(),
        };
        // Each running agent's process tree, by the start of its attempt's id.
        let mut rss = String::new();
        for (attempt, bytes_held) in worker.attempt_rss.as_object().into_iter().flatten() {
            if let Some(held) = bytes_held.as_i64() {
                let short: String = attempt.chars().take(8).collect();
                let _ = write!(rss, r#"<div class="rss">{} {}</div>"#, escape(&short), bytes(held));
            }
        }
        let age = (now - worker.last_seen_at).num_milliseconds() as f64 / 1000.0;
        let state = if worker.draining { "draining" } else { "live" };
        let _ = write!(
            body,
            r#"<tr data-worker="{id}"><td>{name}</td><td>{host}</td><td>{agents}</td><td>{labels}</td><td class="n">{slots}</td><td class="n"><a href="/tasks?worker={id}">{running}</a></td><td class="n">{cpu}</td><td class="n">{memory}</td><td class="n">{rss}</td><td class="n">{age:.1}s ago</td><td>{state}</td><td>{controls}</td></tr>"#,
            id = worker.id,
            name = escape(&worker.name),
            host = escape(&worker.hostname),
            agents = escape(&worker.agents.join(", ")),
            labels = escape(&worker.labels.to_string()),
            slots = worker.slots,
            running = worker.running,
            cpu = worker.cpu_percent.map(|cpu| format!("{cpu:.0} %")).unwrap_or_default(),
            controls = if session.may_act() { controls(&session, worker.id, worker.draining) } else { String::new() },
        );
    }
    body.push_str("</table>");
    if workers.is_empty() {
        body.push_str(r#"<p class="empty">No live worker.</p>"#);
    }
    page("Workers", &session, head, ("kinds=worker.*", Refresh::Poll), &body)
}

fn controls(session: &Session, worker: uuid::Uuid, draining: bool) -> String {
    let form = |action: &str, label: &str| {
        format!(
            r#"<form method="post" action="/workers/{worker}/{action}" class="control"><input type="hidden" name="csrf" value="{}"><button name="do" value="{action}">{label}</button></form>"#,
            escape(&session.csrf)
        )
    };
    let mut html = String::new();
    if !draining {
        html.push_str(&form("drain", "Drain"));
    }
    html.push_str(&form("stop", "Stop now"));
    html
}

/// Drains a worker (`drain`: it finishes what it runs) or stops it
/// (`stop`: its agents are stopped now and their tasks handed back).
pub(crate) async fn act(
    State(app): State<Arc<App>>,
    Path((id, action)): Path<(String, String)>,
    Posted(session, _): Posted,
) -> Response {
    let Ok(worker) = WorkerId::parse(&id) else {
        return error_page(StatusCode::NOT_FOUND, &format!("`{id}` is not a worker id"));
    };
    let now = match action.as_str() {
        "drain" => false,
        "stop" => true,
        other => return error_page(StatusCode::NOT_FOUND, &format!("`{other}` is not a control (drain, stop)")),
    };
    stopped(crate::workers::stop(&app.pool, &session.caller, &[worker], false, now, app.config.leases.ttl).await)
}

/// Stops every live worker now: the emergency stop.
pub(crate) async fn stop_all(State(app): State<Arc<App>>, Posted(session, _): Posted) -> Response {
    stopped(crate::workers::stop(&app.pool, &session.caller, &[], true, true, app.config.leases.ttl).await)
}

fn stopped(told: crate::error::Result<Vec<uuid::Uuid>>) -> Response {
    match told {
        Ok(_) => Redirect::to("/workers").into_response(),
        Err(err) => error_response(err),
    }
}

/// Bytes as KiB, MiB or GiB.
fn bytes(bytes: i64) -> String {
    bytesize::ByteSize::b(u64::try_from(bytes).unwrap_or(0)).to_string()
}
