//! The example worker config's agents run as the README says, through a
//! real worker: the generic JSON agent's last stdout line is its result,
//! with its session and cost recorded, and its exit 75 is retried.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::path::Path;
use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{fresh_database, wait_all_finished};
use hive_tests::procs::start_worker;
use serde_json::Value;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_example_json_agent_reports_its_result_session_and_cost() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/worker.toml");
    let worker = start_worker(&coordinator.url, &config, "examples", dir.path());
    let task = |prompt: &str| pb::TaskSpec {
        agent: "json-agent".into(),
        prompt: prompt.into(),
        max_attempts: 2,
        backoff_initial: Some(hive_shared::convert::duration(Duration::from_millis(10))),
        ..Default::default()
    };
    let mut admin = coordinator.admin_client().await;
    let request = pb::SubmitTasksRequest {
        swarm: "examples".into(),
        tasks: vec![task("three little words"), task("you are rate limited")],
        ..Default::default()
    };
    admin.submit_tasks(request).await.unwrap();
    wait_all_finished(&db.pool, Duration::from_secs(30)).await;

    let (result, session, cost): (Value, String, f64) = sqlx::query_as(
        "select a.result, a.session_id, a.cost from task_states s join tasks t on t.id = s.task_id
         join attempts a on a.task_id = s.task_id and a.number = s.result_attempt where t.prompt = 'three little words'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(result["answer"], "3 words");
    assert!(uuid::Uuid::parse_str(&session).is_ok(), "the attempt id is its session: {session}");
    assert!((cost - 0.001).abs() < 1e-9, "{cost}");
    let (status, outcomes): (String, Vec<String>) = sqlx::query_as(
        "select s.status::text, array(select a.outcome::text from attempts a where a.task_id = s.task_id order by a.number)
         from task_states s join tasks t on t.id = s.task_id where t.prompt = 'you are rate limited'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(status, "dead", "it is rate limited every time");
    assert_eq!(outcomes, ["failed", "failed"], "exit 75 is transient: retried up to max_attempts");

    worker.terminate().await;
    coordinator.stop().await.unwrap();
}
