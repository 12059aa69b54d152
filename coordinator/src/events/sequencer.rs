//! Numbers the event log's committed rows (`db::events::number`). Every
//! coordinator runs this loop; an advisory lock lets one number at a time,
//! and the others find nothing left or skip their turn. A watcher sees an
//! event once it is numbered: within one interval of its commit.

use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{debug, instrument};

use crate::db;

/// How often each coordinator looks for rows to number.
pub(crate) const INTERVAL: Duration = Duration::from_millis(50);
/// Most rows numbered in one transaction.
const ROWS_PER_ROUND: i64 = 10_000;

/// Numbers rows every [`INTERVAL`] until `cancel`.
#[instrument(skip_all, name = "event_sequencer")]
pub(crate) async fn run(pool: PgPool, cancel: CancellationToken) {
    crate::maintenance::every(INTERVAL, &cancel, || async {
        if let Err(err) = round(&pool).await {
            debug!(error = %err, "could not number events; trying again");
        }
    })
    .await;
}

/// Numbers what is waiting, a transaction of at most [`ROWS_PER_ROUND`] rows at a time.
async fn round(pool: &PgPool) -> sqlx::Result<()> {
    while db::events::any_unnumbered(pool).await? {
        let mut conn = pool.acquire().await?;
        if db::events::number(&mut conn, ROWS_PER_ROUND).await?.is_none() {
            // Another coordinator holds the lock, or what it numbered was all.
            return Ok(());
        }
    }
    Ok(())
}
