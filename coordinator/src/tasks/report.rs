//! Recording what workers report: successes and failures, a batch at a time,
//! fenced by attempt id. Each is idempotent: a resend of a recorded outcome
//! is acknowledged as already recorded and changes nothing.

use std::collections::HashMap;
use std::time::Duration;

use hive_shared::convert::JsonObject;
use hive_shared::ids::{AttemptId, TaskId};
use serde_json::Value as Json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::config::{LimitConfig, TaskDefaults};
use crate::db;
use crate::error::{Error, Result};
use crate::scheduler::policy::{self, Decision, FailureClass};
use crate::tasks::state::{AttemptOutcome, TaskStatus};
use crate::tasks::submit::json_size;

/// How one reported outcome was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ack {
    /// Recorded now.
    Recorded,
    /// Recorded before; this was a resend.
    AlreadyRecorded,
    /// The attempt is no longer current; nothing changed.
    LeaseLost(String),
}

/// A successful attempt.
#[derive(Debug, Clone)]
pub struct Completion {
    /// Task.
    pub task: TaskId,
    /// Attempt (fencing token).
    pub attempt: AttemptId,
    /// Result object.
    pub result: JsonObject,
}

/// A failed attempt.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Task.
    pub task: TaskId,
    /// Attempt (fencing token).
    pub attempt: AttemptId,
    /// Transient or permanent.
    pub class: FailureClass,
    /// What went wrong.
    pub error: String,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Signal.
    pub signal: Option<i32>,
}

/// Longest error text kept per attempt.
pub const MAX_ERROR_LEN: usize = 8 * 1024;

/// Records successes in one statement; returns one ack per completion, in order.
///
/// # Errors
/// [`Error::InvalidArgument`] when a result is over the size limit (nothing is recorded).
pub async fn complete(pool: &PgPool, limits: &LimitConfig, completions: Vec<Completion>) -> Result<Vec<Ack>> {
    let result_limit = limits.max_result_size.as_u64();
    let problems: Vec<String> = completions
        .iter()
        .enumerate()
        .filter_map(|(index, completion)| {
            let size = json_size(&completion.result);
            (size > result_limit)
                .then(|| format!("completions[{index}].result: {size} bytes as JSON; the limit is {result_limit}"))
        })
        .collect();
    if !problems.is_empty() {
        return Err(Error::InvalidArgument { problems });
    }
    let task_ids: Vec<Uuid> = completions.iter().map(|completion| completion.task.0).collect();
    let attempt_ids: Vec<Uuid> = completions.iter().map(|completion| completion.attempt.0).collect();
    let results: Vec<Json> = completions.into_iter().map(|completion| Json::Object(completion.result)).collect();
    let recorded = db::tasks::complete(pool, &task_ids, &attempt_ids, &results).await?;
    acks_for(pool, &task_ids, &attempt_ids, &recorded, AttemptOutcome::Succeeded).await
}

/// Records failures in one transaction: each task is retried after a backoff
/// or sent to the dead-letter queue. Returns one ack per failure, in order,
/// and the earliest retry delay (so the caller can wake claimers then).
///
/// # Errors
/// Database failures only.
pub async fn fail(
    pool: &PgPool,
    policy: &TaskDefaults,
    failures: Vec<Failure>,
) -> Result<(Vec<Ack>, Option<Duration>)> {
    let task_ids: Vec<Uuid> = failures.iter().map(|failure| failure.task.0).collect();
    let attempt_ids: Vec<Uuid> = failures.iter().map(|failure| failure.attempt.0).collect();

    let mut tx = pool.begin().await?;
    let failing = db::tasks::lock_failing(&mut tx, &task_ids, &attempt_ids).await?;
    let by_attempt: HashMap<Uuid, &Failure> = failures.iter().map(|failure| (failure.attempt.0, failure)).collect();
    let mut updates = db::tasks::FailureUpdates::default();
    let mut earliest_retry: Option<Duration> = None;
    for task in &failing {
        let Some(failure) = by_attempt.get(&task.attempt_id) else {
            continue;
        };
        let attempts = u32::try_from(task.attempts).unwrap_or(0);
        let max_attempts = u32::try_from(task.max_attempts).unwrap_or(1);
        let decision = policy::decide(policy, failure.class, attempts, max_attempts, rand::random::<f64>());
        let (status, delay) = match decision {
            Decision::Retry(delay) => {
                earliest_retry = Some(earliest_retry.map_or(delay, |current| current.min(delay)));
                (TaskStatus::Ready, delay)
            }
            Decision::Dead => (TaskStatus::Dead, Duration::ZERO),
        };
        updates.task_ids.push(task.id);
        updates.attempt_ids.push(task.attempt_id);
        updates.statuses.push(status);
        updates.retry_after_seconds.push(delay.as_secs_f64());
        updates.errors.push(truncate(&failure.error, MAX_ERROR_LEN));
        updates.exit_codes.push(failure.exit_code);
        updates.signals.push(failure.signal);
        updates.outcomes.push(AttemptOutcome::Failed);
    }
    if !updates.task_ids.is_empty() {
        db::tasks::apply_failures(&mut tx, &updates).await?;
    }
    tx.commit().await?;

    let acks = acks_for(pool, &task_ids, &attempt_ids, &updates.attempt_ids, AttemptOutcome::Failed).await?;
    Ok((acks, earliest_retry))
}

/// Builds acks in request order: recorded now, recorded before (same outcome), or lease lost.
async fn acks_for(
    pool: &PgPool,
    task_ids: &[Uuid],
    attempt_ids: &[Uuid],
    recorded: &[Uuid],
    outcome: AttemptOutcome,
) -> Result<Vec<Ack>> {
    let missing: Vec<Uuid> = attempt_ids.iter().copied().filter(|attempt| !recorded.contains(attempt)).collect();
    let earlier: HashMap<Uuid, AttemptOutcome> = if missing.is_empty() {
        HashMap::new()
    } else {
        db::tasks::attempt_outcomes(pool, &missing).await?.into_iter().collect()
    };
    let acks = task_ids
        .iter()
        .zip(attempt_ids)
        .map(|(task, attempt)| {
            if recorded.contains(attempt) {
                Ack::Recorded
            } else if earlier.get(attempt) == Some(&outcome) {
                Ack::AlreadyRecorded
            } else {
                Ack::LeaseLost(Error::LeaseLost { task: TaskId(*task), attempt: AttemptId(*attempt) }.to_string())
            }
        })
        .collect();
    Ok(acks)
}

/// Cuts text to at most `limit` bytes on a character boundary.
pub fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    let mut end = limit;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &text[..end])
}
