//! Statements on `pauses`: what operators paused (a swarm, an agent, a
//! worker), by whom, why and until when. The claims read the view `paused`
//! (the pauses in force) themselves, in `claims`.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// What a pause holds back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "pause_scope", rename_all = "lowercase")]
pub enum PauseScope {
    /// Every task of one swarm (target: its id).
    Swarm,
    /// Every task for one agent, on every worker (target: the agent's name).
    Agent,
    /// Every claim of workers with this name (target: the name).
    Worker,
}

/// One pause.
#[derive(Debug, Clone)]
pub struct PauseRow {
    /// What it holds back.
    pub scope: PauseScope,
    /// The swarm id, agent name or worker name.
    pub target: String,
    /// The token (or operator) that paused it.
    pub paused_by: String,
    /// Why.
    pub reason: String,
    /// Since.
    pub paused_at: DateTime<Utc>,
    /// When it ends by itself; `None`: when resumed.
    pub until: Option<DateTime<Utc>>,
    /// Whether the attempts running under it are stopped and handed back.
    pub stop_running: bool,
}

/// What a pause says, as written.
#[derive(Debug, Clone, Copy)]
pub struct NewPause<'a> {
    /// What it holds back.
    pub scope: PauseScope,
    /// The swarm id (canonical), agent name or worker name.
    pub target: &'a str,
    /// The token (or operator) pausing it.
    pub paused_by: &'a str,
    /// Why.
    pub reason: &'a str,
    /// How long, in seconds; `None`: until resumed.
    pub seconds: Option<f64>,
    /// Whether the attempts running under it are stopped and handed back.
    pub stop_running: bool,
}

/// Pauses a target, replacing an earlier pause of it; returns the pause.
pub async fn pause(executor: impl PgExecutor<'_>, pause: NewPause<'_>) -> sqlx::Result<PauseRow> {
    sqlx::query_as!(
        PauseRow,
        r#"
        insert into pauses (scope, target, paused_by, reason, until, stop_running)
        values ($1, $2, $3, $4, now() + make_interval(secs => $5), $6)
        on conflict (scope, target) do update
            set paused_by = excluded.paused_by, reason = excluded.reason,
                paused_at = now(), until = excluded.until, stop_running = excluded.stop_running
        returning scope as "scope: PauseScope", target, paused_by, reason, paused_at, until, stop_running
        "#,
        pause.scope as PauseScope,
        pause.target,
        pause.paused_by,
        pause.reason,
        pause.seconds,
        pause.stop_running,
    )
    .fetch_one(executor)
    .await
}

/// Ends the pause of `target`; whether one was in force.
pub async fn resume(executor: impl PgExecutor<'_>, scope: PauseScope, target: &str) -> sqlx::Result<bool> {
    let ended = sqlx::query_scalar!(
        r#"
        delete from pauses where scope = $1 and target = $2
        returning (until is null or until > now()) as "in_force!"
        "#,
        scope as PauseScope,
        target,
    )
    .fetch_optional(executor)
    .await?;
    Ok(ended.unwrap_or(false))
}

/// The pauses in force, oldest first.
pub async fn list(executor: impl PgExecutor<'_>) -> sqlx::Result<Vec<PauseRow>> {
    sqlx::query_as!(
        PauseRow,
        r#"
        select scope as "scope!: PauseScope", target as "target!", paused_by as "paused_by!", reason as "reason!",
               paused_at as "paused_at!", until, stop_running as "stop_running!"
        from paused
        order by paused_at, scope, target
        "#,
    )
    .fetch_all(executor)
    .await
}

/// Forgets pauses that ended by themselves (`pause.expired`); returns how many.
pub async fn prune_ended(executor: impl PgExecutor<'_>) -> sqlx::Result<u64> {
    let pruned = sqlx::query_scalar!(
        r#"
        with ended as (
            delete from pauses where until <= now() returning scope, target, until
        ), logged as (
            insert into events (kind, details)
            select 'pause.expired', array_agg(jsonb_build_object('scope', scope, 'target', target, 'until', until))
            from ended
            having count(*) > 0
        )
        select count(*) as "pruned!" from ended
        "#
    )
    .fetch_one(executor)
    .await?;
    Ok(u64::try_from(pruned).unwrap_or(0))
}
