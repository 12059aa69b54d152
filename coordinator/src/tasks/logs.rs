//! Storing agent output: chunks of the current attempt only, within a
//! per-task byte budget; the first chunk past the budget is cut and followed
//! by a truncation marker, and later output is dropped. A chunk sent again
//! (a worker retrying a batch whose reply it lost) is accepted and neither
//! stored nor charged to the budget a second time.

use std::collections::HashMap;

use hive_shared::ids::{AttemptId, TaskId};
use sqlx::PgPool;
use uuid::Uuid;

use crate::db;
use crate::error::{Error, Result};

/// The stream number of Hive's own notes (the truncation marker).
pub(crate) const HIVE_STREAM: i16 = 3;

/// One chunk as received.
#[derive(Debug, Clone)]
pub(crate) struct Chunk {
    /// Task.
    pub task: TaskId,
    /// Attempt.
    pub attempt: AttemptId,
    /// Position within the attempt.
    pub seq: i64,
    /// Stream (1 stdout, 2 stderr).
    pub stream: i16,
    /// Bytes.
    pub data: Vec<u8>,
}

/// How a batch was taken.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Stored {
    /// Chunks kept (or dropped past the budget, which is not the sender's fault).
    pub accepted: u64,
    /// Chunks refused because their attempt is not current.
    pub rejected: u64,
}

/// Largest page of chunks a read returns.
pub(crate) const MAX_PAGE: u32 = 10_000;

/// A page of a task's stored output.
#[derive(Debug)]
pub(crate) struct Page {
    /// Chunks after the cursor, oldest first.
    pub chunks: Vec<db::logs::ChunkRow>,
    /// Whether more chunks follow.
    pub more: bool,
    /// Whether the task's output hit its cap.
    pub truncated: bool,
}

/// Reads up to `limit` chunks (0: a thousand; at most [`MAX_PAGE`]) of a
/// task's output after `cursor`, of one attempt or all.
///
/// # Errors
/// [`Error::TaskNotFound`]; database failures.
pub(crate) async fn page(
    pool: &PgPool,
    task: TaskId,
    attempt: Option<AttemptId>,
    cursor: i64,
    limit: u32,
) -> Result<Page> {
    let limit = match limit {
        0 => 1000,
        limit => limit.min(MAX_PAGE),
    };
    let truncated = db::logs::truncated(pool, task.0).await?.ok_or(Error::TaskNotFound(task))?;
    let mut chunks = db::logs::read(pool, task.0, attempt.map(|id| id.0), cursor, i64::from(limit) + 1).await?;
    let more = chunks.len() > limit as usize;
    chunks.truncate(limit as usize);
    Ok(Page { chunks, more, truncated })
}

/// Stores a batch of chunks within each task's budget of `max_bytes`;
/// with `worker`, only chunks of attempts that worker holds (or held last).
///
/// # Errors
/// Database failures only.
pub(crate) async fn append(pool: &PgPool, max_bytes: u64, worker: Option<Uuid>, chunks: Vec<Chunk>) -> Result<Stored> {
    if chunks.is_empty() {
        return Ok(Stored::default());
    }
    let max_bytes = i64::try_from(max_bytes).unwrap_or(i64::MAX);
    let mut task_ids: Vec<Uuid> = chunks.iter().map(|chunk| chunk.task.0).collect();
    task_ids.sort_unstable();
    task_ids.dedup();

    let mut tx = pool.begin().await?;
    let mut budgets: HashMap<Uuid, db::logs::LogBudget> =
        db::logs::lock_budgets(&mut tx, &task_ids).await?.into_iter().map(|budget| (budget.task_id, budget)).collect();
    // Chunks stored already (read under the budgets' row locks: a resend
    // racing this batch waits for it), and then those taken from this batch.
    let attempts: Vec<Uuid> = chunks.iter().map(|chunk| chunk.attempt.0).collect();
    let seqs: Vec<i64> = chunks.iter().map(|chunk| chunk.seq).collect();
    let streams: Vec<i16> = chunks.iter().map(|chunk| chunk.stream).collect();
    let mut known = db::logs::stored_keys(&mut tx, &attempts, &seqs, &streams).await?;
    let mut stored = Stored::default();
    let mut rows = db::logs::NewChunks::default();
    for chunk in chunks {
        let Some(budget) = budgets.get_mut(&chunk.task.0) else {
            stored.rejected += 1;
            continue;
        };
        if budget.current_attempt != Some(chunk.attempt.0) || worker.is_some_and(|w| budget.current_worker != Some(w)) {
            stored.rejected += 1;
            continue;
        }
        stored.accepted += 1;
        // Stored before, or earlier in this batch: counted once.
        if budget.log_truncated || !known.insert((chunk.attempt.0, chunk.seq, chunk.stream)) {
            continue;
        }
        let room = usize::try_from(max_bytes - budget.log_bytes).unwrap_or(0);
        let mut data = chunk.data;
        let cut = data.len() > room;
        data.truncate(room);
        budget.log_bytes += i64::try_from(data.len()).unwrap_or(i64::MAX);
        if !data.is_empty() {
            push(&mut rows, &chunk.task, &chunk.attempt, chunk.seq, chunk.stream, data);
        }
        if cut {
            budget.log_truncated = true;
            let marker = format!("\n[hive] output truncated: this task's stored output reached {max_bytes} bytes\n");
            push(&mut rows, &chunk.task, &chunk.attempt, chunk.seq, HIVE_STREAM, marker.into_bytes());
        }
    }
    if !rows.task_ids.is_empty() {
        db::logs::insert_chunks(&mut tx, &rows).await?;
        let ids: Vec<Uuid> = budgets.keys().copied().collect();
        let bytes: Vec<i64> = ids.iter().map(|id| budgets[id].log_bytes).collect();
        let truncated: Vec<bool> = ids.iter().map(|id| budgets[id].log_truncated).collect();
        db::logs::update_budgets(&mut tx, &ids, &bytes, &truncated).await?;
    }
    tx.commit().await?;
    Ok(stored)
}

fn push(rows: &mut db::logs::NewChunks, task: &TaskId, attempt: &AttemptId, seq: i64, stream: i16, data: Vec<u8>) {
    rows.task_ids.push(task.0);
    rows.attempt_ids.push(attempt.0);
    rows.seqs.push(seq);
    rows.streams.push(stream);
    rows.data.push(data);
}
