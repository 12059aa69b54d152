//! Submitting a swarm: validate every task (listing every problem), then
//! queue them all in one transaction, or none, with its audit row.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use hive_shared::convert::JsonObject;
use hive_shared::ids::{SwarmId, TaskId};
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use uuid::Uuid;

use crate::audit::{self, Action, Entry};
use crate::auth::Caller;
use crate::config::{LimitConfig, TaskDefaults};
use crate::db;
use crate::error::{Error, Result};
use crate::status::TaskStatus;
use crate::tasks::{graph, validate};
use hive_shared::tokens::Role;

/// A swarm as submitted.
#[derive(Debug, Clone, Default)]
pub(crate) struct Submission {
    /// Swarm name.
    pub swarm: String,
    /// Tasks in submission order.
    pub tasks: Vec<NewTask>,
    /// Submitting again with this key returns the existing swarm.
    pub idempotency_key: Option<String>,
    /// Spending limit.
    pub budget: Option<f64>,
    /// Name of the submitting token (`None` when auth is off).
    pub submitted_by: Option<String>,
}

/// A validator stage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Validate {
    /// Validator agent.
    pub agent: String,
    /// Validator prompt.
    pub prompt: String,
    /// Builder runs allowed.
    pub max_rounds: u32,
}

/// One task as submitted.
#[derive(Debug, Clone, Default)]
pub(crate) struct NewTask {
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
    /// Keys of tasks in this submission, or ids of existing tasks, that must succeed first.
    pub depends_on: Vec<String>,
    /// Required worker labels.
    pub labels: BTreeMap<String, String>,
    /// Locks held while it runs.
    pub locks: Vec<String>,
    /// Validator stage.
    pub validate: Option<Validate>,
    /// Whether retries resume the agent's session.
    pub resume_sessions: bool,
    /// Agents to fall back on, in order.
    pub fallback_agents: Vec<String>,
    /// Concurrency keys and their limits.
    pub concurrency: BTreeMap<String, u32>,
}

/// The queued swarm.
#[derive(Debug)]
pub(crate) struct Submitted {
    /// Swarm id.
    pub swarm_id: SwarmId,
    /// Task ids in submission order.
    pub task_ids: Vec<TaskId>,
    /// Non-fatal observations.
    pub warnings: Vec<String>,
    /// Whether the idempotency key was seen before and this is the earlier swarm.
    pub existing: bool,
}

/// Validates and queues a swarm atomically: every task, with its
/// dependency edges, or none. A repeated idempotency key returns the swarm
/// submitted first. Audited as `SubmitTasks` (a repeat, with nothing
/// affected).
///
/// # Errors
/// [`Error::InvalidArgument`] listing every problem (including a dependency
/// cycle, named task by task, and dependencies that do not exist); nothing is
/// queued then. Database failures.
pub(crate) async fn submit(
    pool: &PgPool,
    caller: &Caller,
    defaults: &TaskDefaults,
    limits: &LimitConfig,
    submission: Submission,
) -> Result<Submitted> {
    let problems = validate::problems(&submission, limits);
    if !problems.is_empty() {
        return Err(Error::InvalidArgument { problems });
    }
    let mut tx = db::begin_generic(pool).await?;
    let owner = submission.submitted_by.as_deref();
    if let Some(key) = &submission.idempotency_key
        && let Some(existing) = existing_swarm(&mut *tx, key, owner).await?
    {
        return audited(tx, caller, &submission, existing).await;
    }
    let edges = resolve_dependencies(&mut tx, &submission.tasks).await?;
    let swarm_id = SwarmId::new();
    let ids: Vec<Uuid> = submission.tasks.iter().map(|_| TaskId::new().0).collect();
    let starts = graph::plan(&edges.deps);
    let rows = columns(&submission.tasks, &ids, &starts, defaults);

    let key = submission.idempotency_key.as_deref();
    if !db::swarms::insert(&mut tx, swarm_id.0, &submission.swarm, key, submission.budget, owner).await? {
        // Another submission with this key committed first: return it.
        drop(tx);
        let mut tx = pool.begin().await?;
        let key = key.unwrap_or_default();
        let existing = existing_swarm(&mut *tx, key, owner).await?.ok_or(Error::Database(sqlx::Error::RowNotFound))?;
        return audited(tx, caller, &submission, existing).await;
    }
    db::tasks::insert_tasks(&mut tx, swarm_id.0, &rows).await?;
    let (from, to): (Vec<Uuid>, Vec<Uuid>) = edges
        .pairs
        .iter()
        .map(|(task, upstream)| {
            let upstream = match upstream {
                Target::New(index) => ids[*index],
                Target::Existing(id) => *id,
            };
            (ids[*task], upstream)
        })
        .unzip();
    if !from.is_empty() {
        db::graph::insert_deps(&mut tx, &from, &to).await?;
    }
    // Last, so the key rows claims lock are held only while the submission commits.
    let mut warnings = key_limits(&mut tx, caller, &submission.tasks).await?;
    db::notifications::notify_ready(&mut *tx).await?;
    let mut agents: Vec<String> = submission
        .tasks
        .iter()
        .flat_map(|task| std::iter::once(task.agent.clone()).chain(task.validate.as_ref().map(|v| v.agent.clone())))
        .collect();
    agents.sort();
    agents.dedup();
    let unserved = db::workers::agents_without_worker(&mut *tx, &agents).await?;
    warnings.extend(
        unserved
            .into_iter()
            .map(|agent| format!("no registered worker offers agent `{agent}`; its tasks wait until one does")),
    );
    let submitted = Submitted { swarm_id, task_ids: ids.into_iter().map(TaskId).collect(), warnings, existing: false };
    audited(tx, caller, &submission, submitted).await
}

/// Records `submitted` in the audit log and commits `tx`.
async fn audited(
    mut tx: sqlx::Transaction<'_, sqlx::Postgres>,
    caller: &Caller,
    submission: &Submission,
    submitted: Submitted,
) -> Result<Submitted> {
    let mut target = json!({ "swarm_id": submitted.swarm_id.to_string(), "swarm": submission.swarm });
    if let Some(key) = &submission.idempotency_key {
        target["idempotency_key"] = json!(key);
    }
    if submitted.existing {
        target["existing"] = json!(true);
    }
    let affected = if submitted.existing { 0 } else { submitted.task_ids.len() };
    audit::record(&mut tx, &Entry::done(caller, Action::SubmitTasks, target, affected)).await?;
    tx.commit().await?;
    Ok(submitted)
}

/// Makes the submission's new concurrency keys. A key that exists keeps
/// its limit unless an admin submits (keys are shared by every submitter: a
/// submitter must not throttle another's tasks); another limit from anyone
/// else is refused, naming the key. Returns warnings for the limits an
/// admin changed.
async fn key_limits(tx: &mut sqlx::PgConnection, caller: &Caller, tasks: &[NewTask]) -> Result<Vec<String>> {
    let limits: BTreeMap<&String, u32> =
        tasks.iter().flat_map(|task| &task.concurrency).map(|(key, limit)| (key, *limit)).collect();
    if limits.is_empty() {
        return Ok(Vec::new());
    }
    let (keys, limits): (Vec<String>, Vec<i32>) =
        limits.into_iter().map(|(key, limit)| (key.clone(), i32::try_from(limit).unwrap_or(i32::MAX))).unzip();
    let admin = !caller.authenticated || caller.role == Role::Admin;
    let differing = db::tasks::set_key_limits(tx, &keys, &limits, admin).await?;
    let described = differing.iter().map(|(key, limit)| {
        let asked = keys.iter().position(|wanted| wanted == key).map_or(0, |at| limits[at]);
        (key, *limit, asked)
    });
    if admin {
        return Ok(described
            .map(|(key, was, now)| format!("concurrency key `{key}`: its limit changed from {was} to {now}"))
            .collect());
    }
    let problems: Vec<String> = described
        .map(|(key, was, asked)| {
            format!("concurrency.{key}: limit {asked}, but the key's limit is {was}; only an admin may change it")
        })
        .collect();
    if problems.is_empty() { Ok(Vec::new()) } else { Err(Error::InvalidArgument { problems }) }
}

/// The swarm `owner` submitted before with `key` (keys are per token).
async fn existing_swarm(
    executor: impl sqlx::PgExecutor<'_>,
    key: &str,
    owner: Option<&str>,
) -> Result<Option<Submitted>> {
    let Some(found) = db::swarms::by_key(executor, key, owner).await? else { return Ok(None) };
    Ok(Some(Submitted {
        swarm_id: SwarmId(found.id),
        task_ids: found.tasks.into_iter().map(TaskId).collect(),
        warnings: vec![format!("idempotency key `{key}` was submitted before; returning that swarm")],
        existing: true,
    }))
}

/// What a dependency entry names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
enum Target {
    New(usize),
    Existing(Uuid),
}

/// The dependency graph of a submission.
struct Edges {
    /// (task index, what it depends on).
    pairs: Vec<(usize, Target)>,
    /// Per task, for planning.
    deps: Vec<Vec<graph::Dependency>>,
}

/// Most tasks a cycle's description names: a cycle through thousands of
/// tasks is named by its start and end, not by every task in it.
const CYCLE_NAMES: usize = 20;

/// `a → b → c → a`, or for a long cycle its first and last tasks around `… (N more) …`.
fn cycle_text(path: &[String]) -> String {
    if path.len() <= CYCLE_NAMES {
        return path.join(" → ");
    }
    let (head, tail) = (&path[..CYCLE_NAMES / 2], &path[path.len() - CYCLE_NAMES / 2..]);
    format!("{} → … ({} more) … → {}", head.join(" → "), path.len() - CYCLE_NAMES, tail.join(" → "))
}

/// Resolves `depends_on` entries to tasks of this submission (by key) or
/// existing tasks (by id), refusing unknown ones and cycles.
async fn resolve_dependencies(conn: &mut sqlx::PgConnection, tasks: &[NewTask]) -> Result<Edges> {
    let by_key: HashMap<&str, usize> =
        tasks.iter().enumerate().filter_map(|(index, task)| task.key.as_deref().map(|key| (key, index))).collect();
    let mut problems = Vec::new();
    let mut pairs = Vec::new();
    let mut seen = HashSet::new();
    let mut external = Vec::new();
    for (index, task) in tasks.iter().enumerate() {
        for (position, entry) in task.depends_on.iter().enumerate() {
            let target = match (by_key.get(entry.as_str()), Uuid::parse_str(entry)) {
                (Some(upstream), _) => Target::New(*upstream),
                (None, Ok(id)) => {
                    external.push(id);
                    Target::Existing(id)
                }
                (None, Err(_)) => {
                    problems.push(format!(
                        "tasks[{index}].depends_on[{position}]: `{entry}` is neither the id of a task in this submission nor an existing task id"
                    ));
                    continue;
                }
            };
            // A dependency listed twice is one dependency.
            if seen.insert((index, target)) {
                pairs.push((index, target));
            }
        }
    }
    let internal: Vec<Vec<usize>> = (0..tasks.len())
        .map(|index| {
            pairs
                .iter()
                .filter(|(task, _)| *task == index)
                .filter_map(|(_, target)| match target {
                    Target::New(upstream) => Some(*upstream),
                    Target::Existing(_) => None,
                })
                .collect()
        })
        .collect();
    if let Some(cycle) = graph::find_cycle(&internal) {
        let name = |index: usize| tasks[index].key.clone().unwrap_or_else(|| format!("tasks[{index}]"));
        let path: Vec<String> = cycle.into_iter().map(name).collect();
        problems.push(format!("depends_on: dependency cycle {}", cycle_text(&path)));
    }
    external.sort_unstable();
    external.dedup();
    // Most submissions depend on nothing that exists already: no query for them.
    let standing: HashMap<Uuid, TaskStatus> = if external.is_empty() {
        HashMap::new()
    } else {
        db::tasks::statuses(&mut *conn, &external).await?.into_iter().collect()
    };
    for id in external.iter().filter(|id| !standing.contains_key(id)) {
        problems.push(format!("depends_on: task {id} does not exist"));
    }
    if !problems.is_empty() {
        return Err(Error::InvalidArgument { problems });
    }
    let deps = (0..tasks.len())
        .map(|index| {
            pairs
                .iter()
                .filter(|(task, _)| *task == index)
                .map(|(_, target)| match target {
                    Target::New(upstream) => graph::Dependency::New(*upstream),
                    Target::Existing(id) => graph::Dependency::Existing(match standing.get(id) {
                        Some(TaskStatus::Succeeded) => graph::Upstream::Succeeded,
                        Some(TaskStatus::Dead | TaskStatus::Cancelled) => graph::Upstream::Failed,
                        _ => graph::Upstream::Pending,
                    }),
                })
                .collect()
        })
        .collect();
    Ok(Edges { pairs, deps })
}

fn columns(tasks: &[NewTask], ids: &[Uuid], starts: &[graph::Start], defaults: &TaskDefaults) -> db::tasks::NewTasks {
    let mut rows = db::tasks::NewTasks::default();
    let mut placed: HashMap<i32, i64> = HashMap::new();
    for ((task, id), start) in tasks.iter().zip(ids).zip(starts) {
        let place = placed.entry(task.priority).or_insert(0);
        *place += 1;
        rows.places.push(*place);
        rows.ids.push(*id);
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
        let (status, waiting) = match start {
            graph::Start::Ready => (TaskStatus::Ready, 0),
            graph::Start::Blocked(waiting) => (TaskStatus::Blocked, i32::try_from(*waiting).unwrap_or(i32::MAX)),
            graph::Start::CancelledUpstream => (TaskStatus::Cancelled, 0),
        };
        rows.statuses.push(status);
        rows.waiting_on.push(waiting);
        rows.labels.push(serde_json::to_value(&task.labels).unwrap_or_else(|_| Json::Object(JsonObject::new())));
        rows.locks.push(Json::Array(task.locks.iter().cloned().map(Json::String).collect()));
        rows.validate_agents.push(task.validate.as_ref().map(|validate| validate.agent.clone()));
        rows.validate_prompts.push(task.validate.as_ref().map(|validate| validate.prompt.clone()));
        let rounds = task.validate.as_ref().map_or(1, |validate| validate.max_rounds);
        rows.max_rounds.push(i32::try_from(rounds).unwrap_or(1));
        rows.resume_sessions.push(task.resume_sessions);
        rows.fallback_agents.push(Json::Array(task.fallback_agents.iter().cloned().map(Json::String).collect()));
        rows.concurrency_keys.push(Json::Array(task.concurrency.keys().cloned().map(Json::String).collect()));
    }
    rows
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_long_cycle_is_named_by_its_ends() {
        let short: Vec<String> = ["a", "b", "a"].map(String::from).to_vec();
        assert_eq!(cycle_text(&short), "a → b → a");
        let long: Vec<String> = (0..5_000).map(|i| format!("task-{i}")).chain(["task-0".to_owned()]).collect();
        let text = cycle_text(&long);
        assert!(text.len() < 400, "{} bytes", text.len());
        assert!(text.starts_with("task-0 → task-1") && text.ends_with("task-4999 → task-0"), "{text}");
        assert!(text.contains("(4981 more)"), "{text}");
    }
}
