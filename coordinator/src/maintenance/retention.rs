//! Forgets what is kept only for a while: workers gone for longer than
//! `workers.retention` (and holding no lease), so the table and `hivectl
//! workers --all` keep only workers that could still come back; and the
//! saved sessions of tasks finished longer than `sessions.retention` ago;
//! pauses that ended by themselves; events older than `events.retention`;
//! and webhook deliveries done (delivered or given up) longer than
//! `webhook_delivery.retention` ago.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument};

use crate::db;

/// Most event rows removed in one statement (each holds up to a batch of events).
const EVENT_ROWS_PER_PASS: i64 = 10_000;

/// Looks every tenth of the shorter retention (at most every minute, at
/// least every second) until `cancel`.
#[instrument(skip_all, name = "retention")]
pub(crate) async fn run(
    pool: PgPool,
    workers: Duration,
    sessions: Duration,
    events: Duration,
    deliveries: Duration,
    cancel: CancellationToken,
) {
    let interval =
        (workers.min(sessions).min(events).min(deliveries) / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
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
        log_pruned("event rows older than events.retention", prune_events(&pool, events).await);
        log_pruned(
            "webhook deliveries done before webhook_delivery.retention",
            db::webhooks::prune(&pool, db::seconds(deliveries)).await,
        );
    })
    .await;
}

/// Removes event rows past retention, a statement of at most
/// [`EVENT_ROWS_PER_PASS`] at a time, until none is left to remove (a busy
/// fleet appends rows faster than one statement a pass would remove them).
async fn prune_events(pool: &PgPool, retention: Duration) -> sqlx::Result<u64> {
    let mut total = 0;
    loop {
        let removed = db::events::prune(pool, db::seconds(retention), EVENT_ROWS_PER_PASS).await?;
        total += removed;
        if removed < u64::try_from(EVENT_ROWS_PER_PASS).unwrap_or(u64::MAX) {
            return Ok(total);
        }
    }
}

fn log_pruned(what: &str, pruned: sqlx::Result<u64>) {
    match pruned {
        Ok(0) => {}
        Ok(pruned) => info!(pruned, "forgot {what}"),
        Err(err) => debug!(error = %err, "could not forget {what}; trying again later"),
    }
}
