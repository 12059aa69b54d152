//! Numbers the event log's committed rows (`db::events::number`). Every
//! coordinator runs this loop, and one of them leads: its own connection
//! holds an advisory lock for as long as it lives, and numbers what is
//! waiting every [`INTERVAL`], one statement a round. The others try to
//! take the lock every [`FOLLOW_INTERVAL`], so when the leader stops (or
//! its connection dies and the server ends its session) another takes over.
//! A watcher sees an event once it is numbered: within about one interval
//! of its commit. The leader also folds the task counts' changes every
//! [`FOLD_EVERY`] rounds (`db::metrics::fold_task_counts`) and forgets the
//! swarm counts that folded to zero every [`PRUNE_EVERY`].

use std::time::Duration;

use sqlx::pool::PoolConnection;
use sqlx::{PgPool, Postgres};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument};

use crate::db;

/// How often the leader numbers what is waiting.
const INTERVAL: Duration = Duration::from_millis(50);
/// How often the others try to lead.
const FOLLOW_INTERVAL: Duration = Duration::from_secs(1);
/// Most rows numbered in one statement.
const ROWS_PER_ROUND: i64 = 10_000;
/// Rounds between folds of the task counts' changes (one a second).
const FOLD_EVERY: u32 = 20;
/// Rounds between forgetting swarm counts of zero (about a minute).
const PRUNE_EVERY: u32 = FOLD_EVERY * 60;

/// Leads when it can, numbering rows, until `cancel`.
#[instrument(skip_all, name = "event_sequencer")]
pub(crate) async fn run(pool: PgPool, cancel: CancellationToken) {
    loop {
        match lead(&pool).await {
            Ok(Some(conn)) => {
                info!("numbering events for every coordinator");
                number_while_leading(conn, &cancel).await;
            }
            Ok(None) => {}
            Err(err) => debug!(error = %err, "could not try to lead the event sequencer"),
        }
        tokio::select! {
            () = tokio::time::sleep(FOLLOW_INTERVAL) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// A connection of this coordinator's that now holds the sequencer's lock, if it could take it.
async fn lead(pool: &PgPool) -> sqlx::Result<Option<PoolConnection<Postgres>>> {
    let mut conn = pool.acquire().await?;
    Ok(db::events::lead(&mut conn).await?.then_some(conn))
}

/// Numbers every [`INTERVAL`] until `cancel` or a failed statement (the
/// connection is then closed, which ends its session and frees the lock).
async fn number_while_leading(conn: PoolConnection<Postgres>, cancel: &CancellationToken) {
    // Never handed back to the pool: the lock is the session's.
    let mut conn = conn.detach();
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut rounds = 0_u32;
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = cancel.cancelled() => {
                // Another coordinator may lead at once, not only when this session ends.
                let _ = db::events::resign(&mut conn).await;
                break;
            }
        }
        rounds = rounds.wrapping_add(1);
        if let Err(err) = round(&mut conn, rounds).await {
            debug!(error = %err, "numbering events failed; leading again once a connection holds the lock");
            break;
        }
    }
    let _ = sqlx::Connection::close(conn).await;
}

/// Numbers what is waiting, at most [`ROWS_PER_ROUND`] rows (the next
/// round takes the rest), and in the rounds for it folds the task counts'
/// changes and forgets swarm counts of zero.
async fn round(conn: &mut sqlx::PgConnection, rounds: u32) -> sqlx::Result<()> {
    if let Some(head) = db::events::number(conn, ROWS_PER_ROUND).await? {
        debug!(head, "numbered events");
    }
    if rounds.is_multiple_of(FOLD_EVERY) {
        db::metrics::fold_task_counts(&mut *conn).await?;
    }
    if rounds.is_multiple_of(PRUNE_EVERY) {
        db::metrics::prune_swarm_counts(&mut *conn).await?;
    }
    Ok(())
}
