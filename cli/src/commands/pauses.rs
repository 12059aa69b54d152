//! `hivectl pause`, `hivectl resume` and `hivectl pauses`: hold back a swarm,
//! an agent or a worker (claims skip it; running tasks finish, or with
//! `--stop` are stopped and handed back), for a while or until resumed, and
//! list what is paused, by whom and why.

use std::time::Duration;

use clap::{Args, ValueEnum};
use hive_shared::convert::duration;
use hive_shared::pb;
use serde::Serialize;

use super::Ctx;
use crate::output;

/// What a pause holds back.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum Scope {
    /// Every task of a swarm (by id).
    Swarm,
    /// Every task for an agent, on every worker (by name).
    Agent,
    /// Every claim of the workers with a name (by name).
    Worker,
}

impl Scope {
    fn wire(self) -> pb::PauseScope {
        match self {
            Scope::Swarm => pb::PauseScope::Swarm,
            Scope::Agent => pb::PauseScope::Agent,
            Scope::Worker => pb::PauseScope::Worker,
        }
    }
}

/// `hivectl pause SCOPE TARGET`.
#[derive(Debug, Args)]
pub struct PauseArgs {
    /// What to hold back.
    scope: Scope,
    /// The swarm id, agent name or worker name.
    target: String,
    /// Why (shown by `hivectl pauses`).
    #[arg(long, default_value = "")]
    reason: String,
    /// Resume by itself after this long (e.g. 30m); without it, until `hivectl resume`.
    #[arg(long = "for", value_parser = humantime::parse_duration)]
    duration: Option<Duration>,
    /// Also stop its running tasks: their agents are stopped within a
    /// heartbeat and the tasks handed back, not counted as failures.
    #[arg(long)]
    stop: bool,
}

/// `hivectl resume SCOPE TARGET`.
#[derive(Debug, Args)]
pub struct ResumeArgs {
    /// What was held back.
    scope: Scope,
    /// The swarm id, agent name or worker name.
    target: String,
}

/// A pause as listed.
#[derive(Debug, Serialize)]
struct PauseView {
    scope: String,
    target: String,
    paused_by: String,
    reason: String,
    paused_at: String,
    until: Option<String>,
    stop_running: bool,
}

impl From<pb::Pause> for PauseView {
    fn from(pause: pb::Pause) -> Self {
        let scope = pause.scope().as_str_name().trim_start_matches("PAUSE_SCOPE_").to_lowercase();
        Self {
            paused_at: output::rfc3339(pause.paused_at.as_ref()).unwrap_or_default(),
            until: output::rfc3339(pause.until.as_ref()),
            scope,
            target: pause.target,
            paused_by: pause.paused_by,
            reason: pause.reason,
            stop_running: pause.stop_running,
        }
    }
}

/// Pauses a swarm, an agent or a worker.
///
/// # Errors
/// A refused call (bad target, unknown swarm, not an admin).
pub async fn pause(ctx: &Ctx, args: PauseArgs) -> anyhow::Result<()> {
    let request = pb::PauseRequest {
        scope: args.scope.wire().into(),
        target: args.target,
        reason: args.reason,
        duration: args.duration.map(duration),
        stop_running: args.stop,
    };
    let response = ctx.admin()?.pause(request).await.map_err(|status| ctx.refused("pause", &status))?;
    let view = PauseView::from(response.into_inner().pause.unwrap_or_default());
    if ctx.json {
        output::json(&view);
    } else {
        let until = view.until.map_or_else(|| "until resumed".to_owned(), |until| format!("until {until}"));
        let running = if view.stop_running { "; its running tasks are being stopped and handed back" } else { "" };
        output::line(format!("paused {} {} {until}{running}", view.scope, view.target));
    }
    Ok(())
}

/// Ends a pause.
///
/// # Errors
/// A refused call.
pub async fn resume(ctx: &Ctx, args: ResumeArgs) -> anyhow::Result<()> {
    let request = pb::ResumeRequest { scope: args.scope.wire().into(), target: args.target.clone() };
    let response = ctx.admin()?.resume(request).await.map_err(|status| ctx.refused("resume", &status))?;
    let resumed = response.into_inner().resumed;
    if ctx.json {
        output::json(&serde_json::json!({ "resumed": resumed }));
    } else if resumed {
        output::line(format!("resumed {}", args.target));
    } else {
        output::line(format!("{} was not paused", args.target));
    }
    Ok(())
}

/// Lists the pauses in force.
///
/// # Errors
/// A refused call.
pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let response = ctx
        .admin()?
        .list_pauses(pb::ListPausesRequest {})
        .await
        .map_err(|status| ctx.refused("list pauses", &status))?;
    let views: Vec<PauseView> = response.into_inner().pauses.into_iter().map(PauseView::from).collect();
    if ctx.json {
        output::json(&views);
        return Ok(());
    }
    let mut table = output::table(&["scope", "target", "by", "since", "until", "running", "reason"]);
    for view in views {
        let until = view.until.unwrap_or_else(|| "resumed".into());
        table.add_row(vec![
            view.scope,
            view.target,
            view.paused_by,
            view.paused_at,
            until,
            (if view.stop_running { "stopped" } else { "finish" }).to_owned(),
            output::printable(&view.reason),
        ]);
    }
    output::line(table);
    Ok(())
}
