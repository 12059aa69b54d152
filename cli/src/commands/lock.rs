//! `hivectl lock acquire|release KEY`, for agents: take or release a lock for
//! the running attempt (from `$HIVE_TASK_ID` and `$HIVE_ATTEMPT_ID`, which
//! every agent gets); `hivectl locks` lists held locks.

use std::time::Duration;

use hive_shared::convert::duration;
use hive_shared::pb;
use hive_shared::pb::worker_service_client::WorkerServiceClient;

use super::Ctx;
use crate::output;

/// `lock` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum LockCommand {
    /// Take a lock; exits 1 when another task still holds it after --wait.
    Acquire {
        /// Lock key (a path or any name).
        key: String,
        /// How long to wait while another task holds it.
        #[arg(long, value_parser = humantime::parse_duration, default_value = "0s")]
        wait: Duration,
        /// The calling attempt (set by the worker for every agent).
        #[command(flatten)]
        attempt: AttemptArgs,
    },
    /// Release a lock this attempt holds.
    Release {
        /// Lock key.
        key: String,
        /// The calling attempt.
        #[command(flatten)]
        attempt: AttemptArgs,
    },
}

/// The attempt a lock belongs to.
#[derive(Debug, clap::Args)]
pub struct AttemptArgs {
    /// Task id.
    #[arg(long = "task", env = "HIVE_TASK_ID")]
    pub task_id: String,
    /// Attempt id.
    #[arg(long = "attempt", env = "HIVE_ATTEMPT_ID")]
    pub attempt_id: String,
}

/// Runs a `lock` subcommand.
///
/// # Errors
/// A refused call, or a lock still held by another task.
pub async fn run(ctx: &Ctx, command: LockCommand) -> anyhow::Result<()> {
    let mut client = WorkerServiceClient::new(ctx.connect.connect().await?);
    match command {
        LockCommand::Acquire { key, wait, attempt } => {
            let request = pb::AcquireLockRequest {
                task_id: attempt.task_id,
                attempt_id: attempt.attempt_id,
                key: key.clone(),
                wait: Some(duration(wait)),
            };
            let response =
                client.acquire_lock(request).await.map_err(|status| ctx.refused("lock refused", &status))?.into_inner();
            if !response.acquired {
                anyhow::bail!("lock `{key}` is held by task {}", response.held_by_task_id);
            }
            output::line(format!("acquired {key}"));
        }
        LockCommand::Release { key, attempt } => {
            let request =
                pb::ReleaseLockRequest { task_id: attempt.task_id, attempt_id: attempt.attempt_id, key: key.clone() };
            let response = client
                .release_lock(request)
                .await
                .map_err(|status| ctx.refused("release refused", &status))?
                .into_inner();
            output::line(if response.released {
                format!("released {key}")
            } else {
                format!("{key} was not held by this attempt")
            });
        }
    }
    Ok(())
}

/// Runs `locks`: every held lock.
///
/// # Errors
/// A refused call.
pub async fn list(ctx: &Ctx) -> anyhow::Result<()> {
    let response =
        ctx.admin()?.list_locks(pb::ListLocksRequest {}).await.map_err(|status| ctx.refused("list locks", &status))?;
    let locks = response.into_inner().locks;
    if ctx.json {
        let rows: Vec<serde_json::Value> = locks
            .iter()
            .map(|lock| serde_json::json!({"key": lock.key, "task_id": lock.task_id, "attempt_id": lock.attempt_id}))
            .collect();
        output::json(&rows);
        return Ok(());
    }
    let mut table = output::table(&["key", "task", "attempt"]);
    for lock in locks {
        table.add_row(vec![lock.key, lock.task_id, lock.attempt_id]);
    }
    output::line(table);
    Ok(())
}
