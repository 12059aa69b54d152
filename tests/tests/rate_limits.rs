//! One agent's rate limit protects the whole fleet: a refusal cools down
//! its provider account in PostgreSQL, no worker claims tasks for that
//! account's agents until the cool-down passes, then one probe task goes
//! first; refused attempts are not charged to their tasks. With the real
//! Claude Code CLI against a stub that answers 429 for a while, and with a
//! plain command whose exit code says "rate limited".

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::model_stub::{ModelStub, Reply, Request, default_reply};
use hive_tests::postgres::{fresh_database, wait_all_finished};
use hive_tests::procs::{hivectl_output, start_worker};
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};

async fn submit(coordinator: &TestCoordinator, agent: &str, count: usize) {
    let mut admin = coordinator.admin_client().await;
    let tasks = (0..count).map(|i| pb::TaskSpec {
        agent: agent.into(),
        prompt: format!("task {i}"),
        backoff_initial: Some(hive_shared::convert::duration(Duration::from_millis(10))),
        ..Default::default()
    });
    let request = pb::SubmitTasksRequest { swarm: "rate".into(), tasks: tasks.collect(), ..Default::default() };
    admin.submit_tasks(request).await.unwrap();
}

/// The session a Claude Code request belongs to (its `metadata.user_id` is JSON naming it).
fn session_of(request: &Request) -> String {
    let user = request.body.pointer("/metadata/user_id").and_then(serde_json::Value::as_str).unwrap_or_default();
    let user: serde_json::Value = serde_json::from_str(user).unwrap_or_default();
    user.get("session_id").and_then(serde_json::Value::as_str).unwrap_or_default().to_owned()
}

/// The highest step the cool-down reached, as `steps_seen` recorded it.
async fn max_step(pool: &sqlx::PgPool) -> i32 {
    sqlx::query_scalar("select coalesce(max(step), 0) from steps_seen").fetch_one(pool).await.unwrap()
}

/// Every task succeeded, and none was charged a failure.
async fn all_succeeded_uncharged(pool: &sqlx::PgPool) {
    let rows: Vec<(String, i32)> =
        sqlx::query_as("select status::text, failures from task_states").fetch_all(pool).await.unwrap();
    assert!(rows.iter().all(|(status, failures)| status == "succeeded" && *failures == 0), "{rows:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_429_window_costs_one_call_per_cool_down_step_and_charges_no_task() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.rate_limits.base = Duration::from_millis(500);
    config.rate_limits.max = Duration::from_secs(2);
    config.rate_limits.jitter = 0.0;
    let coordinator = TestCoordinator::start(config).await;
    let stub = ModelStub::start().await.unwrap();
    // 429 until the cool-down has grown to its third step, then answers.
    // Each refused call is kept with its session, which the worker makes
    // the attempt's id.
    let (open, refused) = (Arc::new(AtomicBool::new(false)), Arc::new(Mutex::new(Vec::<String>::new())));
    let (opened, refusals) = (Arc::clone(&open), Arc::clone(&refused));
    stub.set_script(Arc::new(move |request: &Request| {
        if opened.load(Ordering::SeqCst) {
            return default_reply(request);
        }
        refusals.lock().unwrap().push(session_of(request));
        Reply::Error { status: 429, kind: "rate_limit_error".into(), message: "slow down".into(), retry_after: None }
    }));
    let claude = Path::new(env!("CARGO_MANIFEST_DIR")).join("../tools/node_modules/.bin/claude");
    let agent = Agent::claude_code([claude.display().to_string()])
        .account("anthropic", "team-a")
        .env("ANTHROPIC_BASE_URL", stub.url())
        .env("ANTHROPIC_API_KEY", "sk-ant-test")
        .env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1")
        .env("CLAUDE_CODE_MAX_RETRIES", "0");
    let dir = tempfile::tempdir().unwrap();
    let config = WorkerSetup::new().slots(2).agent("claude", agent).write(dir.path(), "worker");
    let workers = [
        start_worker(&coordinator.url, &config, "one", dir.path()),
        start_worker(&coordinator.url, &config, "two", dir.path()),
    ];
    // Every step the cool-down reaches, recorded as it is written.
    sqlx::raw_sql(
        "create table steps_seen (step integer not null);
         create function record_step() returns trigger language plpgsql as
             $$ begin insert into steps_seen values (new.step); return new; end $$;
         create trigger record_step after insert or update of step on provider_cooldowns
             for each row execute function record_step();",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    submit(&coordinator, "claude", 8).await;

    // A refusal after a step's wait has passed (a probe's) grows it by one.
    eventually("the cool-down's third step", Duration::from_secs(90), || async { max_step(&db.pool).await >= 3 }).await;
    open.store(true, Ordering::SeqCst);
    wait_all_finished(&db.pool, Duration::from_secs(90)).await;

    all_succeeded_uncharged(&db.pool).await;
    let steps = max_step(&db.pool).await;
    let refused = refused.lock().unwrap().clone();
    let mut runs = refused.clone();
    runs.sort();
    runs.dedup();
    eprintln!("calls refused: {}; runs refused: {}; cool-down steps: {steps}", refused.len(), runs.len());
    // Four slots started before the first refusal was known; after it, one
    // probe per step. The agent itself retries nothing (max retries 0).
    assert!(runs.len() <= 4 + steps as usize, "{} refused runs for {steps} steps: {refused:?}", runs.len());
    assert_eq!(refused.len(), runs.len(), "one call per run: {refused:?}");
    let released: Vec<(String, String)> =
        sqlx::query_as("select coalesce(session_id, ''), error from attempts where outcome = 'released'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(released.iter().all(|(_, error)| error.contains("rate limit (HTTP 429)")), "{released:?}");
    let mut released: Vec<String> = released.into_iter().map(|(session, _)| session).collect();
    released.sort();
    assert_eq!(released, runs, "each refused run is a released attempt");
    let left = hive_tests::postgres::count(&db.pool, "select count(*) from provider_cooldowns").await;
    assert_eq!(left, 0, "the successful probe ended the cool-down");
    for worker in workers {
        worker.terminate().await;
    }
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cooling_account_holds_only_its_agents_and_an_operator_can_clear_it() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.rate_limits.base = Duration::from_secs(3600);
    let coordinator = TestCoordinator::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let flag = dir.path().join("provider-is-back");
    let limited = Agent::shell(format!(
        r#"test -e {flag} || {{ echo "429: slow down" >&2; exit 42; }}; echo '{{"ok": true}}'"#,
        flag = flag.display()
    ))
    .account("stubai", "team-a")
    .rate_limit_exit_codes(&[42]);
    let config = WorkerSetup::new()
        .slots(3)
        .agent("limited", limited)
        .agent("plain", Agent::shell(r#"echo '{"ok": true}'"#))
        .write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &config, "worker", dir.path());
    submit(&coordinator, "limited", 3).await;

    eventually("the account to cool down", Duration::from_secs(20), || async {
        hive_tests::postgres::count(&db.pool, "select count(*) from provider_cooldowns").await == 1
    })
    .await;
    let listed = hivectl_output(&coordinator.url, &["providers"]).await;
    assert!(listed.status.success(), "{}", listed.stderr);
    assert!(listed.stdout.contains("stubai/team-a") && listed.stdout.contains("429: slow down"), "{}", listed.stdout);

    // Other agents keep running; the cooling account's tasks wait, uncharged.
    submit(&coordinator, "plain", 2).await;
    eventually("the plain tasks to succeed", Duration::from_secs(20), || async {
        hive_tests::postgres::count(&db.pool, "select count(*) from task_states where status = 'succeeded'").await == 2
    })
    .await;
    let waiting =
        hive_tests::postgres::count(&db.pool, "select count(*) from task_states where status = 'ready'").await;
    assert_eq!(waiting, 3, "the limited tasks wait for the cool-down");

    std::fs::write(&flag, "").unwrap();
    let cleared = hivectl_output(&coordinator.url, &["providers", "clear", "stubai/team-a"]).await;
    assert!(cleared.status.success() && cleared.stdout.contains("cleared"), "{}", cleared.stderr);
    wait_all_finished(&db.pool, Duration::from_secs(20)).await;
    all_succeeded_uncharged(&db.pool).await;
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refusals_are_checked_against_the_workers_accounts_and_bad_ones_are_named() {
    use hive_tests::fake_worker::FakeWorker;
    use tonic::Code;

    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut client = coordinator.worker_client().await;
    let worker_id = uuid::Uuid::new_v4().to_string();
    let register = |accounts: &[(&str, &str)]| pb::RegisterRequest {
        worker_id: worker_id.clone(),
        name: "w".into(),
        agents: vec!["a".into()],
        slots: 1,
        accounts: accounts.iter().map(|(agent, account)| ((*agent).to_owned(), (*account).to_owned())).collect(),
        ..Default::default()
    };
    for (accounts, needle) in
        [(vec![("b", "x/y")], "accounts.b: not one of the worker's agents"), (vec![("a", "no-slash")], "accounts.a")]
    {
        let status = client.register(register(&accounts)).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(needle), "{}", status.message());
    }
    client.register(register(&[("a", "stubai/team-a")])).await.unwrap();
    let mut worker = FakeWorker { client, id: worker_id };
    submit(&coordinator, "a", 1).await;
    let task = worker.claim(1, Duration::from_secs(5)).await.remove(0);
    let refusal = |account: &str, retry_after: Option<Duration>| pb::Failure {
        task_id: task.task_id.clone(),
        attempt_id: task.attempt_id.clone(),
        class: pb::FailureClass::RateLimited.into(),
        error: "429".into(),
        provider_account: account.into(),
        retry_after: retry_after.map(hive_shared::convert::duration),
        ..Default::default()
    };
    let bad = [
        (refusal("", None), "failures[0].provider_account"),
        (refusal("stubai/team-a", Some(Duration::from_secs(2 * 24 * 3600))), "failures[0].retry_after"),
    ];
    for (failure, needle) in bad {
        let request = pb::FailRequest { worker_id: worker.id.clone(), failures: vec![failure] };
        let status = worker.client.fail(request).await.unwrap_err();
        assert_eq!(status.code(), Code::InvalidArgument, "{status:?}");
        assert!(status.message().contains(needle), "{}", status.message());
    }

    // An account the worker did not register for the agent cools nothing down.
    let request = pb::FailRequest { worker_id: worker.id.clone(), failures: vec![refusal("other/acct", None)] };
    worker.client.fail(request).await.unwrap();
    assert_eq!(hive_tests::postgres::count(&db.pool, "select count(*) from provider_cooldowns").await, 0);
    let failures: i32 = sqlx::query_scalar("select failures from task_states").fetch_one(&db.pool).await.unwrap();
    assert_eq!(failures, 1, "it counts as a transient failure");
    coordinator.stop().await.unwrap();
}
