//! Heartbeats written together. Every heartbeat session on this coordinator
//! hands its beat to one writer, which gathers beats for a short window
//! (`leases.heartbeat_write_window`) and records them with one statement and
//! one commit (`db::beats`): a fleet of a thousand workers beating every 5 s
//! costs a few commits a second, not two statements per beat. While a batch
//! is being written the next one gathers, and up to [`WRITES`] batches are
//! written at once, so a burst from a large fleet waits on fewer statements
//! in a row (BENCHMARKS.md, "What features cost").

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tokio::sync::{Semaphore, mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{error, instrument, warn};
use uuid::Uuid;

use crate::db;
use crate::db::beats::Extended;
use crate::db::workers::Command;
use crate::error::{Error, Result};

/// Most beats written by one statement.
const MAX_BATCH: usize = 2_000;

/// Most batches written at once. Each batch holds other workers' rows, so
/// batches never wait on each other.
const WRITES: usize = 2;

/// Beats waiting for the writer; a full queue makes sessions wait, which
/// slows their workers' beats rather than dropping them.
const QUEUE: usize = 4_096;

/// One worker's beat.
#[derive(Debug)]
pub(crate) struct Beat {
    /// Worker id.
    pub worker: Uuid,
    /// Free slots.
    pub free_slots: i32,
    /// CPU use, percent.
    pub cpu_percent: f64,
    /// Memory in use.
    pub memory_used_bytes: i64,
    /// Memory installed.
    pub memory_total_bytes: i64,
    /// Whether it is draining.
    pub draining: bool,
    /// Resident memory per running attempt (a JSON object: attempt id → bytes).
    pub attempt_rss: serde_json::Value,
    /// What it cannot do now (a JSON object: agent or `work_dir` → reason).
    pub unavailable: serde_json::Value,
    /// The attempts it holds.
    pub attempts: Vec<Uuid>,
    /// Those of them it says are stalled.
    pub stalled: Vec<Uuid>,
}

/// What writing one beat found.
#[derive(Debug)]
pub(crate) struct Recorded {
    /// The command waiting for the worker.
    pub command: Option<Command>,
    /// Attempts whose lease was extended.
    pub extended: Vec<Extended>,
    /// Tasks leased to the worker in all, listed or not.
    pub leased: i64,
    /// The new lease end.
    pub lease_expires_at: DateTime<Utc>,
}

type Reply = oneshot::Sender<Result<Option<Recorded>>>;

/// The handle sessions send beats through.
#[derive(Debug, Clone)]
pub(crate) struct BeatWriter {
    queue: mpsc::Sender<(Beat, Reply)>,
}

impl BeatWriter {
    /// Starts the writer; it runs until `cancel`.
    pub(crate) fn start(
        pool: PgPool,
        window: Duration,
        lease: Duration,
        cancel: CancellationToken,
    ) -> (Self, WriterTask) {
        let (queue, beats) = mpsc::channel(QUEUE);
        let task = WriterTask { pool, beats, window, lease_seconds: db::seconds(lease), cancel };
        (Self { queue }, task)
    }

    /// Records a beat with the others of its window; `None` when the worker is not registered.
    ///
    /// # Errors
    /// [`Error::BeatsNotRecorded`] when the batch's statement failed or the coordinator is stopping.
    pub(crate) async fn write(&self, beat: Beat) -> Result<Option<Recorded>> {
        let (reply, recorded) = oneshot::channel();
        self.queue.send((beat, reply)).await.map_err(|_| Error::BeatsNotRecorded)?;
        recorded.await.map_err(|_| Error::BeatsNotRecorded)?
    }
}

/// The writer's loop, to be spawned.
pub(crate) struct WriterTask {
    pool: PgPool,
    beats: mpsc::Receiver<(Beat, Reply)>,
    window: Duration,
    lease_seconds: f64,
    cancel: CancellationToken,
}

impl WriterTask {
    /// Gathers and writes batches until cancelled.
    #[instrument(skip_all, name = "beat_writer")]
    pub(crate) async fn run(mut self) {
        let writes = Arc::new(Semaphore::new(WRITES));
        let mut writing = JoinSet::new();
        loop {
            let first = tokio::select! {
                first = self.beats.recv() => first,
                () = self.cancel.cancelled() => None,
            };
            let Some(first) = first else { break };
            let mut batch = vec![first];
            let until = Instant::now() + self.window;
            while batch.len() < MAX_BATCH {
                match tokio::time::timeout_at(until, self.beats.recv()).await {
                    Ok(Some(beat)) => batch.push(beat),
                    Ok(None) | Err(_) => break,
                }
            }
            // Waits only while WRITES batches are being written.
            let Ok(permit) = Arc::clone(&writes).acquire_owned().await else { break };
            let writer = self.batch_writer();
            writing.spawn(async move {
                writer.write(batch).await;
                drop(permit);
            });
            while writing.try_join_next().is_some() {}
        }
        while writing.join_next().await.is_some() {}
    }

    /// What a spawned write needs.
    fn batch_writer(&self) -> BatchWriter {
        BatchWriter { pool: self.pool.clone(), lease_seconds: self.lease_seconds }
    }
}

/// Writes one batch of beats.
struct BatchWriter {
    pool: PgPool,
    lease_seconds: f64,
}

impl BatchWriter {
    async fn write(&self, batch: Vec<(Beat, Reply)>) {
        let mut columns = db::beats::Beats::default();
        for (beat, _) in &batch {
            columns.worker_ids.push(beat.worker);
            columns.free_slots.push(beat.free_slots);
            columns.running.push(i32::try_from(beat.attempts.len()).unwrap_or(i32::MAX));
            columns.cpu_percent.push(beat.cpu_percent);
            columns.memory_used_bytes.push(beat.memory_used_bytes);
            columns.memory_total_bytes.push(beat.memory_total_bytes);
            columns.draining.push(beat.draining);
            columns.attempt_rss.push(beat.attempt_rss.clone());
            columns.unavailable.push(beat.unavailable.clone());
            columns.held_workers.extend(std::iter::repeat_n(beat.worker, beat.attempts.len()));
            columns.held_attempts.extend(&beat.attempts);
            columns.stalled_attempts.extend(&beat.stalled);
        }
        let mut written = db::beats::record(&self.pool, &columns, self.lease_seconds).await;
        if matches!(&written, Err(err) if is_deadlock(err)) {
            // A multi-row operator command can lock workers in another order; once more.
            warn!("heartbeat batch deadlocked with another statement; writing it again");
            written = db::beats::record(&self.pool, &columns, self.lease_seconds).await;
        }
        match written {
            Ok(written) => {
                // A worker listed twice in one batch (a beat sent again after
                // a reconnect) gets the same answer both times.
                for (beat, reply) in batch {
                    let recorded = written.commands.get(&beat.worker).map(|command| Recorded {
                        command: *command,
                        extended: written.extended.get(&beat.worker).cloned().unwrap_or_default(),
                        leased: written.leased.get(&beat.worker).copied().unwrap_or(0),
                        lease_expires_at: written.lease_expires_at,
                    });
                    // A session that went away no longer needs its answer.
                    let _ = reply.send(Ok(recorded));
                }
            }
            Err(err) => {
                error!(error = %err, beats = batch.len(), "could not record a batch of heartbeats");
                for (_, reply) in batch {
                    let _ = reply.send(Err(Error::BeatsNotRecorded));
                }
            }
        }
    }
}

fn is_deadlock(err: &sqlx::Error) -> bool {
    err.as_database_error().and_then(|db| db.code()).is_some_and(|code| code == "40P01")
}
