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
}

/// Pauses `target`, replacing an earlier pause of it; returns the pause.
pub async fn pause(
    executor: impl PgExecutor<'_>,
    scope: PauseScope,
    target: &str,
    paused_by: &str,
    reason: &str,
    seconds: Option<f64>,
) -> sqlx::Result<PauseRow> {
    sqlx::query_as!(
        PauseRow,
        r#"
        insert into pauses (scope, target, paused_by, reason, until)
        values ($1, $2, $3, $4, now() + make_interval(secs => $5))
        on conflict (scope, target) do update
            set paused_by = excluded.paused_by, reason = excluded.reason,
                paused_at = now(), until = excluded.until
        returning scope as "scope: PauseScope", target, paused_by, reason, paused_at, until
        "#,
        scope as PauseScope,
        target,
        paused_by,
        reason,
        seconds,
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
               paused_at as "paused_at!", until
        from paused
        order by paused_at, scope, target
        "#,
    )
    .fetch_all(executor)
    .await
}

/// Forgets pauses that ended by themselves; returns how many.
pub async fn prune_ended(executor: impl PgExecutor<'_>) -> sqlx::Result<u64> {
    let pruned = sqlx::query!("delete from pauses where until <= now()").execute(executor).await?;
    Ok(pruned.rows_affected())
}
