//! Returns tasks whose lease expired (their worker died or was cut off) to the
//! queue, or to the dead-letter queue when their attempts are spent. Rows are
//! taken with `skip locked`, so reapers on several coordinators never double-reap.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, instrument};

use crate::db;
use crate::tasks::state::TaskStatus;

/// Most tasks moved per statement.
const BATCH: i64 = 1000;

/// Reaps every `interval` until `cancel`.
#[instrument(skip_all, name = "lease_reaper")]
pub async fn run(pool: PgPool, interval: Duration, cancel: CancellationToken) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = cancel.cancelled() => return,
        }
        if let Err(err) = reap_all(&pool).await {
            error!(error = %err, "lease reaper pass failed; retrying next tick");
        }
    }
}

/// Reaps until no expired lease is left; returns how many tasks moved.
///
/// # Errors
/// Database failures.
pub async fn reap_all(pool: &PgPool) -> Result<usize, sqlx::Error> {
    let mut total = 0;
    loop {
        let reaped = db::tasks::reap_expired_leases(pool, BATCH).await?;
        for task in &reaped {
            info!(task_id = %task.id, attempt_id = %task.attempt_id, status = %task.status, "lease expired");
        }
        if reaped.iter().any(|task| task.status == TaskStatus::Ready) {
            db::tasks::notify_ready(pool).await?;
        }
        total += reaped.len();
        if reaped.len() < BATCH as usize {
            return Ok(total);
        }
    }
}
