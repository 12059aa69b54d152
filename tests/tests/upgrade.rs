//! Upgrading a database that holds tasks across the migration that put a
//! narrow queue beside the task rows (docs/queue-split.md): no row moves,
//! every task reads as it did, and the tasks left ready or running before the
//! upgrade still run to their end after it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::path::Path;
use std::time::Duration;

use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{count, empty_database, wait_all_finished};
use hive_tests::procs::start_worker;
use hive_tests::worker_setup::{Agent, WorkerSetup};

/// The last migration before the queue split.
const BEFORE_SPLIT: i64 = 20261121170000;

/// Applies the coordinator's migrations up to `version` (from a copy of
/// those files: sqlx's public API runs whole folders).
async fn migrate_up_to(pool: &sqlx::PgPool, version: i64) {
    let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("../coordinator/migrations");
    let some = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let number: i64 = name.split('_').next().unwrap().parse().unwrap();
        if number <= version {
            std::fs::copy(&path, some.path().join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(some.path()).await.unwrap().run(pool).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_from_before_the_queue_split_read_the_same_and_still_run() {
    let db = empty_database().await;
    migrate_up_to(&db.pool, BEFORE_SPLIT).await;
    // As that schema's coordinator left them: two ready, one running on a
    // worker that is gone (its lease already over), one succeeded, one dead.
    sqlx::raw_sql(
        "insert into swarms (id, name) values ('00000000-0000-7000-8000-000000000001', 'old');
         insert into tasks (id, swarm_id, key, agent, prompt, status, max_attempts) values
           ('00000000-0000-7000-8000-000000000011', '00000000-0000-7000-8000-000000000001', 'ready-1', 'quick', 'a', 'ready', 3),
           ('00000000-0000-7000-8000-000000000012', '00000000-0000-7000-8000-000000000001', 'ready-2', 'quick', 'b', 'ready', 3);
         insert into tasks (id, swarm_id, key, agent, prompt, status, max_attempts, attempts, current_attempt,
                            worker_id, lease_expires_at, attempt_deadline, started_at, attempt_started_at) values
           ('00000000-0000-7000-8000-000000000013', '00000000-0000-7000-8000-000000000001', 'running', 'quick', 'c',
            'running', 3, 1, '00000000-0000-7000-8000-0000000000a1', '00000000-0000-7000-8000-0000000000f1',
            now() - interval '1 minute', now() + interval '1 hour', now() - interval '2 minutes', now() - interval '2 minutes');
         insert into tasks (id, swarm_id, key, agent, prompt, status, max_attempts, attempts, current_attempt, worker_id,
                            result, started_at, attempt_started_at, finished_at) values
           ('00000000-0000-7000-8000-000000000014', '00000000-0000-7000-8000-000000000001', 'succeeded', 'quick', 'd',
            'succeeded', 3, 1, '00000000-0000-7000-8000-0000000000a2', '00000000-0000-7000-8000-0000000000f1',
            '{\"answer\": 42}', now() - interval '3 minutes', now() - interval '3 minutes', now() - interval '2 minutes');
         insert into tasks (id, swarm_id, key, agent, prompt, status, max_attempts, attempts, failures, error, finished_at) values
           ('00000000-0000-7000-8000-000000000015', '00000000-0000-7000-8000-000000000001', 'dead', 'quick', 'e',
            'dead', 1, 1, 1, 'exit status 3', now() - interval '1 minute');",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let before: Vec<(String, String, i32)> =
        sqlx::query_as("select key, status::text, attempts from tasks order by key").fetch_all(&db.pool).await.unwrap();

    hive_coordinator::MIGRATOR.run(&db.pool).await.unwrap();
    let after: Vec<(String, String, i32)> =
        sqlx::query_as("select key, status::text, attempts from tasks order by key").fetch_all(&db.pool).await.unwrap();
    assert_eq!(after, before, "the view reads every task as the table did");
    assert_eq!(count(&db.pool, "select count(*) from queue").await, 0, "no task moved into the queue");
    assert_eq!(count(&db.pool, "select count(*) from attempts").await, 2, "the running and the succeeded attempt");

    // The coordinator reaps the running task's lapsed lease and a worker runs
    // it and the two ready ones from their rows; the ended ones stay as they were.
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = WorkerSetup::new().slots(4).agent("quick", Agent::command(["true"])).write(dir.path(), "upgraded");
    let worker = start_worker(&coordinator.url, &config, "upgraded", dir.path());
    wait_all_finished(&db.pool, Duration::from_secs(60)).await;
    let ended: Vec<(String, String)> =
        sqlx::query_as("select key, status::text from tasks order by key").fetch_all(&db.pool).await.unwrap();
    let expected = [
        ("dead", "dead"),
        ("ready-1", "succeeded"),
        ("ready-2", "succeeded"),
        ("running", "succeeded"),
        ("succeeded", "succeeded"),
    ];
    assert_eq!(ended, expected.map(|(key, status)| (key.to_owned(), status.to_owned())).to_vec());
    let kept: serde_json::Value =
        sqlx::query_scalar("select result from tasks where key = 'succeeded'").fetch_one(&db.pool).await.unwrap();
    assert_eq!(kept, serde_json::json!({"answer": 42}), "a success from before keeps its result");
    let outcomes: Vec<String> = sqlx::query_scalar(
        "select outcome::text from attempts where task_id = '00000000-0000-7000-8000-000000000013' order by number",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(outcomes, ["lost", "succeeded"], "the lapsed attempt is written out as lost, and the new one succeeded");
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}
