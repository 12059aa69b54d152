//! A claim whose reply never reached its worker (the call was cut after the
//! claim committed): the worker's heartbeats do not list it, so the
//! coordinator hands the task back within two heartbeats, not counted as a
//! failure, instead of waiting for the lease to expire.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::postgres::fresh_database;
use hive_tests::wait::eventually;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claimed_task_the_worker_never_lists_is_handed_back_uncounted() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.leases.ttl = Duration::from_secs(60); // the lease alone would take a minute
    config.leases.heartbeat_interval = Duration::from_millis(300);
    let coordinator = TestCoordinator::start(config).await;
    let mut admin = coordinator.admin_client().await;
    let tasks =
        (0..2).map(|i| pb::TaskSpec { agent: "noop".into(), prompt: i.to_string(), ..Default::default() }).collect();
    admin.submit_tasks(pb::SubmitTasksRequest { swarm: "unheld".into(), tasks, ..Default::default() }).await.unwrap();

    let mut worker = FakeWorker::register(&coordinator, "w", &["noop"], 2).await;
    let assignments = worker.claim(2, Duration::ZERO).await;
    assert_eq!(assignments.len(), 2);
    let (known, lost) = (&assignments[0], &assignments[1]);

    // The worker beats, listing only the attempt it knows of.
    let mut beating = worker.keep_beating(vec![known.attempt_id.clone()], Duration::from_millis(300)).await;
    tokio::spawn(async move { while let Ok(Some(_)) = beating.replies.message().await {} });

    let lost_id = uuid::Uuid::parse_str(&lost.task_id).unwrap();
    eventually("the unlisted task to be handed back", Duration::from_secs(10), || async {
        let status: String = sqlx::query_scalar("select status::text from task_states where task_id = $1")
            .bind(lost_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
        status == "ready"
    })
    .await;
    let (failures, outcome): (i32, String) = sqlx::query_as(
        "select s.failures, a.outcome::text from task_states s join attempts a on a.task_id = s.task_id where s.task_id = $1",
    )
    .bind(lost_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!((failures, outcome.as_str()), (0, "released"));
    let known_status: String = sqlx::query_scalar("select status::text from task_states where task_id = $1")
        .bind(uuid::Uuid::parse_str(&known.task_id).unwrap())
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(known_status, "running", "the listed task keeps its lease");
    coordinator.stop().await.unwrap();
}
