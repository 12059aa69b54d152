//! Stalls: an agent's own progress reports (`hivectl progress`), which count
//! against its stall timeout, and the attempts whose workers say they are
//! stalled (workers decide that from output, folder changes, CPU and these
//! reports; they beat it in with their leases, see `db::beats`).

use hive_shared::ids::{AttemptId, TaskId};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db;
use crate::error::{Error, Result};
use crate::tasks::validate::text_problem;

/// Longest progress message, in bytes.
pub(crate) const MAX_MESSAGE: usize = 256;

/// Most stalled attempts one listing returns.
pub(crate) const MAX_LISTED: i64 = 100;

/// Records that the attempt's agent is making progress, doing `message`.
///
/// # Errors
/// [`Error::InvalidArgument`] for a message too long or not text;
/// [`Error::LeaseLost`] when the attempt is not the task's current one.
pub(crate) async fn report(pool: &PgPool, task: TaskId, attempt: AttemptId, message: &str) -> Result<()> {
    if message.len() > MAX_MESSAGE {
        return Err(Error::invalid("message", format!("is {} bytes; at most {MAX_MESSAGE}", message.len())));
    }
    if let Some(problem) = text_problem(message) {
        return Err(Error::invalid("message", problem));
    }
    if !db::leases::report_progress(pool, task.0, attempt.0, message).await? {
        return Err(Error::LeaseLost { task, attempt });
    }
    Ok(())
}

/// Stalled attempts of one swarm or of all, longest stalled first.
///
/// # Errors
/// Database failures.
pub(crate) async fn list(pool: &PgPool, swarm: Option<Uuid>) -> Result<Vec<db::leases::Stalled>> {
    Ok(db::leases::stalled(pool, swarm, MAX_LISTED).await?)
}
