//! Every transition of the lifecycle table in docs/data-model.md, statement
//! by statement on a real database, with what each writes; the invariants
//! are checked after each scenario.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use hive_coordinator::db;
use hive_coordinator::db::filters::TaskFilter;
use hive_coordinator::status::{AttemptOutcome, TaskStatus};
use hive_tests::db_rows::{
    self, Fate, Spec, TIMING, claim, complete, end_attempt, state_row, status, submit, submit_with_deps, swarm, worker,
};
use hive_tests::invariants::assert_invariants;
use hive_tests::postgres::fresh_database;
use serde_json::{Value as Json, json};
use sqlx::PgPool;
use uuid::Uuid;

fn blocked(waiting_on: i32) -> Spec {
    Spec { status: TaskStatus::Blocked, waiting_on, ..Spec::default() }
}

/// One column of a task's state row.
async fn column(pool: &PgPool, task: Uuid, name: &str) -> Json {
    state_row(pool, task).await[name].clone()
}

#[tokio::test]
async fn submission_writes_ready_blocked_and_upstream_cancelled_state_rows_with_the_spec() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let cancelled = Spec { status: TaskStatus::Cancelled, ..Spec::default() };
    let labelled = Spec { labels: json!({"gpu": "yes"}), locks: vec!["k"], timeout_ms: Some(5), ..Spec::default() };
    let tasks = submit(&db.pool, swarm, &[Spec::default(), blocked(2), cancelled, labelled]).await;

    let ready = state_row(&db.pool, tasks[0]).await;
    assert_eq!(
        (ready["status"].as_str(), ready["waiting_on"].as_i64(), ready["attempts"].as_i64()),
        (Some("ready"), Some(0), Some(0))
    );
    assert_eq!(column(&db.pool, tasks[1], "waiting_on").await, json!(2));
    assert_eq!(status(&db.pool, tasks[1]).await, TaskStatus::Blocked);
    let upstream = state_row(&db.pool, tasks[2]).await;
    assert_eq!(upstream["status"], "cancelled");
    assert_eq!(upstream["cancelled_upstream"], true);
    assert!(upstream["finished_at"].is_string() && upstream["error"].is_string());
    let copies = state_row(&db.pool, tasks[3]).await;
    assert_eq!(
        (&copies["has_labels"], &copies["has_locks"], &copies["timeout_ms"]),
        (&json!(true), &json!(true), &json!(5))
    );
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn completion_records_the_result_unblocks_dependents_charges_the_swarm_and_releases_locks() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, Some(100.0)).await;
    let locked = Spec { locks: vec!["repo"], ..Spec::default() };
    // 0 and 1 are upstream of 2 (waiting on both) and of 3 (waiting on 0).
    let tasks = submit_with_deps(
        &db.pool,
        swarm,
        &[locked, Spec::default(), blocked(2), blocked(1)],
        &[(2, 0), (2, 1), (3, 0)],
    )
    .await;
    let worker = worker(&db.pool, &["noop"], json!({})).await;
    let first = db_rows::claim_locked(&db.pool, db_rows::scope(worker)).await.unwrap();
    assert_eq!(first.id, tasks[0]);

    let reports = db_rows::reports(&[(tasks[0], first.attempt_id)], Some(2.5));
    let done = db::outcomes::complete(&db.pool, &reports).await.unwrap();
    assert_eq!(done.recorded, [first.attempt_id]);
    assert_eq!(done.newly_ready, 2, "task 3 became ready, and one lock was released");

    let state = state_row(&db.pool, tasks[0]).await;
    assert_eq!(
        (&state["status"], &state["result_attempt"], &state["attempt_id"]),
        (&json!("succeeded"), &json!(1), &Json::Null)
    );
    let (number, result, outcome): (i32, Json, String) =
        sqlx::query_as("select number, result, outcome::text from attempts where id = $1")
            .bind(first.attempt_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!((number, result, outcome.as_str()), (1, json!({"ok": tasks[0]}), "succeeded"));
    assert_eq!(
        (status(&db.pool, tasks[2]).await, column(&db.pool, tasks[2], "waiting_on").await),
        (TaskStatus::Blocked, json!(1))
    );
    assert_eq!(status(&db.pool, tasks[3]).await, TaskStatus::Ready);
    let spent: f64 =
        sqlx::query_scalar("select spent from swarms where id = $1").bind(swarm).fetch_one(&db.pool).await.unwrap();
    assert!((spent - 2.5).abs() < 1e-9, "charged: {spent}");
    assert_eq!(db::locks::list(&db.pool).await.unwrap().len(), 0, "its lock is released");

    // The last dependency of task 2 succeeds. It declares no locks, but its
    // agent took one while it ran: the completion releases that too.
    let second = claim(&db.pool, worker, 1).await.remove(0);
    assert_eq!(second.id, tasks[1]);
    let taking = db::locks::acquire(&db.pool, tasks[1], second.attempt_id, "taken-at-run-time").await.unwrap();
    assert_eq!(taking, db::locks::Taking::Taken);
    assert_eq!(complete(&db.pool, tasks[1], second.attempt_id).await.len(), 1);
    assert_eq!(status(&db.pool, tasks[2]).await, TaskStatus::Ready);
    assert_eq!(db::locks::list(&db.pool).await.unwrap().len(), 0, "the lock its agent took is released");
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn unblock_dependents_counts_off_one_dependency_and_readies_at_zero() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let tasks =
        submit_with_deps(&db.pool, swarm, &[Spec::default(), Spec::default(), blocked(2)], &[(2, 0), (2, 1)]).await;
    let mut conn = db.pool.acquire().await.unwrap();
    assert_eq!(db::graph::unblock_dependents(&mut conn, &[tasks[0]]).await.unwrap(), 0);
    assert_eq!(column(&db.pool, tasks[2], "waiting_on").await, json!(1));
    assert_eq!(db::graph::unblock_dependents(&mut conn, &[tasks[1]]).await.unwrap(), 1);
    assert_eq!(
        (status(&db.pool, tasks[2]).await, column(&db.pool, tasks[2], "waiting_on").await),
        (TaskStatus::Ready, json!(0))
    );
}

/// Records a successful stage attempt and locks the task for its decision,
/// as the use-case does; returns the build result the lock read.
async fn staged(pool: &PgPool, task: Uuid, attempt: Uuid, result: Json) -> Option<Json> {
    let mut tx = pool.begin().await.unwrap();
    let locked = db::stages::lock_staged(&mut tx, &[task], &[attempt], None).await.unwrap();
    assert_eq!(locked.len(), 1, "the current attempt of a validated task");
    let mut reports = db_rows::reports(&[(task, attempt)], None);
    reports.results = vec![result];
    db::stages::record_attempt(&mut tx, &reports, 0).await.unwrap();
    tx.commit().await.unwrap();
    locked[0].build_result.clone()
}

#[tokio::test]
async fn a_validated_task_goes_build_validate_rebuild_validate_and_passes_with_the_last_build() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let spec = Spec { validate_agent: Some("judge"), max_rounds: 2, ..Spec::default() };
    let task = submit(&db.pool, swarm, &[spec]).await[0];
    let worker = worker(&db.pool, &["noop", "judge"], json!({})).await;

    let build = claim(&db.pool, worker, 1).await.remove(0);
    assert_eq!((build.stage.as_str(), build.round, build.agent.as_str()), ("build", 1, "noop"));
    assert!(
        complete(&db.pool, task, build.attempt_id).await.is_empty(),
        "complete leaves validated tasks to the stages"
    );
    staged(&db.pool, task, build.attempt_id, json!("draft")).await;
    let mut conn = db.pool.acquire().await.unwrap();
    db::stages::advance(&mut conn, task, true, &json!("draft")).await.unwrap();

    let validate = claim(&db.pool, worker, 1).await.remove(0);
    assert_eq!(
        (validate.stage.as_str(), validate.agent.as_str(), validate.build_result.clone()),
        ("validate", "judge", Some(json!("draft")))
    );
    staged(&db.pool, task, validate.attempt_id, json!({"pass": false})).await;
    db::stages::advance(&mut conn, task, false, &json!({"pass": false})).await.unwrap();

    let rebuild = claim(&db.pool, worker, 1).await.remove(0);
    assert_eq!(
        (rebuild.stage.as_str(), rebuild.round, rebuild.feedback.clone()),
        ("build", 2, Some(json!({"pass": false})))
    );
    staged(&db.pool, task, rebuild.attempt_id, json!("final")).await;
    db::stages::advance(&mut conn, task, true, &json!("final")).await.unwrap();

    let passing = claim(&db.pool, worker, 1).await.remove(0);
    let build_result = staged(&db.pool, task, passing.attempt_id, json!({"pass": true})).await;
    assert_eq!(build_result, Some(json!("final")), "the lock reads the last build's result");
    db::stages::finish(&mut conn, task, TaskStatus::Succeeded, None).await.unwrap();

    let state = state_row(&db.pool, task).await;
    assert_eq!(
        (&state["status"], &state["result_attempt"], &state["attempts"]),
        (&json!("succeeded"), &json!(3), &json!(4))
    );
    let task_row = db::tasks::get(&db.pool, task).await.unwrap().unwrap();
    assert_eq!(task_row.result, Some(json!("final")));
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn a_validated_task_that_fails_its_last_round_finishes_dead() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let task = submit(&db.pool, swarm, &[Spec { validate_agent: Some("judge"), locks: vec!["k"], ..Spec::default() }])
        .await[0];
    let worker = worker(&db.pool, &["noop", "judge"], json!({})).await;
    let build = db_rows::claim_locked(&db.pool, db_rows::scope(worker)).await.unwrap();
    staged(&db.pool, task, build.attempt_id, json!("draft")).await;
    let mut conn = db.pool.acquire().await.unwrap();
    db::stages::advance(&mut conn, task, true, &json!("draft")).await.unwrap();
    assert!(db::locks::list(&db.pool).await.unwrap().is_empty(), "advance releases the stage's locks");
    let validate = db_rows::claim_locked(&db.pool, db_rows::scope(worker)).await.unwrap();
    staged(&db.pool, task, validate.attempt_id, json!({"pass": false})).await;
    db::stages::finish(&mut conn, task, TaskStatus::Dead, Some("rejected")).await.unwrap();

    let state = state_row(&db.pool, task).await;
    assert_eq!(
        (&state["status"], &state["error"], &state["result_attempt"]),
        (&json!("dead"), &json!("rejected"), &Json::Null)
    );
    assert!(db::locks::list(&db.pool).await.unwrap().is_empty(), "finish releases the locks");
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn fates_retry_after_backoff_hand_back_uncounted_and_die_out_of_tries() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let task = submit(&db.pool, swarm, &[Spec { max_attempts: 2, locks: vec!["k"], ..Spec::default() }]).await[0];
    let worker = worker(&db.pool, &["noop"], json!({})).await;
    let lock_claim = || db_rows::claim_locked(&db.pool, db_rows::scope(worker));

    let first = lock_claim().await.unwrap();
    let retry = Fate { delay: 30.0, ..Fate::RETRY };
    assert_eq!(end_attempt(&db.pool, task, first.attempt_id, retry).await, 1);
    let (failures, backoff): (i32, f64) = sqlx::query_as(
        "select failures, extract(epoch from run_after - now())::float8 from task_states where task_id = $1",
    )
    .bind(task)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(failures, 1);
    assert!((25.0..=30.0).contains(&backoff), "ready again after its backoff: {backoff}");
    assert!(db::locks::list(&db.pool).await.unwrap().is_empty(), "its locks are released");
    assert!(lock_claim().await.is_none(), "not before run_after");

    sqlx::query("update task_states set run_after = now() where task_id = $1")
        .bind(task)
        .execute(&db.pool)
        .await
        .unwrap();
    let second = lock_claim().await.unwrap();
    let hand_back = Fate::HAND_BACK;
    assert_eq!(end_attempt(&db.pool, task, second.attempt_id, hand_back).await, 1);
    assert_eq!(column(&db.pool, task, "failures").await, json!(1), "a hand-back is not a failure");

    let third = lock_claim().await.unwrap();
    assert_eq!(third.attempt, 3);
    let dead = Fate::DIE;
    assert_eq!(end_attempt(&db.pool, task, third.attempt_id, dead).await, 1);
    let state = state_row(&db.pool, task).await;
    assert_eq!((&state["status"], &state["failures"], &state["error"]), (&json!("dead"), &json!(2), &json!("Failed")));
    assert!(state["finished_at"].is_string());
    let outcomes: Vec<String> =
        sqlx::query_scalar("select outcome::text from attempts where task_id = $1 order by number")
            .bind(task)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(outcomes, ["failed", "released", "failed"]);
    let spent: f64 =
        sqlx::query_scalar("select spent from swarms where id = $1").bind(swarm).fetch_one(&db.pool).await.unwrap();
    assert!((spent - 1.5).abs() < 1e-9, "each fate charged its cost: {spent}");
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn cancel_ends_an_unstarted_task_at_once_and_a_running_one_through_cancelling() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let tasks = submit(&db.pool, swarm, &[Spec::default(), Spec::default(), blocked(1)]).await;
    let worker = worker(&db.pool, &["noop"], json!({})).await;
    let running = claim(&db.pool, worker, 1).await.remove(0);
    assert_eq!(running.id, tasks[0]);

    let mut conn = db.pool.acquire().await.unwrap();
    let filter = TaskFilter { swarm_id: Some(swarm), ..TaskFilter::default() };
    let mut cancelled = db::filters::cancel_matching(&mut conn, &filter, "operator").await.unwrap();
    cancelled.sort_by_key(|one| one.id);
    let seen: Vec<(Uuid, TaskStatus, Option<Uuid>)> =
        cancelled.iter().map(|one| (one.id, one.status, one.worker_id)).collect();
    assert_eq!(
        seen,
        [
            (tasks[0], TaskStatus::Cancelling, Some(worker)),
            (tasks[1], TaskStatus::Cancelled, None),
            (tasks[2], TaskStatus::Cancelled, None)
        ]
    );
    assert_eq!(db::leases::cancelling_attempts(&db.pool, worker).await.unwrap(), [running.attempt_id]);
    assert!(claim(&db.pool, worker, 10).await.is_empty());

    let stopped =
        Fate { status: TaskStatus::Cancelled, counted: false, delay: 0.0, outcome: AttemptOutcome::Cancelled };
    assert_eq!(end_attempt(&db.pool, tasks[0], running.attempt_id, stopped).await, 1);
    let state = state_row(&db.pool, tasks[0]).await;
    assert_eq!((&state["status"], &state["cancelled_upstream"]), (&json!("cancelled"), &json!(false)));
    assert!(db::filters::cancel_matching(&mut conn, &filter, "again").await.unwrap().is_empty(), "finished tasks stay");
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn expired_leases_and_unheld_claims_are_found_and_handed_back() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let tasks = submit(&db.pool, swarm, &[Spec::default(), Spec::default()]).await;
    let worker = worker(&db.pool, &["noop"], json!({})).await;
    let short = db::claims::ClaimTiming { lease_seconds: 0.0, ..TIMING };
    let expiring = db::claims::claim(&db.pool, db_rows::scope(worker), 1, short).await.unwrap().remove(0);
    let unheld = claim(&db.pool, worker, 1).await.remove(0);

    let mut tx = db.pool.begin().await.unwrap();
    let expired = db::leases::lock_expired(&mut tx, 10).await.unwrap();
    assert_eq!(
        expired.iter().map(|one| (one.id, one.attempt_id, one.lease_expired)).collect::<Vec<_>>(),
        [(tasks[0], expiring.attempt_id, true)]
    );
    let lost = Fate { outcome: AttemptOutcome::Lost, ..Fate::RETRY };
    let fates = db_rows::fates(expired.iter().map(|one| (one.id, one.attempt_id)), lost);
    db::outcomes::apply_fates(&mut tx, &fates).await.unwrap();
    tx.commit().await.unwrap();
    assert_eq!(status(&db.pool, tasks[0]).await, TaskStatus::Ready);

    let mut tx = db.pool.begin().await.unwrap();
    assert!(db::leases::lock_unheld(&mut tx, worker, &[unheld.attempt_id], 0.0).await.unwrap().is_empty(), "listed");
    assert!(db::leases::lock_unheld(&mut tx, worker, &[], 3600.0).await.unwrap().is_empty(), "too recent");
    let found = db::leases::lock_unheld(&mut tx, worker, &[], 0.0).await.unwrap();
    assert_eq!(found.iter().map(|one| one.attempt_id).collect::<Vec<_>>(), [unheld.attempt_id]);
    let released = Fate::HAND_BACK;
    db::outcomes::apply_fates(&mut tx, &db_rows::fates(found.iter().map(|one| (one.id, one.attempt_id)), released))
        .await
        .unwrap();
    tx.commit().await.unwrap();
    assert_eq!(
        (status(&db.pool, tasks[1]).await, column(&db.pool, tasks[1], "failures").await),
        (TaskStatus::Ready, json!(0))
    );
    let outcomes: Vec<String> =
        sqlx::query_scalar("select outcome::text from attempts order by task_id").fetch_all(&db.pool).await.unwrap();
    assert_eq!(outcomes, ["lost", "released"]);
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn a_dead_task_cancels_downstream_transitively_and_its_retry_restores_them() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    // 1 depends on 0, 2 on 1 and on 3, which succeeds.
    let specs = [Spec::default(), blocked(1), blocked(2), Spec::default()];
    let tasks = submit_with_deps(&db.pool, swarm, &specs, &[(1, 0), (2, 1), (2, 3)]).await;
    let worker = worker(&db.pool, &["noop"], json!({})).await;
    let claimed = claim(&db.pool, worker, 2).await;
    assert_eq!(complete(&db.pool, tasks[3], claimed[1].attempt_id).await.len(), 1);
    let dead = Fate::DIE;
    assert_eq!(end_attempt(&db.pool, tasks[0], claimed[0].attempt_id, dead).await, 1);

    let mut conn = db.pool.acquire().await.unwrap();
    let mut cancelled = db::graph::cancel_downstream(&mut conn, &[tasks[0]], "upstream died").await.unwrap();
    cancelled.sort();
    assert_eq!(cancelled, [tasks[1], tasks[2]]);
    for task in &tasks[1..3] {
        let state = state_row(&db.pool, *task).await;
        assert_eq!(
            (&state["status"], &state["cancelled_upstream"], &state["waiting_on"]),
            (&json!("cancelled"), &json!(true), &json!(0))
        );
    }
    assert_invariants(&db.pool).await;

    let filter = TaskFilter { task_ids: Some(vec![tasks[0]]), ..TaskFilter::default() };
    assert_eq!(db::filters::retry_dead(&db.pool, &filter).await.unwrap(), [tasks[0]]);
    let state = state_row(&db.pool, tasks[0]).await;
    assert_eq!(
        (&state["status"], &state["failures"], &state["error"], &state["finished_at"]),
        (&json!("ready"), &json!(0), &Json::Null, &Json::Null)
    );
    assert_eq!(db::graph::restore_downstream(&mut conn, &[tasks[0]]).await.unwrap(), 2);
    for task in &tasks[1..3] {
        let state = state_row(&db.pool, *task).await;
        assert_eq!(
            (&state["status"], &state["cancelled_upstream"], &state["waiting_on"]),
            (&json!("blocked"), &json!(false), &json!(1)),
            "waiting on what has not succeeded"
        );
    }
    let again = claim(&db.pool, worker, 1).await.remove(0);
    assert_eq!((again.id, again.attempt), (tasks[0], 2));
    assert_invariants(&db.pool).await;
}
