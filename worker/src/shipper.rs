//! Shipping agent output to the coordinator. Output readers hand chunks to a
//! bounded queue (a full queue makes them wait, so memory stays bounded); the
//! shipper sends them in batches, one short AppendLogs stream per batch, and
//! resends a batch whose fate is unknown (the coordinator ignores duplicates).
//! A flush barrier lets an attempt make sure its output is stored before its
//! outcome is reported.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hive_shared::pb;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::connection::{self, Client};

/// Largest batch sent at once.
const BATCH_BYTES: usize = 1024 * 1024;

/// What travels to the shipper.
#[derive(Debug)]
pub enum Shipment {
    /// A piece of output.
    Chunk(pb::LogChunk),
    /// Answer once everything queued before it has been stored.
    Flush(oneshot::Sender<()>),
}

/// Where one attempt's output goes; clones share the sequence counter.
#[derive(Debug, Clone)]
pub struct LogSink {
    queue: mpsc::Sender<Shipment>,
    task_id: String,
    attempt_id: String,
    stream: i32,
    seq: Arc<AtomicU64>,
}

impl LogSink {
    /// A sink for one attempt.
    pub fn new(queue: mpsc::Sender<Shipment>, task_id: String, attempt_id: String) -> Self {
        Self { queue, task_id, attempt_id, stream: pb::LogStream::Stdout.into(), seq: Arc::new(AtomicU64::new(0)) }
    }

    /// The same sink writing to another stream (1 stdout, 2 stderr).
    pub fn stream(&self, stream: i32) -> Self {
        Self { stream, ..self.clone() }
    }

    /// Queues a chunk; waits while the queue is full.
    pub async fn send(&self, data: Vec<u8>) {
        let chunk = pb::LogChunk {
            task_id: self.task_id.clone(),
            attempt_id: self.attempt_id.clone(),
            stream: self.stream,
            data,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        };
        if self.queue.send(Shipment::Chunk(chunk)).await.is_err() {
            debug!("log shipper is gone; dropping output");
        }
    }

    /// Waits until everything queued so far is stored (or the shipper gave up).
    pub async fn flush(&self) {
        let (done, stored) = oneshot::channel();
        if self.queue.send(Shipment::Flush(done)).await.is_ok() {
            let _ = stored.await;
        }
    }
}

/// Ships until every sender is gone and the queue is empty, or `abandon`.
pub async fn run(
    client: Client,
    mut queue: mpsc::Receiver<Shipment>,
    flush_interval: Duration,
    abandon: CancellationToken,
) {
    let mut pending: Vec<pb::LogChunk> = Vec::new();
    let mut pending_bytes = 0;
    let mut ticker = tokio::time::interval(flush_interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let shipment = tokio::select! {
            shipment = queue.recv() => shipment,
            _ = ticker.tick() => {
                ship(&client, &mut pending, &abandon).await;
                pending_bytes = 0;
                continue;
            }
            () = abandon.cancelled() => return,
        };
        match shipment {
            Some(Shipment::Chunk(chunk)) => {
                pending_bytes += chunk.data.len();
                pending.push(chunk);
                if pending_bytes >= BATCH_BYTES {
                    ship(&client, &mut pending, &abandon).await;
                    pending_bytes = 0;
                }
            }
            Some(Shipment::Flush(done)) => {
                ship(&client, &mut pending, &abandon).await;
                pending_bytes = 0;
                let _ = done.send(());
            }
            None => {
                ship(&client, &mut pending, &abandon).await;
                return;
            }
        }
    }
}

/// Sends the pending chunks, retrying until they are stored; empties `pending`.
async fn ship(client: &Client, pending: &mut Vec<pb::LogChunk>, abandon: &CancellationToken) {
    if pending.is_empty() {
        return;
    }
    let chunks = std::mem::take(pending);
    let result = connection::retry("append_logs", abandon, || {
        let mut client = client.clone();
        let batch = pb::AppendLogsRequest { chunks: chunks.clone() };
        async move { client.append_logs(tokio_stream::iter([batch])).await }
    })
    .await;
    match result {
        Ok(summary) if summary.rejected_chunks > 0 => {
            debug!(rejected = summary.rejected_chunks, "output of attempts that are no longer current was refused");
        }
        Ok(_) => {}
        Err(status) => {
            warn!(code = ?status.code(), message = status.message(), chunks = chunks.len(), "dropping agent output")
        }
    }
}
