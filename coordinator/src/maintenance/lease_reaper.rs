//! Finds attempts whose lease ran out (their worker died or was cut off) or
//! whose deadline passed (the task ran far past its time limit), and settles
//! them like a reported failure: retried, dead-lettered, or — for tasks being
//! cancelled — cancelled. Rows are taken with `skip locked`, so reapers on
//! several coordinators never double-reap.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, instrument};

use crate::config::TaskDefaults;
use crate::db;
use crate::tasks::report;
use crate::tasks::retry::Stop;

/// Most tasks settled per transaction.
const BATCH: i64 = 500;

/// Reaps every `interval` until `cancel`.
#[instrument(skip_all, name = "lease_reaper")]
pub(crate) async fn run(pool: PgPool, defaults: TaskDefaults, interval: Duration, cancel: CancellationToken) {
    super::every(interval, &cancel, || async {
        if let Err(err) = reap_all(&pool, &defaults).await {
            error!(error = %err, "lease reaper pass failed; retrying next tick");
        }
    })
    .await;
}

/// Reaps until nothing expired is left; returns how many attempts were settled.
///
/// # Errors
/// Database failures.
pub(crate) async fn reap_all(pool: &PgPool, defaults: &TaskDefaults) -> Result<usize, sqlx::Error> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let expired = db::leases::lock_expired(&mut tx, BATCH).await?;
        let mut fates = db::outcomes::Fates::default();
        for task in &expired {
            let (stop, error) = if task.lease_expired {
                (Stop::LeaseExpired, "lease expired: the worker stopped heart-beating")
            } else {
                (
                    Stop::DeadlinePassed,
                    "deadline passed: the attempt ran past its time limit and its worker did not stop it",
                )
            };
            let fate = report::decide(defaults, task, stop);
            info!(task_id = %task.id, attempt_id = %task.attempt_id, next = %fate.status, reason = error, "reaped");
            report::push(&mut fates, task, fate, report::Ending::error(error));
        }
        report::settle(&mut tx, &fates).await?;
        tx.commit().await?;
        total += expired.len();
        if expired.len() < BATCH as usize {
            return Ok(total);
        }
    }
}
