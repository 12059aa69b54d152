//! drain: N no-op tasks submitted in one call, then drained by `procs`
//! workers × `concurrency` slots; tasks per second from the first attempt's
//! start to the last completion the database recorded. With `keys` above 0
//! each task also names one of that many concurrency keys, with a limit no
//! claim reaches: what keys cost the claim, not what they hold back. With
//! `watchers` above 0, that many `Watch` streams follow the event log during
//! the drain, each on its own connection; the line adds how late their
//! events arrive (from the event's commit to its receipt). The watchers
//! decode each page's first event and count the others ([`PageSummary`]):
//! a real watcher decodes on its own machine, not on the two cores the
//! coordinator and the drain share here.

use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use hive_shared::codec::HiveCodec;
use hive_shared::pb;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use super::{DEADLINE, NOOP_AGENT, Shape, Variant, Wal, busy_seconds, submit_bulk};
use crate::stack::{Binaries, Database, wait_succeeded};
use crate::stats::{emit, percentile};

/// Runs one variant and prints its line. `hive-bench` runs two by default, as
/// the peers do: claiming only free slots (`peer=hive`), and claiming up to
/// 500 more to hold locally (`peer=hive-batched`, like graphile-worker's `localQueue`).
///
/// # Errors
/// When a part fails to start.
pub async fn run(db: &Database, binaries: &Binaries, shape: Shape, keys: usize, watchers: usize) -> anyhow::Result<()> {
    let Shape { n, procs, concurrency, prefetch } = shape;
    let Variant { name, pool, mut hive } = Variant::start(db, binaries, "drain", prefetch).await?;
    let mut name = if keys == 0 { name.to_owned() } else { format!("{name}+keys{keys}") };
    if watchers > 0 {
        name.push_str(&format!("+watchers{watchers}"));
    }
    let enqueue = Instant::now();
    if keys == 0 {
        submit_bulk(&hive.url, "drain", "noop", n).await?;
    } else {
        submit_keyed(&hive.url, n, keys).await?;
    }
    let enqueue_s = enqueue.elapsed().as_secs_f64();
    sqlx::query("checkpoint").execute(&pool).await?;
    let wal = Wal::read(&pool).await?;

    let watching = Watchers::start(&hive.url, watchers).await?;
    let go = Instant::now();
    hive.start_workers(procs, concurrency, &format!("prefetch = {prefetch}\n{NOOP_AGENT}"))?;
    let done = wait_succeeded(&pool, DEADLINE).await?;
    let lags = watching.stop(&pool).await?;
    let complete = done >= i64::try_from(n)?;
    let wall_from_go_s = go.elapsed().as_secs_f64();
    let drain_s = busy_seconds(&pool).await?;
    let wal = wal.per_job(&pool, n).await?;
    emit(
        &name,
        "drain",
        &[
            ("n", n.to_string()),
            ("done", done.to_string()),
            ("complete", complete.to_string()),
            ("jobs_per_s", format!("{:.1}", done as f64 / drain_s)),
            ("drain_s", format!("{drain_s:.3}")),
            ("wall_from_go_s", format!("{wall_from_go_s:.3}")),
            ("enqueue_jobs_per_s", format!("{:.1}", n as f64 / enqueue_s)),
            ("procs", procs.to_string()),
            ("concurrency", concurrency.to_string()),
        ]
        .into_iter()
        .chain(wal)
        .chain(lags)
        .chain([("settings", format!("executor=builtin-noop,prefetch={prefetch},keys={keys},watchers={watchers}"))])
        .collect::<Vec<_>>(),
    );
    db.print_totals(&pool, &format!("drain {name}")).await?;
    hive.stop().await;
    Ok(())
}

/// Submits `n` no-op tasks, task `i` naming key `key-{i % keys}` with a limit of `n`.
async fn submit_keyed(url: &str, n: usize, keys: usize) -> anyhow::Result<()> {
    let limit = u32::try_from(n)?;
    let tasks = (0..n)
        .map(|i| hive_shared::pb::TaskSpec {
            agent: "noop".into(),
            prompt: i.to_string(),
            concurrency: [(format!("key-{}", i % keys), limit)].into(),
            ..Default::default()
        })
        .collect();
    let request = hive_shared::pb::SubmitTasksRequest { swarm: "drain".into(), tasks, ..Default::default() };
    super::admin(url).await?.submit_tasks(request).await?;
    Ok(())
}

/// Watch streams following the event log while the drain runs.
struct Watchers {
    /// Per page received, how late its oldest event arrived (ms), and how many events came.
    lags: Arc<Mutex<(Vec<f64>, u64)>>,
    stop: CancellationToken,
    streams: JoinSet<()>,
    count: usize,
    /// The positions the streams started after, summed: each is owed every
    /// event numbered after its start.
    started_after: u64,
}

impl Watchers {
    /// Opens `count` watches from the newest event, each on its own connection.
    async fn start(url: &str, count: usize) -> anyhow::Result<Self> {
        let lags: Arc<Mutex<(Vec<f64>, u64)>> = Arc::default();
        let stop = CancellationToken::new();
        let mut streams = JoinSet::new();
        let mut started_after = 0;
        for _ in 0..count {
            let mut stream = watch(url).await?;
            // The first message says where the watch starts.
            started_after += stream.message().await?.map_or(0, |start| start.position);
            let (lags, stop) = (Arc::clone(&lags), stop.clone());
            streams.spawn(async move {
                loop {
                    let page = tokio::select! {
                        page = stream.message() => page,
                        () = stop.cancelled() => return,
                    };
                    let Ok(Some(page)) = page else { return };
                    let Some(first) = page.first else { continue };
                    let at = first.at.as_ref().and_then(hive_shared::convert::from_timestamp);
                    let late = at.and_then(|at| SystemTime::now().duration_since(SystemTime::from(at)).ok());
                    let mut kept = lags.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                    kept.0.push(late.map_or(0.0, |late| late.as_secs_f64() * 1000.0));
                    kept.1 += page.events;
                }
            });
        }
        Ok(Self { lags, stop, streams, count, started_after })
    }

    /// Stops watching once every stream has had every event numbered so far
    /// (the drain's last are numbered within a round of their commit); the
    /// figures for the line (none without watchers).
    async fn stop(mut self, pool: &sqlx::PgPool) -> anyhow::Result<Vec<(&'static str, String)>> {
        if self.count == 0 {
            return Ok(Vec::new());
        }
        let deadline = Instant::now() + std::time::Duration::from_secs(30);
        loop {
            let (numbered, head): (bool, i64) = sqlx::query_as(
                "select not exists(select 1 from events where seq is null), (select last_seq from event_head)",
            )
            .fetch_one(pool)
            .await?;
            let owed = (self.count as u64 * u64::try_from(head)?).saturating_sub(self.started_after);
            let received = self.lags.lock().unwrap_or_else(std::sync::PoisonError::into_inner).1;
            if numbered && received >= owed {
                break;
            }
            if Instant::now() > deadline {
                anyhow::bail!("the watchers received {received} of {owed} events within 30 s of the drain's end");
            }
            tokio::time::sleep(std::time::Duration::from_millis(20)).await;
        }
        self.stop.cancel();
        while self.streams.join_next().await.is_some() {}
        let (mut lags, events) =
            std::mem::take(&mut *self.lags.lock().unwrap_or_else(std::sync::PoisonError::into_inner));
        lags.sort_by(f64::total_cmp);
        Ok(vec![
            ("watchers", self.count.to_string()),
            ("watched_events", events.to_string()),
            ("watch_lag_p50_ms", format!("{:.1}", percentile(&lags, 50.0))),
            ("watch_lag_p99_ms", format!("{:.1}", percentile(&lags, 99.0))),
        ])
    }
}

/// Opens a watch from the newest event on a connection of its own.
async fn watch(url: &str) -> anyhow::Result<tonic::Streaming<PageSummary>> {
    let mut grpc =
        tonic::client::Grpc::new(crate::auth::admin(url).connect().await?).max_decoding_message_size(256 << 20);
    grpc.ready().await?;
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/hive.v1.AdminService/Watch");
    let codec = HiveCodec::<pb::WatchRequest, PageSummary>::default();
    Ok(grpc.server_streaming(tonic::Request::new(pb::WatchRequest::default()), path, codec).await?.into_inner())
}

/// A `WatchResponse` as the benchmark's watchers read it: the first event
/// decoded (for its time), the others counted and skipped, and the position.
#[derive(Debug, Default)]
struct PageSummary {
    first: Option<pb::Event>,
    events: u64,
    position: u64,
}

impl prost::Message for PageSummary {
    /// Never sent: encodes as an empty message.
    fn encode_raw(&self, _buf: &mut impl prost::bytes::BufMut) {}

    fn merge_field(
        &mut self,
        tag: u32,
        wire_type: prost::encoding::WireType,
        buf: &mut impl prost::bytes::Buf,
        ctx: prost::encoding::DecodeContext,
    ) -> Result<(), prost::DecodeError> {
        // Field 1: `repeated Event events`.
        if tag == 1 {
            self.events += 1;
            if self.first.is_none() {
                let mut event = pb::Event::default();
                prost::encoding::message::merge(wire_type, &mut event, buf, ctx)?;
                self.first = Some(event);
                return Ok(());
            }
        }
        // Field 2: `uint64 position`.
        if tag == 2 {
            return prost::encoding::uint64::merge(wire_type, &mut self.position, buf, ctx);
        }
        prost::encoding::skip_field(wire_type, tag, buf, ctx)
    }

    fn encoded_len(&self) -> usize {
        0
    }

    fn clear(&mut self) {
        *self = Self::default();
    }
}
