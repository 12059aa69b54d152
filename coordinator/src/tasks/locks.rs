//! Locks an agent takes and releases while it runs (`hivectl lock`), fenced
//! by its attempt: only a task's current, leased attempt may take one, and
//! every lock goes when the attempt ends.

use std::time::Duration;

use hive_shared::ids::{AttemptId, TaskId};
use sqlx::PgPool;
use tokio::time::Instant;

use crate::db;
use crate::db::locks::Taking;
use crate::error::{Error, Result};
use crate::tasks::validate::text_problem;

/// How often a waiting acquire looks again.
const RETRY_EVERY: Duration = Duration::from_millis(200);
/// Longest wait an agent may ask for.
pub(crate) const MAX_WAIT: Duration = Duration::from_secs(600);

/// Takes `key` for the attempt, waiting up to `wait` while another task
/// holds it; returns the holder when it could not.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty key; [`Error::LeaseLost`] when the
/// attempt is not the task's current one.
pub(crate) async fn acquire(
    pool: &PgPool,
    task: TaskId,
    attempt: AttemptId,
    key: &str,
    wait: Duration,
) -> Result<Option<TaskId>> {
    if key.is_empty() || key.len() > 512 {
        return Err(Error::invalid("key", "a lock key must have 1 to 512 characters"));
    }
    if let Some(problem) = text_problem(key) {
        return Err(Error::invalid("key", problem));
    }
    let deadline = Instant::now() + wait.min(MAX_WAIT);
    loop {
        if !db::locks::attempt_is_current(pool, task.0, attempt.0).await? {
            return Err(Error::LeaseLost { task, attempt });
        }
        match db::locks::acquire(pool, task.0, attempt.0, key).await? {
            Taking::Taken => return Ok(None),
            // Taken by another attempt a moment ago: the next statement sees by whom.
            Taking::Contended => {}
            Taking::HeldBy(holder) if Instant::now() + RETRY_EVERY > deadline => return Ok(Some(TaskId(holder))),
            Taking::HeldBy(_) => tokio::time::sleep(RETRY_EVERY).await,
        }
    }
}

/// Releases `key` if the attempt holds it.
///
/// # Errors
/// Database failures.
pub(crate) async fn release(pool: &PgPool, attempt: AttemptId, key: &str) -> Result<bool> {
    let released = db::locks::release(pool, attempt.0, key).await?;
    if released {
        // A task waiting for this lock may be claimable now.
        db::notifications::notify_ready(pool).await?;
    }
    Ok(released)
}

/// Every held lock, by key.
///
/// # Errors
/// Database failures.
pub(crate) async fn list(pool: &PgPool) -> Result<Vec<db::locks::LockRow>> {
    Ok(db::locks::list(pool).await?)
}
