//! Forgets workers gone for longer than `workers.retention` (and holding no
//! lease), so the table and `hivectl workers --all` keep only workers that
//! could still come back.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument};

use crate::db;

/// Looks every `retention / 10` (at most every minute, at least every second) until `cancel`.
#[instrument(skip_all, name = "gone_workers")]
pub(crate) async fn run(pool: PgPool, retention: Duration, cancel: CancellationToken) {
    let interval = (retention / 10).clamp(Duration::from_secs(1), Duration::from_secs(60));
    super::every(interval, &cancel, || async {
        match db::workers::prune_gone(&pool, db::seconds(retention)).await {
            Ok(0) => {}
            Ok(pruned) => info!(pruned, ?retention, "forgot workers gone longer than the retention"),
            Err(err) => debug!(error = %err, "could not prune gone workers; trying again later"),
        }
    })
    .await;
}
