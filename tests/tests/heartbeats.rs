//! Heartbeats from many workers are written together: beats that arrive
//! within the coordinator's write window are recorded by one statement (so
//! every worker's `last_seen_at` and every lease carry that statement's one
//! `now()`), and a beat from an unknown worker in the same batch is refused
//! without failing the others.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use hive_shared::convert::timestamp;
use hive_shared::ids::WorkerId;
use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::postgres::fresh_database;

const WORKERS: usize = 6;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn beats_within_one_window_are_written_by_one_statement() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.leases.ttl = Duration::from_secs(20);
    config.leases.heartbeat_interval = Duration::from_secs(8);
    config.leases.heartbeat_write_window = Duration::from_secs(2);
    let coordinator = TestCoordinator::start(config).await;
    let mut admin = coordinator.admin_client().await;
    let tasks = (0..WORKERS)
        .map(|i| pb::TaskSpec { agent: "noop".into(), prompt: i.to_string(), ..Default::default() })
        .collect();
    admin.submit_tasks(pb::SubmitTasksRequest { swarm: "beats".into(), tasks, ..Default::default() }).await.unwrap();

    let mut workers = Vec::new();
    let mut attempts = Vec::new();
    for index in 0..WORKERS {
        let mut worker = FakeWorker::register(&coordinator, &format!("w{index}"), &["noop"], 1).await;
        let claimed = worker.claim(1, Duration::ZERO).await;
        assert_eq!(claimed.len(), 1);
        attempts.push(claimed[0].attempt_id.clone());
        workers.push(worker);
    }
    let mut stranger = FakeWorker::register(&coordinator, "stranger", &["noop"], 1).await;
    stranger.id = WorkerId::new().to_string(); // never registered under this id

    // One beat each (the next would come a minute later), all inside one window.
    let mut streams = Vec::new();
    for (worker, attempt) in workers.iter_mut().zip(&attempts) {
        streams.push(worker.keep_beating(vec![attempt.clone()], Duration::from_secs(60)).await);
    }
    let mut refused = stranger.keep_beating(vec![], Duration::from_secs(60)).await;

    let mut lease_ends = Vec::new();
    for stream in &mut streams {
        let reply = stream.replies.message().await.unwrap().unwrap();
        assert!(reply.commands.is_empty(), "no command expected: {:?}", reply.commands);
        lease_ends.push(reply.lease_expires_at.unwrap());
    }
    let status = refused.replies.message().await.unwrap_err();
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("not registered"), "{status:?}");

    lease_ends.dedup();
    assert_eq!(lease_ends.len(), 1, "one statement, one lease end: {lease_ends:?}");
    let (seen, leases): (i64, Vec<chrono::DateTime<chrono::Utc>>) = (
        sqlx::query_scalar("select count(distinct last_seen_at) from workers where name like 'w%'")
            .fetch_one(&db.pool)
            .await
            .unwrap(),
        sqlx::query_scalar("select distinct lease_expires_at from task_states").fetch_all(&db.pool).await.unwrap(),
    );
    assert_eq!(seen, 1, "every worker's beat was recorded by the same statement");
    assert_eq!(leases.len(), 1, "every lease extended by the same statement: {leases:?}");
    assert_eq!(timestamp(leases[0]), lease_ends[0], "the reply carries the lease the database holds");
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_gone_longer_than_the_retention_are_forgotten_and_live_ones_kept() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.workers.retention = Duration::from_secs(30);
    let coordinator = TestCoordinator::start(config).await;
    let _live = FakeWorker::register(&coordinator, "live", &["a"], 1).await;
    sqlx::query(
        "insert into workers (id, name, hostname, agents, slots, last_seen_at)
         values (gen_random_uuid(), 'gone', 'h', '{a}', 1, now() - interval '1 hour')",
    )
    .execute(&db.pool)
    .await
    .unwrap();
    hive_tests::wait::eventually("the gone worker to be forgotten", Duration::from_secs(10), || async {
        hive_tests::postgres::count(&db.pool, "select count(*) from workers where name = 'gone'").await == 0
    })
    .await;
    let names: Vec<String> = sqlx::query_scalar("select name from workers").fetch_all(&db.pool).await.unwrap();
    assert_eq!(names, ["live"], "a worker seen within the retention stays");
    coordinator.stop().await.unwrap();
}
