//! Forgets what is kept only for a while: workers gone for longer than
//! `workers.retention` (and holding no lease), so the table and `hivectl
//! workers --all` keep only workers that could still come back; and the
//! saved sessions of tasks finished longer than `sessions.retention` ago;
//! pauses that ended by themselves; and events older than `events.retention`.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument};

use crate::db;

/// Most event rows removed in one pass (each holds up to a batch of events).
const EVENT_ROWS_PER_PASS: i64 = 10_000;

/// Looks every tenth of the shorter retention (at most every minute, at
/// least every second) until `cancel`.
#[instrument(skip_all, name = "retention")]
pub(crate) async fn run(
    pool: PgPool,
    workers: Duration,
    sessions: Duration,
    events: Duration,
    cancel: CancellationToken,
) {
    let interval = (workers.min(sessions).min(events) / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
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
        log_pruned(
            "event rows older than events.retention",
            db::events::prune(&pool, db::seconds(events), EVENT_ROWS_PER_PASS).await,
        );
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
