//! Use-cases on tasks: submit, report outcomes, cancel, retry, store output,
//! read. Each owns its transaction boundary and calls `db` for the
//! statements; an operator's change records its audit row in that
//! transaction. Handlers call these and never touch SQL.

pub(crate) mod graph;
pub(crate) mod locks;
pub(crate) mod logs;
pub(crate) mod progress;
pub(crate) mod report;
pub(crate) mod retry;
pub(crate) mod sessions;
pub(crate) mod stage;
pub(crate) mod stalls;
pub(crate) mod submit;
pub(crate) mod validate;

use serde_json::json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::audit::{self, Action, Entry};
use crate::auth::Caller;
use crate::db;
use crate::error::{Error, Result};
use crate::status::TaskStatus;
use hive_shared::ids::TaskId;

/// Cancels one task: at once when it has not started; a running task becomes
/// cancelling and its worker is told to stop the agent. Audited as `CancelTask`.
///
/// # Errors
/// [`Error::TaskNotFound`], or [`Error::WrongStatus`] when it has finished.
pub(crate) async fn cancel(pool: &PgPool, caller: &Caller, task: TaskId, reason: &str) -> Result<db::tasks::TaskRow> {
    let reason = reason_or_default(reason)?;
    let filter = db::filters::TaskFilter { task_ids: Some(vec![task.0]), ..Default::default() };
    let mut tx = pool.begin().await?;
    let (touched, downstream) = cancel_in(&mut tx, &filter, reason).await?;
    if touched.is_empty() {
        let status = db::tasks::status_of(&mut *tx, task.0).await?.ok_or(Error::TaskNotFound(task))?;
        return Err(Error::WrongStatus {
            task,
            status,
            action: "cancel",
            allowed: "unfinished tasks (blocked, ready or running)",
        });
    }
    let target = json!({ "task_id": task.to_string(), "reason": reason });
    let entry = Entry::done(caller, Action::CancelTask, target, touched.len() + downstream);
    audit::record(&mut tx, &entry).await?;
    tx.commit().await?;
    get(pool, task).await.map(|(row, _)| row)
}

/// Cancels every unfinished task matching `filter`; returns (cancelled,
/// cancelling) counts. Audited as `CancelTasks`.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty filter; [`Error::TasksNotFound`]
/// naming the given ids that name no task, and [`Error::SwarmNotFound`]
/// (nothing is cancelled then); database failures.
pub(crate) async fn cancel_matching(
    pool: &PgPool,
    caller: &Caller,
    filter: &db::filters::TaskFilter,
    reason: &str,
) -> Result<(u64, u64)> {
    require_filter(filter)?;
    let reason = reason_or_default(reason)?;
    let mut tx = pool.begin().await?;
    require_targets_exist(&mut tx, filter).await?;
    let (touched, downstream) = cancel_in(&mut tx, filter, reason).await?;
    let mut target = filter_target(filter);
    target["reason"] = json!(reason);
    let entry = Entry::done(caller, Action::CancelTasks, target, touched.len() + downstream);
    audit::record(&mut tx, &entry).await?;
    tx.commit().await?;
    let cancelling = touched.iter().filter(|task| task.status == TaskStatus::Cancelling).count() as u64;
    Ok((touched.len() as u64 - cancelling, cancelling))
}

/// The reason a cancel stores: the operator's, or a default.
///
/// # Errors
/// [`Error::InvalidArgument`] for text that cannot be stored.
fn reason_or_default(reason: &str) -> Result<&str> {
    if let Some(problem) = validate::text_problem(reason) {
        return Err(Error::invalid("reason", problem));
    }
    Ok(if reason.trim().is_empty() { "cancelled by an operator" } else { reason })
}

/// Cancels what `filter` matches and what depends on it; returns the tasks
/// matched and how many dependents were cancelled with them.
async fn cancel_in(
    tx: &mut PgConnection,
    filter: &db::filters::TaskFilter,
    reason: &str,
) -> Result<(Vec<db::filters::Cancelled>, usize)> {
    let touched = db::filters::cancel_matching(tx, filter, reason).await?;
    let cancelled: Vec<Uuid> =
        touched.iter().filter(|task| task.status == TaskStatus::Cancelled).map(|task| task.id).collect();
    let downstream = if cancelled.is_empty() {
        0
    } else {
        db::graph::cancel_downstream(tx, &cancelled, report::UPSTREAM_REASON).await?.len()
    };
    let mut workers: Vec<Uuid> = touched.iter().filter_map(|task| task.worker_id).collect();
    workers.sort_unstable();
    workers.dedup();
    for worker in workers {
        db::notifications::notify_worker(&mut *tx, worker).await?;
    }
    Ok((touched, downstream))
}

/// Puts dead tasks matching `filter` back in the queue with a fresh failure
/// budget, and puts back (blocked again) what was cancelled because they
/// died. Audited as `RetryTasks`.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty filter; [`Error::TasksNotFound`]
/// naming the given ids that name no task, and [`Error::SwarmNotFound`]
/// (nothing is retried then); database failures.
pub(crate) async fn retry(pool: &PgPool, caller: &Caller, filter: &db::filters::TaskFilter) -> Result<Vec<Uuid>> {
    require_filter(filter)?;
    let mut tx = pool.begin().await?;
    require_targets_exist(&mut tx, filter).await?;
    let retried = db::filters::retry_dead(&mut *tx, filter).await?;
    let mut restored = 0;
    if !retried.is_empty() {
        restored = db::graph::restore_downstream(&mut tx, &retried).await?;
        db::notifications::notify_ready(&mut *tx).await?;
    }
    let affected = retried.len().saturating_add(usize::try_from(restored).unwrap_or(usize::MAX));
    audit::record(&mut tx, &Entry::done(caller, Action::RetryTasks, filter_target(filter), affected)).await?;
    tx.commit().await?;
    Ok(retried)
}

fn require_filter(filter: &db::filters::TaskFilter) -> Result<()> {
    let empty = filter.task_ids.as_ref().is_none_or(Vec::is_empty)
        && filter.swarm_id.is_none()
        && filter.agent.is_none()
        && filter.error_contains.is_none();
    if empty {
        return Err(Error::invalid(
            "filter",
            "give task ids, a swarm, an agent or error text; an empty filter would match everything",
        ));
    }
    Ok(())
}

/// Checks that every task id and the swarm `filter` names exist.
///
/// # Errors
/// [`Error::TasksNotFound`] naming every missing id; [`Error::SwarmNotFound`].
async fn require_targets_exist(tx: &mut PgConnection, filter: &db::filters::TaskFilter) -> Result<()> {
    if let Some(ids) = filter.task_ids.as_deref().filter(|ids| !ids.is_empty()) {
        let missing = db::filters::missing_tasks(&mut *tx, ids).await?;
        if !missing.is_empty() {
            return Err(Error::TasksNotFound(missing.into_iter().map(TaskId).collect()));
        }
    }
    if let Some(swarm) = filter.swarm_id
        && db::swarms::submitted_by(&mut *tx, swarm).await?.is_none()
    {
        return Err(Error::SwarmNotFound(swarm));
    }
    Ok(())
}

/// A bulk call's filter, as its audit target: the fields that are set.
fn filter_target(filter: &db::filters::TaskFilter) -> serde_json::Value {
    let mut target = json!({});
    if let Some(ids) = &filter.task_ids {
        target["task_ids"] = json!(ids.iter().map(ToString::to_string).collect::<Vec<_>>());
    }
    if let Some(swarm) = filter.swarm_id {
        target["swarm_id"] = json!(swarm.to_string());
    }
    if let Some(agent) = &filter.agent {
        target["agent"] = json!(agent);
    }
    if let Some(text) = &filter.error_contains {
        target["error_contains"] = json!(text);
    }
    target
}

/// One task with its attempts.
///
/// # Errors
/// [`Error::TaskNotFound`].
pub(crate) async fn get(pool: &PgPool, task: TaskId) -> Result<(db::tasks::TaskRow, Vec<db::tasks::AttemptRow>)> {
    let row = db::tasks::get(pool, task.0).await?.ok_or(Error::TaskNotFound(task))?;
    let attempts = db::tasks::attempts_of(pool, task.0).await?;
    Ok((row, attempts))
}

/// Largest page a list call returns.
pub(crate) const MAX_PAGE_SIZE: u32 = 1000;

/// A page of tasks and the cursor of the next one.
///
/// # Errors
/// Database failures only.
pub(crate) async fn list(
    pool: &PgPool,
    mut filter: db::tasks::ListFilter,
    page: Page,
    page_token: Option<Uuid>,
) -> Result<(Vec<db::tasks::TaskRow>, Option<Uuid>)> {
    let page_size = match page.size {
        0 => 100,
        size => size.min(MAX_PAGE_SIZE),
    };
    filter.before = page_token;
    let mut rows = db::tasks::list(pool, &filter, i64::from(page_size) + 1).await?;
    // As many as asked for and as fit in the byte budget, and always the first.
    let mut used = 0;
    let fitting = rows
        .iter()
        .take(page_size as usize)
        .take_while(|row| {
            used += row_bytes(row);
            used <= page.max_bytes
        })
        .count()
        .max(1);
    let next = if rows.len() > fitting {
        rows.truncate(fitting);
        rows.last().map(|row| row.id)
    } else {
        None
    };
    Ok((rows, next))
}

/// How many tasks a list page holds, and how many bytes of them: a page of
/// tasks with large prompts or results is cut short so its reply fits in
/// one message (the next page carries on).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Page {
    /// Most tasks (0: a hundred; at most [`MAX_PAGE_SIZE`]).
    pub(crate) size: u32,
    /// Most bytes of tasks ([`row_bytes`]), the first task always included.
    pub(crate) max_bytes: usize,
}

/// At least what one task takes on the wire: every text, list and JSON
/// value it carries, 40 bytes per id, and a kilobyte for the fixed fields.
fn row_bytes(row: &db::tasks::TaskRow) -> usize {
    const ID: usize = 40;
    let json = |value: Option<&serde_json::Value>| value.map_or(0, |value| value.to_string().len());
    let text = |value: &Option<String>| value.as_ref().map_or(0, String::len);
    1024 + row.swarm.len()
        + text(&row.key)
        + row.agent.len()
        + row.prompt.len()
        + text(&row.validate_agent)
        + text(&row.validate_prompt)
        + text(&row.error)
        + row.stage.len()
        + json(row.input.as_ref())
        + json(row.result.as_ref())
        + json(Some(&row.required_labels))
        + row.locks.iter().map(|lock| lock.len() + 2).sum::<usize>()
        + row.depends_on.len() * ID
}
