//! Upgrading a database that holds tasks: from before the queue split, and
//! from the queue split to one home per fact (docs/data-model.md). Every
//! task reads as it did, and the tasks left unfinished before the upgrade
//! run on to the outcomes they would have had.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::path::Path;
use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::invariants::assert_invariants;
use hive_tests::postgres::{count, empty_database, wait_all_finished};
use hive_tests::procs::start_worker;
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};

/// The last migration before the queue split.
const BEFORE_SPLIT: i64 = 20261121170000;
/// The queue split: the last migration before one home per fact.
const SPLIT: i64 = 20261121200100;

/// Each task's key and status, as the current schema reads them.
async fn statuses_by_key(pool: &sqlx::PgPool) -> Vec<(String, String)> {
    sqlx::query_as("select t.key, s.status::text from tasks t join task_states s on s.task_id = t.id order by t.key")
        .fetch_all(pool)
        .await
        .unwrap()
}

/// A task's result, by key, as the current schema reads it.
const RESULT_OF: &str = "select a.result from tasks t join task_states s on s.task_id = t.id
                         join attempts a on a.task_id = t.id and a.number = s.result_attempt where t.key = $1";

/// Each task's key, status and attempt count, as the current schema reads them.
const READ_TASKS: &str =
    "select t.key, s.status::text, s.attempts from tasks t join task_states s on s.task_id = t.id order by t.key";

/// Applies the coordinator's migrations up to `version` (from a copy of
/// those files: sqlx's public API runs whole folders).
async fn migrate_up_to(pool: &sqlx::PgPool, version: i64) {
    let all = Path::new(env!("CARGO_MANIFEST_DIR")).join("../coordinator/migrations");
    let some = tempfile::tempdir().unwrap();
    for entry in std::fs::read_dir(all).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        let number: i64 = name.split('_').next().unwrap().parse().unwrap();
        if number <= version {
            std::fs::copy(&path, some.path().join(&name)).unwrap();
        }
    }
    sqlx::migrate::Migrator::new(some.path()).await.unwrap().run(pool).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_from_before_the_queue_split_read_the_same_and_still_run() {
    let db = empty_database().await;
    migrate_up_to(&db.pool, BEFORE_SPLIT).await;
    // As that schema's coordinator left them: two ready, one running on a
    // worker that is gone (its lease already over), one succeeded, one dead.
    sqlx::raw_sql(
        "insert into swarms (id, name) values ('00000000-0000-7000-8000-000000000001', 'old');
         insert into tasks (id, swarm_id, key, agent, prompt, status, max_attempts) values
           ('00000000-0000-7000-8000-000000000011', '00000000-0000-7000-8000-000000000001', 'ready-1', 'quick', 'a', 'ready', 3),
           ('00000000-0000-7000-8000-000000000012', '00000000-0000-7000-8000-000000000001', 'ready-2', 'quick', 'b', 'ready', 3);
         insert into tasks (id, swarm_id, key, agent, prompt, status, max_attempts, attempts, current_attempt,
                            worker_id, lease_expires_at, attempt_deadline, started_at, attempt_started_at) values
           ('00000000-0000-7000-8000-000000000013', '00000000-0000-7000-8000-000000000001', 'running', 'quick', 'c',
            'running', 3, 1, '00000000-0000-7000-8000-0000000000a1', '00000000-0000-7000-8000-0000000000f1',
            now() - interval '1 minute', now() + interval '1 hour', now() - interval '2 minutes', now() - interval '2 minutes');
         insert into tasks (id, swarm_id, key, agent, prompt, status, max_attempts, attempts, current_attempt, worker_id,
                            result, started_at, attempt_started_at, finished_at) values
           ('00000000-0000-7000-8000-000000000014', '00000000-0000-7000-8000-000000000001', 'succeeded', 'quick', 'd',
            'succeeded', 3, 1, '00000000-0000-7000-8000-0000000000a2', '00000000-0000-7000-8000-0000000000f1',
            '{\"answer\": 42}', now() - interval '3 minutes', now() - interval '3 minutes', now() - interval '2 minutes');
         insert into tasks (id, swarm_id, key, agent, prompt, status, max_attempts, attempts, failures, error, finished_at) values
           ('00000000-0000-7000-8000-000000000015', '00000000-0000-7000-8000-000000000001', 'dead', 'quick', 'e',
            'dead', 1, 1, 1, 'exit status 3', now() - interval '1 minute');",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    let before: Vec<(String, String, i32)> =
        sqlx::query_as("select key, status::text, attempts from tasks order by key").fetch_all(&db.pool).await.unwrap();

    migrate_up_to(&db.pool, SPLIT).await;
    let split: Vec<(String, String, i32)> =
        sqlx::query_as("select key, status::text, attempts from tasks order by key").fetch_all(&db.pool).await.unwrap();
    assert_eq!(split, before, "the view reads every task as the table did");
    assert_eq!(count(&db.pool, "select count(*) from queue").await, 0, "no task moved into the queue");
    assert_eq!(count(&db.pool, "select count(*) from attempts").await, 2, "the running and the succeeded attempt");

    hive_coordinator::MIGRATOR.run(&db.pool).await.unwrap();
    assert_invariants(&db.pool).await;
    let after: Vec<(String, String, i32)> = sqlx::query_as(READ_TASKS).fetch_all(&db.pool).await.unwrap();
    assert_eq!(after, before, "every task reads as it did");
    assert_eq!(count(&db.pool, "select count(*) from attempts").await, 1, "the succeeded attempt has ended");

    // The coordinator reaps the running task's lapsed lease and a worker runs
    // it and the two ready ones from their rows; the ended ones stay as they were.
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = WorkerSetup::new().slots(4).agent("quick", Agent::command(["true"])).write(dir.path(), "upgraded");
    let worker = start_worker(&coordinator.url, &config, "upgraded", dir.path());
    wait_all_finished(&db.pool, Duration::from_secs(60)).await;
    let ended = statuses_by_key(&db.pool).await;
    let expected = [
        ("dead", "dead"),
        ("ready-1", "succeeded"),
        ("ready-2", "succeeded"),
        ("running", "succeeded"),
        ("succeeded", "succeeded"),
    ];
    assert_eq!(ended, expected.map(|(key, status)| (key.to_owned(), status.to_owned())).to_vec());
    let kept: serde_json::Value = sqlx::query_scalar(RESULT_OF).bind("succeeded").fetch_one(&db.pool).await.unwrap();
    assert_eq!(kept, serde_json::json!({"answer": 42}), "a success from before keeps its result");
    let outcomes: Vec<String> = sqlx::query_scalar(
        "select outcome::text from attempts where task_id = '00000000-0000-7000-8000-000000000013' order by number",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert_eq!(outcomes, ["lost", "succeeded"], "the lapsed attempt is written out as lost, and the new one succeeded");
    assert_invariants(&db.pool).await;
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

/// Swarms and tasks as the queue split's coordinator left them, one in each
/// state: plain tasks in the narrow queue (ready, running on a live lease) or
/// succeeded into `results`; the rest on their task rows (blocked, ready
/// after a failure, running on a lapsed lease, cancelling, dead, cancelled,
/// a validator stage due with the build result, a task holding a lock and
/// one waiting for it); and a task held by its swarm's spent budget. The
/// worker `f1` that held the leases is gone.
const SPLIT_STATE: &str = "
insert into swarms (id, name) values ('00000000-0000-7000-8000-000000000001', 'old');
insert into swarms (id, name, budget, spent) values ('00000000-0000-7000-8000-000000000002', 'spent', 1, 1);

-- Queued: ready (one is a dependency), running on a live lease, succeeded.
insert into task_rows (id, swarm_id, key, agent, prompt, status, max_attempts) values
  ('00000000-0000-7000-8000-000000000101', '00000000-0000-7000-8000-000000000001', 'dep', 'quick', 'a', 'queued', 3),
  ('00000000-0000-7000-8000-000000000102', '00000000-0000-7000-8000-000000000001', 'queued', 'quick', 'b', 'queued', 3),
  ('00000000-0000-7000-8000-000000000103', '00000000-0000-7000-8000-000000000001', 'live', 'quick', 'c', 'queued', 3),
  ('00000000-0000-7000-8000-000000000104', '00000000-0000-7000-8000-000000000001', 'succeeded', 'quick', 'd', 'queued', 3),
  ('00000000-0000-7000-8000-000000000105', '00000000-0000-7000-8000-000000000002', 'held', 'quick', 'e', 'queued', 3);
insert into queue (task_id, swarm_id, priority, run_after, run_agent, has_labels, bytes) values
  ('00000000-0000-7000-8000-000000000101', '00000000-0000-7000-8000-000000000001', 0, now(), 'quick', false, 1),
  ('00000000-0000-7000-8000-000000000102', '00000000-0000-7000-8000-000000000001', 0, now(), 'quick', false, 1),
  ('00000000-0000-7000-8000-000000000105', '00000000-0000-7000-8000-000000000002', 0, now(), 'quick', false, 1);
insert into queue (task_id, swarm_id, priority, run_after, run_agent, has_labels, bytes, worker_id, attempt_id, attempts,
                   lease_expires_at, attempt_deadline, started_at, attempt_started_at) values
  ('00000000-0000-7000-8000-000000000103', '00000000-0000-7000-8000-000000000001', 0, now(), 'quick', false, 1,
   '00000000-0000-7000-8000-0000000000f1', '00000000-0000-7000-8000-0000000000a3', 1,
   now() + interval '3 seconds', now() + interval '1 hour', now() - interval '1 minute', now() - interval '1 minute');
insert into results (task_id, attempt_id, attempt, worker_id, started_at, attempt_started_at, finished_at, result) values
  ('00000000-0000-7000-8000-000000000104', '00000000-0000-7000-8000-0000000000a4', 1,
   '00000000-0000-7000-8000-0000000000f1', now() - interval '2 minutes', now() - interval '2 minutes',
   now() - interval '1 minute', '{\"n\": 1}');

-- On their rows.
insert into task_rows (id, swarm_id, key, agent, prompt, status, max_attempts, waiting_on) values
  ('00000000-0000-7000-8000-000000000111', '00000000-0000-7000-8000-000000000001', 'blocked', 'quick', 'f', 'blocked', 3, 1);
insert into task_deps (task_id, depends_on) values
  ('00000000-0000-7000-8000-000000000111', '00000000-0000-7000-8000-000000000101');
insert into task_rows (id, swarm_id, key, agent, prompt, status, max_attempts, attempts, failures, current_attempt,
                       started_at, error) values
  ('00000000-0000-7000-8000-000000000112', '00000000-0000-7000-8000-000000000001', 'retried', 'quick', 'g', 'ready',
   3, 1, 1, '00000000-0000-7000-8000-0000000000b2', now() - interval '2 minutes', 'exit status 75');
insert into past_attempts (id, task_id, number, worker_id, started_at, finished_at, outcome, error, exit_code) values
  ('00000000-0000-7000-8000-0000000000b2', '00000000-0000-7000-8000-000000000112', 1,
   '00000000-0000-7000-8000-0000000000f1', now() - interval '2 minutes', now() - interval '1 minute', 'failed',
   'exit status 75', 75);
insert into task_rows (id, swarm_id, key, agent, prompt, status, max_attempts, attempts, current_attempt, worker_id,
                       lease_expires_at, attempt_deadline, started_at, attempt_started_at, error, locks) values
  ('00000000-0000-7000-8000-000000000113', '00000000-0000-7000-8000-000000000001', 'lapsed', 'quick', 'h', 'running',
   3, 1, '00000000-0000-7000-8000-0000000000b3', '00000000-0000-7000-8000-0000000000f1', now() - interval '1 minute',
   now() + interval '1 hour', now() - interval '2 minutes', now() - interval '2 minutes', null, '{}'),
  ('00000000-0000-7000-8000-000000000114', '00000000-0000-7000-8000-000000000001', 'cancelling', 'quick', 'i',
   'cancelling', 3, 1, '00000000-0000-7000-8000-0000000000b4', '00000000-0000-7000-8000-0000000000f1',
   now() + interval '3 seconds', now() + interval '1 hour', now() - interval '2 minutes', now() - interval '2 minutes',
   'cancelled by an operator', '{}'),
  ('00000000-0000-7000-8000-000000000115', '00000000-0000-7000-8000-000000000001', 'lock-holder', 'quick', 'j',
   'running', 3, 1, '00000000-0000-7000-8000-0000000000b5', '00000000-0000-7000-8000-0000000000f1',
   now() + interval '3 seconds', now() + interval '1 hour', now() - interval '2 minutes', now() - interval '2 minutes',
   null, '{L}');
insert into task_locks (key, task_id, attempt_id) values
  ('L', '00000000-0000-7000-8000-000000000115', '00000000-0000-7000-8000-0000000000b5');
insert into task_rows (id, swarm_id, key, agent, prompt, status, max_attempts, locks) values
  ('00000000-0000-7000-8000-000000000116', '00000000-0000-7000-8000-000000000001', 'lock-waiter', 'quick', 'k',
   'ready', 3, '{L}');
insert into task_rows (id, swarm_id, key, agent, prompt, status, max_attempts, attempts, failures, current_attempt,
                       started_at, finished_at, error) values
  ('00000000-0000-7000-8000-000000000117', '00000000-0000-7000-8000-000000000001', 'dead', 'quick', 'l', 'dead',
   1, 1, 1, '00000000-0000-7000-8000-0000000000b7', now() - interval '2 minutes', now() - interval '1 minute',
   'exit status 3');
insert into past_attempts (id, task_id, number, worker_id, started_at, finished_at, outcome, error, exit_code) values
  ('00000000-0000-7000-8000-0000000000b7', '00000000-0000-7000-8000-000000000117', 1,
   '00000000-0000-7000-8000-0000000000f1', now() - interval '2 minutes', now() - interval '1 minute', 'failed',
   'exit status 3', 3);
insert into task_rows (id, swarm_id, key, agent, prompt, status, max_attempts, finished_at, error) values
  ('00000000-0000-7000-8000-000000000118', '00000000-0000-7000-8000-000000000001', 'cancelled', 'quick', 'm',
   'cancelled', 3, now() - interval '1 minute', 'not needed');
-- A validator stage due: its builder succeeded with a patch.
insert into task_rows (id, swarm_id, key, agent, prompt, status, max_attempts, attempts, current_attempt, started_at,
                       validate_agent, validate_prompt, max_rounds, stage, build_result) values
  ('00000000-0000-7000-8000-000000000119', '00000000-0000-7000-8000-000000000001', 'validating', 'quick', 'n',
   'ready', 3, 1, '00000000-0000-7000-8000-0000000000b9', now() - interval '2 minutes', 'check', 'review', 2,
   'validate', '{\"patch\": \"x\"}');
insert into past_attempts (id, task_id, number, worker_id, stage, started_at, finished_at, outcome, result) values
  ('00000000-0000-7000-8000-0000000000b9', '00000000-0000-7000-8000-000000000119', 1,
   '00000000-0000-7000-8000-0000000000f1', 'build', now() - interval '2 minutes', now() - interval '1 minute',
   'succeeded', '{\"patch\": \"x\"}');
";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tasks_in_every_state_from_the_queue_split_read_the_same_and_run_on_to_their_outcomes() {
    let db = empty_database().await;
    migrate_up_to(&db.pool, SPLIT).await;
    sqlx::raw_sql(SPLIT_STATE).execute(&db.pool).await.unwrap();
    let before: Vec<(String, String, i32)> =
        sqlx::query_as("select key, status::text, attempts from tasks order by key").fetch_all(&db.pool).await.unwrap();

    hive_coordinator::MIGRATOR.run(&db.pool).await.unwrap();
    assert_invariants(&db.pool).await;
    let after: Vec<(String, String, i32)> = sqlx::query_as(READ_TASKS).fetch_all(&db.pool).await.unwrap();
    assert_eq!(after, before, "every task reads as it did");
    let lease: Option<String> = sqlx::query_scalar(
        "select s.attempt_id::text from tasks t join task_states s on s.task_id = t.id where t.key = 'live'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(lease.as_deref(), Some("00000000-0000-7000-8000-0000000000a3"), "the live lease keeps its attempt");
    let held: Vec<String> = sqlx::query_scalar("select t.key from task_locks l join tasks t on t.id = l.task_id")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(held, ["lock-holder"], "the lock stays with its holder");

    // The coordinator reaps the leases of the worker that is gone as they
    // lapse; a new worker runs everything that is left but the task its
    // swarm's budget holds.
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let config = WorkerSetup::new()
        .slots(4)
        .agent("quick", Agent::command(["true"]))
        .agent("check", Agent::shell(r#"echo '{"verdict": "pass"}'"#))
        .write(dir.path(), "upgraded");
    let worker = start_worker(&coordinator.url, &config, "upgraded", dir.path());
    eventually("everything but the held task to finish", Duration::from_secs(60), || async {
        count(&db.pool, "select count(*) from task_states where status not in ('succeeded', 'dead', 'cancelled')").await
            == 1
    })
    .await;
    let mut admin = coordinator.admin_client().await;
    let raise = pb::SetSwarmBudgetRequest { swarm_id: "00000000-0000-7000-8000-000000000002".into(), budget: 10.0 };
    admin.set_swarm_budget(raise).await.unwrap();
    wait_all_finished(&db.pool, Duration::from_secs(30)).await;

    let ended = statuses_by_key(&db.pool).await;
    let expected = [
        ("blocked", "succeeded"),
        ("cancelled", "cancelled"),
        ("cancelling", "cancelled"),
        ("dead", "dead"),
        ("dep", "succeeded"),
        ("held", "succeeded"),
        ("live", "succeeded"),
        ("lapsed", "succeeded"),
        ("lock-holder", "succeeded"),
        ("lock-waiter", "succeeded"),
        ("queued", "succeeded"),
        ("retried", "succeeded"),
        ("succeeded", "succeeded"),
        ("validating", "succeeded"),
    ];
    let mut expected = expected.map(|(key, status)| (key.to_owned(), status.to_owned())).to_vec();
    expected.sort();
    assert_eq!(ended, expected);
    let outcomes = |key: &'static str| {
        let pool = db.pool.clone();
        async move {
            sqlx::query_scalar::<_, String>(
                "select a.outcome::text from attempts a join tasks t on t.id = a.task_id where t.key = $1 order by a.number",
            )
            .bind(key)
            .fetch_all(&pool)
            .await
            .unwrap()
        }
    };
    assert_eq!(outcomes("live").await, ["lost", "succeeded"], "the live lease lapsed with its worker gone");
    assert_eq!(outcomes("lapsed").await, ["lost", "succeeded"]);
    assert_eq!(outcomes("cancelling").await, ["lost"], "the cancel ends it once its lease lapses");
    assert_eq!(outcomes("retried").await, ["failed", "succeeded"]);
    assert_eq!(outcomes("validating").await, ["succeeded", "succeeded"], "the build, then the verdict");
    let kept: serde_json::Value = sqlx::query_scalar(RESULT_OF).bind("succeeded").fetch_one(&db.pool).await.unwrap();
    assert_eq!(kept, serde_json::json!({"n": 1}), "a success from before keeps its result");
    let patch: serde_json::Value = sqlx::query_scalar(RESULT_OF).bind("validating").fetch_one(&db.pool).await.unwrap();
    assert_eq!(patch, serde_json::json!({"patch": "x"}), "a passed validator makes the build result the task's");
    assert_eq!(count(&db.pool, "select count(*) from task_locks").await, 0, "every lock is released");
    assert_invariants(&db.pool).await;
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}
