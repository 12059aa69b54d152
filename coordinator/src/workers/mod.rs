//! Worker-facing use-cases that are not about one task: registration, the
//! heartbeat session, and the writer that records beats in batches.

pub(crate) mod beats;
pub(crate) mod session;

use serde_json::json;
use sqlx::PgPool;

use crate::audit::{self, Action, Entry};
use crate::auth::Caller;
use crate::db;
use crate::error::Error;
use crate::error::Result;
use crate::tasks::validate::{MAX_LOCKS_AND_LABELS, label_problem, name_problem, text_problem};

/// Most agents one worker may offer.
const MAX_AGENTS: usize = 256;
/// Longest host name or version a worker may report.
const MAX_HOST_TEXT: usize = 255;

/// Registers a worker (again, after a reconnect).
///
/// # Errors
/// [`Error::InvalidArgument`] listing every problem with the registration
/// (its id, name, host, agents, labels); [`Error::PermissionDenied`] when
/// another token registered this worker id; database failures.
pub(crate) async fn register(pool: &PgPool, registration: &db::workers::Registration<'_>) -> Result<()> {
    let problems = registration_problems(registration);
    if !problems.is_empty() {
        return Err(Error::InvalidArgument { problems });
    }
    if !db::workers::upsert(pool, registration).await? {
        let id = registration.id;
        return Err(Error::PermissionDenied(format!("worker {id} was registered with another token")));
    }
    Ok(())
}

/// Every problem with a registration, each naming its field.
fn registration_problems(registration: &db::workers::Registration<'_>) -> Vec<String> {
    let mut problems: Vec<String> = registration
        .agents
        .iter()
        .enumerate()
        .filter_map(|(index, agent)| name_problem(agent).map(|problem| format!("agents[{index}]: {problem}")))
        .collect();
    if registration.id.is_nil() {
        problems.push("worker_id: the nil UUID is not a worker id".to_owned());
    }
    if let Some(problem) = text_problem(registration.name).or_else(|| name_problem(registration.name)) {
        problems.push(format!("name: {problem}"));
    }
    for (field, text) in [("hostname", registration.hostname), ("version", registration.version)] {
        if text.len() > MAX_HOST_TEXT {
            problems.push(format!("{field}: {} characters; the limit is {MAX_HOST_TEXT}", text.len()));
        } else if let Some(problem) = text_problem(text) {
            problems.push(format!("{field}: {problem}"));
        }
    }
    if registration.agents.is_empty() || registration.agents.len() > MAX_AGENTS {
        problems.push(format!("agents: offer 1 to {MAX_AGENTS} agents"));
    }
    problems.extend(labels_problems(&registration.labels));
    problems
}

/// Each label a worker offers that a task could not ask for.
fn labels_problems(labels: &serde_json::Value) -> Vec<String> {
    let Some(labels) = labels.as_object() else { return vec!["labels: must be a map of strings".to_owned()] };
    if labels.len() > MAX_LOCKS_AND_LABELS {
        return vec![format!("labels: {} labels; the limit is {MAX_LOCKS_AND_LABELS}", labels.len())];
    }
    labels
        .iter()
        .filter_map(|(key, value)| label_problem(key, value.as_str().unwrap_or_default()))
        .map(|problem| format!("labels: {problem}"))
        .collect()
}

/// Every worker seen within a lease (with `include_gone`, every worker ever registered).
///
/// # Errors
/// Database failures.
pub(crate) async fn list(
    pool: &PgPool,
    lease: std::time::Duration,
    include_gone: bool,
) -> Result<Vec<db::workers::WorkerRow>> {
    Ok(db::workers::list(pool, db::seconds(lease), include_gone).await?)
}

/// Tells live workers to drain (or, with `now`, to stop at once); returns
/// the ids told. Audited as `StopWorkers`.
///
/// # Errors
/// [`Error::InvalidArgument`] for a bad id or no target; database failures.
pub(crate) async fn stop(
    pool: &PgPool,
    caller: &Caller,
    ids: &[hive_shared::ids::WorkerId],
    all: bool,
    now: bool,
    lease: std::time::Duration,
) -> Result<Vec<uuid::Uuid>> {
    if ids.is_empty() && !all {
        return Err(Error::invalid("worker_ids", "name at least one worker, or set all"));
    }
    let ids: Vec<uuid::Uuid> = ids.iter().map(|id| id.0).collect();
    let mut tx = pool.begin().await?;
    let told = db::workers::set_command(&mut *tx, &ids, all, now, db::seconds(lease)).await?;
    for worker in &told {
        db::notifications::notify_worker(&mut *tx, *worker).await?;
    }
    let target = json!({
        "worker_ids": ids.iter().map(ToString::to_string).collect::<Vec<_>>(),
        "all": all,
        "now": now,
    });
    audit::record(&mut tx, &Entry::done(caller, Action::StopWorkers, target, told.len())).await?;
    tx.commit().await?;
    Ok(told)
}
