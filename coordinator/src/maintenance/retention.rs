//! Forgets what is kept only for a while: workers gone for longer than
//! `workers.retention` (and holding no lease), so the table and `hivectl
//! workers --all` keep only workers that could still come back; and the
//! saved sessions of tasks finished longer than `sessions.retention` ago;
//! and pauses that ended by themselves.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument};

use crate::db;

/// Looks every tenth of the shorter retention (at most every minute, at
/// least every second) until `cancel`.
#[instrument(skip_all, name = "retention")]
pub(crate) async fn run(pool: PgPool, workers: Duration, sessions: Duration, cancel: CancellationToken) {
    let interval = (workers.min(sessions) / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    super::every(interval, &cancel, || async {
        log_pruned(
            "workers gone longer than workers.retention",
            db::workers::prune_gone(&pool, db::seconds(workers)).await,
        );
        log_pruned(
            "sessions of tasks finished before sessions.retention",
            db::sessions::prune(&pool, db::seconds(sessions)).await,
        );
        log_pruned("pauses that ended by themselves", db::pauses::prune_ended(&pool).await);
    })
    .await;
}

fn log_pruned(what: &str, pruned: sqlx::Result<u64>) {
    match pruned {
        Ok(0) => {}
        Ok(pruned) => info!(pruned, "forgot {what}"),
        Err(err) => debug!(error = %err, "could not forget {what}; trying again later"),
    }
}
