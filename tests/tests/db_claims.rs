//! The claim statements on a real database: `db::claims::claim` for tasks
//! without locks, and `next_lock_candidate` + `take_locks` + `claim_locked`
//! (and `take_slots`, for their concurrency keys) for tasks with locks — which tasks a worker may get, in what order, how
//! many, and that no task is handed out twice.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::collections::HashSet;

use chrono::{Duration, Utc};
use hive_coordinator::db;
use hive_coordinator::db::claims::ClaimScope;
use hive_coordinator::status::TaskStatus;
use hive_tests::db_rows::{self, Spec, TIMING, claim, claim_locked, complete, scope, submit, swarm, worker};
use hive_tests::invariants::assert_invariants;
use hive_tests::postgres::fresh_database;
use serde_json::json;
use uuid::Uuid;

fn agent(agent: &'static str) -> Spec {
    Spec { agent, ..Spec::default() }
}

fn ids(claimed: &[db::claims::ClaimedTask]) -> Vec<Uuid> {
    claimed.iter().map(|task| task.id).collect()
}

#[tokio::test]
async fn a_worker_gets_only_its_agents_and_only_the_agents_it_asks_for() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let tasks = submit(&db.pool, swarm, &[agent("a"), agent("b"), agent("c")]).await;
    let worker = worker(&db.pool, &["a", "b"], json!({})).await;

    let only_b = ["b".to_owned()];
    let asked = ClaimScope { agents: &only_b, ..scope(worker) };
    let claimed = db::claims::claim(&db.pool, asked, 10, TIMING).await.unwrap();
    assert_eq!(ids(&claimed), [tasks[1]], "only the agent asked for");

    assert_eq!(ids(&claim(&db.pool, worker, 10).await), [tasks[0]], "only agents the worker offers");
    assert_eq!(db_rows::status(&db.pool, tasks[2]).await, TaskStatus::Ready, "nobody offers c");
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn a_worker_gets_only_tasks_whose_required_labels_it_carries() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let labelled = |labels| Spec { labels, ..Spec::default() };
    let tasks = submit(
        &db.pool,
        swarm,
        &[
            labelled(json!({})),
            labelled(json!({"gpu": "a100"})),
            labelled(json!({"zone": "eu"})),
            labelled(json!({"gpu": "h100"})),
        ],
    )
    .await;
    let worker = worker(&db.pool, &["noop"], json!({"gpu": "a100", "os": "linux"})).await;

    let claimed: HashSet<Uuid> = ids(&claim(&db.pool, worker, 10).await).into_iter().collect();
    assert_eq!(claimed, HashSet::from([tasks[0], tasks[1]]));

    let unlabelled = db_rows::worker(&db.pool, &["noop"], json!({})).await;
    assert!(claim(&db.pool, unlabelled, 10).await.is_empty(), "a worker without labels gets no labelled task");
}

#[tokio::test]
async fn nothing_is_claimed_from_a_swarm_over_its_budget_by_either_path() {
    let db = fresh_database().await;
    let capped = swarm(&db.pool, Some(1.0)).await;
    let open = swarm(&db.pool, None).await;
    let locked = Spec { locks: vec!["repo"], ..Spec::default() };
    let capped_tasks = submit(&db.pool, capped, &[Spec::default(), Spec::default(), locked.clone()]).await;
    let worker = worker(&db.pool, &["noop"], json!({})).await;

    let first = claim(&db.pool, worker, 1).await;
    assert_eq!(ids(&first), [capped_tasks[0]]);
    let spent = db::outcomes::complete(&db.pool, &db_rows::reports(&[(first[0].id, first[0].attempt_id)], Some(1.5)))
        .await
        .unwrap();
    assert_eq!(spent.recorded, [first[0].attempt_id]);

    assert!(claim(&db.pool, worker, 10).await.is_empty(), "the capped swarm has spent its budget");
    assert!(claim_locked(&db.pool, scope(worker)).await.is_none(), "nor through the lock path");

    let open_tasks = submit(&db.pool, open, &[Spec::default()]).await;
    assert_eq!(ids(&claim(&db.pool, worker, 10).await), open_tasks, "other swarms still run");

    db::swarms::set_budget(&db.pool, capped, Some(10.0)).await.unwrap();
    assert_eq!(ids(&claim(&db.pool, worker, 10).await), [capped_tasks[1]], "a raised budget lets it run again");
    assert_eq!(claim_locked(&db.pool, scope(worker)).await.unwrap().id, capped_tasks[2]);
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn nothing_is_claimed_before_its_run_after() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let at = |offset: Duration| Spec { run_after: Some(Utc::now() + offset), ..Spec::default() };
    let later_locked = Spec { locks: vec!["k"], ..at(Duration::hours(1)) };
    let tasks = submit(&db.pool, swarm, &[at(Duration::hours(1)), at(Duration::seconds(-1)), later_locked]).await;
    let worker = worker(&db.pool, &["noop"], json!({})).await;

    assert_eq!(ids(&claim(&db.pool, worker, 10).await), [tasks[1]]);
    assert!(claim_locked(&db.pool, scope(worker)).await.is_none());
    assert!(!db::claims::any_due(&db.pool).await.unwrap(), "nothing else is due");
}

#[tokio::test]
async fn an_idle_claims_look_sees_due_tasks_of_either_path_and_unknown_workers() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let worker = worker(&db.pool, &["noop"], json!({})).await;
    let look = || async { db::claims::look(&db.pool, worker).await.unwrap() };
    let later = Spec { run_after: Some(Utc::now() + Duration::hours(1)), ..Spec::default() };
    submit(&db.pool, swarm, &[later.clone(), Spec { locks: vec!["k"], ..later }]).await;
    assert!(!look().await.due, "tasks not due yet are not due");
    assert!(look().await.registered);

    submit(&db.pool, swarm, &[Spec { locks: vec!["k"], ..Spec::default() }]).await;
    assert!(look().await.due, "a due lock-taking task is due");
    claim_locked(&db.pool, scope(worker)).await.expect("claimed");
    assert!(!look().await.due);
    submit(&db.pool, swarm, &[Spec::default()]).await;
    assert!(look().await.due, "a due task is due");

    let unknown = db::claims::look(&db.pool, Uuid::new_v4()).await.unwrap();
    assert!(!unknown.registered, "an unknown worker is not registered");
}

#[tokio::test]
async fn claims_come_highest_priority_first_then_oldest_first() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let priority = |priority| Spec { priority, ..Spec::default() };
    let tasks = submit(&db.pool, swarm, &[priority(0), priority(5), priority(1), priority(5), priority(-2)]).await;
    let worker = worker(&db.pool, &["noop"], json!({})).await;

    let first = claim(&db.pool, worker, 3).await;
    assert_eq!(ids(&first), [tasks[1], tasks[3], tasks[2]]);
    assert_eq!(first.iter().map(|task| task.priority).collect::<Vec<_>>(), [5, 5, 1]);
    assert_eq!(ids(&claim(&db.pool, worker, 1).await), [tasks[0]]);
    assert_eq!(ids(&claim(&db.pool, worker, 1).await), [tasks[4]]);

    let locked = |priority| Spec { priority, locks: vec![if priority > 0 { "a" } else { "b" }], ..Spec::default() };
    let locked_tasks = submit(&db.pool, swarm, &[locked(0), locked(3)]).await;
    assert_eq!(claim_locked(&db.pool, scope(worker)).await.unwrap().id, locked_tasks[1]);
    assert_eq!(claim_locked(&db.pool, scope(worker)).await.unwrap().id, locked_tasks[0]);
}

#[tokio::test]
async fn a_claim_takes_at_most_its_limit_and_what_fits_its_bytes_but_always_one() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let hundred_bytes = Spec { prompt: "x".repeat(100), ..Spec::default() };
    let tasks = submit(&db.pool, swarm, &vec![hundred_bytes; 8]).await;
    let worker = worker(&db.pool, &["noop"], json!({})).await;
    let bytes = |max_bytes| ClaimScope { max_bytes, ..scope(worker) };

    let fits_two = db::claims::claim(&db.pool, bytes(250), 10, TIMING).await.unwrap();
    assert_eq!(ids(&fits_two), tasks[0..2]);
    let too_big = db::claims::claim(&db.pool, bytes(10), 10, TIMING).await.unwrap();
    assert_eq!(ids(&too_big), tasks[2..3], "the first task always goes");
    assert_eq!(ids(&claim(&db.pool, worker, 3).await), tasks[3..6], "the limit");
    assert!(claim(&db.pool, worker, 0).await.is_empty(), "a limit of zero claims nothing");
    assert_eq!(db_rows::status(&db.pool, tasks[6]).await, TaskStatus::Ready, "what did not fit stays ready");
}

#[tokio::test]
async fn tasks_with_locks_are_claimed_only_through_the_lock_path_with_their_locks() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let locked = Spec { locks: vec!["repo", "db"], priority: 9, ..Spec::default() };
    let tasks = submit(&db.pool, swarm, &[locked]).await;
    let worker = worker(&db.pool, &["noop"], json!({})).await;

    let batch = claim(&db.pool, worker, 10).await;
    assert!(batch.is_empty(), "the batch claim never takes a task with locks");
    assert!(db::claims::any_lock_candidates(&db.pool).await.unwrap());

    let claimed = claim_locked(&db.pool, scope(worker)).await.unwrap();
    assert_eq!(claimed.id, tasks[0]);
    let held: Vec<(String, Uuid, Uuid)> =
        sqlx::query_as("select key, task_id, attempt_id from task_locks order by key")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(
        held,
        [("db".to_owned(), tasks[0], claimed.attempt_id), ("repo".to_owned(), tasks[0], claimed.attempt_id)],
        "its locks, held by its new attempt"
    );
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn a_lock_task_waits_while_its_lock_is_held_or_a_task_ahead_wants_it() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let worker = worker(&db.pool, &["noop"], json!({})).await;
    let holder = submit(&db.pool, swarm, &[Spec { locks: vec!["x"], priority: 10, ..Spec::default() }]).await[0];
    let holding = claim_locked(&db.pool, scope(worker)).await.unwrap();
    assert_eq!(holding.id, holder);

    // `ahead` wants x (held) and y; `behind` wants only y, which is free, but
    // `ahead` comes first in claim order, so `behind` must not take y.
    let ahead = Spec { locks: vec!["x", "y"], priority: 5, ..Spec::default() };
    let behind = Spec { locks: vec!["y"], priority: 0, ..Spec::default() };
    let unrelated = Spec { locks: vec!["z"], priority: -1, ..Spec::default() };
    let tasks = submit(&db.pool, swarm, &[ahead, behind, unrelated]).await;
    assert_eq!(claim_locked(&db.pool, scope(worker)).await.unwrap().id, tasks[2], "only the task with a free lock");
    assert!(claim_locked(&db.pool, scope(worker)).await.is_none(), "x is held, and y is wanted by a task ahead");

    assert_eq!(complete(&db.pool, holder, holding.attempt_id).await.len(), 1);
    let next = claim_locked(&db.pool, scope(worker)).await.unwrap();
    assert_eq!(next.id, tasks[0], "released, x goes to the task that waited longest in claim order");
    assert!(claim_locked(&db.pool, scope(worker)).await.is_none(), "y is held now");

    assert_eq!(complete(&db.pool, tasks[0], next.attempt_id).await.len(), 1);
    assert_eq!(claim_locked(&db.pool, scope(worker)).await.unwrap().id, tasks[1]);
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn a_lock_task_no_worker_may_take_now_holds_back_no_other_task_wanting_its_lock() {
    let db = fresh_database().await;
    let (paused, over_budget, open) =
        (swarm(&db.pool, None).await, swarm(&db.pool, Some(1.0)).await, swarm(&db.pool, None).await);
    sqlx::query("update swarms set spent = budget where id = $1").bind(over_budget).execute(&db.pool).await.unwrap();
    let worker = worker(&db.pool, &["noop", "held"], json!({})).await;
    let first = |agent: &'static str| Spec { agent, locks: vec!["repo"], priority: 9, ..Spec::default() };
    // Ahead in claim order, each wanting the lock: one of a paused swarm, one
    // of a swarm over budget, one for a paused agent.
    submit(&db.pool, paused, &[first("noop")]).await;
    submit(&db.pool, over_budget, &[first("noop")]).await;
    submit(&db.pool, open, &[first("held")]).await;
    let behind = submit(&db.pool, open, &[Spec { locks: vec!["repo"], priority: 0, ..Spec::default() }]).await[0];
    let pause = |scope, target: String| {
        let pool = db.pool.clone();
        async move {
            let new = db::pauses::NewPause {
                scope,
                target: &target,
                paused_by: "test",
                reason: "",
                seconds: None,
                stop_running: true,
            };
            db::pauses::pause(&pool, new).await.unwrap();
        }
    };
    pause(db::pauses::PauseScope::Swarm, paused.to_string()).await;
    pause(db::pauses::PauseScope::Agent, "held".to_owned()).await;

    let claimed = claim_locked(&db.pool, scope(worker)).await.unwrap();
    assert_eq!(claimed.id, behind, "the lock goes to the first task a worker may take");
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn each_claim_makes_a_new_attempt_id_number_and_lease() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let timed = Spec { timeout_ms: Some(30_000), ..Spec::default() };
    let task = submit(&db.pool, swarm, &[timed]).await[0];
    let worker = worker(&db.pool, &["noop"], json!({})).await;

    let first = claim(&db.pool, worker, 1).await.remove(0);
    let retry = db_rows::Fate::RETRY;
    assert_eq!(db_rows::end_attempt(&db.pool, task, first.attempt_id, retry).await, 1);
    let second = claim(&db.pool, worker, 1).await.remove(0);

    assert_eq!((first.attempt, second.attempt), (1, 2));
    assert_ne!(first.attempt_id, second.attempt_id);
    assert!(second.lease_expires_at >= first.lease_expires_at);
    let (lease_seconds, deadline_seconds, holder, attempt_id): (f64, f64, Uuid, Uuid) = sqlx::query_as(
        "select extract(epoch from lease_expires_at - now())::float8,
                extract(epoch from attempt_deadline - attempt_started_at)::float8, worker_id, attempt_id
         from task_states where task_id = $1",
    )
    .bind(task)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert!((55.0..=60.0).contains(&lease_seconds), "a lease of TIMING.lease_seconds: {lease_seconds}");
    assert!((deadline_seconds - 35.0).abs() < 0.01, "the task's timeout plus the grace: {deadline_seconds}");
    assert_eq!((holder, attempt_id), (worker, second.attempt_id));
    assert_invariants(&db.pool).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_claims_never_hand_out_one_task_twice() {
    const TASKS: usize = 400;
    const LOCKED: usize = 40;
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let mut specs = vec![Spec::default(); TASKS];
    let keys: Vec<&'static str> = (0..LOCKED).map(|i| &*Box::leak(format!("key-{i}").into_boxed_str())).collect();
    specs.extend(keys.iter().map(|key| Spec { locks: vec![key], ..Spec::default() }));
    let submitted: HashSet<Uuid> = submit(&db.pool, swarm, &specs).await.into_iter().collect();

    let mut claimers = tokio::task::JoinSet::new();
    for _ in 0..4 {
        let pool = db.pool.clone();
        claimers.spawn(async move {
            let worker = worker(&pool, &["noop"], json!({})).await;
            let mut got = Vec::new();
            loop {
                let batch = claim(&pool, worker, 7).await;
                let locked = claim_locked(&pool, scope(worker)).await;
                if batch.is_empty() && locked.is_none() {
                    return got;
                }
                got.extend(batch.iter().map(|task| task.id));
                got.extend(locked.map(|task| task.id));
            }
        });
    }
    let mut all = Vec::new();
    while let Some(got) = claimers.join_next().await {
        all.extend(got.unwrap());
    }
    let distinct: HashSet<Uuid> = all.iter().copied().collect();
    assert_eq!(all.len(), distinct.len(), "no task was claimed twice");
    assert_eq!(distinct, submitted, "every task was claimed");
    assert_invariants(&db.pool).await;
}

fn keyed(keys: &[(&'static str, i32)]) -> Spec {
    Spec { concurrency: keys.to_vec(), ..Spec::default() }
}

async fn holders(pool: &sqlx::PgPool, key: &str) -> Vec<Uuid> {
    sqlx::query_scalar("select holder_tasks from concurrency_slots where key = $1")
        .bind(key)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_claim_takes_a_keyed_task_only_while_each_of_its_keys_has_room() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let mut specs: Vec<Spec> = (0..6).map(|_| keyed(&[("repo:a", 2)])).collect();
    specs.push(keyed(&[("repo:a", 2), ("customer:x", 5)]));
    specs.push(keyed(&[("customer:x", 5)]));
    specs.push(Spec::default());
    let tasks = submit(&db.pool, swarm, &specs).await;
    let worker = worker(&db.pool, &["noop"], json!({})).await;

    // repo:a has room for two: the rest of its tasks stay ready, the batch
    // goes on to the others (customer:x alone, and the keyless one).
    let first: HashSet<Uuid> = ids(&claim(&db.pool, worker, 20).await).into_iter().collect();
    assert_eq!(first, HashSet::from([tasks[0], tasks[1], tasks[7], tasks[8]]));
    assert_eq!(holders(&db.pool, "repo:a").await, [tasks[0], tasks[1]]);
    assert_eq!(holders(&db.pool, "customer:x").await, [tasks[7]]);
    assert_invariants(&db.pool).await;
    assert!(claim(&db.pool, worker, 20).await.is_empty(), "repo:a is full, whatever the other keys");

    // A finished holder makes room for the next task in claim order; the
    // claim that takes it drops the finished one from the holders.
    let attempt = claim_attempt(&db.pool, tasks[0]).await;
    complete(&db.pool, tasks[0], attempt).await;
    assert_eq!(ids(&claim(&db.pool, worker, 20).await), [tasks[2]]);
    assert_eq!(holders(&db.pool, "repo:a").await, [tasks[1], tasks[2]]);
    // A failed (retried) holder gives its key back too, and the retry
    // waits its turn like any task.
    let attempt = claim_attempt(&db.pool, tasks[1]).await;
    db_rows::end_attempt(&db.pool, tasks[1], attempt, db_rows::Fate::RETRY).await;
    assert_eq!(ids(&claim(&db.pool, worker, 20).await), [tasks[1]]);
    assert_eq!(holders(&db.pool, "repo:a").await, [tasks[2], tasks[1]]);
    assert!(claim(&db.pool, worker, 20).await.is_empty());
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn a_lock_taking_claim_takes_its_keys_only_while_each_has_room() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let specs = [keyed(&[("repo:l", 1)]), keyed(&[("repo:l", 1), ("customer:y", 3)]), keyed(&[("customer:y", 3)])];
    let tasks = submit(&db.pool, swarm, &specs).await;

    let mut tx = db.pool.begin().await.unwrap();
    assert!(db::claims::take_slots(&mut tx, tasks[0], Uuid::new_v4()).await.unwrap());
    // repo:l is full, so the second takes no place under either key.
    assert!(!db::claims::take_slots(&mut tx, tasks[1], Uuid::new_v4()).await.unwrap(), "repo:l is full");
    assert!(db::claims::take_slots(&mut tx, tasks[2], Uuid::new_v4()).await.unwrap());
    tx.commit().await.unwrap();
    assert_eq!(holders(&db.pool, "repo:l").await, [tasks[0]]);
    assert_eq!(holders(&db.pool, "customer:y").await, [tasks[2]]);
}

async fn claim_attempt(pool: &sqlx::PgPool, task: Uuid) -> Uuid {
    sqlx::query_scalar("select attempt_id from task_states where task_id = $1")
        .bind(task)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn concurrent_claimers_never_run_more_than_a_keys_limit() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let specs: Vec<Spec> = (0..120).map(|_| keyed(&[("repo:shared", 3)])).collect();
    submit(&db.pool, swarm, &specs).await;
    let mut claimers = Vec::new();
    for _ in 0..6 {
        let pool = db.pool.clone();
        let worker = worker(&db.pool, &["noop"], json!({})).await;
        claimers.push(tokio::spawn(async move {
            let (mut done, mut most) = (0, 0_i64);
            while done < 40 {
                let claimed = claim(&pool, worker, 4).await;
                let running: i64 =
                    sqlx::query_scalar("select count(*) from task_states where status in ('running', 'cancelling')")
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                most = most.max(running);
                if claimed.is_empty() {
                    let left: i64 = sqlx::query_scalar("select count(*) from task_states where status = 'ready'")
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                    if left == 0 {
                        break;
                    }
                    tokio::task::yield_now().await;
                }
                for task in claimed {
                    complete(&pool, task.id, task.attempt_id).await;
                    done += 1;
                }
            }
            most
        }));
    }
    let mut most = 0;
    for claimer in claimers {
        most = most.max(claimer.await.unwrap());
    }
    assert!(most <= 3, "at most the key's limit ran at once: {most}");
    let finished: i64 = sqlx::query_scalar("select count(*) from task_states where status = 'succeeded'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(finished, 120);
    assert_invariants(&db.pool).await;
}

#[tokio::test]
async fn a_small_swarm_submitted_behind_a_huge_one_starts_within_one_claim() {
    let db = fresh_database().await;
    let huge = swarm(&db.pool, None).await;
    let specs: Vec<Spec> = (0..100_000).map(|_| Spec::default()).collect();
    for chunk in specs.chunks(20_000) {
        submit(&db.pool, huge, chunk).await;
    }
    let worker = worker(&db.pool, &["noop"], json!({})).await;
    let first = claim(&db.pool, worker, 10).await;
    assert!(first.iter().all(|task| task.swarm_id == huge));

    let small = swarm(&db.pool, None).await;
    let small_tasks = submit(&db.pool, small, &[Spec::default(), Spec::default(), Spec::default()]).await;
    let next = claim(&db.pool, worker, 10).await;
    assert!(ids(&next).contains(&small_tasks[0]), "the small swarm's first task is in the next claim");
    // And its others follow at the same pace as the huge swarm's, not after it.
    let mut claimed_small = ids(&next).iter().filter(|id| small_tasks.contains(id)).count();
    for _ in 0..3 {
        claimed_small += ids(&claim(&db.pool, worker, 10).await).iter().filter(|id| small_tasks.contains(id)).count();
    }
    assert_eq!(claimed_small, 3, "the small swarm interleaves with the huge one");
    // Within one swarm, tasks keep their submission order.
    let order: Vec<i64> =
        sqlx::query_scalar("select s.fair_seq from task_states s where s.swarm_id = $1 order by s.task_id")
            .bind(small)
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(order.windows(2).all(|pair| pair[0] < pair[1]), "{order:?}");
}

#[tokio::test]
async fn the_oldest_ready_age_is_on_the_ready_count_only() {
    let db = fresh_database().await;
    let swarm = swarm(&db.pool, None).await;
    let worker = worker(&db.pool, &["noop"], json!({})).await;
    submit(&db.pool, swarm, &[Spec::default(), Spec::default()]).await;
    let claimed = claim(&db.pool, worker, 1).await;
    complete(&db.pool, claimed[0].id, claimed[0].attempt_id).await;
    let totals = db::metrics::task_totals(&db.pool).await.unwrap();
    let ages: Vec<(&str, i64, bool)> = totals
        .iter()
        .filter(|total| total.tasks > 0)
        .map(|total| (total.status.as_str(), total.tasks, total.oldest_ready_seconds.is_some()))
        .collect();
    assert_eq!(ages, [("ready", 1, true), ("succeeded", 1, false)]);
}
