//! Prefetch: tasks claimed beyond the free slots wait on the worker and start
//! as slots free — never behind a claim long-poll holding those slots — and
//! the worker refills its queue before it runs dry.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{count, fresh_database, wait_all_finished};
use hive_tests::procs::{start_worker, worker_config};

const TASKS: usize = 5;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prefetched_tasks_run_as_slots_free_not_after_the_next_long_poll() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    // One slot, room for the other four, and a long-poll far longer than the
    // whole swarm needs (5 × 0.2 s): a claim holding the slot shows at once.
    let body = "slots = 1\nprefetch = 4\nclaim_wait = \"60s\"\n[agents.nap]\ncommand = [\"sh\", \"-c\", \"sleep 0.2; echo '{}'\"]\n";
    let config = worker_config(dir.path(), "prefetching", body);
    let tasks = (0..TASKS).map(|i| pb::TaskSpec { agent: "nap".into(), prompt: i.to_string(), ..Default::default() });
    coordinator
        .admin_client()
        .await
        .submit_tasks(pb::SubmitTasksRequest { swarm: "prefetch".into(), tasks: tasks.collect(), ..Default::default() })
        .await
        .unwrap();
    let worker = start_worker(&coordinator.url, &config, "prefetching", dir.path());

    wait_all_finished(&db.pool, Duration::from_secs(30)).await;
    assert_eq!(
        count(&db.pool, "select count(*) from attempts where outcome = 'succeeded'").await,
        TASKS as i64,
        "each task succeeded once"
    );
    assert_eq!(count(&db.pool, "select count(distinct worker_id) from attempts").await, 1, "one worker ran them all");
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_prefetching_worker_refills_its_queue_before_it_runs_dry() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    // One slot and twelve queued: the refill starts once three are left,
    // three task lengths (0.75 s) before the queue would run dry.
    let body = "slots = 1\nprefetch = 12\n[agents.nap]\ncommand = [\"sh\", \"-c\", \"sleep 0.25; echo '{}'\"]\n";
    let config = worker_config(dir.path(), "refilling", body);
    let tasks = (0..30).map(|i| pb::TaskSpec { agent: "nap".into(), prompt: i.to_string(), ..Default::default() });
    coordinator
        .admin_client()
        .await
        .submit_tasks(pb::SubmitTasksRequest { swarm: "refill".into(), tasks: tasks.collect(), ..Default::default() })
        .await
        .unwrap();
    let worker = start_worker(&coordinator.url, &config, "refilling", dir.path());

    // While more than a queue's worth is still ready, the worker holds its
    // running task plus at least the refill mark's three queued ones; a worker
    // that claimed only once its queue was empty would fall to the running
    // task (and one finished but not yet reported).
    let mut fewest_held = i64::MAX;
    loop {
        let (held, ready): (i64, i64) = sqlx::query_as(
            "select count(*) filter (where status = 'running'), count(*) filter (where status = 'ready') from tasks",
        )
        .fetch_one(&db.pool)
        .await
        .unwrap();
        if ready <= 12 {
            break;
        }
        if held > 0 {
            fewest_held = fewest_held.min(held);
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(fewest_held >= 4, "the worker held as few as {fewest_held} tasks while more than 12 were ready");
    wait_all_finished(&db.pool, Duration::from_secs(30)).await;
    assert_eq!(count(&db.pool, "select count(*) from attempts where outcome = 'succeeded'").await, 30);
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}
