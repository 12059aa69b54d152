//! Recording how attempts end: successes and failures reported by workers (a
//! batch at a time, fenced by attempt id, idempotent: a resend is acknowledged
//! as already recorded and changes nothing), and attempts the reaper finds
//! past their lease or deadline. Both paths decide with `scheduler::policy`.

use std::collections::HashMap;
use std::time::Duration;

use hive_shared::convert::JsonObject;
use hive_shared::ids::{AttemptId, TaskId};
use serde_json::Value as Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::config::{LimitConfig, TaskDefaults};
use crate::db;
use crate::error::{Error, Result};
use crate::scheduler::policy::{self, Backoff, Fate, Stop};
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

/// An attempt that ended without success, as its worker reports it.
#[derive(Debug, Clone)]
pub struct Failure {
    /// Task.
    pub task: TaskId,
    /// Attempt (fencing token).
    pub attempt: AttemptId,
    /// How it stopped: failed (transient or permanent), interrupted, cancelled.
    pub stop: Stop,
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
    acks_for(pool, &task_ids, &attempt_ids, &recorded, &[AttemptOutcome::Succeeded]).await
}

/// Records failures in one transaction: each task is retried after a backoff,
/// requeued (hand-back), cancelled, or sent to the dead-letter queue. Returns
/// one ack per failure, in order, and the earliest retry delay (so the caller
/// can wake claimers then).
///
/// # Errors
/// Database failures only.
pub async fn fail(
    pool: &PgPool,
    defaults: &TaskDefaults,
    failures: Vec<Failure>,
) -> Result<(Vec<Ack>, Option<Duration>)> {
    let task_ids: Vec<Uuid> = failures.iter().map(|failure| failure.task.0).collect();
    let attempt_ids: Vec<Uuid> = failures.iter().map(|failure| failure.attempt.0).collect();
    let by_attempt: HashMap<Uuid, &Failure> = failures.iter().map(|failure| (failure.attempt.0, failure)).collect();

    let mut tx = pool.begin().await?;
    let stopped = db::tasks::lock_reported(&mut tx, &task_ids, &attempt_ids).await?;
    let mut fates = db::tasks::Fates::default();
    for task in &stopped {
        let Some(failure) = by_attempt.get(&task.attempt_id) else { continue };
        let fate = decide(defaults, task, failure.stop);
        let error = truncate(&failure.error, MAX_ERROR_LEN);
        push(&mut fates, task, fate, error, failure.exit_code, failure.signal);
    }
    let earliest_retry = settle(&mut tx, &fates).await?;
    tx.commit().await?;

    let outcomes = [AttemptOutcome::Failed, AttemptOutcome::Released, AttemptOutcome::Cancelled];
    let acks = acks_for(pool, &task_ids, &attempt_ids, &fates.attempt_ids, &outcomes).await?;
    Ok((acks, earliest_retry))
}

/// Hands back tasks leased to `worker` that its heartbeat does not list and
/// that were claimed more than `min_age` ago: their claim's reply never
/// reached it. Not counted as failures. Returns how many were handed back.
///
/// # Errors
/// Database failures.
pub async fn release_unheld(
    pool: &PgPool,
    defaults: &TaskDefaults,
    worker: Uuid,
    held: &[Uuid],
    min_age: Duration,
) -> sqlx::Result<usize> {
    let mut tx = pool.begin().await?;
    let unheld = db::tasks::lock_unheld(&mut tx, worker, held, min_age.as_secs_f64()).await?;
    let mut fates = db::tasks::Fates::default();
    for task in &unheld {
        let fate = decide(defaults, task, Stop::Interrupted);
        let error = "claimed, but the claim's reply never reached the worker; handed back".to_owned();
        push(&mut fates, task, fate, error, None, None);
    }
    settle(&mut tx, &fates).await?;
    tx.commit().await?;
    Ok(unheld.len())
}

/// Decides a stopped attempt's fate with the task's own backoff settings.
pub fn decide(defaults: &TaskDefaults, task: &db::tasks::StoppedAttempt, stop: Stop) -> Fate {
    let backoff = Backoff::for_task(defaults, task.backoff_initial_ms, task.backoff_max_ms, task.backoff_multiplier);
    let failures = u32::try_from(task.failures).unwrap_or(0);
    let max_attempts = u32::try_from(task.max_attempts).unwrap_or(1);
    policy::fate(&backoff, task.status, stop, failures, max_attempts, rand::random::<f64>())
}

/// Adds one decided fate to a batch.
pub fn push(
    fates: &mut db::tasks::Fates,
    task: &db::tasks::StoppedAttempt,
    fate: Fate,
    error: String,
    exit_code: Option<i32>,
    signal: Option<i32>,
) {
    fates.task_ids.push(task.id);
    fates.attempt_ids.push(task.attempt_id);
    fates.statuses.push(fate.status);
    fates.counted.push(fate.counted);
    fates.delays.push(fate.delay.as_secs_f64());
    fates.errors.push(error);
    fates.exit_codes.push(exit_code);
    fates.signals.push(signal);
    fates.outcomes.push(fate.outcome);
}

/// Applies a batch of fates and announces tasks that are ready again at
/// once; returns the earliest delayed retry.
///
/// # Errors
/// Database failures.
pub async fn settle(conn: &mut PgConnection, fates: &db::tasks::Fates) -> sqlx::Result<Option<Duration>> {
    if fates.task_ids.is_empty() {
        return Ok(None);
    }
    db::tasks::apply_fates(conn, fates).await?;
    let retries = fates.statuses.iter().zip(&fates.delays).filter(|(status, _)| **status == TaskStatus::Ready);
    let delays: Vec<f64> = retries.map(|(_, delay)| *delay).collect();
    if delays.contains(&0.0) {
        db::tasks::notify_ready(&mut *conn).await?;
    }
    Ok(delays.into_iter().filter(|delay| *delay > 0.0).map(Duration::from_secs_f64).min())
}

/// Builds acks in request order: recorded now, recorded before (with one of
/// `already` as its outcome), or lease lost.
async fn acks_for(
    pool: &PgPool,
    task_ids: &[Uuid],
    attempt_ids: &[Uuid],
    recorded: &[Uuid],
    already: &[AttemptOutcome],
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
            } else if earlier.get(attempt).is_some_and(|outcome| already.contains(outcome)) {
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
