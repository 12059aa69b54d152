//! Handing out work: long-poll claims that wait for a wake-up (LISTEN/NOTIFY,
//! see `notifications`, or the coordinator's one periodic look for due tasks,
//! `maintenance::due_tasks`) rather than each polling.
//!
//! A wake-up goes to one waiting claim, which passes it on after claiming
//! while due tasks remain — a full batch, or tasks its worker cannot take —
//! and stops once it comes back round: waking every waiting claim would cost
//! a claim statement per idle worker for each task.
//!
//! An idle fleet's long-polls cost one cheap look each: while the last claim
//! statement here claimed nothing, a claim not answering a wake-up first
//! asks whether any task is due at all (and whether its worker is
//! registered) and runs the claim statements only when one is. Each
//! long-poll ends at a random point in the last tenth of its wait, so
//! long-polls begun together (workers reconnecting after a restart) do not
//! come back together for ever after.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use hive_shared::ids::WorkerId;
use hive_shared::tracked;
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::config::Config;
use crate::db;
use crate::error::{Error, Result};
use crate::notifications::Notifications;

/// What a worker asks for.
#[derive(Debug, Clone)]
pub(crate) struct ClaimRequest {
    /// The worker.
    pub worker: WorkerId,
    /// Most tasks.
    pub max_tasks: u32,
    /// Longest wait.
    pub wait: Duration,
    /// Only these agents (those that fit the worker now); empty means all it offers.
    pub agents: Vec<String>,
}

/// What this coordinator's claims learnt that the next claim uses.
#[derive(Debug, Default)]
pub(crate) struct Hints {
    /// Whether the last claim statement (or the last look for due tasks,
    /// `maintenance::due_tasks`) saw a cooling provider account due for a
    /// probe: the next claim takes the probe first.
    pub probe_due: AtomicBool,
    /// Whether the last claim statement here claimed nothing: the next claim
    /// not answering a wake-up looks for a due task before claiming.
    pub idle: AtomicBool,
}

/// What one claim hands out.
#[derive(Debug, Default)]
pub(crate) struct Claimed {
    /// The tasks.
    pub tasks: Vec<db::claims::ClaimedTask>,
    /// The attempt among them that probes a provider account after its cool-down.
    pub probe: Option<uuid::Uuid>,
}

/// Claims up to `max_tasks` for the worker, waiting up to `wait` (capped by
/// config) for tasks to become ready. Returns an empty list when the wait
/// runs out or the coordinator shuts down.
///
/// # Errors
/// [`Error::WorkerNotRegistered`] for an unknown worker; database failures.
///
/// # Cancel safety
/// Dropping the future while it waits is harmless. Dropped after a claim
/// committed, the claimed tasks are handed back once the worker's heartbeats
/// show it never got them.
pub(crate) async fn claim(
    pool: &PgPool,
    notifications: &Arc<Notifications>,
    config: &Config,
    request: &ClaimRequest,
    shutdown: &CancellationToken,
    tracker: &TaskTracker,
    hints: &Hints,
) -> Result<Claimed> {
    let limit = i64::from(request.max_tasks.clamp(1, config.claims.max_batch));
    let timing = db::claims::ClaimTiming {
        lease_seconds: db::seconds(config.leases.ttl),
        max_runtime_seconds: db::seconds(config.tasks.max_runtime),
        deadline_grace_seconds: db::seconds(config.leases.ttl),
    };
    // Half the message limit: room for what the estimate leaves out
    // (dependencies' results, the encoding's own overhead).
    let max_bytes = i64::try_from(config.limits.max_message_size.as_u64() / 2).unwrap_or(i64::MAX);
    let scope =
        db::claims::ClaimScope { worker: request.worker.0, agents: &request.agents, max_bytes, probe_account: None };
    let deadline = Instant::now() + jittered(request.wait.min(config.claims.max_wait));
    let mut checked_worker = false;
    // The round of the wake-up being answered, and the last one answered.
    let (mut woken_in, mut answered) = (None, None);
    loop {
        // Registered before the query, so a notification that lands between
        // the query and the wait is not missed.
        let woken = notifications.ready();
        tokio::pin!(woken);
        woken.as_mut().enable();

        // A probe goes first when one was due at the last claim statement
        // (or the last look for due tasks, when claims found nothing), so a
        // busy fleet whose batches are always full still probes.
        let mut claimed = Vec::new();
        let mut probe = None;
        if hints.probe_due.load(Ordering::Relaxed) {
            probe = claim_probe(pool, scope, timing, &mut claimed).await?;
        }
        let due = if woken_in.is_none() && hints.idle.load(Ordering::Relaxed) {
            let look = db::claims::look(pool, request.worker.0).await?;
            if !look.registered {
                return Err(Error::WorkerNotRegistered(request.worker));
            }
            checked_worker = true;
            look.due
        } else {
            true
        };
        if due && (claimed.len() as i64) < limit {
            let batch = db::claims::claim(pool, scope, limit - claimed.len() as i64, timing).await?;
            // The claim statement says whether a probe is due, when it claims anything.
            if let Some(first) = batch.first() {
                hints.probe_due.store(first.probe_due, Ordering::Relaxed);
            }
            hints.idle.store(batch.is_empty(), Ordering::Relaxed);
            claimed.extend(batch);
        }
        if due {
            claim_locked(pool, scope, limit, timing, &mut claimed).await?;
        }
        if let Some(round) = woken_in.take() {
            if answered != Some(round) {
                // Beside the reply, not before it: the worker gets its tasks first.
                let full = claimed.len() as i64 >= limit;
                tracked::spawn(tracker, "claim relay", relay(pool.clone(), Arc::clone(notifications), full));
            }
            answered = Some(round);
        }
        if !claimed.is_empty() {
            return Ok(Claimed { tasks: claimed, probe });
        }
        if !checked_worker {
            if !db::workers::exists(pool, request.worker.0).await? {
                return Err(Error::WorkerNotRegistered(request.worker));
            }
            checked_worker = true;
        }
        let now = Instant::now();
        if now >= deadline || shutdown.is_cancelled() {
            return Ok(Claimed::default());
        }
        let _waiting = notifications.waiting();
        tokio::select! {
            () = &mut woken => woken_in = Some(notifications.round()),
            () = tokio::time::sleep_until(deadline) => {}
            () = shutdown.cancelled() => return Ok(Claimed::default()),
        }
    }
}

/// A long-poll's wait, less a random part of up to a tenth of it.
fn jittered(wait: Duration) -> Duration {
    wait.mul_f64(1.0 - rand::random::<f64>() / 10.0)
}

/// Passes a wake-up on when tasks may remain for other claims: after a full
/// batch, or while any due task is left (one for agents this worker lacks).
/// A failed look passes it on too: the next claim's own query tells.
async fn relay(pool: PgPool, notifications: Arc<Notifications>, full: bool) {
    if full || db::claims::any_due(&pool).await.unwrap_or(true) {
        notifications.pass();
    }
}

/// How long a claim that took an account's probe has to claim its task
/// before another claim may probe the account (and how long an account
/// whose probe found no task waits for the next try).
const PROBE_CLAIMING: Duration = Duration::from_secs(10);

/// Claims a probe when a cooling provider account's wait has passed: one
/// task for the account's agents, its first call since the cool-down
/// began. Its success ends the cool-down, a refusal starts the next step
/// (see `cooldowns`); the account's other tasks wait for it.
async fn claim_probe(
    pool: &PgPool,
    scope: db::claims::ClaimScope<'_>,
    timing: db::claims::ClaimTiming,
    claimed: &mut Vec<db::claims::ClaimedTask>,
) -> Result<Option<uuid::Uuid>> {
    let Some((account, agents)) = db::cooldowns::take_probe(pool, scope.worker, PROBE_CLAIMING.as_secs_f64()).await?
    else {
        return Ok(None);
    };
    let agents: Vec<String> =
        agents.into_iter().filter(|agent| scope.agents.is_empty() || scope.agents.contains(agent)).collect();
    if agents.is_empty() {
        return Ok(None);
    }
    let probing = db::claims::ClaimScope { agents: &agents, probe_account: Some(&account), ..scope };
    let Some(task) = db::claims::claim(pool, probing, 1, timing).await?.pop() else {
        // Nothing after all (a paused swarm, a budget): the account stays
        // taken for a while, so other due accounts get their turn.
        return Ok(None);
    };
    db::cooldowns::set_probe(pool, &account, task.id, task.attempt_id).await?;
    tracing::info!(%account, task_id = %task.id, "probing a provider account after its cool-down");
    let attempt = task.attempt_id;
    claimed.push(task);
    Ok(Some(attempt))
}

/// Fills what is left of the batch with tasks that take locks, one at a time:
/// each one's locks and its claim commit together, or not at all.
async fn claim_locked(
    pool: &PgPool,
    scope: db::claims::ClaimScope<'_>,
    limit: i64,
    timing: db::claims::ClaimTiming,
    claimed: &mut Vec<db::claims::ClaimedTask>,
) -> Result<()> {
    // One cheap look first, instead of a transaction per claim (three round
    // trips before the claimed tasks could go back to the worker); the claim
    // statement itself answered it when it claimed anything.
    if (claimed.len() as i64) >= limit {
        return Ok(());
    }
    let due = match claimed.first() {
        Some(task) => task.lock_tasks_due,
        None => db::claims::any_lock_candidates(pool).await?,
    };
    if !due {
        return Ok(());
    }
    // Counted only now, when lock-taking tasks may join the batch.
    let mut bytes: i64 = claimed.iter().map(db::claims::payload_bytes).sum();
    while (claimed.len() as i64) < limit && bytes < scope.max_bytes {
        let mut tx = pool.begin().await?;
        let Some(candidate) = db::claims::next_lock_candidate(&mut tx, scope).await? else { return Ok(()) };
        let attempt = uuid::Uuid::new_v4();
        let taken = db::claims::take_locks(&mut tx, &candidate.locks, candidate.id, attempt).await?;
        if taken != candidate.locks.len() as u64 {
            // Another claimer took one of the keys in between: leave it to them.
            return Ok(());
        }
        if candidate.has_keys && !db::claims::take_slots(&mut tx, candidate.id, attempt).await? {
            // A concurrency key filled up since the candidate was chosen.
            return Ok(());
        }
        let Some(one) = db::claims::claim_locked(&mut tx, scope.worker, candidate.id, attempt, timing).await? else {
            // No longer ready: its locks and keys go back with the rollback.
            return Ok(());
        };
        tx.commit().await?;
        bytes += db::claims::payload_bytes(&one);
        claimed.push(one);
    }
    Ok(())
}
