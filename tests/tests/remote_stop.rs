//! Operators stop workers remotely: `hivectl workers stop --now` stops every
//! agent at once and hands the tasks back (not counted); `hivectl workers
//! drain` lets agents finish and exits. The command reaches the worker through
//! its heartbeat stream.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::{Duration, Instant};

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{count, fresh_database, wait_all_finished};
use hive_tests::procs::{hivectl_json, start_worker};
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stop_now_hands_running_tasks_back_and_drain_lets_them_finish() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let work = Agent::shell(format!(r#"echo x >> {}; sleep $(cat); echo '{{"ok": 1}}'"#, started.display()));
    let config = WorkerSetup::new().slots(3).drain_grace("60s").agent("work", work).write(dir.path(), "worker");
    let first = start_worker(&coordinator.url, &config, "first", dir.path());
    let mut admin = coordinator.admin_client().await;
    let tasks =
        (0..3).map(|_| pb::TaskSpec { agent: "work".into(), prompt: "30".into(), ..Default::default() }).collect();
    admin.submit_tasks(pb::SubmitTasksRequest { swarm: "stop".into(), tasks, ..Default::default() }).await.unwrap();
    eventually("three agents to run", Duration::from_secs(20), || async {
        std::fs::read_to_string(&started).is_ok_and(|text| text.lines().count() == 3)
    })
    .await;

    // Stop now: the 30 s agents are stopped at once and their tasks handed back.
    let asked = Instant::now();
    let told = hivectl_json(&coordinator.url, &["workers", "stop", "--now", "--all"]).await;
    assert_eq!(told.as_array().unwrap().len(), 1);
    let mut first = first;
    let status = tokio::time::timeout(Duration::from_secs(20), first.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "the worker exits cleanly: {}", first.log_text());
    assert!(asked.elapsed() < Duration::from_secs(15), "stopped in {:?}", asked.elapsed());
    assert_eq!(count(&db.pool, "select count(*) from attempts where outcome = 'released'").await, 3);
    assert_eq!(count(&db.pool, "select count(*) from task_states where status = 'ready' and failures = 0").await, 3);

    // A second worker picks them up; drain it while they run: they finish, then it exits.
    std::fs::remove_file(&started).unwrap();
    sqlx::query("update tasks set prompt = '1'").execute(&db.pool).await.unwrap();
    let second = start_worker(&coordinator.url, &config, "second", dir.path());
    eventually("the agents to run again", Duration::from_secs(20), || async {
        std::fs::read_to_string(&started).is_ok_and(|text| text.lines().count() == 3)
    })
    .await;
    let workers = hivectl_json(&coordinator.url, &["workers"]).await;
    let second_id =
        workers.as_array().unwrap().iter().find(|w| w["name"] == "second").unwrap()["id"].as_str().unwrap().to_owned();
    hivectl_json(&coordinator.url, &["workers", "drain", &second_id]).await;
    let mut second = second;
    let status = tokio::time::timeout(Duration::from_secs(30), second.child.wait()).await.unwrap().unwrap();
    assert!(status.success(), "{}", second.log_text());
    wait_all_finished(&db.pool, Duration::from_secs(10)).await;
    assert_eq!(
        count(&db.pool, "select count(*) from task_states where status = 'succeeded' and failures = 0").await,
        3
    );
    coordinator.stop().await.unwrap();
}
