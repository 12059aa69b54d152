//! backlog: claim latency with a small and a huge queue. The queue is filled
//! in one SQL statement (N ready tasks), then one client claims one task per
//! call, `claims` times, timing each Claim round trip (the queue is topped
//! up, untimed, after every half-queue of claims); p50/p99 per size.

use std::time::{Duration, Instant};

use hive_shared::convert::duration;
use hive_shared::ids::WorkerId;
use hive_shared::pb;
use hive_shared::pb::worker_service_client::WorkerServiceClient;

use crate::stack::{Binaries, Database, Hive};
use crate::stats::{emit, percentile};

/// Runs the workload for each queue size and prints one line per size.
///
/// # Errors
/// When a part fails to start.
pub async fn run(db: &Database, binaries: &Binaries, sizes: &[usize], claims: usize) -> anyhow::Result<()> {
    for &size in sizes {
        let (url, pool) = db.fresh(&format!("bench_backlog_{size}")).await?;
        let dir = db.dir.join(format!("backlog-{size}"));
        std::fs::create_dir_all(&dir)?;
        let loading = Instant::now();
        fill(&pool, size).await?;
        sqlx::query("vacuum analyze task_rows, queue").execute(&pool).await?;
        // As the drain does (and the peers' harness): the fill's writes are
        // flushed before the timing starts, so a checkpoint the million-row
        // fill set off does not land among the timed claims.
        sqlx::query("checkpoint").execute(&pool).await?;
        let load_s = loading.elapsed().as_secs_f64();

        let hive = Hive::start(binaries, &url, &dir, &[]).await?;
        let mut client = WorkerServiceClient::connect(hive.url.clone()).await?;
        let worker_id = WorkerId::new().to_string();
        let registration = pb::RegisterRequest {
            worker_id: worker_id.clone(),
            name: "bench".into(),
            agents: vec!["noop".into()],
            slots: 1,
            ..Default::default()
        };
        client.register(registration).await?;
        let mut millis = Vec::with_capacity(claims);
        // Every half-queue of claims the queue is topped back up, untimed, so
        // it never falls below half its size and each size gets `claims` samples.
        for claim in 0..claims {
            if claim > 0 && claim % (size / 2).max(1) == 0 {
                fill(&pool, (size / 2).max(1)).await?;
            }
            let request = pb::ClaimRequest {
                worker_id: worker_id.clone(),
                max_tasks: 1,
                wait: Some(duration(Duration::ZERO)),
                agents: vec![],
            };
            let started = Instant::now();
            let claimed = client.claim(request).await?.into_inner().assignments;
            millis.push(started.elapsed().as_secs_f64() * 1000.0);
            anyhow::ensure!(claimed.len() == 1, "a claim found nothing with {size} tasks queued");
        }
        millis.sort_by(f64::total_cmp);
        emit(
            "hive",
            "backlog",
            &[
                ("queued", size.to_string()),
                ("claims", millis.len().to_string()),
                ("p50_ms", format!("{:.2}", percentile(&millis, 50.0))),
                ("p99_ms", format!("{:.2}", percentile(&millis, 99.0))),
                ("load_s", format!("{load_s:.1}")),
            ],
        );
        db.print_totals(&pool, &format!("backlog {size}")).await?;
        hive.stop().await;
    }
    Ok(())
}

/// Adds `n` ready no-op tasks in one statement, queued as a submission
/// queues them (a task row saying `queued` and a narrow queue row), with ids
/// laid out as Hive's submit makes them (UUIDv7: the millisecond, then a
/// count), so the queue sits in the tables and their indexes in submission
/// order, as a real backlog does. (Random ids had scattered a 1M queue's
/// claims over every heap page.)
async fn fill(pool: &sqlx::PgPool, n: usize) -> anyhow::Result<()> {
    sqlx::query(
        "with swarm as (insert into swarms (id, name) values (gen_random_uuid(), 'backlog') returning id),
         inserted as (
             insert into task_rows (id, swarm_id, agent, prompt, status, max_attempts)
             select (lpad(to_hex((extract(epoch from now()) * 1000)::int8), 12, '0') || '7'
                     || substr(lpad(to_hex(i), 18, '0'), 1, 3) || '8' || substr(lpad(to_hex(i), 18, '0'), 4))::uuid,
                    swarm.id, 'noop', 'x', 'queued', 4
             from swarm, generate_series(1, $1) as i
             returning id, swarm_id, priority, run_after, run_agent, has_labels, timeout_ms, octet_length(prompt) as bytes)
         insert into queue (task_id, swarm_id, priority, run_after, run_agent, has_labels, timeout_ms, bytes)
         select * from inserted",
    )
    .bind(i64::try_from(n)?)
    .execute(pool)
    .await?;
    Ok(())
}
