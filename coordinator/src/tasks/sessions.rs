//! Saved sessions: what an agent needs to resume its session (for Claude
//! Code, its transcript), saved by the worker running the task's current
//! attempt, during the attempt and as it ends, and handed to the worker of
//! the attempt that resumes it, on whatever host. Fenced like every report:
//! only the current attempt's worker may save or load.

use bytesize::ByteSize;
use hive_shared::ids::{AttemptId, TaskId, WorkerId};
use sqlx::PgPool;

use crate::db;
use crate::db::sessions::SavedSession;
use crate::error::{Error, Result};
use crate::tasks::validate::text_problem;

/// Longest session id.
const MAX_SESSION_ID: usize = 256;

/// One save.
#[derive(Debug)]
pub(crate) struct Save<'a> {
    /// The task.
    pub task: TaskId,
    /// Its current attempt.
    pub attempt: AttemptId,
    /// The worker holding it.
    pub worker: WorkerId,
    /// The agent's session id.
    pub session_id: &'a str,
    /// What the agent needs to resume it.
    pub state: &'a [u8],
}

/// Saves a task's session, replacing the one saved before.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty, overlong or unprintable session id
/// or a state over `max_size`; [`Error::LeaseLost`] when the attempt is not
/// the task's current one held by the worker.
pub(crate) async fn save(pool: &PgPool, save: &Save<'_>, max_size: ByteSize) -> Result<()> {
    let mut problems = Vec::new();
    if save.session_id.is_empty() || save.session_id.len() > MAX_SESSION_ID {
        problems.push(format!("session_id: must have 1 to {MAX_SESSION_ID} characters"));
    } else if let Some(problem) = text_problem(save.session_id) {
        problems.push(format!("session_id: {problem}"));
    }
    if save.state.len() as u64 > max_size.as_u64() {
        problems.push(format!(
            "state: {} is larger than sessions.max_size ({max_size})",
            ByteSize::b(save.state.len() as u64)
        ));
    }
    if !problems.is_empty() {
        return Err(Error::InvalidArgument { problems });
    }
    let saved =
        db::sessions::save(pool, save.task.0, save.attempt.0, save.worker.0, save.session_id, save.state).await?;
    if saved { Ok(()) } else { Err(Error::LeaseLost { task: save.task, attempt: save.attempt }) }
}

/// The task's saved session, for its current attempt held by `worker`.
///
/// # Errors
/// [`Error::LeaseLost`] when the attempt is not the task's current one held by the worker.
pub(crate) async fn load(
    pool: &PgPool,
    task: TaskId,
    attempt: AttemptId,
    worker: WorkerId,
) -> Result<Option<SavedSession>> {
    db::sessions::load(pool, task.0, attempt.0, worker.0).await?.map_err(|()| Error::LeaseLost { task, attempt })
}
