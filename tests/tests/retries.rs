//! Retries and the dead-letter queue on real worker processes: transient
//! failures back off exponentially then die when the budget is spent,
//! permanent ones die at once, timeouts kill the agent and count as transient,
//! dead tasks keep every attempt's error and come back with `hivectl retry`,
//! and delayed tasks wait for their time.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use chrono::{DateTime, Utc};
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{TestDb, count, fresh_database, wait_all_finished};
use hive_tests::procs::{hivectl_json, start_worker};
use hive_tests::worker_setup::{Agent, WorkerSetup};

async fn attempts_of(
    db: &TestDb,
    key: &str,
) -> Vec<(String, Option<i32>, String, DateTime<Utc>, Option<DateTime<Utc>>)> {
    sqlx::query_as(
        "select a.outcome::text, a.exit_code, coalesce(a.error, ''), a.started_at, a.finished_at
         from attempts a join tasks t on t.id = a.task_id where t.key = $1 order by a.number",
    )
    .bind(key)
    .fetch_all(&db.pool)
    .await
    .unwrap()
}

async fn status_of(db: &TestDb, key: &str) -> (String, i32) {
    sqlx::query_as(
        "select s.status::text, s.failures from tasks t join task_states s on s.task_id = t.id where t.key = $1",
    )
    .bind(key)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_retry_with_backoff_die_into_the_dlq_and_come_back_on_retry() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let healed = dir.path().join("healed");
    let config = WorkerSetup::new()
        .slots(4)
        .agent(
            "flaky",
            Agent::shell(format!(
                r#"test -e {} && echo '{{"ok": 1}}' && exit 0; echo 'try later' >&2; exit 75"#,
                healed.display()
            )),
        )
        .agent(
            "broken",
            Agent::shell(format!("test -e {} && exit 0; echo 'cannot ever work' >&2; exit 3", healed.display())),
        )
        .agent("slow", Agent::command(["sleep", "1008.1234"]).kill_grace("200ms"))
        .agent("quick", Agent::command(["true"]))
        .write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &config, "w", dir.path());
    let file = dir.path().join("tasks.yaml");
    std::fs::write(
        &file,
        "swarm: retries\ntasks:\n\
         - {id: flaky, agent: flaky, max_attempts: 3, backoff_initial: 300ms, backoff_multiplier: 2}\n\
         - {id: broken, agent: broken, max_attempts: 5}\n\
         - {id: slow, agent: slow, timeout: 300ms, max_attempts: 2, backoff_initial: 100ms}\n\
         - {id: later, agent: quick, delay: 2s}\n",
    )
    .unwrap();
    hivectl_json(&coordinator.url, &["submit", file.to_str().unwrap()]).await;
    wait_all_finished(&db.pool, Duration::from_secs(60)).await;

    // Transient: three attempts, spaced by the backoff (300 ms, then 600 ms, ±20 %), then dead.
    let flaky = attempts_of(&db, "flaky").await;
    assert_eq!(flaky.len(), 3, "{flaky:?}");
    assert!(flaky.iter().all(|a| a.0 == "failed" && a.1 == Some(75) && a.2.contains("try later")), "{flaky:?}");
    let gaps: Vec<i64> = flaky.windows(2).map(|pair| (pair[1].3 - pair[0].4.unwrap()).num_milliseconds()).collect();
    assert!(gaps[0] >= 240 && gaps[1] >= 480, "backoff gaps {gaps:?} ms");
    assert_eq!(status_of(&db, "flaky").await, ("dead".into(), 3));

    // Permanent: one attempt, dead at once, budget left unused.
    let broken = attempts_of(&db, "broken").await;
    assert_eq!(broken.len(), 1, "{broken:?}");
    assert_eq!((broken[0].1, broken[0].2.contains("cannot ever work")), (Some(3), true));
    assert_eq!(status_of(&db, "broken").await, ("dead".into(), 1));

    // Timeout: the agent is stopped, counted as transient, retried once, then dead.
    let slow = attempts_of(&db, "slow").await;
    assert_eq!(slow.len(), 2, "{slow:?}");
    assert!(slow.iter().all(|a| a.2.contains("ran past its time limit of 300ms")), "{slow:?}");
    assert!(slow.iter().all(|a| (a.4.unwrap() - a.3).num_milliseconds() < 5000), "the timeout stopped the agent");

    // Delayed: not started before its time.
    let later = attempts_of(&db, "later").await;
    let created: DateTime<Utc> =
        sqlx::query_scalar("select created_at from tasks where key = 'later'").fetch_one(&db.pool).await.unwrap();
    assert!(
        (later[0].3 - created).num_milliseconds() >= 2000,
        "started {} ms after submit",
        (later[0].3 - created).num_milliseconds()
    );

    // The dead-letter queue lists them with their errors.
    let dlq = hivectl_json(&coordinator.url, &["dlq", "list"]).await;
    let mut keys: Vec<&str> = dlq.as_array().unwrap().iter().map(|task| task["key"].as_str().unwrap()).collect();
    keys.sort_unstable();
    assert_eq!(keys, ["broken", "flaky", "slow"]);

    // Heal the agents; retry one by id and the rest by error text.
    std::fs::write(&healed, "").unwrap();
    let broken_id =
        dlq.as_array().unwrap().iter().find(|task| task["key"] == "broken").unwrap()["id"].as_str().unwrap().to_owned();
    let retried = hivectl_json(&coordinator.url, &["retry", &broken_id]).await;
    assert_eq!(retried.as_array().unwrap().len(), 1);
    let retried = hivectl_json(&coordinator.url, &["dlq", "retry", "--error", "code 75"]).await;
    assert_eq!(retried.as_array().unwrap().len(), 1, "only the flaky task's error mentions code 75");
    wait_all_finished(&db.pool, Duration::from_secs(30)).await;
    assert_eq!(status_of(&db, "broken").await, ("succeeded".into(), 0));
    assert_eq!(status_of(&db, "flaky").await, ("succeeded".into(), 0));
    assert_eq!(attempts_of(&db, "flaky").await.len(), 4, "earlier attempts are kept");
    assert_eq!(count(&db.pool, "select count(*) from task_states where status = 'dead'").await, 1, "slow stays dead");

    worker.terminate().await;
    coordinator.stop().await.unwrap();
}
