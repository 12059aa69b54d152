//! The coordinator refreshes the planner's statistics on the queue tables as
//! soon as they grow — a bulk submission (`task_states`, and `tasks` with
//! it), the attempts a drain writes out (`attempts`) —
//! instead of leaving statements planned for near-empty tables until
//! autovacuum comes by. A handful of rows is not worth an analyze.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{count, fresh_database, wait_all_finished};
use hive_tests::procs::start_worker;
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};

/// Explicit analyzes (autovacuum's are counted apart).
const STATES_ANALYZED: &str = "select analyze_count from pg_stat_user_tables where relname = 'task_states'";
const TASKS_ANALYZED: &str = "select analyze_count from pg_stat_user_tables where relname = 'tasks'";
const ATTEMPTS_ANALYZED: &str = "select analyze_count from pg_stat_user_tables where relname = 'attempts'";
const STATES_ROWS: &str = "select n_live_tup from pg_stat_user_tables where relname = 'task_states'";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bulk_swarm_and_its_failing_drain_get_tasks_and_attempts_analyzed() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let swarm = |name: &str, n: usize| pb::SubmitTasksRequest {
        swarm: name.into(),
        tasks: (0..n)
            .map(|i| pb::TaskSpec {
                agent: "fails".into(),
                prompt: format!("{i}"),
                max_attempts: 1,
                ..Default::default()
            })
            .collect(),
        ..Default::default()
    };

    admin.submit_tasks(swarm("small", 10)).await.unwrap();
    eventually("the ten inserts to show in PostgreSQL's counts", Duration::from_secs(30), || async {
        count(&db.pool, STATES_ROWS).await >= 10
    })
    .await;
    admin.submit_tasks(swarm("bulk", 1_500)).await.unwrap();
    eventually("an analyze of task states", Duration::from_secs(10), || async {
        count(&db.pool, STATES_ANALYZED).await >= 1
    })
    .await;
    // Had the ten tasks set one off, the bulk (which more than doubles the
    // table) would have set off a second.
    assert_eq!(count(&db.pool, STATES_ANALYZED).await, 1, "ten tasks are not worth an analyze");
    eventually("an analyze of the specs with it", Duration::from_secs(10), || async {
        count(&db.pool, TASKS_ANALYZED).await >= 1
    })
    .await;
    assert_eq!(count(&db.pool, ATTEMPTS_ANALYZED).await, 0, "no attempt yet, nothing to analyze");

    let dir = tempfile::tempdir().unwrap();
    let config =
        WorkerSetup::new().slots(8).prefetch(64).agent("fails", Agent::command(["false"])).write(dir.path(), "drainer");
    let worker = start_worker(&coordinator.url, &config, "drainer", dir.path());
    wait_all_finished(&db.pool, Duration::from_secs(60)).await;
    assert_eq!(count(&db.pool, "select count(*) from task_states where status = 'dead'").await, 1_510);
    eventually("an analyze of attempts", Duration::from_secs(10), || async {
        count(&db.pool, ATTEMPTS_ANALYZED).await >= 1
    })
    .await;
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}
