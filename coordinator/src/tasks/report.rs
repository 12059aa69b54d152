//! Recording how attempts end: successes and failures reported by workers (a
//! batch at a time, fenced by attempt id, idempotent: a resend is acknowledged
//! as already recorded and changes nothing), and attempts the reaper finds
//! past their lease or deadline. Both paths decide with `retry`.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use hive_shared::convert::JsonObject;
use hive_shared::ids::{AttemptId, TaskId, WorkerId};
use serde_json::Value as Json;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::config::{Config, LimitConfig, TaskDefaults};
use crate::cooldowns;
use crate::db;
use crate::db::stages::NextStage;
use crate::error::{Error, Result};
use crate::metrics::{Ended, Metrics};
use crate::status::{AttemptOutcome, TaskStatus};
use crate::tasks::retry::{self, Allowance, Backoff, Fate, Stop};
use crate::tasks::stage;
use crate::tasks::validate::{json_problem, json_size, storable};

/// How one reported outcome was taken.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Ack {
    /// Recorded now.
    Recorded,
    /// Recorded before; this was a resend.
    AlreadyRecorded,
    /// The attempt is no longer current; nothing changed.
    LeaseLost(String),
}

/// What an attempt used and which session it ran, as its agent reported.
#[derive(Debug, Clone, Default, PartialEq)]
pub(crate) struct Spend {
    /// Session id.
    pub session_id: Option<String>,
    /// Input tokens.
    pub input_tokens: Option<i64>,
    /// Output tokens.
    pub output_tokens: Option<i64>,
    /// Cost.
    pub cost: Option<f64>,
}

/// A successful attempt.
#[derive(Debug, Clone)]
pub(crate) struct Completion {
    /// Task.
    pub task: TaskId,
    /// Attempt (fencing token).
    pub attempt: AttemptId,
    /// Result object.
    pub result: JsonObject,
    /// Usage and session.
    pub spend: Spend,
    /// It probed its provider account after a cool-down.
    pub probe: bool,
}

/// An attempt that ended without success, as its worker reports it.
#[derive(Debug, Clone)]
pub(crate) struct Failure {
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
    /// Usage and session.
    pub spend: Spend,
    /// The provider's refusal, for a rate-limited attempt (then `stop` is a
    /// transient failure, which it stays if the refusal names an account the
    /// worker did not register for the task's agent).
    pub refusal: Option<cooldowns::Refusal>,
}

/// Longest error text kept per attempt.
pub(crate) const MAX_ERROR_LEN: usize = 8 * 1024;

/// Records the successes of attempts `worker` holds in one statement;
/// returns one ack per completion, in order (an attempt another worker holds
/// is acknowledged as lost).
///
/// # Errors
/// [`Error::InvalidArgument`] when a result is over the size limit (nothing is recorded).
pub(crate) async fn complete(
    pool: &PgPool,
    limits: &LimitConfig,
    metrics: &Metrics,
    worker: WorkerId,
    completions: Vec<Completion>,
) -> Result<Vec<Ack>> {
    let result_limit = limits.max_result_size.as_u64();
    let problems: Vec<String> = completions
        .iter()
        .enumerate()
        .filter_map(|(index, completion)| {
            let size = json_size(&completion.result);
            let problem = if size > result_limit {
                Some(format!("{size} bytes as JSON; the limit is {result_limit}"))
            } else {
                json_problem(&completion.result)
            };
            problem.map(|problem| format!("completions[{index}].result: {problem}"))
        })
        .collect();
    if !problems.is_empty() {
        return Err(Error::InvalidArgument { problems });
    }
    let probes: Vec<Uuid> =
        completions.iter().filter(|completion| completion.probe).map(|completion| completion.attempt.0).collect();
    let mut reports = db::outcomes::Reports { worker_id: Some(worker.0), ..Default::default() };
    for completion in completions {
        reports.task_ids.push(completion.task.0);
        reports.attempt_ids.push(completion.attempt.0);
        reports.results.push(Json::Object(completion.result));
        reports.session_ids.push(completion.spend.session_id);
        reports.input_tokens.push(completion.spend.input_tokens);
        reports.output_tokens.push(completion.spend.output_tokens);
        reports.costs.push(completion.spend.cost);
    }
    let done = db::outcomes::complete(pool, &reports).await?;
    metrics.ended(&successes(done.agents.iter().zip(&done.ran_seconds)));
    // The provider answered a probe: its account's cool-down is over.
    let recovered = if probes.is_empty() { 0 } else { db::cooldowns::end_probed(pool, &probes).await? };
    if done.newly_ready > 0 || recovered > 0 {
        db::notifications::notify_ready(pool).await?;
    }
    let mut recorded = done.recorded;
    if recorded.len() < reports.attempt_ids.len() {
        recorded.extend(complete_staged(pool, metrics, &reports, &recorded).await?);
    }
    acks_for(pool, &reports.task_ids, &reports.attempt_ids, &recorded, &[AttemptOutcome::Succeeded]).await
}

/// Records successes of tasks with a validator stage (those the one-statement
/// path left alone) and moves each to its next stage; returns the attempts recorded.
async fn complete_staged(
    pool: &PgPool,
    metrics: &Metrics,
    reports: &db::outcomes::Reports,
    recorded: &[Uuid],
) -> Result<Vec<Uuid>> {
    let recorded: HashSet<&Uuid> = recorded.iter().collect();
    let rest: Vec<usize> =
        (0..reports.attempt_ids.len()).filter(|i| !recorded.contains(&reports.attempt_ids[*i])).collect();
    let task_ids: Vec<Uuid> = rest.iter().map(|i| reports.task_ids[*i]).collect();
    let attempt_ids: Vec<Uuid> = rest.iter().map(|i| reports.attempt_ids[*i]).collect();
    let mut tx = pool.begin().await?;
    let staged = db::stages::lock_staged(&mut tx, &task_ids, &attempt_ids, reports.worker_id).await?;
    let (mut done, mut succeeded, mut ended) = (Vec::new(), Vec::new(), Vec::new());
    for task in &staged {
        let Some(index) = reports.attempt_ids.iter().position(|attempt| *attempt == task.attempt_id) else { continue };
        db::stages::record_attempt(&mut tx, reports, index).await?;
        let next = stage::after_success(
            task.status,
            &task.stage,
            task.round,
            task.max_rounds,
            &reports.results[index],
            task.build_result.as_ref(),
        );
        match &next {
            NextStage::Validate(build) => db::stages::advance(&mut tx, task.id, true, build).await?,
            NextStage::Rebuild(verdict) => db::stages::advance(&mut tx, task.id, false, verdict).await?,
            NextStage::Finish { status, error, .. } => {
                db::stages::finish(&mut tx, task.id, *status, error.as_deref()).await?;
                if *status == TaskStatus::Succeeded { succeeded.push(task.id) } else { ended.push(task.id) }
            }
        }
        done.push(task.attempt_id);
    }
    let unblocked = db::graph::unblock_dependents(&mut tx, &succeeded).await?;
    if !ended.is_empty() {
        db::graph::cancel_downstream(&mut tx, &ended, UPSTREAM_REASON).await?;
    }
    if !done.is_empty() || unblocked > 0 {
        // A stage moved on, a lock was released, or dependents became ready.
        db::notifications::notify_ready(&mut *tx).await?;
    }
    tx.commit().await?;
    let recorded = staged.iter().filter(|task| done.contains(&task.attempt_id));
    metrics.ended(&successes(recorded.map(|task| (&task.run_agent, &task.ran_seconds))));
    Ok(done)
}

/// What the metrics count of successful attempts: their agents and how long they ran.
fn successes<'a>(attempts: impl Iterator<Item = (&'a String, &'a f64)>) -> Vec<Ended> {
    attempts
        .map(|(agent, seconds)| Ended {
            agent: agent.clone(),
            outcome: AttemptOutcome::Succeeded,
            stop: None,
            retried: false,
            dead: false,
            seconds: Some(*seconds),
        })
        .collect()
}

/// Why tasks downstream of a dead or cancelled one are cancelled.
pub(crate) const UPSTREAM_REASON: &str = "cancelled: a task it depends on died or was cancelled (upstream)";

/// Records failures of attempts `worker` holds in one transaction: each task
/// is retried after a backoff,
/// requeued (hand-back), cancelled, or sent to the dead-letter queue. Returns
/// one ack per failure, in order, and the earliest retry delay (so the caller
/// can wake claimers then).
///
/// # Errors
/// Database failures only.
pub(crate) async fn fail(
    pool: &PgPool,
    config: &Config,
    metrics: &Metrics,
    worker: WorkerId,
    failures: Vec<Failure>,
) -> Result<(Vec<Ack>, Option<Duration>)> {
    let defaults = &config.tasks;
    let task_ids: Vec<Uuid> = failures.iter().map(|failure| failure.task.0).collect();
    let attempt_ids: Vec<Uuid> = failures.iter().map(|failure| failure.attempt.0).collect();
    let by_attempt: HashMap<Uuid, &Failure> = failures.iter().map(|failure| (failure.attempt.0, failure)).collect();

    let mut tx = pool.begin().await?;
    let stopped = db::outcomes::lock_reported(&mut tx, &task_ids, &attempt_ids, Some(worker.0)).await?;
    let refusing: Vec<Uuid> = stopped
        .iter()
        .filter(|task| by_attempt.get(&task.attempt_id).is_some_and(|failure| failure.refusal.is_some()))
        .map(|task| task.id)
        .collect();
    let accounts: HashMap<Uuid, Option<String>> = if refusing.is_empty() {
        HashMap::new()
    } else {
        db::cooldowns::accounts_of(&mut *tx, worker.0, &refusing).await?.into_iter().collect()
    };
    let mut fates = db::outcomes::Fates::default();
    let mut ended = Vec::new();
    let mut refusals = Vec::new();
    for task in &stopped {
        let Some(failure) = by_attempt.get(&task.attempt_id) else { continue };
        let mut stop = failure.stop;
        if let Some(refusal) = &failure.refusal {
            // Only the account the worker registered for the task's agent cools down.
            if accounts.get(&task.id).and_then(Option::as_deref) == Some(refusal.account.as_str()) {
                let before = u32::try_from(task.refusals).unwrap_or(0);
                stop = Stop::RateLimited(Allowance { before, allowed: defaults.max_refusals });
                refusals.push(refusal.clone());
            } else {
                tracing::warn!(account = %refusal.account, task_id = %task.id, "a refusal names an account the worker did not register for the task's agent; counted as a transient failure");
            }
        }
        let fate = decide(defaults, task, stop);
        let error = truncate(&storable(&failure.error), MAX_ERROR_LEN);
        let ending = Ending {
            error,
            exit_code: failure.exit_code,
            signal: failure.signal,
            spend: failure.spend.clone(),
            refused: matches!(stop, Stop::RateLimited(_)),
        };
        ended.push(self::ended(task, &fate, stop));
        push(&mut fates, task, fate, ending);
    }
    let earliest_retry = settle(&mut tx, &fates).await?;
    cooldowns::refused(&mut tx, refusals, &config.rate_limits).await?;
    tx.commit().await?;
    metrics.ended(&ended);

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
pub(crate) async fn release_unheld(
    pool: &PgPool,
    defaults: &TaskDefaults,
    metrics: &Metrics,
    worker: Uuid,
    held: &[Uuid],
    min_age: Duration,
) -> sqlx::Result<usize> {
    let mut tx = pool.begin().await?;
    let unheld = db::leases::lock_unheld(&mut tx, worker, held, min_age.as_secs_f64()).await?;
    let mut fates = db::outcomes::Fates::default();
    let mut ended = Vec::new();
    for task in &unheld {
        let fate = decide(defaults, task, Stop::Interrupted);
        let error = "claimed, but the claim's reply never reached the worker; handed back".to_owned();
        ended.push(self::ended(task, &fate, Stop::Interrupted));
        push(&mut fates, task, fate, Ending::error(error));
    }
    settle(&mut tx, &fates).await?;
    tx.commit().await?;
    metrics.ended(&ended);
    Ok(unheld.len())
}

/// Decides a stopped attempt's fate with the task's own backoff settings.
pub(crate) fn decide(defaults: &TaskDefaults, task: &db::outcomes::StoppedAttempt, stop: Stop) -> Fate {
    let backoff = Backoff::for_task(defaults, task.backoff_initial_ms, task.backoff_max_ms, task.backoff_multiplier);
    let failures = u32::try_from(task.failures).unwrap_or(0);
    let max_attempts = u32::try_from(task.max_attempts).unwrap_or(1);
    retry::fate(&backoff, task.status, stop, failures, max_attempts, rand::random::<f64>())
}

/// What the metrics count of an attempt that stopped without success.
pub(crate) fn ended(task: &db::outcomes::StoppedAttempt, fate: &Fate, stop: Stop) -> Ended {
    Ended {
        agent: task.run_agent.clone(),
        outcome: fate.outcome,
        stop: Some(stop),
        retried: fate.status == TaskStatus::Ready && !matches!(stop, Stop::Interrupted),
        dead: fate.status == TaskStatus::Dead,
        seconds: Some(task.ran_seconds),
    }
}

/// How an attempt ended, as recorded on it.
#[derive(Debug, Clone, Default)]
pub(crate) struct Ending {
    /// What went wrong.
    pub error: String,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Signal.
    pub signal: Option<i32>,
    /// Usage and session.
    pub spend: Spend,
    /// Whether the agent's provider refused it (a rate limit).
    pub refused: bool,
}

impl Ending {
    /// An ending known only by its error text.
    pub(crate) fn error(error: impl Into<String>) -> Self {
        Self { error: error.into(), ..Self::default() }
    }
}

/// Adds one decided fate to a batch.
pub(crate) fn push(fates: &mut db::outcomes::Fates, task: &db::outcomes::StoppedAttempt, fate: Fate, ending: Ending) {
    fates.task_ids.push(task.id);
    fates.attempt_ids.push(task.attempt_id);
    fates.statuses.push(fate.status);
    fates.counted.push(fate.counted);
    fates.delays.push(fate.delay.as_secs_f64());
    fates.errors.push(ending.error);
    fates.exit_codes.push(ending.exit_code);
    fates.signals.push(ending.signal);
    fates.outcomes.push(fate.outcome);
    fates.session_ids.push(ending.spend.session_id);
    fates.input_tokens.push(ending.spend.input_tokens);
    fates.output_tokens.push(ending.spend.output_tokens);
    fates.costs.push(ending.spend.cost);
    fates.refused.push(ending.refused);
    fates.next_agents.push(next_agent(task, &fate, ending.refused));
}

/// The agent a task's next attempt runs with when it changes: after a
/// counted failure or a refusal of a build attempt that goes back to the
/// queue, the next of its agents (its own, then its fallbacks, cycling).
fn next_agent(task: &db::outcomes::StoppedAttempt, fate: &Fate, refused: bool) -> Option<String> {
    let retried = fate.status == TaskStatus::Ready && (fate.counted || refused);
    if task.agents.len() < 2 || task.stage != "build" || !retried {
        return None;
    }
    let at = task.agents.iter().position(|agent| *agent == task.run_agent).unwrap_or(0);
    Some(task.agents[(at + 1) % task.agents.len()].clone())
}

/// Applies a batch of fates, cancels what depended on tasks that died or were
/// cancelled, and announces tasks that are ready again at once; returns the
/// earliest delayed retry.
///
/// # Errors
/// Database failures.
pub(crate) async fn settle(conn: &mut PgConnection, fates: &db::outcomes::Fates) -> sqlx::Result<Option<Duration>> {
    if fates.task_ids.is_empty() {
        return Ok(None);
    }
    let released_locks = db::outcomes::apply_fates(conn, fates).await?;
    let ended: Vec<Uuid> = fates
        .task_ids
        .iter()
        .zip(&fates.statuses)
        .filter(|(_, status)| matches!(status, TaskStatus::Dead | TaskStatus::Cancelled))
        .map(|(id, _)| *id)
        .collect();
    if !ended.is_empty() {
        db::graph::cancel_downstream(&mut *conn, &ended, UPSTREAM_REASON).await?;
    }
    let retries = fates.statuses.iter().zip(&fates.delays).filter(|(status, _)| **status == TaskStatus::Ready);
    let delays: Vec<f64> = retries.map(|(_, delay)| *delay).collect();
    if delays.contains(&0.0) || released_locks > 0 {
        db::notifications::notify_ready(&mut *conn).await?;
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
    let recorded: HashSet<Uuid> = recorded.iter().copied().collect();
    let (missing_tasks, missing): (Vec<Uuid>, Vec<Uuid>) =
        task_ids.iter().zip(attempt_ids).filter(|(_, attempt)| !recorded.contains(attempt)).unzip();
    let earlier: HashMap<Uuid, AttemptOutcome> = if missing.is_empty() {
        HashMap::new()
    } else {
        db::outcomes::attempt_outcomes(pool, &missing_tasks, &missing).await?.into_iter().collect()
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
pub(crate) fn truncate(text: &str, limit: usize) -> String {
    if text.len() <= limit {
        return text.to_owned();
    }
    format!("{}…", &text[..text.floor_char_boundary(limit)])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stopped(stage: &str, run_agent: &str, agents: &[&str]) -> db::outcomes::StoppedAttempt {
        db::outcomes::StoppedAttempt {
            id: Uuid::nil(),
            attempt_id: Uuid::nil(),
            status: TaskStatus::Running,
            failures: 0,
            losses: 0,
            refusals: 0,
            stage: stage.into(),
            run_agent: run_agent.into(),
            agents: agents.iter().map(|agent| (*agent).to_owned()).collect(),
            max_attempts: 4,
            backoff_initial_ms: None,
            backoff_max_ms: None,
            backoff_multiplier: None,
            lease_expired: false,
            ran_seconds: 1.0,
        }
    }

    fn fate(status: TaskStatus, counted: bool) -> Fate {
        Fate { status, outcome: AttemptOutcome::Failed, counted, delay: Duration::ZERO }
    }

    #[test]
    fn fallbacks_take_over_in_order_cycle_back_and_only_after_the_agents_own_trouble() {
        let chain = ["a", "b", "c"];
        let retried = fate(TaskStatus::Ready, true);
        assert_eq!(next_agent(&stopped("build", "a", &chain), &retried, false).as_deref(), Some("b"));
        assert_eq!(next_agent(&stopped("build", "c", &chain), &retried, false).as_deref(), Some("a"), "cycles");
        let released = fate(TaskStatus::Ready, false);
        assert_eq!(next_agent(&stopped("build", "a", &chain), &released, true).as_deref(), Some("b"), "a refusal");
        assert_eq!(next_agent(&stopped("build", "a", &chain), &released, false), None, "a hand-back or a loss");
        assert_eq!(next_agent(&stopped("build", "a", &chain), &fate(TaskStatus::Dead, true), false), None);
        assert_eq!(next_agent(&stopped("validate", "a", &chain), &retried, false), None, "validators keep theirs");
        assert_eq!(next_agent(&stopped("build", "a", &["a"]), &retried, false), None, "no fallbacks");
    }
}
