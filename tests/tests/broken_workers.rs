//! A broken worker dead-letters nothing. Failures that are the worker's
//! fault (its agent's program or folder is missing, its disk is short of
//! space) hand the task back uncharged; the worker stops claiming for what
//! it cannot run, says so in `hivectl workers`, and a healthy worker beside
//! it runs the tasks. Agents that cannot run are found at start and not offered.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::path::Path;
use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{count, fresh_database, wait_all_finished};
use hive_tests::procs::{binary, hivectl_output, start_worker};
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};

const TASKS: usize = 12;

/// An executable script at `path` that records its task and succeeds.
fn tool(path: &Path, ledger: &Path) {
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let script = format!("#!/bin/sh\necho $HIVE_TASK_ID >> {}\nsleep 0.1\necho '{{\"ok\": true}}'\n", ledger.display());
    std::fs::write(path, script).unwrap();
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
}

async fn submit(coordinator: &TestCoordinator, agent: &str) {
    let tasks = (0..TASKS)
        .map(|i| pb::TaskSpec { agent: agent.into(), prompt: format!("{i}"), max_attempts: 1, ..Default::default() })
        .collect();
    let mut admin = coordinator.admin_client().await;
    admin.submit_tasks(pb::SubmitTasksRequest { swarm: "broken".into(), tasks, ..Default::default() }).await.unwrap();
}

async fn workers_listing(url: &str) -> String {
    hivectl_output(url, &["workers"]).await.stdout
}

async fn assert_every_task_succeeded_uncharged(db: &hive_tests::postgres::TestDb) {
    wait_all_finished(&db.pool, Duration::from_secs(60)).await;
    assert_eq!(
        count(&db.pool, "select count(*) from task_states where status = 'succeeded' and failures = 0").await,
        TASKS as i64,
        "every task succeeded, none charged a failure"
    );
    assert_eq!(count(&db.pool, "select count(*) from attempts where outcome = 'failed'").await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_agent_program_goes_missing_hands_its_tasks_to_a_healthy_one() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let (broken_tool, healthy_tool) = (dir.path().join("broken/tool"), dir.path().join("healthy/tool"));
    tool(&broken_tool, &ledger);
    tool(&healthy_tool, &ledger);
    let setup = |tool: &Path| WorkerSetup::new().slots(2).agent("tool", Agent::command([tool.to_str().unwrap()]));
    let broken = start_worker(&coordinator.url, &setup(&broken_tool).write(dir.path(), "broken"), "broken", dir.path());
    eventually("the broken worker to register", Duration::from_secs(20), || async {
        workers_listing(&coordinator.url).await.contains("broken")
    })
    .await;
    // The program was there at start; it goes missing now.
    std::fs::remove_file(&broken_tool).unwrap();
    submit(&coordinator, "tool").await;
    eventually("the broken worker to hand a task back", Duration::from_secs(20), || async {
        count(&db.pool, "select count(*) from attempts where outcome = 'released'").await > 0
    })
    .await;
    eventually("hivectl swarms to say why the tasks wait", Duration::from_secs(20), || async {
        let swarms = hive_tests::procs::hivectl_json(&coordinator.url, &["swarms"]).await;
        swarms.to_string().contains("each that does reports it unavailable")
    })
    .await;
    let healthy =
        start_worker(&coordinator.url, &setup(&healthy_tool).write(dir.path(), "healthy"), "healthy", dir.path());

    assert_every_task_succeeded_uncharged(&db).await;
    let error: String = sqlx::query_scalar("select error from attempts where outcome = 'released' limit 1")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert!(error.contains("broken/tool") && error.contains("does not exist"), "{error}");
    let listing = workers_listing(&coordinator.url).await;
    assert!(listing.contains("broken: tool unavailable: cannot start"), "{listing}");

    healthy.terminate().await;
    broken.terminate().await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_that_cannot_run_at_start_is_not_offered_and_check_config_names_it() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let working = dir.path().join("tool");
    tool(&working, &ledger);
    let config = WorkerSetup::new()
        .agent("tool", Agent::command([working.to_str().unwrap()]))
        .agent("ghost", Agent::command(["/nonexistent/ghost-agent"]))
        .write(dir.path(), "half");

    let check = tokio::process::Command::new(binary("hive-worker"))
        .args(["--check-config", "--config", config.to_str().unwrap()])
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&check.stderr);
    assert!(
        !check.status.success() && stderr.contains("agents.ghost: its program /nonexistent/ghost-agent does not exist"),
        "{stderr}"
    );

    let worker = start_worker(&coordinator.url, &config, "half", dir.path());
    eventually("the worker to report its ghost agent", Duration::from_secs(20), || async {
        workers_listing(&coordinator.url)
            .await
            .contains("half: ghost unavailable: its program /nonexistent/ghost-agent does not exist")
    })
    .await;
    let agents: Vec<String> =
        sqlx::query_scalar("select unnest(agents) from workers").fetch_all(&db.pool).await.unwrap();
    assert_eq!(agents, ["tool"], "only the agent that can run is offered");
    worker.terminate().await;

    let hopeless =
        WorkerSetup::new().agent("ghost", Agent::command(["/nonexistent/ghost-agent"])).write(dir.path(), "ghost");
    let mut ghost = start_worker(&coordinator.url, &hopeless, "ghost", dir.path());
    let exited = tokio::time::timeout(Duration::from_secs(20), ghost.child.wait()).await.unwrap().unwrap();
    let log = std::fs::read_to_string(dir.path().join("ghost.log")).unwrap();
    assert!(!exited.success() && log.contains("no agent can run on this host"), "{log}");
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_short_of_disk_claims_nothing_and_says_why() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let agent = dir.path().join("tool");
    tool(&agent, &ledger);
    let full = WorkerSetup::new().min_free_disk("1PiB").agent("tool", Agent::command([agent.to_str().unwrap()]));
    let full = start_worker(&coordinator.url, &full.write(dir.path(), "full"), "full", dir.path());
    eventually("the worker to report its disk", Duration::from_secs(20), || async {
        workers_listing(&coordinator.url).await.contains("full: disk unavailable:")
    })
    .await;
    submit(&coordinator, "tool").await;
    let submitted: chrono::DateTime<chrono::Utc> =
        sqlx::query_scalar("select now()").fetch_one(&db.pool).await.unwrap();
    eventually("the worker short of disk to beat after the submission", Duration::from_secs(20), || async {
        let seen: chrono::DateTime<chrono::Utc> =
            sqlx::query_scalar("select last_seen_at from workers where name = 'full'")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        seen > submitted
    })
    .await;
    assert_eq!(count(&db.pool, "select count(*) from task_states where status = 'running'").await, 0);

    let roomy = WorkerSetup::new().agent("tool", Agent::command([agent.to_str().unwrap()]));
    let roomy = start_worker(&coordinator.url, &roomy.write(dir.path(), "roomy"), "roomy", dir.path());
    assert_every_task_succeeded_uncharged(&db).await;
    // A claim already waiting when the disk check first ran may have brought
    // tasks; they went back unstarted.
    let run_by_full = count(
        &db.pool,
        "select count(*) from attempts a join workers w on w.id = a.worker_id \
         where w.name = 'full' and a.outcome <> 'released'",
    )
    .await;
    assert_eq!(run_by_full, 0, "the worker short of disk ran nothing");
    let runs = std::fs::read_to_string(&ledger).unwrap().lines().count();
    assert_eq!(runs, TASKS, "each task ran once, on the roomy worker");
    roomy.terminate().await;
    full.terminate().await;
    coordinator.stop().await.unwrap();
}
