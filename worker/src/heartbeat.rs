//! The heartbeat stream: every interval the worker lists the attempts it
//! holds (and which are stalled), its free slots and its host figures; the
//! coordinator extends their leases and answers with commands (stop an
//! attempt) and the agents' latest progress reports. The stream is reopened
//! with backoff when it breaks.

use std::sync::Arc;
use std::time::Duration;

use hive_shared::ids::AttemptId;
use hive_shared::pb;
use hive_shared::pb::worker_command::Command;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tonic::Status;
use tracing::{info, warn};

use crate::connection;
use crate::context::Context;
use crate::held::CancelReason;
use crate::resources::Sampler;

/// Beats every `interval` until `stop`, reconnecting as needed.
pub(crate) async fn run(context: Arc<Context>, interval: Duration, stop: CancellationToken) {
    let mut sampler = Sampler::default();
    let mut delays = connection::backoff(context.retry_delay_max);
    loop {
        let status = match beat_until_broken(&context, &mut sampler, interval, &stop).await {
            Ok(()) => return,
            Err(status) => status,
        };
        if !context.recover("heartbeat", &status, &mut delays, &stop).await {
            return;
        }
    }
}

async fn beat_until_broken(
    context: &Context,
    sampler: &mut Sampler,
    interval: Duration,
    stop: &CancellationToken,
) -> Result<(), Status> {
    let (beats, outbound) = mpsc::channel(2);
    beats.send(beat(context, sampler).await).await.map_err(|_| Status::internal("beat queue closed"))?;
    let mut client = context.client.clone();
    let mut replies = client.heartbeat(ReceiverStream::new(outbound)).await?.into_inner();
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    ticker.tick().await;
    loop {
        tokio::select! {
            _ = ticker.tick() => {
                if beats.send(beat(context, sampler).await).await.is_err() {
                    return Err(Status::unavailable("the heartbeat stream closed"));
                }
            }
            reply = replies.message() => match reply? {
                Some(reply) => apply(context, reply),
                None => return Err(Status::unavailable("the coordinator closed the heartbeat stream")),
            },
            () = stop.cancelled() => return Ok(()),
        }
    }
}

async fn beat(context: &Context, sampler: &mut Sampler) -> pb::HeartbeatRequest {
    let resources = sampler.sample(context.held.groups()).await;
    *context.latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner) = Some(resources.clone());
    pb::HeartbeatRequest {
        worker_id: context.worker_id.to_string(),
        attempt_ids: context.held.attempt_ids(),
        stalled_attempt_ids: context.held.stalled_ids(),
        free_slots: context.free_slots(),
        resources: Some(resources),
        draining: context.drain.is_cancelled(),
        unavailable: context.unavailable.current(std::time::Instant::now()).into_iter().collect(),
    }
}

fn apply(context: &Context, reply: pb::HeartbeatResponse) {
    for progress in reply.progress {
        let reported_at = progress.reported_at.and_then(|at| std::time::SystemTime::try_from(at).ok());
        if let (Ok(attempt), Some(reported_at)) = (AttemptId::parse(&progress.attempt_id), reported_at) {
            context.held.set_reported(attempt, reported_at);
        }
    }
    for command in reply.commands {
        match command.command {
            Some(Command::CancelAttempt(cancel)) => cancel_attempt(context, &cancel),
            Some(Command::Drain(_)) => {
                if !context.drain.is_cancelled() {
                    info!("draining at the coordinator's request");
                    context.drain.cancel();
                }
            }
            Some(Command::Stop(_)) => {
                if !context.stop_now.is_cancelled() {
                    info!("stopping at once at the coordinator's request");
                    context.drain.cancel();
                    context.stop_now.cancel();
                }
            }
            None => warn!("empty command from the coordinator"),
        }
    }
}

fn cancel_attempt(context: &Context, cancel: &pb::CancelAttempt) {
    let Ok(attempt) = AttemptId::parse(&cancel.attempt_id) else {
        warn!(attempt_id = %cancel.attempt_id, "cancel command with a malformed attempt id");
        return;
    };
    let reason = match cancel.cause() {
        pb::CancelCause::TaskCancelled => CancelReason::TaskCancelled,
        pb::CancelCause::Paused => CancelReason::Paused,
        pb::CancelCause::LeaseLost | pb::CancelCause::Deadline | pb::CancelCause::Unspecified => {
            CancelReason::LeaseLost
        }
    };
    if context.held.cancel(attempt, reason) {
        info!(attempt_id = %attempt, reason = %cancel.reason, "stopping attempt at the coordinator's request");
    }
}
