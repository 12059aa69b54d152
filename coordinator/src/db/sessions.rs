//! Statements on `task_sessions`: the state an agent needs to resume its
//! session, saved and loaded by the worker holding the task's current
//! attempt, and pruned once its task has been finished for a while.

use sqlx::PgExecutor;
use uuid::Uuid;

/// A task's saved session.
#[derive(Debug)]
pub struct SavedSession {
    /// The agent's session id.
    pub session_id: String,
    /// What the agent needs to resume it.
    pub state: Vec<u8>,
}

/// Saves the session of `task`'s stage, replacing any earlier one, while `attempt`
/// is its current attempt held by `worker`; `false` when it is not.
pub async fn save(
    executor: impl PgExecutor<'_>,
    task: Uuid,
    attempt: Uuid,
    worker: Uuid,
    session_id: &str,
    state: &[u8],
) -> sqlx::Result<bool> {
    let saved = sqlx::query!(
        r#"
        insert into task_sessions (task_id, stage, session_id, attempt_id, state)
        select s.task_id, s.stage, $4, $2, $5 from task_states s
        where s.task_id = $1 and s.attempt_id = $2 and s.worker_id = $3
        -- Held while the row is written, so an attempt that ends meanwhile
        -- (reaped, re-claimed) cannot have a stale save land after it.
        for share of s
        on conflict (task_id, stage) do update
            set session_id = excluded.session_id, attempt_id = excluded.attempt_id,
                state = excluded.state, saved_at = now()
        "#,
        task,
        attempt,
        worker,
        session_id,
        state,
    )
    .execute(executor)
    .await?;
    Ok(saved.rows_affected() == 1)
}

/// The saved session of `task`'s stage, for `attempt` while it is the task's
/// current attempt held by `worker`: `Err(())` inside when it is not.
pub async fn load(
    executor: impl PgExecutor<'_>,
    task: Uuid,
    attempt: Uuid,
    worker: Uuid,
) -> sqlx::Result<Result<Option<SavedSession>, ()>> {
    let row = sqlx::query!(
        r#"
        select ss.session_id as "session_id?", ss.state as "state?"
        from task_states s left join task_sessions ss on ss.task_id = s.task_id and ss.stage = s.stage
        where s.task_id = $1 and s.attempt_id = $2 and s.worker_id = $3
        "#,
        task,
        attempt,
        worker,
    )
    .fetch_optional(executor)
    .await?;
    Ok(match row {
        None => Err(()),
        Some(row) => Ok(row.session_id.zip(row.state).map(|(session_id, state)| SavedSession { session_id, state })),
    })
}

/// Forgets the sessions of tasks finished more than `seconds` ago; returns how many.
pub async fn prune(executor: impl PgExecutor<'_>, seconds: f64) -> sqlx::Result<u64> {
    let pruned = sqlx::query!(
        r#"
        delete from task_sessions ss using task_states s
        where s.task_id = ss.task_id and s.finished_at < now() - make_interval(secs => $1)
        "#,
        seconds,
    )
    .execute(executor)
    .await?;
    Ok(pruned.rows_affected())
}
