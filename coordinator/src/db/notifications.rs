//! Announcements through PostgreSQL NOTIFY, delivered when the writing
//! transaction commits: tasks became ready (claims wake up), a worker has
//! new commands (its heartbeat session pushes them), events were numbered
//! (`db::events::number` announces them; watchers read them). The coordinator's
//! LISTEN side is `crate::notifications`.

use sqlx::PgExecutor;
use uuid::Uuid;

/// The channel on which "tasks became ready" is announced.
pub const READY_CHANNEL: &str = "hive_task_ready";
/// The channel on which "this worker (the payload) has new commands" is announced.
pub const COMMANDS_CHANNEL: &str = "hive_worker_commands";
/// The channel on which the sequencer announces newly numbered events (the payload: the newest number).
pub const EVENTS_CHANNEL: &str = "hive_events";

/// Announces on [`READY_CHANNEL`] that tasks became ready; delivered at commit.
pub async fn notify_ready(executor: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query!("select pg_notify('hive_task_ready', '')").execute(executor).await?;
    Ok(())
}

/// Announces that `worker` has new commands (cancels, drain, stop); delivered at commit.
pub async fn notify_worker(executor: impl PgExecutor<'_>, worker: Uuid) -> sqlx::Result<()> {
    sqlx::query!("select pg_notify('hive_worker_commands', $1::uuid::text)", worker).execute(executor).await?;
    Ok(())
}
