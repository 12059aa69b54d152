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
//!   numbering, encoded once into their wire form ([`Event`]) and shared by
//!   every watcher there.
//! - [`watch`]: one watcher's position, filters, and the pages it is sent
//!   ([`page`]: slices of the shared encodings, not copies).

pub(crate) mod page;
pub(crate) mod sequencer;
pub(crate) mod tail;
pub(crate) mod watch;

use std::ops::Range;
use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use hive_shared::convert::timestamp;
use hive_shared::pb;
use uuid::Uuid;

use crate::db::events::EventRow;

/// One numbered event as watchers use it: what their filters read, and its
/// wire form, encoded once per coordinator into a buffer its whole batch
/// shares, and shared (through an `Arc`) by every watcher it is sent to.
#[derive(Debug)]
pub(crate) struct Event {
    /// Its number.
    pub seq: i64,
    /// Dotted name.
    pub kind: String,
    /// Its swarm, task and worker, when it has them.
    pub swarm: Option<Uuid>,
    /// See `swarm`.
    pub task: Option<Uuid>,
    /// See `swarm`.
    pub worker: Option<Uuid>,
    /// The buffer its batch was encoded into.
    batch: Bytes,
    /// Where its record is in `batch`: a `WatchResponse.events` field (tag,
    /// length and the encoded `pb::Event`), as `Watch` sends it.
    record: Range<usize>,
}

/// Converts rows read together, encoding their records one after another
/// into one buffer, so a page of consecutive events is one slice of it.
pub(crate) fn encode(rows: Vec<EventRow>) -> Vec<Arc<Event>> {
    let mut buf = BytesMut::new();
    let mut ends = Vec::with_capacity(rows.len());
    for row in &rows {
        pb::encode_record(&wire(row), &mut buf);
        ends.push(buf.len());
    }
    let batch = buf.freeze();
    let mut start = 0;
    rows.into_iter()
        .zip(ends)
        .map(|(row, end)| {
            let record = start..end;
            start = end;
            let (swarm, task, worker) = (row.swarm_id, row.task_id, row.worker_id);
            Arc::new(Event { seq: row.seq, kind: row.kind, swarm, task, worker, batch: batch.clone(), record })
        })
        .collect()
}

/// A row as `Watch` sends it.
fn wire(row: &EventRow) -> pb::Event {
    let id = |id: Option<Uuid>| id.map(|id| id.to_string()).unwrap_or_default();
    pb::Event {
        seq: u64::try_from(row.seq).unwrap_or(0),
        at: Some(timestamp(row.at)),
        kind: row.kind.clone(),
        swarm_id: id(row.swarm_id),
        task_id: id(row.task_id),
        worker_id: id(row.worker_id),
        attempt: row.attempt.and_then(|attempt| u32::try_from(attempt).ok()).unwrap_or(0),
        detail: row.detail.as_ref().map(ToString::to_string).unwrap_or_default(),
    }
}

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
