//! Shipping agent output to the coordinator. Output readers hand chunks to a
//! bounded queue; the shipper sends them in batches, one short AppendLogs
//! stream per batch, and resends a batch whose fate is unknown (the
//! coordinator ignores duplicates). A flush barrier lets an attempt make sure
//! its output is stored before its outcome is reported.
//!
//! An agent is never stalled for long by a slow or unreachable coordinator:
//! a reader waits briefly for room in the queue, then drops output (counting
//! it) until there is room again, and a marker in the log says how much was
//! dropped. Memory stays bounded either way.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use hive_shared::pb;
use tokio::sync::{mpsc, oneshot};
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use crate::connection::{self, Client};
use crate::metrics::WorkerMetrics;

/// Largest batch sent at once.
const BATCH_BYTES: usize = 1024 * 1024;
/// How long a reader waits for room in the queue before dropping output.
const QUEUE_WAIT: Duration = Duration::from_secs(2);

/// What travels to the shipper.
#[derive(Debug)]
pub(crate) enum Shipment {
    /// A piece of output.
    Chunk(pb::LogChunk),
    /// Answer once everything queued before it has been stored.
    Flush(oneshot::Sender<()>),
}

/// Where one attempt's output goes; clones share the sequence and drop counters.
#[derive(Debug, Clone)]
pub(crate) struct LogSink {
    queue: mpsc::Sender<Shipment>,
    task_id: String,
    attempt_id: String,
    stream: i32,
    seq: Arc<AtomicU64>,
    dropped: Arc<AtomicU64>,
    /// Where the bytes sent are counted, under the attempt's agent.
    counted: Option<(Arc<WorkerMetrics>, Arc<str>)>,
}

impl LogSink {
    /// A sink for one attempt.
    pub(crate) fn new(queue: mpsc::Sender<Shipment>, task_id: String, attempt_id: String) -> Self {
        Self {
            queue,
            task_id,
            attempt_id,
            stream: pb::LogStream::Stdout.into(),
            seq: Arc::new(AtomicU64::new(0)),
            dropped: Arc::new(AtomicU64::new(0)),
            counted: None,
        }
    }

    /// The same sink, counting the bytes sent in `metrics` under `agent`.
    pub(crate) fn counted(self, metrics: Arc<WorkerMetrics>, agent: Arc<str>) -> Self {
        Self { counted: Some((metrics, agent)), ..self }
    }

    /// The same sink writing to another stream (1 stdout, 2 stderr).
    pub(crate) fn stream(&self, stream: i32) -> Self {
        Self { stream, ..self.clone() }
    }

    /// Queues a chunk. Waits up to [`QUEUE_WAIT`] for room; while output is
    /// being dropped it does not wait at all.
    pub(crate) async fn send(&self, data: Vec<u8>) {
        let len = data.len() as u64;
        if let Some((metrics, agent)) = &self.counted {
            metrics.output(agent, self.stream, len);
        }
        let hurry = self.dropped.load(Ordering::Relaxed) > 0;
        if hurry && !self.report_dropped(true).await {
            self.dropped.fetch_add(len, Ordering::Relaxed);
            return;
        }
        if !self.offer(self.stream, data, hurry).await {
            self.dropped.fetch_add(len, Ordering::Relaxed);
        }
    }

    /// Writes the "output dropped" marker; `false` when even that found no room.
    async fn report_dropped(&self, hurry: bool) -> bool {
        let dropped = self.dropped.load(Ordering::Relaxed);
        if dropped == 0 {
            return true;
        }
        let marker =
            format!("\n[hive] {dropped} bytes of output were dropped: the coordinator could not take them in time\n");
        if !self.offer(pb::LogStream::Hive.into(), marker.into_bytes(), hurry).await {
            return false;
        }
        self.dropped.fetch_sub(dropped, Ordering::Relaxed);
        warn!(task_id = %self.task_id, attempt_id = %self.attempt_id, bytes = dropped, "agent output dropped");
        true
    }

    async fn offer(&self, stream: i32, data: Vec<u8>, hurry: bool) -> bool {
        let chunk = pb::LogChunk {
            task_id: self.task_id.clone(),
            attempt_id: self.attempt_id.clone(),
            stream,
            data,
            seq: self.seq.fetch_add(1, Ordering::Relaxed),
        };
        let shipment = Shipment::Chunk(chunk);
        if hurry {
            self.queue.try_send(shipment).is_ok()
        } else {
            self.queue.send_timeout(shipment, QUEUE_WAIT).await.is_ok()
        }
    }

    /// Waits until everything queued so far is stored (or the shipper gave up).
    pub(crate) async fn flush(&self) {
        self.report_dropped(false).await;
        let (done, stored) = oneshot::channel();
        if self.queue.send(Shipment::Flush(done)).await.is_ok() {
            let _ = stored.await;
        }
    }
}

/// Ships `worker_id`'s output until every sender is gone and the queue is empty, or `abandon`.
pub(crate) async fn run(
    client: Client,
    worker_id: String,
    mut queue: mpsc::Receiver<Shipment>,
    flush_interval: Duration,
    retry_delay_max: Duration,
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
                ship(&client, &worker_id, &mut pending, retry_delay_max, &abandon).await;
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
                    ship(&client, &worker_id, &mut pending, retry_delay_max, &abandon).await;
                    pending_bytes = 0;
                }
            }
            Some(Shipment::Flush(done)) => {
                ship(&client, &worker_id, &mut pending, retry_delay_max, &abandon).await;
                pending_bytes = 0;
                let _ = done.send(());
            }
            None => {
                ship(&client, &worker_id, &mut pending, retry_delay_max, &abandon).await;
                return;
            }
        }
    }
}

/// Sends the pending chunks, retrying until they are stored; empties `pending`.
async fn ship(
    client: &Client,
    worker_id: &str,
    pending: &mut Vec<pb::LogChunk>,
    retry_delay_max: Duration,
    abandon: &CancellationToken,
) {
    if pending.is_empty() {
        return;
    }
    let chunks = std::mem::take(pending);
    let result = connection::retry("append_logs", retry_delay_max, abandon, || {
        let mut client = client.clone();
        let batch = pb::AppendLogsRequest { chunks: chunks.clone(), worker_id: worker_id.to_owned() };
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

#[cfg(test)]
mod tests {
    use super::*;

    fn data(shipment: Shipment) -> (i32, Vec<u8>) {
        match shipment {
            Shipment::Chunk(chunk) => (chunk.stream, chunk.data),
            Shipment::Flush(_) => panic!("unexpected flush"),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn a_full_queue_drops_output_without_stalling_and_leaves_a_marker() {
        let (queue, mut shipped) = mpsc::channel(2);
        let sink = LogSink::new(queue, "t".into(), "a".into());
        sink.send(b"first".to_vec()).await;
        sink.send(b"second".to_vec()).await; // the queue is full
        let started = tokio::time::Instant::now();
        sink.send(b"lost".to_vec()).await; // waits QUEUE_WAIT, then drops
        assert_eq!(started.elapsed(), QUEUE_WAIT);
        sink.send(b"lost too".to_vec()).await; // already dropping: no wait
        assert_eq!(started.elapsed(), QUEUE_WAIT);

        assert_eq!(data(shipped.recv().await.unwrap()), (1, b"first".to_vec()));
        assert_eq!(data(shipped.recv().await.unwrap()), (1, b"second".to_vec()));
        sink.send(b"back".to_vec()).await; // room again: the marker goes first
        let (stream, marker) = data(shipped.recv().await.unwrap());
        assert_eq!(stream, i32::from(pb::LogStream::Hive));
        assert!(String::from_utf8_lossy(&marker).contains("12 bytes of output were dropped"));
        assert_eq!(data(shipped.recv().await.unwrap()), (1, b"back".to_vec()));
    }
}
