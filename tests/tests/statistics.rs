//! A bulk submission refreshes the planner's statistics on the queue tables
//! at once, instead of leaving the claim query planned for an empty table
//! until autovacuum comes by.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{count, fresh_database};
use hive_tests::wait::eventually;

/// `last_analyze` is set only by an explicit `analyze`, never by autovacuum.
const ANALYZED: &str = "select count(*) from pg_stat_user_tables where relname = 'tasks' and last_analyze is not null";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_swarm_of_a_thousand_tasks_gets_the_tasks_table_analyzed() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let swarm = |name: &str, n: usize| pb::SubmitTasksRequest {
        swarm: name.into(),
        tasks: (0..n)
            .map(|i| pb::TaskSpec { agent: "noop".into(), prompt: format!("{i}"), ..Default::default() })
            .collect(),
        ..Default::default()
    };

    admin.submit_tasks(swarm("small", 10)).await.unwrap();
    admin.submit_tasks(swarm("bulk", 1_000)).await.unwrap();
    eventually("an analyze of tasks", Duration::from_secs(10), || async { count(&db.pool, ANALYZED).await == 1 }).await;
    // Had the ten tasks set one off, the bulk one would wait out the 30 s
    // spacing (and the wait above time out), or two would have run.
    assert_eq!(
        count(&db.pool, "select analyze_count from pg_stat_user_tables where relname = 'tasks'").await,
        1,
        "ten tasks are not worth an analyze"
    );
    coordinator.stop().await.unwrap();
}
