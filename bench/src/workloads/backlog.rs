//! backlog: claim latency with a small and a huge queue. Each queue is
//! filled in one SQL statement (N ready tasks) in a database of its own,
//! with a coordinator of its own; then one client claims one task per call
//! from each in turn, a block of claims at a time, timing each Claim round
//! trip (each queue is topped up, untimed, after every half-queue of its
//! claims); p50/p99 per size. Interleaved, the sizes see the same machine,
//! so a slow spell of the machine cannot pass for a difference between the
//! sizes. The first claim of each block is not timed: its coordinator's
//! threads went idle while the other size's block ran, and those wake-ups
//! would be the worst samples of each block, enough to make the p99.

use std::time::{Duration, Instant};

use hive_shared::convert::duration;
use hive_shared::ids::WorkerId;
use hive_shared::pb;
use hive_shared::pb::worker_service_client::WorkerServiceClient;
use tonic::transport::Channel;

use crate::stack::{Binaries, Database, Hive};
use crate::stats::{emit, percentile};

/// Claims per size before the client turns to the next size.
const BLOCK: usize = 100;

/// One queue size under test: its database, coordinator and client.
struct Queue {
    size: usize,
    pool: sqlx::PgPool,
    hive: Hive,
    client: WorkerServiceClient<Channel>,
    worker_id: String,
    load_s: f64,
    claimed: usize,
    millis: Vec<f64>,
}

impl Queue {
    /// Fills a fresh database with `size` tasks, flushes and analyzes them,
    /// and starts a coordinator and a registered client on it.
    async fn start(db: &Database, binaries: &Binaries, size: usize) -> anyhow::Result<Self> {
        let (url, pool) = db.fresh(&format!("bench_backlog_{size}")).await?;
        let dir = db.dir.join(format!("backlog-{size}"));
        std::fs::create_dir_all(&dir)?;
        let loading = Instant::now();
        fill(&pool, size).await?;
        sqlx::query("vacuum analyze tasks, task_states").execute(&pool).await?;
        // As the drain does (and the peers' harness): the fill's writes are
        // flushed before the timing starts, so a checkpoint the million-row
        // fill set off does not land among the timed claims.
        sqlx::query("checkpoint").execute(&pool).await?;
        let load_s = loading.elapsed().as_secs_f64();

        let hive = Hive::start(binaries, &url, &dir, &[]).await?;
        let mut client = WorkerServiceClient::new(crate::tls::connect(&hive.url).endpoint()?.connect().await?);
        let worker_id = WorkerId::new().to_string();
        let registration = pb::RegisterRequest {
            worker_id: worker_id.clone(),
            name: "bench".into(),
            agents: vec!["noop".into()],
            slots: 1,
            ..Default::default()
        };
        client.register(registration).await?;
        Ok(Self { size, pool, hive, client, worker_id, load_s, claimed: 0, millis: Vec::new() })
    }

    /// Claims one task untimed, then times `count` claims of one task each.
    async fn claim_block(&mut self, count: usize) -> anyhow::Result<()> {
        self.claim().await?;
        for _ in 0..count {
            let millis = self.claim().await?;
            self.millis.push(millis);
        }
        Ok(())
    }

    /// Claims one task and returns how long the round trip took, in ms.
    /// Every half-queue of claims the queue is topped back up, untimed, so
    /// it never falls below half its size.
    async fn claim(&mut self) -> anyhow::Result<f64> {
        if self.claimed > 0 && self.claimed.is_multiple_of((self.size / 2).max(1)) {
            fill(&self.pool, (self.size / 2).max(1)).await?;
        }
        let request = pb::ClaimRequest {
            worker_id: self.worker_id.clone(),
            max_tasks: 1,
            wait: Some(duration(Duration::ZERO)),
            agents: vec![],
        };
        let started = Instant::now();
        let claimed = self.client.claim(request).await?.into_inner().assignments;
        let millis = started.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(claimed.len() == 1, "a claim found nothing with {} tasks queued", self.size);
        self.claimed += 1;
        Ok(millis)
    }
}

/// Runs the workload for the queue sizes together and prints one line per size.
///
/// # Errors
/// When a part fails to start.
pub async fn run(db: &Database, binaries: &Binaries, sizes: &[usize], claims: usize) -> anyhow::Result<()> {
    let mut queues = Vec::with_capacity(sizes.len());
    for &size in sizes {
        queues.push(Queue::start(db, binaries, size).await?);
    }
    let mut done = 0;
    while done < claims {
        let count = BLOCK.min(claims - done);
        for queue in &mut queues {
            queue.claim_block(count).await?;
        }
        done += count;
    }
    for mut queue in queues {
        queue.millis.sort_by(f64::total_cmp);
        emit(
            "hive",
            "backlog",
            &[
                ("queued", queue.size.to_string()),
                ("claims", queue.millis.len().to_string()),
                ("p50_ms", format!("{:.2}", percentile(&queue.millis, 50.0))),
                ("p99_ms", format!("{:.2}", percentile(&queue.millis, 99.0))),
                ("load_s", format!("{:.1}", queue.load_s)),
            ],
        );
        db.print_totals(&queue.pool, &format!("backlog {}", queue.size)).await?;
        queue.hive.stop().await;
    }
    Ok(())
}

/// Adds `n` ready no-op tasks in one statement, as a submission writes them
/// (a spec row and a ready state row each), with ids
/// laid out as Hive's submit makes them (UUIDv7: the millisecond, then a
/// count), so the queue sits in the tables and their indexes in submission
/// order, as a real backlog does (random ids would scatter a large queue's
/// claims over every heap page).
async fn fill(pool: &sqlx::PgPool, n: usize) -> anyhow::Result<()> {
    sqlx::query(
        "with swarm as (insert into swarms (id, name) values (gen_random_uuid(), 'backlog') returning id),
         spec as (
             insert into tasks (id, swarm_id, agent, prompt, max_attempts)
             select (lpad(to_hex((extract(epoch from now()) * 1000)::int8), 12, '0') || '7'
                     || substr(lpad(to_hex(i), 18, '0'), 1, 3) || '8' || substr(lpad(to_hex(i), 18, '0'), 4))::uuid,
                    swarm.id, 'noop', 'x', 4
             from swarm, generate_series(1, $1) as i
             returning id, swarm_id)
         insert into task_states (task_id, swarm_id, priority, has_labels, has_locks, validated, status, run_agent, bytes)
         select id, swarm_id, 0, false, false, false, 'ready', 'noop', 1 from spec",
    )
    .bind(i64::try_from(n)?)
    .execute(pool)
    .await?;
    Ok(())
}
