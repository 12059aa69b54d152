//! Prefetch: tasks claimed beyond the free slots wait on the worker and start
//! as slots free — never behind a claim long-poll holding those slots — and
//! the worker refills its queue before it runs dry.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::cell::Cell;
use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{TestDb, count, fresh_database, wait_all_finished};
use hive_tests::procs::{Proc, start_worker};
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};

/// A coordinator with `tasks` tasks for a `nap` agent queued, and a worker
/// with one slot (plus what `settings` sets) whose agent naps for `nap_seconds`.
async fn napping(
    tasks: usize,
    nap_seconds: f64,
    settings: WorkerSetup,
) -> (TestDb, TestCoordinator, Proc, tempfile::TempDir) {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let nap = Agent::shell(format!("sleep {nap_seconds}; echo '{{}}'"));
    let config = settings.slots(1).agent("nap", nap).write(dir.path(), "napper");
    let specs = (0..tasks).map(|i| pb::TaskSpec { agent: "nap".into(), prompt: i.to_string(), ..Default::default() });
    coordinator
        .admin_client()
        .await
        .submit_tasks(pb::SubmitTasksRequest { swarm: "naps".into(), tasks: specs.collect(), ..Default::default() })
        .await
        .unwrap();
    let worker = start_worker(&coordinator.url, &config, "napper", dir.path());
    (db, coordinator, worker, dir)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetched_tasks_run_as_slots_free_not_after_the_next_long_poll() {
    // Room for the other four, and a long-poll far longer than the whole
    // swarm needs (5 × 0.2 s): a claim holding the slot shows at once.
    let (db, coordinator, worker, _dir) = napping(5, 0.2, WorkerSetup::new().prefetch(4).claim_wait("60s")).await;

    wait_all_finished(&db.pool, Duration::from_secs(30)).await;
    assert_eq!(
        count(&db.pool, "select count(*) from attempts where outcome = 'succeeded'").await,
        5,
        "each task succeeded once"
    );
    assert_eq!(count(&db.pool, "select count(distinct worker_id) from attempts").await, 1, "one worker ran them all");
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetching_worker_refills_its_queue_before_it_runs_dry() {
    // Twelve queued: the refill starts once three are left, three task
    // lengths (0.75 s) before the queue would run dry.
    let (db, coordinator, worker, _dir) = napping(30, 0.25, WorkerSetup::new().prefetch(12)).await;

    // While more than a queue's worth is still ready, the worker holds its
    // running task plus at least the refill mark's three queued ones; a worker
    // that claimed only once its queue was empty would fall to the running
    // task (and one finished but not yet reported).
    let fewest_held = Cell::new(i64::MAX);
    let (fewest, pool) = (&fewest_held, &db.pool);
    eventually("all but a queue's worth of tasks to be claimed", Duration::from_secs(30), || async move {
        let (held, ready): (i64, i64) = sqlx::query_as(
            "select count(*) filter (where status = 'running'), count(*) filter (where status = 'ready') from task_states",
        )
        .fetch_one(pool)
        .await
        .unwrap();
        if ready > 12 && held > 0 {
            fewest.set(fewest.get().min(held));
        }
        ready <= 12
    })
    .await;
    let fewest_held = fewest_held.get();
    assert!(fewest_held >= 4, "the worker held as few as {fewest_held} tasks while more than 12 were ready");
    wait_all_finished(&db.pool, Duration::from_secs(30)).await;
    assert_eq!(count(&db.pool, "select count(*) from attempts where outcome = 'succeeded'").await, 30);
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}
