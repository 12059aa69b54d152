//! What the gRPC handlers and background loops share: the pool, the config,
//! the token book, the wake-up fan-out, and the tracker and cancellation
//! token that own spawned work.

use std::sync::Arc;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::auth::book::TokenBook;
use crate::auth::ownership::WorkerOwners;
use crate::config::Config;
use crate::maintenance::statistics::Statistics;
use crate::notifications::Notifications;
use crate::workers::beats::BeatWriter;

/// Shared state of one coordinator process.
#[derive(Debug, Clone)]
pub(crate) struct App {
    /// Query pool.
    pub pool: PgPool,
    /// Query pool of the workers' hot path (claims, outcomes, heartbeats,
    /// output): generic plans, see `db::hot_pool`.
    pub hot_pool: PgPool,
    /// Effective config.
    pub config: Arc<Config>,
    /// Notifications from PostgreSQL, fanned out to claims and sessions.
    pub notifications: Arc<Notifications>,
    /// Records heartbeats in batches.
    pub beats: BeatWriter,
    /// The tokens callers present; `None` when auth is off.
    pub tokens: Option<Arc<TokenBook>>,
    /// Which token registered each worker.
    pub worker_owners: Arc<WorkerOwners>,
    /// Tasks submitted here that the statistics loop has not seen yet.
    pub statistics: Arc<Statistics>,
    /// Owns work spawned by handlers (heartbeat sessions, delayed wake-ups).
    pub tracker: TaskTracker,
    /// Cancelled when the coordinator stops taking RPCs: ends long-polls and sessions.
    pub rpc_shutdown: CancellationToken,
    /// What this coordinator's claims learnt that the next claim uses.
    pub claim_hints: Arc<crate::scheduler::Hints>,
    /// The newest events, shared by this coordinator's watchers.
    pub events: Arc<crate::events::tail::Tail>,
    /// The dashboard overview's numbers, read here once for every open overview.
    pub overview: Arc<crate::dashboard::counts::Counts>,
    /// What this coordinator counted, for `/metrics`.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Wakes the webhook sender: a delivery was queued or resent here.
    pub webhooks_queued: Arc<tokio::sync::Notify>,
    /// Where this coordinator's spans go; `None` when traces are not exported.
    pub tracer: Option<hive_shared::traces::Tracer>,
}

impl App {
    /// The token the agent of `attempt` gets; empty when auth is off.
    pub(crate) fn agent_token(&self, attempt: uuid::Uuid) -> String {
        self.tokens.as_ref().map(|book| book.attempt_token(attempt)).unwrap_or_default()
    }

    /// Wakes this coordinator's waiting claims after `delay` (a retry coming due).
    pub(crate) fn wake_after(&self, delay: std::time::Duration) {
        let notifications = Arc::clone(&self.notifications);
        let cancel = self.rpc_shutdown.clone();
        hive_shared::tracked::spawn(&self.tracker, "delayed wake-up", async move {
            tokio::select! {
                () = tokio::time::sleep(delay) => notifications.wake_claims(),
                () = cancel.cancelled() => {}
            }
        });
    }
}
