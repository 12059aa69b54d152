//! Fencing on a real database: every statement that ends, extends or
//! answers for an attempt acts only for the task's current attempt id, so a
//! late, stale or repeated report changes nothing.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use hive_coordinator::db;
use hive_coordinator::db::beats::Beats;
use hive_coordinator::status::{AttemptOutcome, TaskStatus};
use hive_tests::db_rows::{self, Fate, Spec, claim, complete, end_attempt, everything_of, submit, swarm, worker};
use hive_tests::invariants::assert_invariants;
use hive_tests::postgres::{TestDb, fresh_database};
use serde_json::json;
use uuid::Uuid;

/// A task on its second attempt: returns (task, worker, the first attempt's id, the running one's).
async fn retried_task(db: &TestDb) -> (Uuid, Uuid, Uuid, Uuid) {
    let swarm = swarm(&db.pool, None).await;
    let task = submit(&db.pool, swarm, &[Spec::default()]).await[0];
    let worker = worker(&db.pool, &["noop"], json!({})).await;
    let first = claim(&db.pool, worker, 1).await.remove(0).attempt_id;
    assert_eq!(end_attempt(&db.pool, task, first, Fate::RETRY).await, 1);
    let second = claim(&db.pool, worker, 1).await.remove(0).attempt_id;
    (task, worker, first, second)
}

#[tokio::test]
async fn complete_of_a_stale_attempt_changes_nothing_and_of_the_current_one_succeeds() {
    let db = fresh_database().await;
    let (task, _, stale, current) = retried_task(&db).await;

    let before = everything_of(&db.pool, task).await;
    assert!(complete(&db.pool, task, stale).await.is_empty(), "nothing recorded for a stale attempt");
    let never_claimed = Uuid::new_v4();
    assert!(complete(&db.pool, task, never_claimed).await.is_empty(), "nor for an attempt that never was");
    assert_eq!(everything_of(&db.pool, task).await, before, "no row changed");

    assert_eq!(complete(&db.pool, task, current).await, [current]);
    assert_eq!(db_rows::status(&db.pool, task).await, TaskStatus::Succeeded);
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn a_second_complete_of_one_attempt_records_nothing_and_finds_it_recorded() {
    let db = fresh_database().await;
    let (task, _, stale, current) = retried_task(&db).await;
    assert_eq!(complete(&db.pool, task, current).await, [current]);

    let after_first = everything_of(&db.pool, task).await;
    assert!(complete(&db.pool, task, current).await.is_empty(), "the repeat records nothing");
    assert_eq!(everything_of(&db.pool, task).await, after_first, "no row changed");

    let unknown = Uuid::new_v4();
    let outcomes =
        db::outcomes::attempt_outcomes(&db.pool, &[task, task, task], &[current, stale, unknown]).await.unwrap();
    let mut outcomes: Vec<(Uuid, AttemptOutcome)> = outcomes;
    outcomes.sort_by_key(|&(id, _)| id != current);
    assert_eq!(
        outcomes,
        [(current, AttemptOutcome::Succeeded), (stale, AttemptOutcome::Failed)],
        "not the unknown one"
    );
    let of_another_task = db::outcomes::attempt_outcomes(&db.pool, &[Uuid::new_v4()], &[current]).await.unwrap();
    assert!(of_another_task.is_empty(), "an attempt is found only with its own task");
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn a_fate_for_a_stale_attempt_locks_nothing_and_changes_nothing() {
    let db = fresh_database().await;
    let (task, _, stale, current) = retried_task(&db).await;

    let before = everything_of(&db.pool, task).await;
    let dead = Fate::DIE;
    assert_eq!(end_attempt(&db.pool, task, stale, dead).await, 0, "lock_reported finds no current attempt");
    assert_eq!(everything_of(&db.pool, task).await, before, "no row changed");

    assert_eq!(end_attempt(&db.pool, task, current, dead).await, 1);
    assert_eq!(db_rows::status(&db.pool, task).await, TaskStatus::Dead);
    let after = everything_of(&db.pool, task).await;
    assert_eq!(
        end_attempt(&db.pool, task, current, Fate::RETRY).await,
        0,
        "a repeated failure finds the attempt ended"
    );
    assert_eq!(everything_of(&db.pool, task).await, after, "no row changed");
    assert_invariants(&db.pool).await;
}

fn beat(worker: Uuid, attempts: &[Uuid]) -> Beats {
    Beats {
        worker_ids: vec![worker],
        free_slots: vec![1],
        running: vec![1],
        cpu_percent: vec![0.0],
        memory_used_bytes: vec![0],
        memory_total_bytes: vec![0],
        draining: vec![false],
        attempt_rss: vec![json!({})],
        unavailable: vec![json!({})],
        held_workers: vec![worker; attempts.len()],
        held_attempts: attempts.to_vec(),
        stalled_attempts: attempts.to_vec(),
    }
}

async fn stalled_since(pool: &sqlx::PgPool, task: Uuid) -> Option<chrono::DateTime<chrono::Utc>> {
    sqlx::query_scalar("select stalled_since from task_states where task_id = $1")
        .bind(task)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_heartbeat_extends_only_the_current_attempts_lease_from_its_worker() {
    let db = fresh_database().await;
    let (task, worker, stale, current) = retried_task(&db).await;
    let other_worker = db_rows::worker(&db.pool, &["noop"], json!({})).await;

    let before = db_rows::state_row(&db.pool, task).await;
    let written = db::beats::record(&db.pool, &beat(worker, &[stale]), 3600.0).await.unwrap();
    assert!(written.extended.is_empty(), "a stale attempt is not extended");
    assert_eq!(written.leased.get(&worker), Some(&1), "the worker's lease is counted all the same");
    let written = db::beats::record(&db.pool, &beat(other_worker, &[current]), 3600.0).await.unwrap();
    assert!(written.extended.is_empty(), "another worker cannot extend it");
    assert_eq!(db_rows::state_row(&db.pool, task).await, before, "the state row is untouched");

    let written = db::beats::record(&db.pool, &beat(worker, &[current]), 3600.0).await.unwrap();
    let extended: Vec<Uuid> = written.extended[&worker].iter().map(|extended| extended.attempt_id).collect();
    assert_eq!(extended, [current]);
    let lease_left: f64 = sqlx::query_scalar(
        "select extract(epoch from lease_expires_at - now())::float8 from task_states where task_id = $1",
    )
    .bind(task)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!(lease_left > 3500.0, "extended by the beat's lease: {lease_left}");
    let since = stalled_since(&db.pool, task).await;
    assert!(since.is_some(), "the beat said the current attempt is stalled");
    db::beats::record(&db.pool, &beat(worker, &[current]), 3600.0).await.unwrap();
    assert_eq!(stalled_since(&db.pool, task).await, since, "stalled since the first beat that said so");
    let mut unstalled = beat(worker, &[current]);
    unstalled.stalled_attempts.clear();
    db::beats::record(&db.pool, &unstalled, 3600.0).await.unwrap();
    assert_eq!(stalled_since(&db.pool, task).await, None, "a beat that lists it not stalled clears it");
    db::beats::record(&db.pool, &beat(worker, &[current]), 3600.0).await.unwrap();

    assert_eq!(complete(&db.pool, task, current).await, [current]);
    assert_eq!(stalled_since(&db.pool, task).await, None, "the stall goes with the attempt");
    let after = db_rows::state_row(&db.pool, task).await;
    let written = db::beats::record(&db.pool, &beat(worker, &[current]), 3600.0).await.unwrap();
    assert!(written.extended.is_empty(), "an ended attempt is not extended");
    assert_eq!(db_rows::state_row(&db.pool, task).await, after);
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn only_the_running_attempt_is_current() {
    let db = fresh_database().await;
    let (task, _, stale, current) = retried_task(&db).await;

    assert!(db::locks::attempt_is_current(&db.pool, task, current).await.unwrap());
    assert!(!db::locks::attempt_is_current(&db.pool, task, stale).await.unwrap());
    assert!(!db::locks::attempt_is_current(&db.pool, Uuid::new_v4(), current).await.unwrap(), "of another task");
    assert_eq!(complete(&db.pool, task, current).await, [current]);
    assert!(!db::locks::attempt_is_current(&db.pool, task, current).await.unwrap(), "once ended");
}

#[tokio::test]
async fn output_budgets_name_the_running_attempt_else_the_last_that_ended() {
    let db = fresh_database().await;
    let (task, _, _, current) = retried_task(&db).await;
    let unknown = Uuid::new_v4();

    let mut conn = db.pool.acquire().await.unwrap();
    let budgets = db::logs::lock_budgets(&mut conn, &[task, unknown]).await.unwrap();
    assert_eq!(budgets.len(), 1, "an unknown task has no budget");
    assert_eq!((budgets[0].task_id, budgets[0].current_attempt), (task, Some(current)));

    assert_eq!(complete(&db.pool, task, current).await, [current]);
    let budgets = db::logs::lock_budgets(&mut conn, &[task]).await.unwrap();
    assert_eq!(budgets[0].current_attempt, Some(current), "output of the last attempt may still arrive");

    let swarm = swarm(&db.pool, None).await;
    let unstarted = submit(&db.pool, swarm, &[Spec::default()]).await[0];
    let budgets = db::logs::lock_budgets(&mut conn, &[unstarted]).await.unwrap();
    assert_eq!(budgets[0].current_attempt, None, "a task never claimed takes no output");
}

#[tokio::test]
async fn a_swarm_s_token_totals_hold_at_the_largest_bigint_and_completions_still_record() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let tasks = submit(&db.pool, swarm, &[Spec::default(), Spec::default()]).await;
    let worker = worker(&db.pool, &["noop"], json!({})).await;
    let claimed = claim(&db.pool, worker, 2).await;
    let attempts: Vec<(Uuid, Uuid)> = claimed.iter().map(|task| (task.id, task.attempt_id)).collect();
    // The most an agent can report per attempt, twice: more than a bigint holds.
    let mut reports = db_rows::reports(&attempts, Some(1.0));
    reports.input_tokens = vec![Some(i64::MAX); 2];
    let recorded = db::outcomes::complete(&db.pool, &reports).await.unwrap().recorded;
    assert_eq!(recorded.len(), 2, "both recorded");
    for task in tasks {
        assert_eq!(db_rows::status(&db.pool, task).await, TaskStatus::Succeeded);
    }
    let totals = db::progress::summaries(&db.pool, Some(swarm)).await.unwrap();
    assert_eq!((totals[0].input_tokens, totals[0].output_tokens, totals[0].spent), (i64::MAX, 40, 2.0));
    assert_invariants(&db.pool).await;
}
