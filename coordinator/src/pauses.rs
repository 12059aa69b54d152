//! Pausing and resuming a swarm, an agent or a worker: claims on every
//! coordinator skip what is paused from the moment the pause commits (they
//! read it in their own statement), and a pause with a duration ends by
//! itself (waiting claims notice within `claims.recheck_interval`). Running
//! tasks finish, unless the pause stops them: then the heartbeat statement
//! finds the attempts running under it, and each worker is told to stop them
//! and hand the tasks back uncharged (`CANCEL_CAUSE_PAUSED`), within one
//! heartbeat. Each change is audited.

use std::time::Duration;

use serde_json::json;
use sqlx::PgPool;

use crate::audit::{self, Action, Entry};
use crate::auth::Caller;
use crate::db;
use crate::db::pauses::{PauseRow, PauseScope};
use crate::error::{Error, Result};
use crate::tasks::validate::text_problem;

/// Longest reason kept.
const MAX_REASON: usize = 1024;
/// Longest pause with a duration.
const MAX_DURATION: Duration = Duration::from_secs(366 * 24 * 3600);

/// What an operator asks to pause.
#[derive(Debug, Clone, Copy)]
pub(crate) struct PauseRequest<'a> {
    /// What it holds back.
    pub scope: PauseScope,
    /// The swarm id, agent name or worker name.
    pub target: &'a str,
    /// Why.
    pub reason: &'a str,
    /// How long; `None`: until resumed.
    pub duration: Option<Duration>,
    /// Whether to stop the attempts running under it too.
    pub stop_running: bool,
}

/// Pauses a target (replacing an earlier pause of it) for a while, or until
/// resumed; with `stop_running`, its running attempts are stopped too.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty or malformed target, an overlong
/// reason or a zero or overlong duration; [`Error::SwarmNotFound`].
pub(crate) async fn pause(pool: &PgPool, caller: &Caller, request: PauseRequest<'_>) -> Result<PauseRow> {
    let PauseRequest { scope, target, reason, duration, stop_running } = request;
    let mut problems = target_problems(scope, target);
    if reason.len() > MAX_REASON {
        problems.push(format!("reason: longer than {MAX_REASON} bytes"));
    } else if let Some(problem) = text_problem(reason) {
        problems.push(format!("reason: {problem}"));
    }
    if let Some(duration) = duration
        && (duration.is_zero() || duration > MAX_DURATION)
    {
        problems.push("duration: must be more than zero and at most 366 days (unset: until resumed)".into());
    }
    if !problems.is_empty() {
        return Err(Error::InvalidArgument { problems });
    }
    let target = canonical(scope, target);
    let mut tx = pool.begin().await?;
    if scope == PauseScope::Swarm {
        let swarm = uuid::Uuid::parse_str(&target).map_err(|_| Error::invalid("target", "a swarm id"))?;
        if db::swarms::submitted_by(&mut *tx, swarm).await?.is_none() {
            return Err(Error::SwarmNotFound(swarm));
        }
    }
    let seconds = duration.map(|duration| duration.as_secs_f64());
    let new = db::pauses::NewPause { scope, target: &target, paused_by: &caller.name, reason, seconds, stop_running };
    let paused = db::pauses::pause(&mut *tx, new).await?;
    let audited = json!({
        "scope": scope_name(scope), "target": target, "reason": reason, "until": paused.until,
        "stop_running": stop_running,
    });
    audit::record(&mut tx, &Entry::done(caller, Action::Pause, audited, 1)).await?;
    tx.commit().await?;
    Ok(paused)
}

/// Ends the pause of `target`; whether one was in force. Waiting claims are woken.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty or malformed target.
pub(crate) async fn resume(pool: &PgPool, caller: &Caller, scope: PauseScope, target: &str) -> Result<bool> {
    let problems = target_problems(scope, target);
    if !problems.is_empty() {
        return Err(Error::InvalidArgument { problems });
    }
    let target = canonical(scope, target);
    let mut tx = pool.begin().await?;
    let resumed = db::pauses::resume(&mut *tx, scope, &target).await?;
    db::notifications::notify_ready(&mut *tx).await?;
    let audited = json!({ "scope": scope_name(scope), "target": target });
    audit::record(&mut tx, &Entry::done(caller, Action::Resume, audited, usize::from(resumed))).await?;
    tx.commit().await?;
    Ok(resumed)
}

/// The pauses in force.
///
/// # Errors
/// Database failures.
pub(crate) async fn list(pool: &PgPool) -> Result<Vec<PauseRow>> {
    Ok(db::pauses::list(pool).await?)
}

fn target_problems(scope: PauseScope, target: &str) -> Vec<String> {
    if target.is_empty() || target.len() > 256 {
        return vec!["target: must have 1 to 256 characters".into()];
    }
    if let Some(problem) = text_problem(target) {
        return vec![format!("target: {problem}")];
    }
    if scope == PauseScope::Swarm && uuid::Uuid::parse_str(target).is_err() {
        return vec![format!("target: `{target}` is not a swarm id")];
    }
    Vec::new()
}

/// The target as stored: a swarm id in its one canonical form (however it
/// was written: braced, upper-case, as a URN), so the claims can cast it and
/// a pause and its resume meet.
fn canonical(scope: PauseScope, target: &str) -> String {
    match uuid::Uuid::parse_str(target) {
        Ok(swarm) if scope == PauseScope::Swarm => swarm.to_string(),
        _ => target.to_owned(),
    }
}

/// The scope's name, as stored and shown.
pub(crate) fn scope_name(scope: PauseScope) -> &'static str {
    match scope {
        PauseScope::Swarm => "swarm",
        PauseScope::Agent => "agent",
        PauseScope::Worker => "worker",
    }
}
