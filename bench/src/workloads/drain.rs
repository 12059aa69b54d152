//! drain: N no-op tasks submitted in one call, then drained by `procs`
//! workers × `concurrency` slots; tasks per second from the first attempt's
//! start to the last completion the database recorded. With `keys` above 0
//! each task also names one of that many concurrency keys, with a limit no
//! claim reaches: what keys cost the claim, not what they hold back.

use std::time::Instant;

use super::{DEADLINE, NOOP_AGENT, Shape, Variant, Wal, busy_seconds, submit_bulk};
use crate::stack::{Binaries, Database, wait_succeeded};
use crate::stats::emit;

/// Runs one variant and prints its line. `hive-bench` runs two by default, as
/// the peers do: claiming only free slots (`peer=hive`), and claiming up to
/// 500 more to hold locally (`peer=hive-batched`, like graphile-worker's `localQueue`).
///
/// # Errors
/// When a part fails to start.
pub async fn run(db: &Database, binaries: &Binaries, shape: Shape, keys: usize) -> anyhow::Result<()> {
    let Shape { n, procs, concurrency, prefetch } = shape;
    let Variant { name, pool, mut hive } = Variant::start(db, binaries, "drain", prefetch).await?;
    let name = if keys == 0 { name.to_owned() } else { format!("{name}+keys{keys}") };
    let enqueue = Instant::now();
    if keys == 0 {
        submit_bulk(&hive.url, "drain", "noop", n).await?;
    } else {
        submit_keyed(&hive.url, n, keys).await?;
    }
    let enqueue_s = enqueue.elapsed().as_secs_f64();
    sqlx::query("checkpoint").execute(&pool).await?;
    let wal = Wal::read(&pool).await?;

    let go = Instant::now();
    hive.start_workers(procs, concurrency, &format!("prefetch = {prefetch}\n{NOOP_AGENT}"))?;
    let done = wait_succeeded(&pool, DEADLINE).await?;
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
        .chain([("settings", format!("executor=builtin-noop,prefetch={prefetch},keys={keys}"))])
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
