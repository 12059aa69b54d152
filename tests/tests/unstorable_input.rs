//! Text PostgreSQL cannot store (a NUL character) is refused with the field
//! named when an operator or a worker sends it, and changes nothing; when an
//! agent writes it, that attempt fails with a clear error and the worker's
//! other reports go through. Lookalike mistakes are handled too: a
//! dependency listed twice is one dependency, and a budget for a swarm that
//! does not exist is NOT_FOUND.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use hive_shared::ids::WorkerId;
use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{count, fresh_database, wait_all_finished};
use hive_tests::procs::start_worker;
use hive_tests::worker_setup::{Agent, WorkerSetup};
use tonic::Code;

fn spec(prompt: &str) -> pb::TaskSpec {
    pb::TaskSpec { agent: "a".into(), prompt: prompt.into(), ..Default::default() }
}

fn refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, field: &str) {
    let err = result.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains(field) && err.message().contains("NUL"), "{field} named in {}", err.message());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_from_operators_and_workers_are_refused_naming_the_field() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let submit =
        |task: pb::TaskSpec| pb::SubmitTasksRequest { swarm: "s".into(), tasks: vec![task], ..Default::default() };

    refused(admin.submit_tasks(submit(spec("a\0b"))).await, "tasks[0].prompt");
    let mut input = spec("x");
    let deep = serde_json::json!({"deep": {"list": ["ok", "a\u{0}b"]}});
    input.input = Some(hive_shared::convert::json_to_struct(deep.as_object().unwrap().clone()));
    refused(admin.submit_tasks(submit(input)).await, "tasks[0].input: .deep.list[1]");
    let mut locked = spec("x");
    locked.locks = vec!["src/\0".into()];
    refused(admin.submit_tasks(submit(locked)).await, "tasks[0].locks[0]");
    let mut keyed = submit(spec("x"));
    keyed.idempotency_key = "k\0".into();
    refused(admin.submit_tasks(keyed).await, "idempotency_key");
    assert_eq!(count(&db.pool, "select count(*) from tasks").await, 0, "nothing was submitted");

    let filter = pb::TaskFilter { agent: "a\0".into(), ..Default::default() };
    refused(
        admin.cancel_tasks(pb::CancelTasksRequest { filter: Some(filter), ..Default::default() }).await,
        "filter.agent",
    );
    let filter = pb::TaskFilter { error_contains: "\0".into(), ..Default::default() };
    refused(admin.retry_tasks(pb::RetryTasksRequest { filter: Some(filter) }).await, "filter.error_contains");
    refused(admin.list_tasks(pb::ListTasksRequest { agent: "\0".into(), ..Default::default() }).await, "agent");

    let mut worker = coordinator.worker_client().await;
    let register = |name: &str, hostname: &str| pb::RegisterRequest {
        worker_id: WorkerId::new().to_string(),
        name: name.into(),
        hostname: hostname.into(),
        agents: vec!["a".into()],
        slots: 1,
        ..Default::default()
    };
    refused(worker.register(register("w\0", "h")).await, "name");
    let err = worker.register(register("\u{1b}[2Jevil", "h")).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with("name: `\u{1b}[2Jevil` contains"), "{}", err.message());
    refused(worker.register(register("w", "h\0")).await, "hostname");
    assert_eq!(count(&db.pool, "select count(*) from workers").await, 0, "no worker was registered");
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dependency_listed_twice_is_one_and_an_unknown_swarms_budget_is_not_found() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let first = pb::TaskSpec { key: "first".into(), ..spec("x") };
    let second = pb::TaskSpec { key: "second".into(), depends_on: vec!["first".into(), "first".into()], ..spec("y") };
    let request = pb::SubmitTasksRequest { swarm: "s".into(), tasks: vec![first, second], ..Default::default() };
    admin.submit_tasks(request).await.unwrap();
    assert_eq!(count(&db.pool, "select count(*) from task_deps").await, 1);
    assert_eq!(count(&db.pool, "select sum(waiting_on)::int8 from task_states").await, 1);

    let missing = uuid::Uuid::new_v4();
    let request = pb::SetSwarmBudgetRequest { swarm_id: missing.to_string(), budget: 5.0 };
    let err = admin.set_swarm_budget(request).await.unwrap_err();
    assert_eq!((err.code(), err.message().to_owned()), (Code::NotFound, format!("swarm {missing} not found")));
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_result_that_cannot_be_stored_fails_its_attempt_and_the_rest_are_recorded() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    // The poisoned result also names a session with a NUL in it: the failure
    // that records the refusal keeps it, made storable.
    let poison = r#"printf '{"text": "a\\u0000b", "session_id": "s\\u0000x"}' > "$HIVE_RESULT_FILE""#;
    let config = WorkerSetup::new()
        .slots(4)
        .agent("poison", Agent::shell(poison))
        .agent("fine", Agent::shell(r#"echo '{"ok": true}'"#))
        .write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &config, "worker", dir.path());
    let mut admin = coordinator.admin_client().await;
    let mut tasks: Vec<pb::TaskSpec> =
        (0..30).map(|i| pb::TaskSpec { agent: "fine".into(), prompt: i.to_string(), ..Default::default() }).collect();
    tasks.insert(
        7,
        pb::TaskSpec { agent: "poison".into(), key: "poison".into(), max_attempts: 1, ..Default::default() },
    );
    admin.submit_tasks(pb::SubmitTasksRequest { swarm: "s".into(), tasks, ..Default::default() }).await.unwrap();
    wait_all_finished(&db.pool, Duration::from_secs(30)).await;

    assert_eq!(count(&db.pool, "select count(*) from task_states where status = 'succeeded'").await, 30);
    let (status, error): (String, String) = sqlx::query_as(
        "select s.status::text, a.error from tasks t join task_states s on s.task_id = t.id
         join attempts a on a.task_id = t.id where t.key = 'poison'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(status, "dead");
    assert!(
        error.contains("refused the result: completions[0].result: .") && error.contains("NUL character"),
        "{error}"
    );
    let session: Option<String> = sqlx::query_scalar(
        "select a.session_id from tasks t join attempts a on a.task_id = t.id where t.key = 'poison'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(session.as_deref(), Some("s\u{FFFD}x"), "the session id is kept, its NUL replaced");
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hivectl_workers_shows_a_stored_hostile_name_escaped_and_an_idle_worker_idle() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    // A name registration refuses now, as an older coordinator may have stored it.
    sqlx::query("insert into workers (id, name, hostname, agents, slots) values ($1, $2, 'h', '{a}', 4)")
        .bind(WorkerId::new().0)
        .bind("\u{1b}[2Jevil")
        .execute(&db.pool)
        .await
        .unwrap();
    let shown = hive_tests::procs::hivectl_output(&coordinator.url, &["workers"]).await;
    assert!(!shown.stdout.contains('\u{1b}'), "no escape sequence reaches the terminal: {:?}", shown.stdout);
    assert!(shown.stdout.contains("\\u{1b}[2Jevil"), "{}", shown.stdout);
    // Columns start where their header does (every cell here is ASCII).
    let (header, row) = (shown.stdout.lines().next().unwrap(), shown.stdout.lines().nth(1).unwrap());
    let column = |name: &str| row[header.find(name).unwrap()..].split_whitespace().next().unwrap_or_default();
    assert_eq!(column("BUSY"), "0/4", "an idle worker runs nothing");
    assert_eq!(column("AGENTS"), "a");
    assert!(column("CPU").ends_with('%'), "{}", shown.stdout);
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agents_escape_sequences_reach_hivectl_escaped() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let hostile = Agent::shell(r"printf '\033[2J\033]0;owned\007boom' >&2; exit 3");
    let config = WorkerSetup::new().agent("hostile", hostile).write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &config, "worker", dir.path());
    let mut admin = coordinator.admin_client().await;
    let task = pb::TaskSpec { agent: "hostile".into(), key: "hostile".into(), max_attempts: 1, ..Default::default() };
    let submitted = pb::SubmitTasksRequest { swarm: "s".into(), tasks: vec![task], ..Default::default() };
    let id = admin.submit_tasks(submitted).await.unwrap().into_inner().task_ids.remove(0);
    wait_all_finished(&db.pool, Duration::from_secs(30)).await;
    for args in [vec!["dlq", "list"], vec!["tasks", "show", id.as_str()]] {
        let shown = hive_tests::procs::hivectl_output(&coordinator.url, &args).await;
        assert!(shown.stdout.contains("boom"), "{args:?}: {}", shown.stdout);
        assert!(!shown.stdout.contains('\u{1b}') && !shown.stdout.contains('\u{7}'), "{args:?}: {:?}", shown.stdout);
    }
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_tasks_with_large_prompts_returns_summaries_and_show_returns_them_whole() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    // Twenty prompts of a megabyte (the largest allowed): more than one
    // message (16 MiB) in all.
    let prompt = "p".repeat(1024 * 1024 - 16);
    for half in 0..2 {
        let tasks = (0..10).map(|_| spec(&prompt)).collect();
        let request = pb::SubmitTasksRequest { swarm: format!("big-{half}"), tasks, ..Default::default() };
        admin.submit_tasks(request).await.unwrap();
    }
    let listed = hive_tests::procs::hivectl_json(&coordinator.url, &["tasks", "list"]).await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 20, "hivectl lists every task");
    for task in listed {
        assert_eq!(task["summary"], true);
        assert_eq!(task["prompt"].as_str().unwrap().len(), 200, "a summary's prompt is cut");
    }
    let id = listed[0]["id"].as_str().unwrap();
    let shown = hive_tests::procs::hivectl_json(&coordinator.url, &["tasks", "show", id]).await;
    assert_eq!(shown["task"]["prompt"].as_str().unwrap().len(), prompt.len(), "show has the whole prompt");
    assert_eq!(shown["task"]["summary"], false);
    let mut reader = coordinator.admin_client().await.max_decoding_message_size(64 * 1024 * 1024);
    let full = reader.list_tasks(pb::ListTasksRequest { full: true, ..Default::default() }).await.unwrap().into_inner();
    assert!(full.tasks.len() < 20 && !full.next_page_token.is_empty(), "whole tasks page by size");
    assert!(full.tasks.iter().all(|task| task.prompt == prompt && !task.summary), "asked for whole, listed whole");
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_list_of_large_summaries_pages_by_size_and_lists_them_all() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    // A page may fill half a message: 64 KiB here.
    config.limits.max_message_size = bytesize::ByteSize::kib(128);
    config.limits.max_prompt_size = bytesize::ByteSize::kib(64);
    let coordinator = TestCoordinator::start(config).await;
    let mut admin = coordinator.admin_client().await;
    // Twenty tasks that each depend on the same 200: every summary lists
    // 200 ids (7 KiB), 140 KiB for the twenty, so a page of a hundred is cut by size.
    let mut tasks: Vec<pb::TaskSpec> =
        (0..200).map(|i| pb::TaskSpec { key: format!("base-{i}"), ..spec("p") }).collect();
    let bases: Vec<String> = (0..200).map(|i| format!("base-{i}")).collect();
    tasks.extend((0..20).map(|i| pb::TaskSpec { key: format!("top-{i}"), depends_on: bases.clone(), ..spec("p") }));
    admin.submit_tasks(pb::SubmitTasksRequest { swarm: "deps".into(), tasks, ..Default::default() }).await.unwrap();

    let first = admin.list_tasks(pb::ListTasksRequest { page_size: 100, ..Default::default() }).await.unwrap();
    let first = first.into_inner();
    assert!(
        first.tasks.len() < 20 && !first.next_page_token.is_empty(),
        "{} tasks in the first page",
        first.tasks.len()
    );
    let listed = hive_tests::procs::hivectl_json(&coordinator.url, &["tasks", "list", "--limit", "1000"]).await;
    assert_eq!(listed.as_array().map(Vec::len), Some(220), "hivectl pages through every task");
    coordinator.stop().await.unwrap();
}
