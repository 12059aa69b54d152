//! What a restricted caller may touch, beyond its role: a worker token acts
//! only for workers it registered, a submitter only on swarms it submitted,
//! an agent only for its own attempt. Admins, and every caller when auth is
//! off, pass.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use hive_shared::tokens::Role;
use sqlx::PgPool;
use uuid::Uuid;

use super::Caller;
use crate::db;
use crate::error::{Error, Result};
use crate::tasks::submit::Submission;

/// Most worker owners remembered; past it the memory is cleared.
const MAX_REMEMBERED: usize = 10_000;

/// Which token registered each worker, remembered. A worker's registering
/// token never changes while its record lives; a record forgotten after
/// `workers.retention` could be registered again by another token, which
/// this memory would not see: worker ids are random per process, so only a
/// party that knows the old id could try.
#[derive(Debug, Default)]
pub(crate) struct WorkerOwners(Mutex<HashMap<Uuid, String>>);

impl WorkerOwners {
    /// Checks that `caller` registered `worker`.
    ///
    /// # Errors
    /// [`Error::PermissionDenied`] for another token's worker;
    /// [`Error::WorkerNotRegistered`] for an unknown one; database failures.
    pub(crate) async fn check(&self, pool: &PgPool, caller: &Caller, worker: Uuid) -> Result<()> {
        if !caller.limited_to_own_workers() {
            return Ok(());
        }
        let known = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(&worker).cloned();
        let owner = match known {
            Some(owner) => owner,
            None => {
                let found = db::workers::registered_by(pool, worker).await?;
                let owner = found.ok_or(Error::WorkerNotRegistered(worker.into()))?.unwrap_or_default();
                self.remember(worker, &owner);
                owner
            }
        };
        if owner == caller.name {
            return Ok(());
        }
        Err(Error::PermissionDenied(format!("worker {worker} was registered with another token")))
    }

    /// Remembers that `owner` registered `worker`.
    pub(crate) fn remember(&self, worker: Uuid, owner: &str) {
        let mut owners = self.0.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if owners.len() >= MAX_REMEMBERED {
            owners.clear();
        }
        owners.insert(worker, owner.to_owned());
    }
}

fn not_theirs(what: &str) -> Error {
    Error::PermissionDenied(format!("{what} was not submitted with this token"))
}

/// Checks that a submitter `caller` submitted `swarm`.
///
/// # Errors
/// [`Error::PermissionDenied`] for another token's swarm;
/// [`Error::SwarmNotFound`]; database failures.
pub(crate) async fn check_swarm(pool: &PgPool, caller: &Caller, swarm: Uuid) -> Result<()> {
    if !caller.limited_to_own_swarms() {
        return Ok(());
    }
    let owner = db::swarms::submitted_by(pool, swarm).await?.ok_or(Error::SwarmNotFound(swarm))?;
    if owner.as_deref() == Some(caller.name.as_str()) { Ok(()) } else { Err(not_theirs(&format!("swarm {swarm}"))) }
}

/// Checks that a submitter `caller` submitted the swarm of `task`.
///
/// # Errors
/// [`Error::PermissionDenied`] for another token's task;
/// [`Error::TaskNotFound`]; database failures.
pub(crate) async fn check_task(pool: &PgPool, caller: &Caller, task: Uuid) -> Result<()> {
    if !caller.limited_to_own_swarms() {
        return Ok(());
    }
    let owner = db::swarms::submitted_by_of_task(pool, task).await?.ok_or(Error::TaskNotFound(task.into()))?;
    if owner.as_deref() == Some(caller.name.as_str()) { Ok(()) } else { Err(not_theirs(&format!("task {task}"))) }
}

/// The swarm a submitter must name to read or cancel in bulk: its own.
///
/// # Errors
/// [`Error::PermissionDenied`] when a submitter names no swarm or another's.
pub(crate) async fn check_swarm_filter(pool: &PgPool, caller: &Caller, swarm: Option<Uuid>) -> Result<()> {
    match swarm {
        Some(swarm) => check_swarm(pool, caller, swarm).await,
        None if caller.limited_to_own_swarms() => {
            Err(Error::PermissionDenied("a submitter token must name one of its swarms (swarm_id)".into()))
        }
        None => Ok(()),
    }
}

/// Checks that a submission depends only on tasks of the submitter's own swarms.
///
/// # Errors
/// As [`check_task`], for the first foreign dependency.
pub(crate) async fn check_submission(pool: &PgPool, caller: &Caller, submission: &Submission) -> Result<()> {
    if !caller.limited_to_own_swarms() {
        return Ok(());
    }
    let keys: HashSet<&str> = submission.tasks.iter().filter_map(|task| task.key.as_deref()).collect();
    let existing: HashSet<Uuid> = submission
        .tasks
        .iter()
        .flat_map(|task| &task.depends_on)
        .filter(|entry| !keys.contains(entry.as_str()))
        .filter_map(|entry| Uuid::parse_str(entry).ok())
        .collect();
    if existing.is_empty() {
        return Ok(());
    }
    let existing: Vec<Uuid> = existing.into_iter().collect();
    // Unknown ids are the submission's own problem, reported by validation.
    let foreign = db::swarms::tasks_not_submitted_by(pool, &existing, &caller.name).await?;
    match foreign.first() {
        Some(task) => Err(not_theirs(&format!("task {task}"))),
        None => Ok(()),
    }
}

/// Checks that an agent acts for the attempt its token is for.
///
/// # Errors
/// [`Error::PermissionDenied`] for any other attempt.
pub(crate) fn check_attempt(caller: &Caller, attempt: Uuid) -> Result<()> {
    if caller.role != Role::Agent || caller.attempt == Some(attempt) {
        return Ok(());
    }
    Err(Error::PermissionDenied("an attempt token acts only for its own attempt".into()))
}
