//! Fallback agents, through real workers and the real `hivectl`: a task
//! whose agent fails runs its next attempt with its next fallback, so does
//! one whose agent's provider refuses it (uncharged), the attempt history
//! names the agent of each attempt, and bad fallbacks are refused by name.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{fresh_database, wait_all_finished};
use hive_tests::procs::{hivectl_output, start_worker};
use hive_tests::worker_setup::{Agent, WorkerSetup};

/// Each task's key, status, failures, and its attempts' agents and outcomes.
async fn histories(pool: &sqlx::PgPool) -> Vec<(String, String, i32, Vec<String>)> {
    sqlx::query_as(
        "select t.key, s.status::text, s.failures,
                array(select a.agent || ':' || a.outcome::text from attempts a where a.task_id = s.task_id order by a.number)
         from task_states s join tasks t on t.id = s.task_id order by t.key",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_or_refused_attempt_is_followed_by_the_next_fallback_agent() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = WorkerSetup::new()
        .slots(2)
        .agent("flaky", Agent::shell("echo 'model unavailable' >&2; exit 75"))
        .agent("limited", Agent::shell("exit 42").account("stubai", "team-a").rate_limit_exit_codes(&[42]))
        .agent("steady", Agent::shell(r#"echo '{"ok": true}'"#))
        .write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &config, "worker", dir.path());
    let file = dir.path().join("swarm.yaml");
    std::fs::write(
        &file,
        "swarm: fallbacks\ntasks:\n\
         - {id: failing, agent: flaky, fallback_agents: [steady], max_attempts: 3, backoff_initial: 10ms}\n\
         - {id: refused, agent: limited, fallback_agents: [steady], max_attempts: 1}\n",
    )
    .unwrap();
    let submitted = hivectl_output(&coordinator.url, &["submit", file.to_str().unwrap()]).await;
    assert!(submitted.status.success(), "{}", submitted.stderr);
    wait_all_finished(&db.pool, Duration::from_secs(30)).await;

    let histories = histories(&db.pool).await;
    let failing = histories.iter().find(|(key, ..)| key == "failing").unwrap();
    assert_eq!(failing.1, "succeeded", "{histories:?}");
    assert_eq!(failing.3, ["flaky:failed", "steady:succeeded"], "the failure is followed by the fallback");
    assert_eq!(failing.2, 1, "the agent's failure counts");
    let refused = histories.iter().find(|(key, ..)| key == "refused").unwrap();
    assert_eq!(refused.1, "succeeded", "{histories:?}");
    assert_eq!(refused.3, ["limited:released", "steady:succeeded"], "the cooling account's task runs elsewhere");
    assert_eq!(refused.2, 0, "a refusal is not charged, even with max_attempts 1");

    let id: uuid::Uuid =
        sqlx::query_scalar("select id from tasks where key = 'failing'").fetch_one(&db.pool).await.unwrap();
    let shown = hivectl_output(&coordinator.url, &["tasks", "show", &id.to_string()]).await;
    assert!(shown.stdout.contains("flaky") && shown.stdout.contains("steady"), "{}", shown.stdout);
    let swarm: uuid::Uuid = sqlx::query_scalar("select id from swarms").fetch_one(&db.pool).await.unwrap();
    let exported = hivectl_output(&coordinator.url, &["export", &swarm.to_string()]).await;
    assert!(exported.stdout.contains("fallback_agents"), "an export keeps the fallbacks: {}", exported.stdout);
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_fallbacks_are_named_and_nothing_is_queued() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let task = pb::TaskSpec {
        agent: "a".into(),
        prompt: "p".into(),
        fallback_agents: vec!["a".into(), "b".into(), "b".into(), String::new()],
        ..Default::default()
    };
    let request = pb::SubmitTasksRequest { swarm: "s".into(), tasks: vec![task], ..Default::default() };
    let status = admin.submit_tasks(request).await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument);
    for needle in ["tasks[0].fallback_agents[0]", "tasks[0].fallback_agents[2]", "tasks[0].fallback_agents[3]"] {
        assert!(status.message().contains(needle), "{needle} in {}", status.message());
    }
    assert_eq!(hive_tests::postgres::count(&db.pool, "select count(*) from tasks").await, 0);
    coordinator.stop().await.unwrap();
}
