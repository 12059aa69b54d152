//! One heartbeat stream per connected worker: each beat records the worker's
//! figures and extends the leases of the attempts it still holds, and the
//! reply tells it to stop any attempt whose lease it lost.

use hive_shared::convert::timestamp;
use hive_shared::ids::{AttemptId, WorkerId};
use hive_shared::pb;
use sqlx::PgPool;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::{Status, Streaming};
use tracing::{debug, info, instrument, warn};
use uuid::Uuid;

use crate::config::Config;
use crate::db;
use crate::error::{Error, Result};

/// Replies waiting to be sent on one stream; a worker that does not read its
/// replies stalls its own session, never the coordinator.
pub const REPLY_BUFFER: usize = 4;

/// Serves one heartbeat stream until the worker closes it, it fails, or `shutdown`.
#[instrument(skip_all, name = "heartbeat_session")]
pub async fn run(
    pool: PgPool,
    config: std::sync::Arc<Config>,
    mut beats: Streaming<pb::HeartbeatRequest>,
    replies: mpsc::Sender<Result<pb::HeartbeatResponse, Status>>,
    shutdown: CancellationToken,
) {
    loop {
        let beat = tokio::select! {
            beat = beats.message() => beat,
            () = shutdown.cancelled() => return,
        };
        let reply = match beat {
            Ok(Some(beat)) => handle_beat(&pool, &config, beat).await.map_err(Status::from),
            Ok(None) => return debug!("worker closed its heartbeat stream"),
            Err(status) => return debug!(code = ?status.code(), "heartbeat stream broke"),
        };
        let failed = reply.is_err();
        if replies.send(reply).await.is_err() || failed {
            return;
        }
    }
}

/// Records one beat and extends leases; the reply cancels attempts that are no longer current.
async fn handle_beat(pool: &PgPool, config: &Config, beat: pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse> {
    let worker = WorkerId::parse(&beat.worker_id).map_err(|err| Error::invalid("worker_id", err))?;
    let attempts = beat
        .attempt_ids
        .iter()
        .enumerate()
        .map(|(index, id)| {
            AttemptId::parse(id).map(|id| id.0).map_err(|err| Error::invalid(format!("attempt_ids[{index}]"), err))
        })
        .collect::<Result<Vec<Uuid>>>()?;
    let resources = beat.resources.unwrap_or_default();
    let figures = db::workers::Beat {
        id: worker.0,
        free_slots: i32::try_from(beat.free_slots).unwrap_or(i32::MAX),
        running: i32::try_from(attempts.len()).unwrap_or(i32::MAX),
        cpu_percent: resources.cpu_percent,
        memory_used_bytes: i64::try_from(resources.memory_used_bytes).unwrap_or(i64::MAX),
        memory_total_bytes: i64::try_from(resources.memory_total_bytes).unwrap_or(i64::MAX),
    };
    if !db::workers::record_beat(pool, &figures).await? {
        return Err(Error::WorkerNotRegistered(worker));
    }
    let (extended, lease_expires_at) =
        db::tasks::extend_leases(pool, worker.0, &attempts, db::seconds(config.leases.ttl)).await?;
    let commands: Vec<pb::WorkerCommand> = attempts
        .iter()
        .filter(|attempt| !extended.contains(attempt))
        .map(|attempt| {
            info!(worker_id = %worker, attempt_id = %attempt, "attempt is no longer current; telling its worker to stop it");
            pb::WorkerCommand {
                command: Some(pb::worker_command::Command::CancelAttempt(pb::CancelAttempt {
                    attempt_id: attempt.to_string(),
                    reason: "the attempt is no longer current (its lease was lost or the task finished)".into(),
                })),
            }
        })
        .collect();
    if !commands.is_empty() {
        warn!(worker_id = %worker, lost = commands.len(), "heartbeat listed attempts that are not current");
    }
    Ok(pb::HeartbeatResponse { commands, lease_expires_at: Some(timestamp(lease_expires_at)) })
}
