//! A worker killed with SIGKILL mid-task: its lease expires, the task runs
//! again on another worker and succeeds once, within the lease plus a second.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::{Duration, Instant};

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{fresh_database, wait_all_finished};
use hive_tests::procs::start_worker;
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};
use nix::sys::signal::Signal;

const LEASE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_a_killed_worker_runs_again_elsewhere_within_the_lease_and_succeeds_once() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.leases.ttl = LEASE;
    config.leases.heartbeat_interval = Duration::from_millis(500);
    let coordinator = TestCoordinator::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let slow = Agent::shell(format!(
        r#"echo start $HIVE_ATTEMPT_ID >> {ledger}; sleep 2; echo '{{"done": true}}'"#,
        ledger = ledger.display()
    ));
    let config = WorkerSetup::new().slots(1).agent("slow", slow).write(dir.path(), "worker");

    let first = start_worker(&coordinator.url, &config, "first", dir.path());
    let mut admin = coordinator.admin_client().await;
    let task = pb::TaskSpec { agent: "slow".into(), prompt: "p".into(), ..Default::default() };
    admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "death".into(), tasks: vec![task], ..Default::default() })
        .await
        .unwrap();
    eventually("the first worker's agent to start", Duration::from_secs(20), || async {
        std::fs::read_to_string(&ledger).is_ok_and(|text| text.lines().count() == 1)
    })
    .await;

    let second = start_worker(&coordinator.url, &config, "second", dir.path());
    first.signal(Signal::SIGKILL);
    let killed_at = chrono::Utc::now();
    let killed = Instant::now();

    wait_all_finished(&db.pool, Duration::from_secs(30)).await;
    let attempts: Vec<(i32, String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("select number, outcome::text, started_at from attempts order by number")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!((attempts[0].0, attempts[0].1.as_str()), (1, "lost"));
    assert_eq!((attempts[1].0, attempts[1].1.as_str()), (2, "succeeded"));
    let recovery = (attempts[1].2 - killed_at).to_std().unwrap_or_default();
    eprintln!("recovery after SIGKILL: {recovery:?} (lease {LEASE:?})");
    assert!(recovery <= LEASE + Duration::from_secs(1), "recovered in {recovery:?}; the lease is {LEASE:?}");
    assert!(killed.elapsed() < Duration::from_secs(30));

    let (status, failures): (String, i32) =
        sqlx::query_as("select status::text, failures from task_states").fetch_one(&db.pool).await.unwrap();
    assert_eq!((status.as_str(), failures), ("succeeded", 1), "the lost attempt counts once");
    let successes: i64 = sqlx::query_scalar("select count(*) from attempts where outcome = 'succeeded'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(successes, 1, "success recorded exactly once");

    second.terminate().await;
    coordinator.stop().await.unwrap();
}
