//! The invariants of docs/data-model.md that only tests check
//! (`hive_tests::invariants`): they hold after a mix of every transition,
//! and each check fails on a database broken for it by hand — so each is a
//! real check.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use hive_coordinator::db;
use hive_coordinator::status::{AttemptOutcome, TaskStatus};
use hive_tests::db_rows::{
    self, Fate, Spec, claim, claim_locked, complete, end_attempt, scope, submit_with_deps, swarm, worker,
};
use hive_tests::invariants::{CHECKS, assert_invariants, violations};
use hive_tests::postgres::fresh_database;
use serde_json::json;
use sqlx::PgPool;

/// Tasks in every status, through the statements: succeeded (with and
/// without a validator), retried, handed back, lost, dead, cancelled
/// (directly and upstream), cancelling, running, blocked and ready.
async fn every_kind_of_task(pool: &PgPool) {
    let swarm = swarm(pool, Some(1000.0)).await;
    let worker = worker(pool, &["noop", "judge"], json!({"gpu": "yes"})).await;
    let plain = Spec::default();
    let blocked = Spec { status: TaskStatus::Blocked, waiting_on: 1, ..Spec::default() };
    let specs = [
        // 0 succeeds on its second attempt; 1 dies; 2 is cancelled upstream (of 1)
        plain.clone(),
        Spec { max_attempts: 1, ..plain.clone() },
        blocked.clone(),
        // 3 is ready once 0 succeeded; 4 succeeds with its lock; 5 passes validation
        blocked.clone(),
        Spec { locks: vec!["k"], labels: json!({"gpu": "yes"}), ..plain.clone() },
        Spec { validate_agent: Some("judge"), ..plain.clone() },
        // 6 is cancelling; 7 runs again after a lost lease; 8 is cancelled unstarted
        plain.clone(),
        plain.clone(),
        plain.clone(),
        // 9 is ready after a hand-back; 10 is blocked on it
        Spec { timeout_ms: Some(1000), priority: -1, ..plain },
        blocked,
    ];
    let tasks = submit_with_deps(pool, swarm, &specs, &[(2, 1), (3, 0), (10, 9)]).await;
    let retry = Fate::RETRY;

    let first = claim(pool, worker, 10).await;
    let attempt_of = |task| first.iter().find(|claimed| claimed.id == task).unwrap().attempt_id;
    end_attempt(pool, tasks[0], attempt_of(tasks[0]), retry).await;
    end_attempt(pool, tasks[1], attempt_of(tasks[1]), Fate::DIE).await;
    let mut conn = pool.acquire().await.unwrap();
    db::graph::cancel_downstream(&mut conn, &[tasks[1]], "upstream died").await.unwrap();
    end_attempt(pool, tasks[7], attempt_of(tasks[7]), Fate { outcome: AttemptOutcome::Lost, ..retry }).await;
    let hand_back = Fate::HAND_BACK;
    end_attempt(pool, tasks[9], attempt_of(tasks[9]), hand_back).await;

    let build = attempt_of(tasks[5]);
    let mut tx = pool.begin().await.unwrap();
    db::stages::lock_staged(&mut tx, &[tasks[5]], &[build], None).await.unwrap();
    db::stages::record_attempt(&mut tx, &db_rows::reports(&[(tasks[5], build)], Some(1.0)), 0).await.unwrap();
    db::stages::advance(&mut tx, tasks[5], true, &json!({"ok": tasks[5]})).await.unwrap();
    tx.commit().await.unwrap();

    let cancel = |task| db::filters::TaskFilter { task_ids: Some(vec![task]), ..db::filters::TaskFilter::default() };
    db::filters::cancel_matching(&mut conn, &cancel(tasks[6]), "operator").await.unwrap();
    db::filters::cancel_matching(&mut conn, &cancel(tasks[8]), "operator").await.unwrap();

    let locked = claim_locked(pool, scope(worker)).await.unwrap();
    complete(pool, tasks[4], locked.attempt_id).await;
    let second = claim(pool, worker, 3).await;
    for claimed in &second {
        if claimed.id == tasks[0] {
            complete(pool, tasks[0], claimed.attempt_id).await;
        }
        if claimed.id == tasks[5] {
            let mut tx = pool.begin().await.unwrap();
            db::stages::record_attempt(&mut tx, &db_rows::reports(&[(tasks[5], claimed.attempt_id)], None), 0)
                .await
                .unwrap();
            db::stages::finish(&mut tx, tasks[5], TaskStatus::Succeeded, None).await.unwrap();
            tx.commit().await.unwrap();
        }
    }
}

#[tokio::test]
async fn the_invariants_hold_after_every_kind_of_transition() {
    let db = fresh_database().await;
    every_kind_of_task(&db.pool).await;
    let statuses: Vec<String> = sqlx::query_scalar("select distinct status::text from task_states order by 1")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    assert_eq!(
        statuses,
        ["blocked", "cancelled", "cancelling", "dead", "ready", "running", "succeeded"],
        "every status"
    );
    assert_invariants(&db.pool).await;
}

/// SQL that breaks one invariant, by the invariant's name in `CHECKS`.
/// Constraints that would refuse the broken row are dropped first (inside
/// the transaction the test rolls back).
const BREAKERS: &[(&str, &str)] = &[
    (
        "every task has exactly one state row",
        "alter table tasks drop constraint tasks_state_fkey;
         insert into tasks (id, swarm_id, agent, prompt, max_attempts)
         select gen_random_uuid(), swarm_id, 'noop', 'x', 1 from tasks limit 1",
    ),
    (
        "the spec copies on task_states match the spec",
        "alter table task_states drop constraint task_states_task_fkey;
         update task_states set swarm_id = gen_random_uuid() where task_id = (select task_id from task_states limit 1)",
    ),
    (
        "the spec copies on task_states match the spec",
        "update task_states set priority = priority + 1 where task_id = (select task_id from task_states limit 1)",
    ),
    (
        "the spec copies on task_states match the spec",
        "update task_states set has_labels = not has_labels where task_id = (select task_id from task_states limit 1)",
    ),
    (
        "the spec copies on task_states match the spec",
        "update task_states set has_locks = not has_locks where task_id = (select task_id from task_states limit 1)",
    ),
    (
        "the spec copies on task_states match the spec",
        "update task_states set validated = not validated where task_id = (select task_id from task_states limit 1)",
    ),
    (
        "the spec copies on task_states match the spec",
        "update task_states set timeout_ms = coalesce(timeout_ms, 0) + 1
         where task_id = (select task_id from task_states limit 1)",
    ),
    (
        "every attempt belongs to an existing task",
        "insert into attempts (id, task_id, number, worker_id, finished_at, outcome)
         values (gen_random_uuid(), gen_random_uuid(), 1, gen_random_uuid(), now(), 'failed')",
    ),
    (
        "a succeeded task's result is an existing succeeded attempt",
        "update attempts a set outcome = 'failed' from task_states s
         where s.task_id = a.task_id and s.status = 'succeeded' and a.number = s.result_attempt",
    ),
    (
        "a succeeded task's result is an existing succeeded attempt",
        "with gone as (
             delete from attempts a using task_states s
             where s.task_id = a.task_id and s.status = 'succeeded' and a.number = s.result_attempt
             returning s.swarm_id, a.input_tokens, a.output_tokens
         )
         -- Its tokens go from its swarm's totals too: only the result is missing.
         update swarms w set input_tokens = w.input_tokens - g.input_tokens, output_tokens = w.output_tokens - g.output_tokens
         from (select swarm_id, coalesce(sum(input_tokens), 0) as input_tokens, coalesce(sum(output_tokens), 0) as output_tokens
               from gone group by swarm_id) g
         where w.id = g.swarm_id",
    ),
    (
        "a task's attempt numbers are distinct",
        "alter table attempts drop constraint attempts_pkey;
         insert into attempts (id, task_id, number, worker_id, finished_at, outcome)
         select gen_random_uuid(), task_id, number, worker_id, finished_at, 'failed' from attempts limit 1",
    ),
    (
        "a task's attempt numbers are at most its attempts started",
        "insert into attempts (id, task_id, number, worker_id, finished_at, outcome)
         select gen_random_uuid(), task_id, attempts + 1, gen_random_uuid(), now(), 'failed'
         from task_states where status = 'succeeded' limit 1",
    ),
    (
        "no attempt id appears twice",
        "update attempts set id = (select id from attempts order by task_id, number limit 1)
         where (task_id, number) = (select task_id, number from attempts order by task_id, number offset 1 limit 1)",
    ),
    (
        "a running attempt has not also ended",
        "update attempts set id = (select attempt_id from task_states where attempt_id is not null limit 1)
         where (task_id, number) = (select task_id, number from attempts limit 1)",
    ),
    (
        "a running attempt's number is the task's attempts started",
        "insert into attempts (id, task_id, number, worker_id, finished_at, outcome)
         select gen_random_uuid(), task_id, attempts, worker_id, now(), 'failed'
         from task_states where status = 'running' limit 1",
    ),
    (
        "the spec copies on task_states match the spec",
        "update task_states set has_keys = not has_keys where task_id = (select task_id from task_states limit 1)",
    ),
    (
        "the task counts (task_totals) are the tasks counted by agent and status",
        "insert into task_counts (agent, status, tasks) values ('noop', 'ready', 1)
         on conflict (agent, status) do update set tasks = task_counts.tasks + 1",
    ),
    (
        "the swarm counts (swarm_totals, swarm_agent_totals) are the tasks counted by swarm (and agent) and status",
        "insert into swarm_counts (swarm_id, agent, status, tasks) select swarm_id, run_agent, 'dead', 1 from task_states limit 1
         on conflict (swarm_id, agent, status) do update set tasks = swarm_counts.tasks + 1",
    ),
    (
        "the task counts (task_totals) are the tasks counted by agent and status",
        // The swarm counts are moved by hand, so only the counts by agent miss the change.
        "alter table task_states disable trigger task_states_count_updates;
         with picked as (select task_id, swarm_id, run_agent, status from task_states limit 1),
         moved as (update task_states s set run_agent = 'elsewhere' from picked p where s.task_id = p.task_id
                   returning p.swarm_id, p.run_agent, p.status)
         insert into swarm_counts (swarm_id, agent, status, tasks)
         select swarm_id, run_agent, status, -1 from moved union all select swarm_id, 'elsewhere', status, 1 from moved
         on conflict (swarm_id, agent, status) do update set tasks = swarm_counts.tasks + excluded.tasks",
    ),
    (
        "each swarm's token totals are its attempts' tokens (held at the largest bigint)",
        "update swarms set output_tokens = output_tokens + 1 where id = (select swarm_id from tasks limit 1)",
    ),
    (
        "each swarm's first start is its tasks' first, its last finish no earlier than theirs",
        "insert into task_count_changes (swarm_id, agent, status, change, first_started_at)
         select swarm_id, run_agent, status, 0, now() - interval '1 day' from task_states limit 1",
    ),
    (
        "a running task holds each concurrency key it names",
        "insert into concurrency_slots (key, max_running) values ('forgotten', 1);
         update tasks set concurrency_keys = '{forgotten}'
         where id = (select task_id from task_states where status = 'running' limit 1);
         update task_states set has_keys = true where task_id = (select task_id from task_states where status = 'running' limit 1)",
    ),
    (
        "every concurrency key a task names has its row",
        "update tasks set concurrency_keys = '{nowhere}'
         where id = (select task_id from task_states where status = 'succeeded' limit 1);
         update task_states set has_keys = true where task_id = (select task_id from task_states where status = 'succeeded' limit 1)",
    ),
];

#[tokio::test]
async fn each_invariant_check_fails_on_a_database_broken_for_it() {
    let db = fresh_database().await;
    every_kind_of_task(&db.pool).await;
    for &(name, _) in CHECKS {
        assert!(BREAKERS.iter().any(|&(broken, _)| broken == name), "no breaker for {name:?}");
    }
    for &(name, breaker) in BREAKERS {
        assert!(CHECKS.iter().any(|&(check, _)| check == name), "unknown check {name:?}");
        let mut tx = db.pool.begin().await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(breaker))
            .execute(&mut *tx)
            .await
            .unwrap_or_else(|err| panic!("{breaker}: {err}"));
        let broken: Vec<&str> = violations(&mut tx).await.into_iter().map(|(check, _)| check).collect();
        assert_eq!(broken, [name], "after: {breaker}");
        tx.rollback().await.unwrap();
    }
    assert_invariants(&db.pool).await;
}
