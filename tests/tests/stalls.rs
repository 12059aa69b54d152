//! Stalls, through a real coordinator, worker and agents: an agent that sits
//! idle past its `stall_timeout` is stopped and its task retried (under
//! `on_stall = "retry"`); under `"ignore"` it is shown stalled in the API,
//! `hivectl tasks show` and `hivectl status`, then not stalled once it
//! reports progress with `hivectl progress`, and runs to its end. A stall
//! timeout not longer than two heartbeats is refused by name.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::path::Path;
use std::time::{Duration, Instant};

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{fresh_database, wait_all_finished};
use hive_tests::procs::{binary, hivectl_output, start_worker};
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};

type Admin = pb::admin_service_client::AdminServiceClient<hive_shared::client::AuthChannel>;

/// Each attempt of the only task: outcome and error, oldest first.
async fn attempts(pool: &sqlx::PgPool) -> Vec<(String, Option<String>)> {
    sqlx::query_as("select outcome::text, error from attempts order by number").fetch_all(pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_agent_is_stopped_as_stalled_and_its_task_retried() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let mark = dir.path().join("first-attempt-ran");
    // The first attempt sits idle (no output, no files, no CPU); the retry succeeds.
    let agent = Agent::shell(format!(
        r#"if [ -e {m} ]; then echo '{{"ok": true}}'; exit 0; fi; touch {m}; exec sleep 120"#,
        m = mark.display()
    ))
    .stall("2s", "retry");
    let config = WorkerSetup::new().agent("idle", agent).write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &config, "worker", dir.path());
    let started = Instant::now();
    let mut admin = coordinator.admin_client().await;
    let task = pb::TaskSpec { agent: "idle".into(), prompt: "p".into(), max_attempts: 3, ..Default::default() };
    admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "stalls".into(), tasks: vec![task], ..Default::default() })
        .await
        .unwrap();
    wait_all_finished(&db.pool, Duration::from_secs(60)).await;
    assert!(started.elapsed() < Duration::from_secs(60), "the idle agent was stopped, not waited for");
    let status: String = sqlx::query_scalar("select status::text from task_states").fetch_one(&db.pool).await.unwrap();
    assert_eq!(status, "succeeded");
    let attempts = attempts(&db.pool).await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].0, "failed", "{attempts:?}");
    let error = attempts[0].1.clone().unwrap_or_default();
    assert!(error.contains("stalled") && error.contains("no output"), "the error says why: {error}");
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

/// Releases an agent blocked reading `fifo`.
async fn release(fifo: &Path) {
    let fifo = fifo.to_path_buf();
    tokio::task::spawn_blocking(move || std::fs::write(fifo, b"go\n")).await.unwrap().unwrap();
}

/// The running attempt of `task`, as GetTask shows it.
async fn running_attempt(admin: &mut Admin, task: &str) -> pb::Attempt {
    let response = admin.get_task(pb::GetTaskRequest { task_id: task.to_owned() }).await.unwrap().into_inner();
    response.attempts.into_iter().find(|attempt| attempt.finished_at.is_none()).expect("a running attempt")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_is_shown_until_the_agent_reports_progress_and_is_left_to_run_under_ignore() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let (first, second) = (dir.path().join("first"), dir.path().join("second"));
    for fifo in [&first, &second] {
        nix::unistd::mkfifo(fifo.as_path(), nix::sys::stat::Mode::S_IRWXU).unwrap();
    }
    // Blocked on a FIFO (idle) until released; then it reports progress and
    // blocks again; released once more, it succeeds.
    let agent = Agent::shell(format!(
        r#"read x < {first}; {hivectl} progress "compiling step two" || exit 3; read y < {second}; echo '{{"ok": true}}'"#,
        first = first.display(),
        second = second.display(),
        hivectl = binary("hivectl").display(),
    ))
    .stall("2s", "ignore");
    let config = WorkerSetup::new().agent("quiet", agent).write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &config, "worker", dir.path());
    let mut admin = coordinator.admin_client().await;
    let task = pb::TaskSpec { agent: "quiet".into(), prompt: "p".into(), max_attempts: 1, ..Default::default() };
    let submitted = admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "quiet".into(), tasks: vec![task], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let task = submitted.task_ids[0].clone();

    let api = admin.clone();
    eventually("the attempt shown stalled", Duration::from_secs(30), || {
        let (mut api, task) = (api.clone(), task.clone());
        async move {
            let response = api.get_task(pb::GetTaskRequest { task_id: task }).await.unwrap().into_inner();
            response.attempts.iter().any(|attempt| attempt.stalled_since.is_some())
        }
    })
    .await;
    let stats = admin.get_stats(pb::GetStatsRequest::default()).await.unwrap().into_inner();
    assert_eq!(stats.stalled.len(), 1, "{:?}", stats.stalled);
    assert_eq!(stats.stalled[0].task_id, task);
    let shown = hivectl_output(&coordinator.url, &["tasks", "show", &task]).await;
    assert!(shown.stdout.contains("stalled  attempt 1"), "{}", shown.stdout);
    let status = hivectl_output(&coordinator.url, &["status"]).await;
    assert!(status.stdout.contains(&format!("stalled  quiet: task {task}")), "{}", status.stdout);

    release(&first).await;
    eventually("the stall cleared by the progress report", Duration::from_secs(30), || {
        let (mut api, task) = (api.clone(), task.clone());
        async move {
            let attempt = running_attempt(&mut api, &task).await;
            attempt.stalled_since.is_none() && attempt.progress == "compiling step two"
        }
    })
    .await;
    let shown = hivectl_output(&coordinator.url, &["tasks", "show", &task]).await;
    assert!(shown.stdout.contains("compiling step two"), "{}", shown.stdout);

    release(&second).await;
    wait_all_finished(&db.pool, Duration::from_secs(30)).await;
    let status: String = sqlx::query_scalar("select status::text from task_states").fetch_one(&db.pool).await.unwrap();
    assert_eq!(status, "succeeded", "a stall under ignore is left to run: {:?}", attempts(&db.pool).await);
    let cleared: bool = sqlx::query_scalar(
        "select stalled_since is null and progress is null and progress_at is null from task_states",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(cleared, "what belonged to the attempt goes with it");
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_progress_report_from_a_finished_attempt_or_too_long_is_refused() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let task = uuid::Uuid::now_v7().to_string();
    let attempt = uuid::Uuid::now_v7().to_string();
    let stale = hivectl_output(&coordinator.url, &["progress", "hello", "--task", &task, "--attempt", &attempt]).await;
    assert!(!stale.status.success());
    assert!(stale.stderr.contains("is not the current attempt"), "{}", stale.stderr);
    let long = "x".repeat(300);
    let refused = hivectl_output(&coordinator.url, &["progress", &long, "--task", &task, "--attempt", &attempt]).await;
    assert!(!refused.status.success());
    assert!(refused.stderr.contains("message") && refused.stderr.contains("256"), "{}", refused.stderr);
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stall_timeout_within_two_heartbeats_is_refused_by_name() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    // The test coordinator beats every 500 ms.
    let config = WorkerSetup::new().agent("hasty", Agent::shell("true").stall("1s", "retry")).write(dir.path(), "w");
    let mut worker = start_worker(&coordinator.url, &config, "w", dir.path());
    let exit = tokio::time::timeout(Duration::from_secs(30), worker.child.wait()).await.unwrap().unwrap();
    assert!(!exit.success(), "the worker refuses to run");
    let log = std::fs::read_to_string(dir.path().join("w.log")).unwrap();
    assert!(log.contains("agents.hasty.stall_timeout") && log.contains("heartbeat"), "{log}");
    coordinator.stop().await.unwrap();
}
