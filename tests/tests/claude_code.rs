//! The real Claude Code CLI (`tools/node_modules/.bin/claude`, installed by
//! `scripts/setup`) run by real workers as `kind = "claude-code"` agents,
//! against a stub of the Anthropic Messages API: the model provider is the
//! only thing stubbed. Its tool calls really run, its cost and session are
//! recorded, API errors are classed by status, and a session killed with its
//! worker resumes on another worker with the earlier conversation.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::model_stub::{ModelStub, Reply, Request};
use hive_tests::postgres::{fresh_database, wait_all_finished};
use hive_tests::procs::start_worker;
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};
use serde_json::Value;

/// The pinned Claude Code CLI.
fn claude() -> PathBuf {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/node_modules/.bin/claude");
    assert!(path.exists(), "{} is missing: run scripts/setup", path.display());
    path
}

/// A Claude Code agent talking to `stub`, allowed to write files and run commands.
fn claude_agent(stub: &ModelStub) -> Agent {
    Agent::claude_code([claude().display().to_string()])
        .allowed_tools(&["Write", "Bash"])
        .env("ANTHROPIC_BASE_URL", stub.url())
        .env("ANTHROPIC_API_KEY", "sk-ant-test")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("CLAUDE_CODE_MAX_RETRIES", "0")
        .timeout("2m")
}

async fn submit(coordinator: &TestCoordinator, task: pb::TaskSpec) {
    let mut admin = coordinator.admin_client().await;
    let request = pb::SubmitTasksRequest { swarm: "claude".into(), tasks: vec![task], ..Default::default() };
    admin.submit_tasks(request).await.unwrap();
}

/// Every attempt: (outcome, error, cost, session id, worker name).
async fn attempts(pool: &sqlx::PgPool) -> Vec<(String, Option<String>, f64, Option<String>, Option<String>)> {
    sqlx::query_as(
        "select a.outcome::text, a.error, coalesce(a.cost, 0), a.session_id, w.name
         from attempts a left join workers w on w.id = a.worker_id order by a.number",
    )
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claude_code_runs_its_tool_calls_and_hive_records_its_result_cost_and_session() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let stub = ModelStub::start().await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let project = dir.path().join("project");
    std::fs::create_dir_all(&project).unwrap();
    let agent = claude_agent(&stub).workdir(&project);
    let config = WorkerSetup::new().slots(2).agent("claude", agent).write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &config, "worker", dir.path());

    let write = pb::TaskSpec {
        agent: "claude".into(),
        prompt: "WRITE notes.md written by the agent".into(),
        ..Default::default()
    };
    let bash = pb::TaskSpec {
        agent: "claude".into(),
        prompt: format!("BASH echo ran > {}", project.join("ran.txt").display()),
        ..Default::default()
    };
    let mut admin = coordinator.admin_client().await;
    let request = pb::SubmitTasksRequest { swarm: "claude".into(), tasks: vec![write, bash], ..Default::default() };
    admin.submit_tasks(request).await.unwrap();
    wait_all_finished(&db.pool, Duration::from_secs(90)).await;

    assert_eq!(std::fs::read_to_string(project.join("notes.md")).unwrap(), "written by the agent");
    assert_eq!(std::fs::read_to_string(project.join("ran.txt")).unwrap().trim(), "ran");
    let results: Vec<(String, Value)> = sqlx::query_as(
        "select s.status::text, a.result from task_states s join attempts a
         on a.task_id = s.task_id and a.number = s.result_attempt",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(results.len(), 2, "both succeeded: {results:?}");
    for (status, result) in &results {
        assert_eq!(status, "succeeded");
        assert_eq!(result["result"], "done", "the model's last text is the result: {result}");
        assert_eq!(result["is_error"], false);
    }
    for (outcome, _, cost, session, _) in attempts(&db.pool).await {
        assert_eq!(outcome, "succeeded");
        assert!(cost > 0.0, "total_cost_usd is charged: {cost}");
        assert!(session.is_some_and(|id| uuid::Uuid::parse_str(&id).is_ok()), "its session id is recorded");
    }
    let spent: f64 = sqlx::query_scalar("select spent from swarms").fetch_one(&db.pool).await.unwrap();
    assert!(spent > 0.0, "the swarm is charged what Claude Code reported");
    assert_eq!(stub.request_count(), 4, "two turns per task (the tool call, then its result)");

    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_and_overload_are_retried_and_authentication_errors_are_not() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let stub = ModelStub::start().await.unwrap();
    // The first call for each prompt fails as the prompt says; later calls answer.
    let seen = Arc::new(std::sync::Mutex::new(std::collections::HashSet::new()));
    stub.set_script(Arc::new(move |request: &Request| {
        let prompt = request.prompt();
        if seen.lock().unwrap().insert(prompt.clone()) {
            hive_tests::model_stub::default_reply(request)
        } else {
            Reply::Text(format!("recovered: {prompt}"))
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let config = WorkerSetup::new().slots(3).agent("claude", claude_agent(&stub)).write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &config, "worker", dir.path());
    for status in [429, 529, 401] {
        let task = pb::TaskSpec {
            agent: "claude".into(),
            prompt: format!("FAIL {status}"),
            max_attempts: 3,
            backoff_initial: Some(hive_shared::convert::duration(Duration::from_millis(10))),
            ..Default::default()
        };
        submit(&coordinator, task).await;
    }
    wait_all_finished(&db.pool, Duration::from_secs(90)).await;

    let ended: Vec<(String, String, Vec<String>)> = sqlx::query_as(
        "select t.prompt, s.status::text, array(select coalesce(a.error, a.outcome::text) from attempts a
                                            where a.task_id = s.task_id order by a.number)
         from task_states s join tasks t on t.id = s.task_id order by t.prompt",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let by_prompt = |prompt: &str| ended.iter().find(|(p, ..)| p == prompt).unwrap().clone();
    let (_, status, errors) = by_prompt("FAIL 401");
    assert_eq!(status, "dead", "an authentication error is not retried: {errors:?}");
    assert_eq!(errors.len(), 1);
    assert!(errors[0].contains("authentication error (HTTP 401)"), "{errors:?}");
    for (prompt, what) in [("FAIL 429", "rate limit (HTTP 429)"), ("FAIL 529", "overloaded API (HTTP 529)")] {
        let (_, status, errors) = by_prompt(prompt);
        assert_eq!(status, "succeeded", "{prompt} is retried: {errors:?}");
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].contains(what), "{errors:?}");
    }

    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_session_killed_with_its_worker_resumes_on_another_worker_with_its_conversation() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.leases.ttl = Duration::from_secs(2);
    config.leases.heartbeat_interval = Duration::from_millis(500);
    let coordinator = TestCoordinator::start(config).await;
    let stub = ModelStub::start().await.unwrap();
    // The model runs a quick command, then a long one; a resumed
    // conversation (the prompt sent again after the earlier turns) is
    // answered at once.
    stub.set_script(Arc::new(|request: &Request| {
        let bash =
            |command: &str| Reply::ToolUse { name: "Bash".into(), input: serde_json::json!({ "command": command }) };
        if request.body["messages"].to_string().matches("heliotrope").count() > 1 {
            Reply::Text("resumed".into())
        } else if request.has_tool_result() {
            bash("sleep 300")
        } else {
            bash("echo step-one-done")
        }
    }));
    let dir = tempfile::tempdir().unwrap();
    let config = WorkerSetup::new().slots(1).agent("claude", claude_agent(&stub)).write(dir.path(), "worker");
    let first = start_worker(&coordinator.url, &config, "first", dir.path());
    let task = pb::TaskSpec {
        agent: "claude".into(),
        prompt: "remember the word heliotrope".into(),
        session: pb::SessionPolicy::Resume.into(),
        ..Default::default()
    };
    submit(&coordinator, task).await;
    eventually("the first attempt's transcript to be saved with the tool call", Duration::from_secs(60), || async {
        let state: Option<Vec<u8>> =
            sqlx::query_scalar("select state from task_sessions").fetch_optional(&db.pool).await.unwrap();
        state.is_some_and(|state| String::from_utf8_lossy(&state).contains("sleep 300"))
    })
    .await;

    first.kill_hard();
    let second = start_worker(&coordinator.url, &config, "second", dir.path());
    wait_all_finished(&db.pool, Duration::from_secs(60)).await;

    let attempts = attempts(&db.pool).await;
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!(attempts[0].0, "lost");
    assert_eq!((attempts[1].0.as_str(), attempts[1].4.as_deref()), ("succeeded", Some("second")));
    let last = stub.requests().pop().expect("the resumed attempt called the model");
    let conversation = last.body["messages"].to_string();
    assert_eq!(conversation.matches("heliotrope").count(), 2, "the earlier prompt is resumed: {conversation}");
    assert!(conversation.contains("step-one-done"), "the earlier tool call and its output are resumed: {conversation}");
    let result: Value = sqlx::query_scalar(
        "select a.result from task_states s join attempts a on a.task_id = s.task_id and a.number = s.result_attempt",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(result["result"], "resumed");

    second.terminate().await;
    coordinator.stop().await.unwrap();
}
