//! Restarts and absent workers: a worker keeps its agent running while its
//! coordinator restarts and reports once it is back; the coordinator enforces
//! a task's time limit itself when a worker keeps its lease but never reports.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use hive_shared::convert::duration;
use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::postgres::{count, fresh_database, wait_all_finished};
use hive_tests::procs::start_worker;
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_keeps_running_through_a_coordinator_restart_and_its_result_lands_once() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.leases.ttl = Duration::from_secs(15); // longer than the outage
    let coordinator = TestCoordinator::start(config.clone()).await;
    let addr = coordinator.addr;
    let dir = tempfile::tempdir().unwrap();
    let started = dir.path().join("started");
    let steady = Agent::shell(format!(
        r#"touch {}; for i in 1 2 3 4 5 6; do echo tick $i; sleep 0.5; done; echo '{{"ticks": 6}}'"#,
        started.display()
    ));
    let worker_file = WorkerSetup::new().agent("steady", steady).write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &worker_file, "w", dir.path());
    let mut admin = coordinator.admin_client().await;
    let task = pb::TaskSpec { agent: "steady".into(), prompt: "p".into(), ..Default::default() };
    admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "restart".into(), tasks: vec![task], ..Default::default() })
        .await
        .unwrap();
    eventually("the agent to start", Duration::from_secs(20), || async { started.exists() }).await;

    coordinator.stop().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1500)).await; // the outage: the agent runs on meanwhile
    let coordinator = TestCoordinator::start_at(config, addr).await;

    wait_all_finished(&db.pool, Duration::from_secs(30)).await;
    assert_eq!(count(&db.pool, "select count(*) from attempts").await, 1, "no second attempt was needed");
    let result: serde_json::Value =
        sqlx::query_scalar("select a.result from task_states s join attempts a on a.task_id = s.task_id and a.number = s.result_attempt where s.status = 'succeeded'").fetch_one(&db.pool).await.unwrap();
    assert_eq!(result, serde_json::json!({"ticks": 6}));
    let log = worker.log_text();
    assert!(log.contains("coordinator call failed"), "the worker noticed the outage: {log}");
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_whose_lease_expired_during_an_outage_is_refused_and_the_task_runs_again() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.leases.ttl = Duration::from_secs(1);
    config.leases.heartbeat_interval = Duration::from_millis(300);
    let coordinator = TestCoordinator::start(config.clone()).await;
    let addr = coordinator.addr;
    let dir = tempfile::tempdir().unwrap();
    let runs = dir.path().join("runs");
    let once = Agent::shell(format!("echo run >> {}; sleep 1; echo '{{}}'", runs.display()));
    let worker_file = WorkerSetup::new().agent("once", once).write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &worker_file, "w", dir.path());
    let mut admin = coordinator.admin_client().await;
    let task = pb::TaskSpec { agent: "once".into(), prompt: "p".into(), ..Default::default() };
    admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "expired".into(), tasks: vec![task], ..Default::default() })
        .await
        .unwrap();
    eventually("the agent to start", Duration::from_secs(20), || async { runs.exists() }).await;

    // The worker's coordinator goes away; another coordinator on the same
    // database reaps the lease meanwhile. The agent finishes during the outage.
    coordinator.stop().await.unwrap();
    let reaper = TestCoordinator::start(config.clone()).await;
    eventually("the lease to be reaped", Duration::from_secs(10), || async {
        count(&db.pool, "select count(*) from attempts where outcome = 'lost'").await == 1
    })
    .await;
    reaper.stop().await.unwrap();
    // The short lease was for the reap; the rerun gets a lease that a loaded
    // machine's heartbeat gaps cannot outlast.
    config.leases.ttl = Duration::from_secs(5);
    let coordinator = TestCoordinator::start_at(config, addr).await;

    wait_all_finished(&db.pool, Duration::from_secs(30)).await;
    let log = worker.log_text();
    assert!(log.contains("outcome refused"), "the worker says its late result was refused: {log}");
    let outcomes: Vec<String> =
        sqlx::query_scalar("select outcome::text from attempts order by number").fetch_all(&db.pool).await.unwrap();
    assert_eq!(outcomes, ["lost", "succeeded"]);
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_coordinator_fails_an_attempt_past_its_deadline_even_while_its_lease_is_kept() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.leases.ttl = Duration::from_secs(1);
    config.leases.heartbeat_interval = Duration::from_millis(200);
    let coordinator = TestCoordinator::start(config).await;
    let mut admin = coordinator.admin_client().await;
    let task = pb::TaskSpec {
        agent: "stuck".into(),
        prompt: "p".into(),
        timeout: Some(duration(Duration::from_millis(300))),
        max_attempts: 1,
        ..Default::default()
    };
    admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "deadline".into(), tasks: vec![task], ..Default::default() })
        .await
        .unwrap();

    // A worker that claims, keeps beating for its attempt, and never reports.
    let mut worker = FakeWorker::register(&coordinator, "stuck", &["stuck"], 1).await;
    let assignment = worker.claim(1, Duration::ZERO).await.remove(0);
    let mut beating = worker.keep_beating(vec![assignment.attempt_id.clone()], Duration::from_millis(200)).await;

    // Timeout 300 ms plus a lease of grace: failed by the coordinator, then the worker is told to stop.
    let stop = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let reply = beating.replies.message().await.unwrap().unwrap();
            for command in reply.commands {
                if let Some(pb::worker_command::Command::CancelAttempt(cancel)) = command.command {
                    return cancel;
                }
            }
        }
    })
    .await
    .expect("the worker is told to stop the attempt");
    assert_eq!(stop.attempt_id, assignment.attempt_id);
    let (status, outcome, error): (String, String, String) = sqlx::query_as(
        "select s.status::text, a.outcome::text, a.error from task_states s join attempts a on a.id = $1::uuid",
    )
    .bind(&assignment.attempt_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((status.as_str(), outcome.as_str()), ("dead", "failed"));
    assert!(error.contains("deadline passed"), "{error}");
    coordinator.stop().await.unwrap();
}
