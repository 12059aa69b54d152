//! Statements on `task_locks` that agents make while they run, and listing.
//! (Locks a task declares are taken at claim, in `claims`; every lock of an
//! attempt is released when the attempt ends, in `outcomes`.)

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// What an attempt to take a lock found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Taking {
    /// Taken (or already held by this attempt).
    Taken,
    /// Another task holds it.
    HeldBy(Uuid),
    /// Another attempt took it after this statement's snapshot: look again.
    Contended,
}

/// Takes `key` for the current attempt of `task`.
pub async fn acquire(executor: impl PgExecutor<'_>, task: Uuid, attempt: Uuid, key: &str) -> sqlx::Result<Taking> {
    let holder = sqlx::query_scalar!(
        r#"
        with taken as (
            insert into task_locks (key, task_id, attempt_id) values ($3, $1, $2)
            on conflict (key) do update set key = excluded.key where task_locks.attempt_id = excluded.attempt_id
            returning task_id
        )
        select coalesce((select task_id from taken), (select task_id from task_locks where key = $3)) as holder
        "#,
        task,
        attempt,
        key,
    )
    .fetch_one(executor)
    .await?;
    Ok(match holder {
        Some(holder) if holder == task => Taking::Taken,
        Some(holder) => Taking::HeldBy(holder),
        // The conflicting row committed after this statement's snapshot began,
        // so the insert saw it and the select did not.
        None => Taking::Contended,
    })
}

/// Releases `key` if `attempt` holds it; `true` when it did.
pub async fn release(executor: impl PgExecutor<'_>, attempt: Uuid, key: &str) -> sqlx::Result<bool> {
    let result = sqlx::query!("delete from task_locks where key = $1 and attempt_id = $2", key, attempt)
        .execute(executor)
        .await?;
    Ok(result.rows_affected() == 1)
}

/// Whether `attempt` is the current, leased attempt of `task`.
pub async fn attempt_is_current(executor: impl PgExecutor<'_>, task: Uuid, attempt: Uuid) -> sqlx::Result<bool> {
    let current = sqlx::query_scalar!(
        r#"select exists(select 1 from task_states where task_id = $1 and attempt_id = $2) as "current!""#,
        task,
        attempt
    )
    .fetch_one(executor)
    .await?;
    Ok(current)
}

/// A held lock.
#[derive(Debug)]
pub struct LockRow {
    /// Key.
    pub key: String,
    /// Holding task.
    pub task_id: Uuid,
    /// Holding attempt.
    pub attempt_id: Uuid,
    /// Since.
    pub acquired_at: DateTime<Utc>,
}

/// Every held lock, by key.
pub async fn list(executor: impl PgExecutor<'_>) -> sqlx::Result<Vec<LockRow>> {
    sqlx::query_as!(LockRow, "select key, task_id, attempt_id, acquired_at from task_locks order by key")
        .fetch_all(executor)
        .await
}
