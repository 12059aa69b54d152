//! One heartbeat stream per connected worker. Each beat records the worker's
//! figures and extends the leases of the attempts it still holds (written
//! with other sessions' beats by the `beats` writer); the reply
//! carries its commands: stop attempts whose lease it lost or whose task was
//! cancelled, drain, stop. When another coordinator (or this one) writes a
//! command for this worker, a notice arrives and the commands are pushed at
//! once, without waiting for the next beat.

use std::sync::Arc;

use hive_shared::convert::timestamp;
use hive_shared::ids::{AttemptId, WorkerId};
use hive_shared::pb::{self, worker_command::Command};
use sqlx::PgPool;
use tokio::sync::{broadcast, mpsc};
use tonic::{Status, Streaming};
use tracing::{debug, info, instrument, warn};
use uuid::Uuid;

use super::beats::{Beat, BeatWriter};
use crate::app::App;
use crate::auth::Caller;
use crate::auth::book::TokenBook;
use crate::auth::ownership::WorkerOwners;
use crate::config::Config;
use crate::db;
use crate::db::workers::Command as WorkerCommand;
use crate::error::{Error, Result};
use crate::metrics::Metrics;
use crate::notifications::Notice;
use crate::status::TaskStatus;
use crate::tasks::{report, validate};

/// Replies waiting to be sent on one stream; a worker that does not read its
/// replies stalls its own session, never the coordinator.
pub(crate) const REPLY_BUFFER: usize = 4;

/// What one loop turn handles.
enum Event {
    Beat(Result<Option<pb::HeartbeatRequest>, Status>),
    Notice(Result<Notice, broadcast::error::RecvError>),
    Shutdown,
}

/// One worker's stream.
struct Session {
    pool: PgPool,
    config: Arc<Config>,
    beats: BeatWriter,
    replies: mpsc::Sender<Result<pb::HeartbeatResponse, Status>>,
    /// Who opened the stream; beats are only for workers it registered, and
    /// only while its token stays good.
    caller: Caller,
    tokens: Option<Arc<TokenBook>>,
    owners: Arc<WorkerOwners>,
    metrics: Arc<Metrics>,
    worker: Option<Uuid>,
}

/// Serves one heartbeat stream of `caller` until the worker closes it, it
/// fails, or the coordinator stops taking RPCs.
#[instrument(skip_all, name = "heartbeat_session")]
pub(crate) async fn run(
    app: App,
    caller: Caller,
    mut incoming: Streaming<pb::HeartbeatRequest>,
    replies: mpsc::Sender<Result<pb::HeartbeatResponse, Status>>,
) {
    let mut notices = app.notifications.notices();
    let shutdown = app.rpc_shutdown.clone();
    let mut session = Session {
        pool: app.pool,
        config: app.config,
        beats: app.beats,
        replies,
        caller,
        tokens: app.tokens,
        owners: app.worker_owners,
        metrics: app.metrics,
        worker: None,
    };
    loop {
        let event = tokio::select! {
            beat = incoming.message() => Event::Beat(beat),
            notice = notices.recv() => Event::Notice(notice),
            () = shutdown.cancelled() => Event::Shutdown,
        };
        let keep_going = match event {
            Event::Beat(Ok(Some(beat))) => session.on_beat(beat).await,
            Event::Beat(Ok(None)) => false,
            Event::Beat(Err(status)) => {
                debug!(code = ?status.code(), "heartbeat stream broke");
                false
            }
            Event::Notice(notice) => session.on_notice(notice).await,
            Event::Shutdown => false,
        };
        if !keep_going {
            return;
        }
    }
}

impl Session {
    async fn on_beat(&mut self, beat: pb::HeartbeatRequest) -> bool {
        let reply = self.handle_beat(beat).await.map_err(Status::from);
        let failed = reply.is_err();
        self.replies.send(reply).await.is_ok() && !failed
    }

    async fn on_notice(&mut self, notice: Result<Notice, broadcast::error::RecvError>) -> bool {
        let Some(worker) = self.worker else { return true };
        let ours = match notice {
            Ok(Notice::Worker(id)) => id == worker,
            Ok(Notice::Everyone) | Err(broadcast::error::RecvError::Lagged(_)) => true,
            Err(broadcast::error::RecvError::Closed) => return false,
        };
        if !ours {
            return true;
        }
        match pending_commands(&self.pool, worker).await {
            Ok(commands) if commands.is_empty() => true,
            Ok(commands) => {
                info!(worker_id = %worker, commands = commands.len(), "pushing commands");
                let reply = pb::HeartbeatResponse { commands, lease_expires_at: None, progress: Vec::new() };
                self.replies.send(Ok(reply)).await.is_ok()
            }
            // The next beat's reply carries the same commands.
            Err(err) => {
                debug!(error = %err, "could not read pending commands");
                true
            }
        }
    }

    /// Records one beat and extends leases; the reply carries the worker's commands.
    async fn handle_beat(&mut self, beat: pb::HeartbeatRequest) -> Result<pb::HeartbeatResponse> {
        if let Some(book) = &self.tokens {
            book.recheck(&self.caller).await?;
        }
        let worker = WorkerId::parse(&beat.worker_id).map_err(|err| Error::invalid("worker_id", err))?;
        if self.worker != Some(worker.0) {
            self.owners.check(&self.pool, &self.caller, worker.0).await?;
            self.worker = Some(worker.0);
        }
        let attempts = attempt_ids("attempt_ids", &beat.attempt_ids)?;
        let stalled = attempt_ids("stalled_attempt_ids", &beat.stalled_attempt_ids)?;
        let resources = beat.resources.unwrap_or_default();
        let too_large = |field: &str| Error::invalid(field, "is larger than this coordinator accepts");
        let free_slots = i32::try_from(beat.free_slots).map_err(|_| too_large("free_slots"))?;
        if !resources.cpu_percent.is_finite() || resources.cpu_percent < 0.0 {
            return Err(Error::invalid("resources.cpu_percent", "must be a percentage, 0 or more"));
        }
        let memory_used_bytes =
            i64::try_from(resources.memory_used_bytes).map_err(|_| too_large("resources.memory_used_bytes"))?;
        let memory_total_bytes =
            i64::try_from(resources.memory_total_bytes).map_err(|_| too_large("resources.memory_total_bytes"))?;
        let unavailable = unavailable(beat.unavailable);
        let recorded = self
            .beats
            .write(Beat {
                worker: worker.0,
                free_slots,
                cpu_percent: resources.cpu_percent,
                memory_used_bytes,
                memory_total_bytes,
                draining: beat.draining,
                attempt_rss: serde_json::Value::Object(
                    resources
                        .attempts
                        .iter()
                        .map(|usage| (usage.attempt_id.clone(), serde_json::Value::from(usage.rss_bytes)))
                        .collect(),
                ),
                unavailable,
                attempts: attempts.clone(),
                stalled,
            })
            .await?
            .ok_or(Error::WorkerNotRegistered(worker))?;
        let (extended, lease_expires_at) = (recorded.extended, recorded.lease_expires_at);
        if recorded.leased > extended.len() as i64 {
            let min_age = self.config.leases.heartbeat_interval * 2;
            let released =
                report::release_unheld(&self.pool, &self.config.tasks, &self.metrics, worker.0, &attempts, min_age)
                    .await?;
            if released > 0 {
                warn!(worker_id = %worker, released, "handed back tasks whose claim never reached their worker");
            }
        }

        let mut commands = Vec::new();
        for attempt in attempts.iter().filter(|attempt| !extended.iter().any(|held| held.attempt_id == **attempt)) {
            info!(worker_id = %worker, attempt_id = %attempt, "attempt is no longer current; telling its worker to stop it");
            commands.push(cancel(*attempt, pb::CancelCause::LeaseLost));
        }
        let cancelling = extended.iter().filter(|held| held.status == TaskStatus::Cancelling);
        commands.extend(cancelling.map(|held| cancel(held.attempt_id, pb::CancelCause::TaskCancelled)));
        commands.extend(
            extended.iter().filter(|held| held.paused).map(|held| cancel(held.attempt_id, pb::CancelCause::Paused)),
        );
        commands.extend(recorded.command.map(command));
        let progress = extended
            .iter()
            .filter_map(|held| {
                let reported_at = held.progress_at?;
                Some(pb::AttemptProgress {
                    attempt_id: held.attempt_id.to_string(),
                    reported_at: Some(timestamp(reported_at)),
                })
            })
            .collect();
        Ok(pb::HeartbeatResponse { commands, lease_expires_at: Some(timestamp(lease_expires_at)), progress })
    }
}

/// Attempt ids from a beat's `field`; a malformed one is named by its index.
fn attempt_ids(field: &str, ids: &[String]) -> Result<Vec<Uuid>> {
    ids.iter()
        .enumerate()
        .map(|(index, id)| {
            AttemptId::parse(id).map(|id| id.0).map_err(|err| Error::invalid(format!("{field}[{index}]"), err))
        })
        .collect()
}

/// Commands waiting for a worker: cancels of its cancelling tasks, and drain or stop.
async fn pending_commands(pool: &PgPool, worker: Uuid) -> Result<Vec<pb::WorkerCommand>> {
    let cancelling = db::leases::cancelling_attempts(pool, worker).await?;
    let mut commands: Vec<pb::WorkerCommand> =
        cancelling.into_iter().map(|attempt| cancel(attempt, pb::CancelCause::TaskCancelled)).collect();
    commands.extend(db::workers::command_of(pool, worker).await?.map(command));
    Ok(commands)
}

fn cancel(attempt: Uuid, cause: pb::CancelCause) -> pb::WorkerCommand {
    let reason = match cause {
        pb::CancelCause::TaskCancelled => "the task was cancelled",
        pb::CancelCause::Deadline => "the attempt ran past its deadline",
        pb::CancelCause::Paused => "a pause stops the attempts running under it",
        pb::CancelCause::LeaseLost | pb::CancelCause::Unspecified => {
            "the attempt is no longer current (its lease was lost or the task finished)"
        }
    };
    let cancel = pb::CancelAttempt { attempt_id: attempt.to_string(), reason: reason.into(), cause: cause.into() };
    pb::WorkerCommand { command: Some(Command::CancelAttempt(cancel)) }
}

fn command(command: WorkerCommand) -> pb::WorkerCommand {
    let command = match command {
        WorkerCommand::Drain => Command::Drain(pb::Drain {}),
        WorkerCommand::Stop => Command::Stop(pb::Stop {}),
    };
    pb::WorkerCommand { command: Some(command) }
}

/// Most entries of a beat's `unavailable` that are kept.
const MAX_UNAVAILABLE: usize = 64;
/// Longest name kept in `unavailable`, in bytes.
const MAX_UNAVAILABLE_NAME: usize = 128;
/// Longest reason kept in `unavailable`, in bytes.
const MAX_UNAVAILABLE_REASON: usize = 1024;

/// What a beat says the worker cannot do, made storable: at most
/// [`MAX_UNAVAILABLE`] entries (by name), names and reasons cut to their
/// limits, NUL characters replaced. It is only shown to operators, so an
/// oversized list is trimmed rather than refused: refusing the beat would
/// cost the worker its leases.
fn unavailable(entries: std::collections::HashMap<String, String>) -> serde_json::Value {
    let sorted: std::collections::BTreeMap<String, String> = entries.into_iter().collect();
    let object = sorted
        .into_iter()
        .take(MAX_UNAVAILABLE)
        .map(|(name, reason)| {
            let (name, reason) = (validate::storable(&name), validate::storable(&reason));
            let name = name[..name.floor_char_boundary(MAX_UNAVAILABLE_NAME)].to_owned();
            let reason = reason[..reason.floor_char_boundary(MAX_UNAVAILABLE_REASON)].to_owned();
            (name, serde_json::Value::String(reason))
        })
        .collect();
    serde_json::Value::Object(object)
}
