//! latency: workers running no-op agents; an open-loop producer submits one
//! task at a time at `rate` per second for `duration`, each its own
//! transaction. Latency = the agent's start − the moment the submit call
//! returned (commit acknowledged), both on CLOCK_MONOTONIC.
//!
//! The line also splits that time in two legs at the claim transaction's
//! start (its `now()`, moved onto the monotonic clock): `to_claim` (the
//! wake-up; negative when the claim began before the submit's reply reached
//! the producer) and `claim_to_start` (the claim statement, its commit, the
//! reply to the worker and the agent's start).

use std::sync::Arc;
use std::time::Duration;

use hive_shared::pb;
use tokio::sync::Mutex;
use tokio::task::JoinSet;

use super::{DEADLINE, NOOP_AGENT, admin};
use crate::stack::{Binaries, Database, Hive, wait_succeeded};
use crate::stats::{emit, monotonic_ns, percentile, realtime_offset_ns};

/// Tasks run first and left out of the figures.
const WARM_UP: usize = 50;

/// Runs the workload and prints its line.
///
/// # Errors
/// When a part fails to start.
pub async fn run(
    db: &Database,
    binaries: &Binaries,
    rate: u32,
    duration: Duration,
    procs: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let (url, pool) = db.fresh("bench_latency").await?;
    let dir = db.dir.join("latency");
    std::fs::create_dir_all(&dir)?;
    let mut hive = Hive::start(binaries, &url, &dir, &[]).await?;
    hive.start_workers(procs, concurrency, NOOP_AGENT)?;
    let client = admin(&hive.url).await?;
    for _ in 0..WARM_UP {
        submit_one(&client).await?;
    }
    wait_succeeded(&pool, DEADLINE).await?;

    let sent: Arc<Mutex<Vec<(String, i64)>>> = Arc::default();
    let total = (f64::from(rate) * duration.as_secs_f64()) as usize;
    let mut ticker = tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(rate)));
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = std::time::Instant::now();
    let mut inflight = JoinSet::new();
    for _ in 0..total {
        ticker.tick().await;
        let (client, sent) = (client.clone(), Arc::clone(&sent));
        inflight.spawn(async move {
            let id = submit_one(&client).await?;
            sent.lock().await.push((id, monotonic_ns()));
            anyhow::Ok(())
        });
    }
    while let Some(result) = inflight.join_next().await {
        result??;
    }
    let achieved = total as f64 / started.elapsed().as_secs_f64();
    wait_succeeded(&pool, DEADLINE).await?;

    // Per task: its claim's start (wall clock, ns) and its agent's start (monotonic ns).
    let starts: Vec<(String, f64, i64)> = sqlx::query_as(
        "select task_id::text, extract(epoch from started_at)::float8 * 1e9, (result->>'started_ns')::int8
         from attempts where outcome = 'succeeded' and result ? 'started_ns'",
    )
    .fetch_all(&pool)
    .await?;
    let offset = realtime_offset_ns() as f64;
    let starts: std::collections::HashMap<String, (f64, i64)> =
        starts.into_iter().map(|(id, claimed, started)| (id, (claimed - offset, started))).collect();
    let sent = sent.lock().await;
    let (mut millis, mut to_claim, mut claim_to_start) = (Vec::new(), Vec::new(), Vec::new());
    for (id, committed) in sent.iter() {
        if let Some((claimed, started)) = starts.get(id) {
            millis.push((started - committed) as f64 / 1e6);
            to_claim.push((claimed - *committed as f64) / 1e6);
            claim_to_start.push((*started as f64 - claimed) / 1e6);
        }
    }
    for values in [&mut millis, &mut to_claim, &mut claim_to_start] {
        values.sort_by(f64::total_cmp);
    }
    let missing = sent.len() - millis.len();
    let mean = millis.iter().sum::<f64>() / millis.len().max(1) as f64;
    emit(
        "hive",
        "latency",
        &[
            ("rate", rate.to_string()),
            ("duration_s", format!("{}", duration.as_secs())),
            ("jobs", total.to_string()),
            ("missing", missing.to_string()),
            ("p50_ms", format!("{:.2}", percentile(&millis, 50.0))),
            ("p90_ms", format!("{:.2}", percentile(&millis, 90.0))),
            ("p99_ms", format!("{:.2}", percentile(&millis, 99.0))),
            ("max_ms", format!("{:.2}", millis.last().copied().unwrap_or(f64::NAN))),
            ("mean_ms", format!("{mean:.2}")),
            ("to_claim_p50_ms", format!("{:.2}", percentile(&to_claim, 50.0))),
            ("to_claim_p99_ms", format!("{:.2}", percentile(&to_claim, 99.0))),
            ("claim_to_start_p50_ms", format!("{:.2}", percentile(&claim_to_start, 50.0))),
            ("claim_to_start_p99_ms", format!("{:.2}", percentile(&claim_to_start, 99.0))),
            ("achieved_rate", format!("{achieved:.1}")),
            ("procs", procs.to_string()),
            ("concurrency", concurrency.to_string()),
            ("settings", "executor=builtin-noop".into()),
        ],
    );
    db.print_totals(&pool, "latency").await?;
    hive.stop().await;
    Ok(())
}

async fn submit_one(
    client: &hive_shared::pb::admin_service_client::AdminServiceClient<hive_shared::client::AuthChannel>,
) -> anyhow::Result<String> {
    let task = pb::TaskSpec { agent: "noop".into(), prompt: "x".into(), ..Default::default() };
    let request = pb::SubmitTasksRequest { swarm: "latency".into(), tasks: vec![task], ..Default::default() };
    let response = client.clone().submit_tasks(request).await?.into_inner();
    response.task_ids.into_iter().next().ok_or_else(|| anyhow::anyhow!("no task id returned"))
}
