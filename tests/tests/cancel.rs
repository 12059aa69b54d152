//! Cancel: a queued task is cancelled at once; a running one is stopped by its
//! worker — the whole process tree — within a heartbeat interval plus the kill
//! grace, even when the cancel goes through another coordinator than the one
//! holding the worker's stream. Cancelling a finished task is refused.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::{Duration, Instant};

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{count, fresh_database};
use hive_tests::procs::{hivectl_json, hivectl_output, sleeping, start_worker};
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};

const MARKER: &str = "1006.1357";
const HEARTBEAT: Duration = Duration::from_millis(500);
const KILL_GRACE: Duration = Duration::from_secs(1);

fn agent_processes() -> usize {
    sleeping(MARKER)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_stops_the_running_process_tree_through_any_coordinator() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.leases.heartbeat_interval = HEARTBEAT;
    let holder = TestCoordinator::start(config.clone()).await;
    let other = TestCoordinator::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let tree = Agent::shell(format!("sleep {MARKER} & sleep {MARKER} & wait")).kill_grace("1s");
    let config = WorkerSetup::new().slots(1).agent("tree", tree).write(dir.path(), "worker");
    let worker = start_worker(&holder.url, &config, "w", dir.path());

    let mut admin = holder.admin_client().await;
    let tasks =
        (0..2).map(|i| pb::TaskSpec { agent: "tree".into(), prompt: i.to_string(), ..Default::default() }).collect();
    let submitted = admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "cancel".into(), tasks, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    eventually("the agent's process tree to start", Duration::from_secs(20), || async { agent_processes() == 2 }).await;
    let running: String = sqlx::query_scalar("select task_id::text from task_states where status = 'running'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    let queued = submitted.task_ids.iter().find(|id| **id != running).unwrap().clone();

    // The queued task is cancelled at once.
    let output = hivectl_json(&holder.url, &["cancel", &queued]).await;
    assert_eq!(output, serde_json::json!({"cancelled": 1, "cancelling": 0}));
    let queued_id = uuid::Uuid::parse_str(&queued).unwrap();
    let status: String = sqlx::query_scalar("select status::text from task_states where task_id = $1")
        .bind(queued_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "cancelled");

    // Cancel the running task through the coordinator that does NOT hold the worker's stream.
    let started = Instant::now();
    let output = hivectl_json(&other.url, &["cancel", &running]).await;
    assert_eq!(output, serde_json::json!({"cancelled": 0, "cancelling": 1}));
    let gone = tokio::time::timeout(Duration::from_secs(10), async {
        while agent_processes() > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    assert!(gone.is_ok(), "the agent's process tree is still running; worker log:\n{}", worker.log_text());
    let stopped_in = started.elapsed();
    eprintln!("cancel to process tree gone: {stopped_in:?} (bound: heartbeat {HEARTBEAT:?} + grace {KILL_GRACE:?})");
    assert!(stopped_in <= HEARTBEAT + KILL_GRACE, "took {stopped_in:?}");

    eventually("the cancel to be recorded", Duration::from_secs(10), || async {
        count(&db.pool, "select count(*) from attempts where outcome = 'cancelled'").await == 1
    })
    .await;
    let running_id = uuid::Uuid::parse_str(&running).unwrap();
    let (status, failures): (String, i32) =
        sqlx::query_as("select status::text, failures from task_states where task_id = $1")
            .bind(running_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((status.as_str(), failures), ("cancelled", 0));

    assert_eq!(count(&db.pool, "select count(*) from task_states where status = 'cancelled'").await, 2);

    // A finished task: a clear refusal naming the state.
    let refused = hivectl_output(&holder.url, &["tasks", "cancel", &running]).await;
    assert_eq!(refused.status.code(), Some(1));
    assert!(
        refused.stderr.contains("FailedPrecondition") && refused.stderr.contains("is cancelled"),
        "{}",
        refused.stderr
    );

    worker.terminate().await;
    holder.stop().await.unwrap();
    other.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_swarm_is_cancelled_at_once_by_filter() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let tasks =
        (0..3).map(|i| pb::TaskSpec { agent: "nobody".into(), prompt: i.to_string(), ..Default::default() }).collect();
    let submitted = admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "queued".into(), tasks, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let other = pb::TaskSpec { agent: "nobody".into(), prompt: "keep".into(), ..Default::default() };
    admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "other".into(), tasks: vec![other], ..Default::default() })
        .await
        .unwrap();

    let output =
        hivectl_json(&coordinator.url, &["cancel", "--swarm", &submitted.swarm_id, "--reason", "not needed"]).await;
    assert_eq!(output, serde_json::json!({"cancelled": 3, "cancelling": 0}));
    assert_eq!(
        count(&db.pool, "select count(*) from task_states where status = 'cancelled' and error = 'not needed'").await,
        3
    );
    assert_eq!(
        count(&db.pool, "select count(*) from task_states where status = 'ready'").await,
        1,
        "other swarms are untouched"
    );

    let everything = hivectl_output(&coordinator.url, &["cancel"]).await;
    assert!(everything.stderr.contains("an empty filter would match everything"), "{}", everything.stderr);
    coordinator.stop().await.unwrap();
}

const DAEMON_MARKER: &str = "1006.2468";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_daemon_an_agent_starts_with_setsid_ends_with_its_attempt() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    // The daemon leaves the agent's process group and outlives the agent.
    let agent = Agent::shell(format!(
        "setsid sleep {DAEMON_MARKER} < /dev/null > /dev/null 2>&1 & sleep 0.3; echo '{{\"ok\": true}}'"
    ));
    let config = WorkerSetup::new().slots(1).agent("daemon", agent).write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &config, "w", dir.path());
    let mut admin = coordinator.admin_client().await;
    let task = pb::TaskSpec { agent: "daemon".into(), prompt: "p".into(), ..Default::default() };
    admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "daemon".into(), tasks: vec![task], ..Default::default() })
        .await
        .unwrap();
    hive_tests::postgres::wait_all_finished(&db.pool, Duration::from_secs(30)).await;
    assert_eq!(count(&db.pool, "select count(*) from task_states where status = 'succeeded'").await, 1);
    eventually("the daemon to be gone with its attempt", Duration::from_secs(10), || async {
        sleeping(DAEMON_MARKER) == 0
    })
    .await;
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}
