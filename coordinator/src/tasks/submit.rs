//! Submitting a swarm: validate every task (listing every problem), then
//! queue them all in one transaction, or none.

use std::collections::HashMap;
use std::time::Duration;

use hive_shared::convert::JsonObject;
use hive_shared::ids::{SwarmId, TaskId};
use serde_json::Value as Json;
use sqlx::PgPool;

use crate::config::{LimitConfig, TaskDefaults};
use crate::db;
use crate::error::{Error, Result};

/// A swarm as submitted.
#[derive(Debug, Clone)]
pub struct Submission {
    /// Swarm name.
    pub swarm: String,
    /// Tasks in submission order.
    pub tasks: Vec<NewTask>,
}

/// One task as submitted.
#[derive(Debug, Clone, Default)]
pub struct NewTask {
    /// Key, unique within the submission.
    pub key: Option<String>,
    /// Agent name.
    pub agent: String,
    /// Prompt.
    pub prompt: String,
    /// Input object.
    pub input: Option<JsonObject>,
    /// Priority, higher first.
    pub priority: i32,
    /// Attempts allowed; `None` for the default.
    pub max_attempts: Option<u32>,
    /// Per-attempt time limit; `None` for the agent's.
    pub timeout: Option<Duration>,
    /// First retry delay; `None` for the default.
    pub backoff_initial: Option<Duration>,
    /// Largest retry delay; `None` for the default.
    pub backoff_max: Option<Duration>,
    /// Retry delay growth; `None` for the default.
    pub backoff_multiplier: Option<f64>,
    /// Do not start before this time.
    pub run_after: Option<chrono::DateTime<chrono::Utc>>,
}

/// The queued swarm.
#[derive(Debug)]
pub struct Submitted {
    /// Swarm id.
    pub swarm_id: SwarmId,
    /// Task ids in submission order.
    pub task_ids: Vec<TaskId>,
    /// Non-fatal observations.
    pub warnings: Vec<String>,
}

/// Longest agent, swarm or key name.
pub const MAX_NAME_LEN: usize = 128;
/// Most attempts a task may ask for.
pub const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Longest per-attempt timeout.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Checks a name: non-empty, at most [`MAX_NAME_LEN`], letters, digits and `-_.:/@` only.
pub fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!("is {} characters; the limit is {MAX_NAME_LEN}", name.len()));
    }
    let bad = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_.:/@".contains(*c)));
    bad.map(|c| format!("`{name}` contains {c:?}; use letters, digits and - _ . : / @"))
}

/// Lists every problem with a submission, each naming its field.
pub fn problems(submission: &Submission, limits: &LimitConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(problem) = name_problem(&submission.swarm) {
        problems.push(format!("swarm: {problem}"));
    }
    if submission.tasks.is_empty() {
        problems.push("tasks: at least one task is required".into());
    }
    let max_tasks = limits.max_tasks_per_submit as usize;
    if submission.tasks.len() > max_tasks {
        problems.push(format!("tasks: {} tasks; the limit is {max_tasks} per submission", submission.tasks.len()));
    }
    let mut seen_keys: HashMap<&str, usize> = HashMap::new();
    for (index, task) in submission.tasks.iter().enumerate() {
        let field = |name: &str| format!("tasks[{index}].{name}");
        if let Some(problem) = name_problem(&task.agent) {
            problems.push(format!("{}: {problem}", field("agent")));
        }
        if let Some(key) = task.key.as_deref() {
            if let Some(problem) = name_problem(key) {
                problems.push(format!("{}: {problem}", field("key")));
            } else if let Some(first) = seen_keys.insert(key, index) {
                problems.push(format!("{}: duplicate key `{key}` (also used by tasks[{first}])", field("key")));
            }
        }
        let prompt_limit = limits.max_prompt_size.as_u64();
        if task.prompt.len() as u64 > prompt_limit {
            problems.push(format!("{}: {} bytes; the limit is {prompt_limit}", field("prompt"), task.prompt.len()));
        }
        if let Some(input) = &task.input {
            let size = json_size(input);
            let input_limit = limits.max_input_size.as_u64();
            if size > input_limit {
                problems.push(format!("{}: {size} bytes as JSON; the limit is {input_limit}", field("input")));
            }
        }
        if let Some(max_attempts) = task.max_attempts
            && !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts)
        {
            problems.push(format!("{}: {max_attempts}; use 1 to {MAX_ATTEMPTS_LIMIT}", field("max_attempts")));
        }
        if let Some(timeout) = task.timeout
            && (timeout < Duration::from_millis(1) || timeout > MAX_TIMEOUT)
        {
            problems.push(format!("{}: {timeout:?}; use 1ms to 7 days", field("timeout")));
        }
        for (name, value) in [("backoff_initial", task.backoff_initial), ("backoff_max", task.backoff_max)] {
            if value.is_some_and(|delay| delay > MAX_TIMEOUT) {
                problems.push(format!("{}: longer than 7 days", field(name)));
            }
        }
        if let (Some(initial), Some(max)) = (task.backoff_initial, task.backoff_max)
            && initial > max
        {
            problems.push(format!("{}: {initial:?} is more than backoff_max {max:?}", field("backoff_initial")));
        }
        if let Some(multiplier) = task.backoff_multiplier
            && !(1.0..=100.0).contains(&multiplier)
        {
            problems.push(format!("{}: {multiplier}; use 1 to 100", field("backoff_multiplier")));
        }
    }
    problems
}

/// Size of a JSON object as serialized.
pub fn json_size(object: &JsonObject) -> u64 {
    serde_json::to_vec(object).map_or(u64::MAX, |bytes| bytes.len() as u64)
}

/// Validates and queues a swarm atomically.
///
/// # Errors
/// [`Error::InvalidArgument`] listing every problem (nothing is queued), or a database failure.
pub async fn submit(
    pool: &PgPool,
    defaults: &TaskDefaults,
    limits: &LimitConfig,
    submission: Submission,
) -> Result<Submitted> {
    let problems = problems(&submission, limits);
    if !problems.is_empty() {
        return Err(Error::InvalidArgument { problems });
    }
    let swarm_id = SwarmId::new();
    let rows = columns(&submission.tasks, defaults);
    let task_ids = rows.ids.iter().copied().map(TaskId).collect();

    let mut agents: Vec<String> = submission.tasks.iter().map(|task| task.agent.clone()).collect();
    agents.sort();
    agents.dedup();

    let mut tx = pool.begin().await?;
    db::tasks::insert_swarm(&mut tx, swarm_id.0, &submission.swarm).await?;
    db::tasks::insert_ready_tasks(&mut tx, swarm_id.0, &rows).await?;
    db::tasks::notify_ready(&mut *tx).await?;
    let unserved = db::workers::agents_without_worker(&mut *tx, &agents).await?;
    tx.commit().await?;

    let warnings = unserved
        .into_iter()
        .map(|agent| format!("no registered worker offers agent `{agent}`; its tasks wait until one does"))
        .collect();
    Ok(Submitted { swarm_id, task_ids, warnings })
}

fn columns(tasks: &[NewTask], defaults: &TaskDefaults) -> db::tasks::NewTasks {
    let mut rows = db::tasks::NewTasks::default();
    for task in tasks {
        rows.ids.push(TaskId::new().0);
        rows.keys.push(task.key.clone());
        rows.agents.push(task.agent.clone());
        rows.prompts.push(task.prompt.clone());
        rows.inputs.push(task.input.clone().map(Json::Object));
        rows.priorities.push(task.priority);
        let max_attempts = task.max_attempts.unwrap_or(defaults.max_attempts);
        rows.max_attempts.push(i32::try_from(max_attempts).unwrap_or(i32::MAX));
        let millis = |value: Option<Duration>| value.map(|delay| i64::try_from(delay.as_millis()).unwrap_or(i64::MAX));
        rows.timeouts_ms.push(millis(task.timeout));
        rows.backoff_initial_ms.push(millis(task.backoff_initial));
        rows.backoff_max_ms.push(millis(task.backoff_max));
        rows.backoff_multipliers.push(task.backoff_multiplier);
        rows.run_after.push(task.run_after);
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(agent: &str) -> NewTask {
        NewTask { agent: agent.into(), prompt: "hi".into(), ..NewTask::default() }
    }

    fn limits() -> LimitConfig {
        LimitConfig::default()
    }

    #[test]
    fn a_good_submission_has_no_problems() {
        let submission = Submission { swarm: "hello".into(), tasks: vec![task("echo")] };
        assert!(problems(&submission, &limits()).is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let mut big = task("echo");
        big.prompt = "x".repeat(limits().max_prompt_size.as_u64() as usize + 1);
        let mut first = task("echo");
        first.key = Some("a".into());
        let mut second = task("");
        second.key = Some("a".into());
        second.max_attempts = Some(0);
        let submission = Submission { swarm: "bad name!".into(), tasks: vec![first, second, big] };
        let found = problems(&submission, &limits());
        let expected = [
            "swarm: `bad name!` contains ' '",
            "tasks[1].agent: must not be empty",
            "tasks[1].key: duplicate key `a` (also used by tasks[0])",
            "tasks[1].max_attempts: 0",
            "tasks[2].prompt: 1048577 bytes; the limit is 1048576",
        ];
        for needle in expected {
            assert!(found.iter().any(|problem| problem.starts_with(needle)), "missing {needle:?} in {found:#?}");
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }

    #[test]
    fn an_empty_submission_is_refused() {
        let submission = Submission { swarm: "s".into(), tasks: vec![] };
        assert_eq!(problems(&submission, &limits()), ["tasks: at least one task is required"]);
    }
}
