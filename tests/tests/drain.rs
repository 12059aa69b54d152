//! Draining: SIGTERM on a worker running 20 tasks. It claims nothing more,
//! lets agents finish within its grace period, hands the rest back (not
//! counted as failures), and exits; another worker finishes them. None is lost.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{count, fresh_database, wait_all_finished};
use hive_tests::procs::start_worker;
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};
use hive_worker::config::PromptMode;

const TASKS: usize = 20;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_during_twenty_running_tasks_finishes_or_hands_back_every_one() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    // Each agent sleeps as many tenths of a second as its prompt says: some
    // finish within the drain grace (1.5 s), the rest are handed back.
    let started = dir.path().join("started");
    let nap = Agent::shell(format!(
        r#"echo $HIVE_TASK_ID >> {}; sleep $(($(cat $HIVE_PROMPT_FILE) / 10)).$(($(cat $HIVE_PROMPT_FILE) % 10)); echo '{{"ok": true}}'"#,
        started.display()
    ))
    .prompt(PromptMode::File);
    let helper_setup = WorkerSetup::new().slots(20).agent("nap", nap);
    let draining = helper_setup.clone().drain_grace("1500ms").write(dir.path(), "draining");
    let helper = helper_setup.write(dir.path(), "helper");

    let first = start_worker(&coordinator.url, &draining, "first", dir.path());
    let mut admin = coordinator.admin_client().await;
    let tasks =
        (0..TASKS).map(|i| pb::TaskSpec { agent: "nap".into(), prompt: (5 + i * 3).to_string(), ..Default::default() });
    admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "drain".into(), tasks: tasks.collect(), ..Default::default() })
        .await
        .unwrap();
    eventually("all 20 agents to start on the first worker", Duration::from_secs(20), || async {
        std::fs::read_to_string(&started).is_ok_and(|text| text.lines().count() == TASKS)
    })
    .await;

    let helper_proc = start_worker(&coordinator.url, &helper, "helper", dir.path());
    let log = first.log.clone();
    let status = first.terminate().await;
    assert!(
        status.success(),
        "the drained worker exits cleanly: {}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );

    wait_all_finished(&db.pool, Duration::from_secs(60)).await;
    let errors: Vec<(i32, String, Option<String>)> = sqlx::query_as(
        "select number, outcome::text, error from attempts where outcome <> 'succeeded' order by number limit 5",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(
        count(&db.pool, "select count(*) from task_states where status = 'succeeded'").await,
        TASKS as i64,
        "none lost: {errors:?}"
    );
    assert_eq!(
        count(&db.pool, "select count(*) from task_states where failures > 0").await,
        0,
        "hand-backs are not failures: {errors:?}"
    );
    assert_eq!(
        count(&db.pool, "select count(*) from (select task_id from attempts where outcome = 'succeeded' group by task_id having count(*) = 1) t").await,
        TASKS as i64,
        "each success recorded exactly once"
    );
    let finished_in_grace =
        count(&db.pool, "select count(*) from attempts where number = 1 and outcome = 'succeeded'").await;
    let handed_back = count(&db.pool, "select count(*) from attempts where outcome = 'released'").await;
    eprintln!("drain: {finished_in_grace} finished within the grace period, {handed_back} handed back");
    assert!(finished_in_grace > 0 && handed_back > 0, "{finished_in_grace} finished, {handed_back} handed back");
    assert_eq!(finished_in_grace + handed_back, TASKS as i64);

    helper_proc.terminate().await;
    coordinator.stop().await.unwrap();
}
