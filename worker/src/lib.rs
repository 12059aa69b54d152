//! The Hive worker: registers with a coordinator, keeps a heartbeat stream
//! open, claims tasks while it has free slots, runs each task's agent as a
//! supervised subprocess in its own process group, streams the agent's output
//! and reports its outcome.
//!
//! Layout:
//! - [`config`]: layered, validated configuration, including the agents.
//! - [`connection`]: the client, retryable codes, backoff.
//! - [`session`]: the heartbeat stream. [`claim`]: the claim loop.
//! - [`attempt`]: one task from start to report; [`process`]: the subprocess itself.
//! - [`outcome`]: how an exit becomes a report; [`report`]: sending reports.
//! - [`shipper`]: streaming output; [`held`]: attempts held; [`resources`]: host figures.
//!
//! [`run`] takes its config and shutdown tokens, so tests run a worker in-process.

pub mod attempt;
pub mod claim;
pub mod config;
pub mod connection;
pub mod context;
pub mod held;
pub mod outcome;
pub mod process;
pub mod report;
pub mod resources;
pub mod session;
pub mod shipper;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hive_shared::convert::from_duration;
use hive_shared::ids::WorkerId;
use hive_shared::pb;
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use config::Config;
use context::Context;
use held::{CancelReason, Held};

/// Outcomes waiting to be reported before attempts wait to queue theirs.
const REPORT_QUEUE: usize = 1024;

/// Runs a worker until `shutdown` (drain: stop claiming, let agents finish
/// within the grace period, then stop them and report) or `abandon` (stop
/// every agent now, report what can be reported, exit).
///
/// # Errors
/// A malformed coordinator URL, or a registration the coordinator refuses.
pub async fn run(config: Config, shutdown: CancellationToken, abandon: CancellationToken) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let client = connection::client(&config.coordinator).context("coordinator URL")?;
    let worker_id = WorkerId::new();
    let name = if config.name.is_empty() { hostname() } else { config.name.clone() };
    let registration = pb::RegisterRequest {
        worker_id: worker_id.to_string(),
        name: name.clone(),
        hostname: hostname(),
        agents: config.agents.keys().cloned().collect(),
        slots: config.slots,
        version: hive_shared::VERSION.to_owned(),
    };
    let timing = tokio::select! {
        timing = connection::register(&client, &registration, &abandon) => timing.context("register with the coordinator")?,
        () = shutdown.cancelled() => return Ok(()),
    };
    let heartbeat = timing.heartbeat_interval.as_ref().and_then(from_duration).unwrap_or(Duration::from_secs(5));
    info!(%worker_id, %name, coordinator = %config.coordinator, slots = config.slots, ?heartbeat, "worker registered");

    let chunk = usize::try_from(config.logs.chunk_size.as_u64()).unwrap_or(1).max(1);
    let log_capacity = usize::try_from(config.logs.buffer.as_u64()).unwrap_or(usize::MAX) / chunk;
    let (logs, log_queue) = mpsc::channel(log_capacity.max(1));
    let (reports, report_queue) = mpsc::channel(REPORT_QUEUE);
    let held = Held::default();
    let context = Arc::new(Context {
        config: Arc::clone(&config),
        client: client.clone(),
        worker_id,
        registration,
        held: held.clone(),
        slots: Arc::new(Semaphore::new(config.slots as usize)),
        logs,
        reports,
    });

    let loops = TaskTracker::new();
    let session_stop = CancellationToken::new();
    loops.spawn(session::run(Arc::clone(&context), heartbeat, session_stop.clone()));
    loops.spawn(shipper::run(client.clone(), log_queue, config.logs.flush_interval, abandon.clone()));
    loops.spawn(report::run(client, worker_id.to_string(), report_queue, held.clone(), abandon.clone()));
    let attempts = TaskTracker::new();
    let claiming = tokio::spawn(claim::run(Arc::clone(&context), attempts.clone(), shutdown.clone()));
    drop(context);

    shutdown.cancelled().await;
    info!(running = held.len(), grace = ?config.drain_grace, "draining: no new claims");
    let _ = claiming.await;
    attempts.close();
    tokio::select! {
        () = attempts.wait() => {}
        () = tokio::time::sleep(config.drain_grace) => {
            warn!("drain grace period over; stopping the remaining agents");
            held.cancel_all(CancelReason::Shutdown);
        }
        () = abandon.cancelled() => held.cancel_all(CancelReason::Shutdown),
    }
    attempts.wait().await;
    // Every attempt has queued its outcome and dropped its senders: the
    // reporter and shipper finish their queues and stop.
    loops.close();
    tokio::select! {
        () = wait_until_settled(&held) => {}
        () = abandon.cancelled() => {}
    }
    session_stop.cancel();
    loops.wait().await;
    info!("worker stopped");
    Ok(())
}

/// Waits until every held attempt's outcome is settled (heartbeats keep their leases meanwhile).
async fn wait_until_settled(held: &Held) {
    while !held.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|name| name.into_string().ok()).unwrap_or_else(|| "unknown-host".into())
}
