//! The event log: one ordered, durable record of what happens, which
//! `Watch`, `hivectl watch` and the dashboard follow.
//!
//! - Writers: every statement that changes a task's state appends its
//!   events in the same statement (a batch of one kind per row, see
//!   `db::events`); worker, swarm and operator events come from their own
//!   statements and from `audit::record`.
//! - [`sequencer`]: numbers committed rows in order, one coordinator at a
//!   time, so numbers have no gaps and a reader never sees one appear below
//!   what it has read; derives the swarm events as it goes.
//! - [`tail`]: each coordinator's copy of the newest events, read once per
//!   numbering and shared by every watcher there.
//! - [`watch`]: one watcher's position, filters, and the pages it is sent.

pub(crate) mod sequencer;
pub(crate) mod tail;
pub(crate) mod watch;

/// Every kind of event, as stored and sent.
pub(crate) const KINDS: &[&str] = &[
    "task.submitted",
    "task.started",
    "task.succeeded",
    "task.retry_scheduled",
    "task.dead",
    "task.cancelling",
    "task.cancelled",
    "task.retried",
    "task.restored",
    "task.next_stage",
    "task.stalled",
    "worker.joined",
    "worker.draining",
    "worker.gone",
    "worker.lost",
    "swarm.finished",
    "swarm.budget_exhausted",
    "cooldown.started",
    "cooldown.ended",
    "pause.expired",
    "admin.submit_tasks",
    "admin.cancel_task",
    "admin.cancel_tasks",
    "admin.retry_tasks",
    "admin.stop_workers",
    "admin.set_swarm_budget",
    "admin.create_token",
    "admin.revoke_token",
    "admin.pause",
    "admin.resume",
    "admin.clear_cooldown",
    "admin.resend_webhook_delivery",
];
