//! Use-cases on tasks: submit, report outcomes, cancel, store output, read.
//! Each owns its transaction boundary and calls `db` for the statements;
//! handlers call these and never touch SQL.

pub mod logs;
pub mod report;
pub mod state;
pub mod submit;

use sqlx::PgPool;
use uuid::Uuid;

use crate::db;
use crate::error::{Error, Result};
use hive_shared::ids::TaskId;

/// Cancels a task that has not started yet.
///
/// # Errors
/// [`Error::TaskNotFound`], or [`Error::WrongStatus`] when it is running or finished.
pub async fn cancel(pool: &PgPool, task: TaskId, reason: &str) -> Result<db::tasks::TaskRow> {
    let reason = if reason.trim().is_empty() { "cancelled by an operator" } else { reason };
    if !db::tasks::cancel_unstarted(pool, task.0, reason).await? {
        let status = db::tasks::status_of(pool, task.0).await?.ok_or(Error::TaskNotFound(task))?;
        return Err(Error::WrongStatus {
            task,
            status,
            action: "cancel",
            allowed: "tasks that have not started (ready or blocked)",
        });
    }
    get(pool, task).await.map(|(row, _)| row)
}

/// One task with its attempts.
///
/// # Errors
/// [`Error::TaskNotFound`].
pub async fn get(pool: &PgPool, task: TaskId) -> Result<(db::tasks::TaskRow, Vec<db::tasks::AttemptRow>)> {
    let row = db::tasks::get(pool, task.0).await?.ok_or(Error::TaskNotFound(task))?;
    let attempts = db::tasks::attempts_of(pool, task.0).await?;
    Ok((row, attempts))
}

/// Largest page a list call returns.
pub const MAX_PAGE_SIZE: u32 = 1000;

/// A page of tasks and the cursor of the next one.
///
/// # Errors
/// Database failures only.
pub async fn list(
    pool: &PgPool,
    mut filter: db::tasks::ListFilter,
    page_size: u32,
    page_token: Option<Uuid>,
) -> Result<(Vec<db::tasks::TaskRow>, Option<Uuid>)> {
    let page_size = match page_size {
        0 => 100,
        size => size.min(MAX_PAGE_SIZE),
    };
    filter.before = page_token;
    let mut rows = db::tasks::list(pool, &filter, i64::from(page_size) + 1).await?;
    let next = if rows.len() > page_size as usize {
        rows.truncate(page_size as usize);
        rows.last().map(|row| row.id)
    } else {
        None
    };
    Ok((rows, next))
}
