//! Handing out work: long-poll claims that wait for a wake-up (LISTEN/NOTIFY,
//! see `notifications`) rather than polling, and the retry policy.

pub mod policy;

use std::sync::Arc;
use std::time::Duration;

use hive_shared::ids::WorkerId;
use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::config::Config;
use crate::db;
use crate::error::{Error, Result};
use crate::notifications::Notifications;

/// Claims up to `max_tasks` for `worker`, waiting up to `wait` (capped by
/// config) for tasks to become ready. Returns an empty list when the wait
/// runs out or the coordinator shuts down.
///
/// # Errors
/// [`Error::WorkerNotRegistered`] for an unknown worker; database failures.
///
/// # Cancel safety
/// Dropping the future while it waits is harmless. Dropped after the claim
/// statement committed, the claimed tasks return to the queue when their
/// lease expires.
pub async fn claim(
    pool: &PgPool,
    notifications: &Arc<Notifications>,
    config: &Config,
    worker: WorkerId,
    max_tasks: u32,
    wait: Duration,
    shutdown: &CancellationToken,
) -> Result<Vec<db::tasks::ClaimedTask>> {
    let limit = i64::from(max_tasks.clamp(1, config.claims.max_batch));
    let timing = db::tasks::ClaimTiming {
        lease_seconds: db::seconds(config.leases.ttl),
        max_runtime_seconds: db::seconds(config.tasks.max_runtime),
        deadline_grace_seconds: db::seconds(config.leases.ttl),
    };
    let deadline = Instant::now() + wait.min(config.claims.max_wait);
    let mut checked_worker = false;
    loop {
        // Registered before the query, so a notification that lands between
        // the query and the wait is not missed.
        let woken = notifications.ready();
        tokio::pin!(woken);
        woken.as_mut().enable();

        let claimed = db::tasks::claim(pool, worker.0, limit, timing).await?;
        if !claimed.is_empty() {
            return Ok(claimed);
        }
        if !checked_worker {
            if !db::workers::exists(pool, worker.0).await? {
                return Err(Error::WorkerNotRegistered(worker));
            }
            checked_worker = true;
        }
        let now = Instant::now();
        if now >= deadline || shutdown.is_cancelled() {
            return Ok(Vec::new());
        }
        let recheck = deadline.min(now + config.claims.recheck_interval);
        tokio::select! {
            () = &mut woken => {}
            () = tokio::time::sleep_until(recheck) => {}
            () = shutdown.cancelled() => return Ok(Vec::new()),
        }
    }
}
