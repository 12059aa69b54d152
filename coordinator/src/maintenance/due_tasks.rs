//! Wakes this coordinator's waiting claims while some ready task is due that
//! no notification announced: a `run_after` passing, a notification lost in a
//! reconnect, a claim that skipped a row whose claimer then rolled back. One
//! cheap query per `claims.recheck_interval` for the whole coordinator, however
//! many claims wait, rather than each waiting claim re-checking. It also says
//! whether a cooling provider account is due for a probe, which claims that
//! find nothing cannot tell.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{debug, instrument};

use crate::db;
use crate::notifications::Notifications;
use crate::scheduler::Hints;

/// Looks every `interval` until `cancel`.
#[instrument(skip_all, name = "due_tasks")]
pub(crate) async fn run(
    pool: PgPool,
    notifications: Arc<Notifications>,
    interval: Duration,
    hints: Arc<Hints>,
    cancel: CancellationToken,
) {
    super::every(interval, &cancel, || async {
        match db::cooldowns::any_probe_due(&pool).await {
            Ok(due) => hints.probe_due.store(due, Ordering::Relaxed),
            Err(err) => debug!(error = %err, "could not look for probes due"),
        }
        match db::claims::any_due(&pool).await {
            Ok(true) => notifications.wake_claims(),
            Ok(false) => {}
            Err(err) => {
                // Wake them anyway: each claim's own query tells.
                debug!(error = %err, "could not look for due tasks");
                notifications.wake_claims();
            }
        }
    })
    .await;
}
