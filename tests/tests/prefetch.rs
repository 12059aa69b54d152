//! Prefetch: tasks claimed beyond the free slots wait on the worker and start
//! as slots free — never behind a claim long-poll holding those slots.

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
