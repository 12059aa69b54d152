//! What the loops and attempts of one worker process share.

use std::sync::Arc;
use std::time::Duration;

use hive_shared::ids::WorkerId;
use tokio::sync::{Semaphore, mpsc, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Code, Status};
use tracing::{error, info, warn};

use crate::config::Config;
use crate::connection::{self, Client};
use crate::held::Held;
use crate::outcome::Report;
use crate::process::workdir::Folders;
use crate::shipper::Shipment;
use crate::unavailable::{self, Unavailable};
use crate::workspace::Worktrees;

/// Shared state of one worker.
#[derive(Debug)]
pub(crate) struct Context {
    /// Effective config.
    pub config: Arc<Config>,
    /// Coordinator client.
    pub client: Client,
    /// This process's id.
    pub worker_id: WorkerId,
    /// Registration, resent after a reconnect that lost it.
    pub registration: hive_shared::pb::RegisterRequest,
    /// Longest pause between retries of a failed call: the heartbeat interval.
    pub retry_delay_max: Duration,
    /// Attempts held.
    pub held: Held,
    /// What this worker cannot do now; claims skip it.
    pub unavailable: Unavailable,
    /// Free agent slots.
    pub slots: Arc<Semaphore>,
    /// Slots the claim loop holds while its claim waits for tasks: free all
    /// the same, as far as anyone asking is concerned.
    pub claiming: std::sync::atomic::AtomicUsize,
    /// How many claimed tasks wait for a slot (prefetched); the claim loop
    /// takes no slot while any does.
    pub queued: watch::Sender<usize>,
    /// Output queue.
    pub logs: mpsc::Sender<Shipment>,
    /// Outcome queue.
    pub reports: mpsc::Sender<Report>,
    /// Cancelled to drain: claim nothing more, let agents finish within the grace period.
    pub drain: CancellationToken,
    /// Cancelled to stop at once: stop every agent and hand its task back.
    pub stop_now: CancellationToken,
    /// Scratch folders for attempts, with their cgroups.
    pub folders: Arc<Folders>,
    /// Workspaces' worktrees parked between attempts.
    pub worktrees: Arc<Worktrees>,
    /// The latest host figures (the heartbeat session samples them), for admission.
    pub latest: std::sync::Mutex<Option<hive_shared::pb::ResourceUsage>>,
    /// What `/metrics` shows.
    pub metrics: Arc<crate::metrics::WorkerMetrics>,
    /// Where this worker's spans go; `None` when traces are not exported.
    pub tracer: Option<hive_shared::traces::Tracer>,
}

/// One claimed task waiting for a slot; counted in [`Context::queued`] until dropped.
#[derive(Debug)]
pub(crate) struct Queued {
    count: watch::Sender<usize>,
    refill_mark: usize,
}

impl Queued {
    /// Counts one more task waiting for a slot.
    pub(crate) fn new(context: &Context) -> Self {
        // Nobody waits for the count to rise: no wake-up.
        context.queued.send_if_modified(|count| {
            *count += 1;
            false
        });
        Self { count: context.queued.clone(), refill_mark: context.refill_mark() }
    }
}

impl Drop for Queued {
    /// Wakes the claim loop only at the two counts it waits for (its refill
    /// mark, and none left), so it is not polled once per prefetched task.
    fn drop(&mut self) {
        let mark = self.refill_mark;
        self.count.send_if_modified(|count| {
            *count = count.saturating_sub(1);
            *count == mark || *count == 0
        });
    }
}

impl Context {
    /// How few prefetched tasks may wait before the claim loop refills the
    /// local queue: a quarter of the prefetch, so its slots do not idle for
    /// a claim's round trip each time the queue runs dry.
    pub(crate) fn refill_mark(&self) -> usize {
        usize::try_from(self.config.prefetch).unwrap_or(usize::MAX) / 4
    }

    /// Slots running no agent right now (those a waiting claim holds count as free).
    pub(crate) fn free_slots(&self) -> u32 {
        let claiming = self.claiming.load(std::sync::atomic::Ordering::Relaxed);
        u32::try_from(self.slots.available_permits() + claiming).unwrap_or(u32::MAX)
    }

    /// Which agents may be claimed now: none while the host is over its CPU or
    /// memory limit, or its work folder or disk is unavailable; otherwise those
    /// whose memory estimate fits what is free and that are not unavailable.
    /// `None` means no limit applies (every agent).
    pub(crate) fn admissible_agents(&self) -> Option<Vec<String>> {
        let latest = self.latest.lock().unwrap_or_else(std::sync::PoisonError::into_inner).clone();
        let admissible = latest.and_then(|latest| crate::admission::admissible(&self.config, &latest));
        if self.unavailable.is_empty() {
            return admissible;
        }
        let now = std::time::Instant::now();
        if self.unavailable.contains(unavailable::WORK_DIR, now) || self.unavailable.contains(unavailable::DISK, now) {
            return Some(Vec::new());
        }
        let candidates = admissible.unwrap_or_else(|| self.config.agents.keys().cloned().collect());
        Some(candidates.into_iter().filter(|agent| !self.unavailable.contains(agent, now)).collect())
    }

    /// Why this worker cannot run `agent` now (its work folder, its disk or
    /// the agent itself is unavailable), if it cannot.
    pub(crate) fn cannot_run(&self, agent: &str) -> Option<String> {
        if self.unavailable.is_empty() {
            return None;
        }
        let now = std::time::Instant::now();
        [unavailable::WORK_DIR, unavailable::DISK, agent]
            .into_iter()
            .find_map(|what| self.unavailable.reason(what, now).map(|reason| format!("{what}: {reason}")))
    }
}

impl Context {
    /// Recovers from a failed call to the coordinator: registers again when
    /// the coordinator does not know this worker, then waits out the next backoff delay.
    /// Returns `false` when `stop` fired meanwhile. A refused token (revoked,
    /// expired) cannot recover: the worker stops at once, and its tasks go
    /// to other workers when their leases lapse.
    pub(crate) async fn recover(
        &self,
        what: &str,
        status: &Status,
        delays: &mut impl Iterator<Item = Duration>,
        stop: &CancellationToken,
    ) -> bool {
        if status.code() == Code::Unauthenticated {
            error!(call = what, message = status.message(), "the coordinator refuses this worker's token; stopping");
            self.drain.cancel();
            self.stop_now.cancel();
            return false;
        }
        if status.code() == Code::FailedPrecondition {
            info!("coordinator does not know this worker; registering again");
            if let Err(err) = connection::register(&self.client, &self.registration, stop).await {
                warn!(code = ?err.code(), message = err.message(), "re-registration failed");
            }
        }
        let delay = delays.next().unwrap_or(self.retry_delay_max);
        warn!(call = what, code = ?status.code(), message = status.message(), retry_in = ?delay, "coordinator call failed");
        connection::pause(delay, stop).await
    }
}
