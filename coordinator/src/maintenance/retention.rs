//! Forgets what is kept only for a while: workers gone for longer than
//! `workers.retention` (and holding no lease), so the table and `hivectl
//! workers --all` keep only workers that could still come back; and the
//! saved sessions of tasks finished longer than `sessions.retention` ago;
//! and pauses that ended by themselves.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument};

use crate::config::Config;
use crate::db;

/// Looks every tenth of the shorter retention (at most every minute, at
/// least every second) until `cancel`.
#[instrument(skip_all, name = "retention")]
pub(crate) async fn run(pool: PgPool, config: &Config, cancel: CancellationToken) {
    let (workers, sessions) = (config.workers.retention, config.sessions.retention);
    let interval = (workers.min(sessions) / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    super::every(interval, &cancel, || async {
        match db::workers::prune_gone(&pool, db::seconds(workers)).await {
            Ok(0) => {}
            Ok(pruned) => info!(pruned, retention = ?workers, "forgot workers gone longer than the retention"),
            Err(err) => debug!(error = %err, "could not prune gone workers; trying again later"),
        }
        match db::sessions::prune(&pool, db::seconds(sessions)).await {
            Ok(0) => {}
            Ok(pruned) => {
                info!(pruned, retention = ?sessions, "forgot sessions of tasks finished before the retention")
            }
            Err(err) => debug!(error = %err, "could not prune old sessions; trying again later"),
        }
    })
    .await;
}
