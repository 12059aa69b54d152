//! What holds work back, and the controls that release it: pauses (of a
//! swarm, an agent or a worker) and provider accounts cooling down after a
//! rate limit, listed on the overview; for an admin, pause a swarm from its
//! page, resume a pause, clear a cool-down. Each runs the use case the API
//! runs (`pauses::pause`, `pauses::resume`, `cooldowns::clear`), audited.

use std::fmt::Write;
use std::sync::Arc;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};

use super::actions::Posted;
use super::html::{error_page, error_response, escape, time};
use super::session::Session;
use crate::app::App;
use crate::db::cooldowns::CooldownRow;
use crate::db::pauses::{PauseRow, PauseScope};
use crate::pauses::PauseRequest;

/// The overview's section: pauses in force and accounts cooling down.
pub(crate) fn section(session: &Session, pauses: &[PauseRow], cooldowns: &[CooldownRow]) -> String {
    let mut html = String::from(r#"<h2>Paused</h2>"#);
    if pauses.is_empty() {
        html.push_str(r#"<p class="empty" id="no-pauses">Nothing is paused.</p>"#);
    } else {
        html.push_str(
            r#"<table id="pauses"><tr><th>what</th><th>by</th><th>why</th><th>since</th><th>until</th><th></th></tr>"#,
        );
        for pause in pauses {
            let (scope, target) = (scope_name(pause.scope), escape(&pause.target));
            let stops = if pause.stop_running { " (running attempts stopped)" } else { "" };
            let resume = if session.may_act() {
                form(session, "/pauses/resume", &[("scope", scope), ("target", &pause.target)], "resume", "Resume")
            } else {
                String::new()
            };
            let _ = write!(
                html,
                r#"<tr><td>{scope} {target}{stops}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{resume}</td></tr>"#,
                escape(&pause.paused_by),
                escape(&pause.reason),
                time(pause.paused_at),
                pause.until.map(time).unwrap_or_else(|| "resumed".into()),
            );
        }
        html.push_str("</table>");
    }
    html.push_str("<h2>Provider cool-downs</h2>");
    if cooldowns.is_empty() {
        html.push_str(r#"<p class="empty">No provider account is cooling down.</p>"#);
        return html;
    }
    html.push_str(
        r#"<table id="cooldowns"><tr><th>account</th><th>until</th><th>refusals</th><th>last</th><th></th></tr>"#,
    );
    for cooldown in cooldowns {
        let clear = if session.may_act() {
            form(session, "/cooldowns/clear", &[("account", &cooldown.account)], "clear", "Clear")
        } else {
            String::new()
        };
        let probing = if cooldown.probing { " (probing)" } else { "" };
        let _ = write!(
            html,
            r#"<tr><td>{}</td><td>{}{probing}</td><td class="n">{}</td><td>{}</td><td>{clear}</td></tr>"#,
            escape(&cooldown.account),
            time(cooldown.until),
            cooldown.step,
            escape(&cooldown.reason),
        );
    }
    html.push_str("</table>");
    html
}

/// The swarm page's control: pause it (until resumed).
pub(crate) fn pause_swarm(session: &Session, swarm: uuid::Uuid) -> String {
    let target = swarm.to_string();
    form(session, "/pauses", &[("scope", "swarm"), ("target", &target)], "pause", "Pause this swarm")
}

/// A control's form with hidden `fields`.
fn form(session: &Session, action: &str, fields: &[(&str, &str)], value: &str, label: &str) -> String {
    let mut html = format!(r#"<form method="post" action="{action}" class="control">"#);
    for (name, field) in fields.iter().chain(&[("csrf", session.csrf.as_str())]) {
        let _ = write!(html, r#"<input type="hidden" name="{name}" value="{}">"#, escape(field));
    }
    let _ = write!(html, r#"<button name="do" value="{value}">{label}</button></form>"#);
    html
}

/// Pauses a target until resumed.
pub(crate) async fn pause(State(app): State<Arc<App>>, Posted(session, form): Posted) -> Response {
    let Some(scope) = scope_of(form.get("scope")) else {
        return error_page(StatusCode::BAD_REQUEST, "scope: must be swarm, agent or worker");
    };
    let request = PauseRequest {
        scope,
        target: form.get("target"),
        reason: "paused from the dashboard",
        duration: None,
        stop_running: false,
    };
    match crate::pauses::pause(&app.pool, &session.caller, request).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(err) => error_response(err),
    }
}

/// Resumes a pause.
pub(crate) async fn resume(State(app): State<Arc<App>>, Posted(session, form): Posted) -> Response {
    let Some(scope) = scope_of(form.get("scope")) else {
        return error_page(StatusCode::BAD_REQUEST, "scope: must be swarm, agent or worker");
    };
    match crate::pauses::resume(&app.pool, &session.caller, scope, form.get("target")).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(err) => error_response(err),
    }
}

/// Ends an account's cool-down early.
pub(crate) async fn clear_cooldown(State(app): State<Arc<App>>, Posted(session, form): Posted) -> Response {
    match crate::cooldowns::clear(&app.pool, &session.caller, form.get("account")).await {
        Ok(_) => Redirect::to("/").into_response(),
        Err(err) => error_response(err),
    }
}

fn scope_name(scope: PauseScope) -> &'static str {
    match scope {
        PauseScope::Swarm => "swarm",
        PauseScope::Agent => "agent",
        PauseScope::Worker => "worker",
    }
}

fn scope_of(text: &str) -> Option<PauseScope> {
    [PauseScope::Swarm, PauseScope::Agent, PauseScope::Worker].into_iter().find(|scope| scope_name(*scope) == text)
}
