//! One task's page: what it is, its attempts, its validator's verdicts,
//! the change its agent made in a git workspace (branch, commit, diffstat,
//! patch), its trace, and its output, which follows the agent live while
//! the task runs; for an admin, cancel or retry.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::Response;
use hive_shared::ids::TaskId;
use serde_json::Value as Json;

use super::html::{Refresh, error_page, error_response, escape, page, time};
use super::pages::{head, pretty};
use super::session::Session;
use crate::app::App;
use crate::db::tasks::AttemptRow;
use crate::status::TaskStatus;
use crate::tasks;

/// One task: what it is, its attempts, and (for an admin) cancel or retry.
pub(crate) async fn show(session: Session, State(app): State<Arc<App>>, Path(id): Path<String>) -> Response {
    let task = match TaskId::parse(&id) {
        Ok(task) => task,
        Err(_) => return error_page(StatusCode::NOT_FOUND, &format!("`{id}` is not a task id")),
    };
    let first_output = tasks::logs::page(&app.pool, task, None, 0, 200);
    let read = tokio::try_join!(tasks::get(&app.pool, task), head(&app.pool), first_output);
    let ((row, attempts), head, output) = match read {
        Ok(read) => read,
        Err(err) => return error_response(err),
    };
    let mut body = format!(
        r#"<h1>Task {name}</h1><dl class="task"><dt>id</dt><dd>{id}</dd><dt>swarm</dt><dd><a href="/swarms/{swarm_id}">{swarm}</a></dd>
<dt>agent</dt><dd>{agent}</dd><dt>status</dt><dd class="status {status}" id="status">{status}</dd>
<dt>attempts</dt><dd>{attempts} of {max} ({failures} counted failures)</dd><dt>priority</dt><dd>{priority}</dd></dl>"#,
        name = escape(row.key.as_deref().unwrap_or(&row.id.to_string())),
        id = row.id,
        swarm_id = row.swarm_id,
        swarm = escape(&row.swarm),
        agent = escape(&row.agent),
        status = row.status,
        attempts = row.attempts,
        max = row.max_attempts,
        failures = row.failures,
        priority = row.priority,
    );
    if session.may_act() {
        body.push_str(&controls(&session, row.id, row.status));
    }
    let _ = write!(body, "<h2>Prompt</h2><pre>{}</pre>", escape(&row.prompt));
    if let Some(input) = &row.input {
        let _ = write!(body, "<h2>Input</h2><pre>{}</pre>", escape(&pretty(input)));
    }
    if let Some(result) = &row.result {
        body.push_str(&workspace(result));
        let _ = write!(body, "<h2>Result</h2><pre>{}</pre>", escape(&pretty(result)));
    }
    if let Some(error) = &row.error {
        let _ = write!(body, r#"<h2>Error</h2><pre class="error">{}</pre>"#, escape(error));
    }
    body.push_str("<h2>Attempts</h2><table><tr><th>#</th><th>stage</th><th>worker</th><th>started</th><th>finished</th><th>outcome</th><th>exit</th><th>error</th><th>tokens in/out</th><th>cost</th></tr>");
    for attempt in &attempts {
        let _ = write!(
            body,
            r#"<tr><td class="n">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{:?}</td><td class="n">{}</td><td class="error">{}</td><td class="n">{}/{}</td><td class="n">{}</td></tr>"#,
            attempt.number,
            escape(&attempt.stage),
            attempt.worker_id,
            time(attempt.started_at),
            attempt.finished_at.map(|at| at.format("%H:%M:%S").to_string()).unwrap_or_default(),
            attempt.outcome,
            attempt.exit_code.map(|code| code.to_string()).unwrap_or_default(),
            escape(attempt.error.as_deref().unwrap_or_default()),
            attempt.input_tokens.unwrap_or_default(),
            attempt.output_tokens.unwrap_or_default(),
            attempt.cost.map(|cost| format!("${cost:.4}")).unwrap_or_default(),
        );
    }
    body.push_str("</table>");
    body.push_str(&verdicts(&attempts));
    body.push_str(&trace(app.config.http.trace_url.as_deref(), row.id));
    let _ = write!(body, r#"<h2>Output <a class="hint" href="/tasks/{}/output">(all of it)</a></h2>"#, row.id);
    let follow = (!row.status.is_terminal()).then_some(row.id);
    body.push_str(&super::output::render(&output, follow));
    page(
        &format!("Task {}", row.key.as_deref().unwrap_or("")),
        &session,
        head,
        (&format!("task={}", row.id), Refresh::Reread),
        &body,
    )
}

/// The forms an admin acts with on a task in `status`.
fn controls(session: &Session, task: uuid::Uuid, status: TaskStatus) -> String {
    let form = |action: &str, label: &str| {
        format!(
            r#"<form method="post" action="/tasks/{task}/{action}" class="control"><input type="hidden" name="csrf" value="{}"><button name="do" value="{action}">{label}</button></form>"#,
            escape(&session.csrf)
        )
    };
    let mut html = String::from(r#"<div class="controls">"#);
    if !status.is_terminal() {
        html.push_str(&form("cancel", "Cancel"));
    }
    if status == TaskStatus::Dead {
        html.push_str(&form("retry", "Retry"));
    }
    html.push_str("</div>");
    html
}

/// The validator's verdicts, one row per round, when the task has a validator.
fn verdicts(attempts: &[AttemptRow]) -> String {
    let rounds: Vec<&AttemptRow> = attempts.iter().filter(|attempt| attempt.stage == "validate").collect();
    if rounds.is_empty() {
        return String::new();
    }
    let mut html = String::from(
        r#"<h2>Validator verdicts</h2><table id="verdicts"><tr><th>attempt</th><th>validator</th><th>verdict</th><th>feedback</th></tr>"#,
    );
    for attempt in rounds {
        let result = attempt.result.as_ref();
        let verdict = result.and_then(|result| result.get("verdict")).and_then(Json::as_str).unwrap_or("none");
        let feedback = result.map(pretty).or_else(|| attempt.error.clone()).unwrap_or_default();
        let _ = write!(
            html,
            r#"<tr><td class="n">{}</td><td>{}</td><td class="verdict {}">{}</td><td><pre>{}</pre></td></tr>"#,
            attempt.number,
            escape(attempt.agent.as_deref().unwrap_or("")),
            escape(&verdict.to_ascii_lowercase()),
            escape(verdict),
            escape(&feedback),
        );
    }
    html.push_str("</table>");
    html
}

/// The change the agent made in its git workspace (`result.workspace`):
/// branch, commit, diffstat and the patch, each line marked added or removed.
fn workspace(result: &Json) -> String {
    let Some(workspace) = result.get("workspace") else { return String::new() };
    let field = |name: &str| workspace.get(name).and_then(Json::as_str).unwrap_or("");
    let mut html = format!(
        r#"<h2>Change</h2><dl class="task"><dt>branch</dt><dd><code>{}</code></dd><dt>commit</dt><dd><code>{}</code></dd></dl>"#,
        escape(field("branch")),
        escape(field("commit")),
    );
    let stat = field("diffstat");
    if !stat.is_empty() {
        let _ = write!(html, r#"<pre class="diffstat">{}</pre>"#, escape(stat));
    }
    let patch = field("patch");
    if !patch.is_empty() {
        html.push_str(r#"<pre class="patch" id="patch">"#);
        for line in patch.split_inclusive('\n') {
            let class = match line.as_bytes().first() {
                Some(b'+') if !line.starts_with("+++") => "add",
                Some(b'-') if !line.starts_with("---") => "del",
                Some(b'@') => "hunk",
                _ => "ctx",
            };
            let _ = write!(html, r#"<span class="{class}">{}</span>"#, escape(line));
        }
        html.push_str("</pre>");
        if workspace.get("patch_truncated").and_then(Json::as_bool) == Some(true) {
            html.push_str(r#"<p class="hint">The patch was cut at the agent's <code>workspace.max_patch</code>: the whole change is on its branch.</p>"#);
        }
    }
    html
}

/// The task's trace id (its id without dashes), linked to the tracing UI
/// when `http.trace_url` says where (`{trace_id}` in it is replaced).
fn trace(template: Option<&str>, task: uuid::Uuid) -> String {
    let id = task.simple().to_string();
    match template {
        Some(template) => format!(
            r#"<p class="trace">Trace <a id="trace" href="{}" rel="noreferrer">{id}</a></p>"#,
            escape(&template.replace("{trace_id}", &id))
        ),
        None => format!(r#"<p class="trace">Trace <code id="trace">{id}</code></p>"#),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_patch_is_escaped_and_its_lines_marked() {
        let result = json!({"workspace": {"branch": "hive/t", "commit": "abc", "patch": "--- a/x\n+++ b/x\n@@ -1 +1 @@\n-<old>\n+<b>new</b>\n"}});
        let html = workspace(&result);
        assert!(html.contains(r#"<span class="del">-&lt;old&gt;"#), "{html}");
        assert!(html.contains(r#"<span class="add">+&lt;b&gt;new&lt;/b&gt;"#), "{html}");
        assert!(html.contains(r#"<span class="ctx">--- a/x"#), "{html}");
        assert!(workspace(&json!({"text": "no workspace"})).is_empty());
    }

    #[test]
    fn the_trace_links_only_where_configured() {
        let task = uuid::Uuid::nil();
        assert!(trace(None, task).contains("<code id=\"trace\">00000000000000000000000000000000</code>"));
        let linked = trace(Some("https://jaeger/trace/{trace_id}?a=1&b=2"), task);
        assert!(
            linked.contains(r#"href="https://jaeger/trace/00000000000000000000000000000000?a=1&amp;b=2""#),
            "{linked}"
        );
    }
}
