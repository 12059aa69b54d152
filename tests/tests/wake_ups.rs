//! Wake-ups: a ready task wakes one waiting claim, which passes the wake-up
//! on while due tasks remain. The coordinator's periodic look for due tasks
//! is set to an hour, leases last ten minutes (no task comes back by expiry)
//! and each claim waits 30 s, so only the relay can deliver within the 10 s
//! these tests allow.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::postgres::fresh_database;
use hive_tests::wait::eventually;
use tokio::task::JoinHandle;

const CLAIM_WAIT: Duration = Duration::from_secs(30);
const DELIVERY: Duration = Duration::from_secs(10);

async fn coordinator() -> (hive_tests::postgres::TestDb, TestCoordinator) {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.claims.recheck_interval = Duration::from_secs(3600);
    config.leases.ttl = Duration::from_secs(600);
    let coordinator = TestCoordinator::start(config).await;
    (db, coordinator)
}

async fn claims_waiting(coordinator: &TestCoordinator) -> u32 {
    let stats = coordinator.admin_client().await.get_stats(pb::GetStatsRequest::default()).await.unwrap();
    stats.into_inner().claims_waiting
}

/// Starts a long-polling claim and returns once the coordinator counts it as waiting.
async fn wait_for_work(
    coordinator: &TestCoordinator,
    mut worker: FakeWorker,
    max: u32,
) -> JoinHandle<Vec<pb::Assignment>> {
    let before = claims_waiting(coordinator).await;
    let claim = tokio::spawn(async move { worker.claim(max, CLAIM_WAIT).await });
    eventually("the claim to wait", Duration::from_secs(10), || async { claims_waiting(coordinator).await > before })
        .await;
    claim
}

async fn submit(coordinator: &TestCoordinator, agent: &str, count: usize) -> Vec<String> {
    let tasks = (0..count).map(|i| pb::TaskSpec { agent: agent.into(), prompt: i.to_string(), ..Default::default() });
    let request = pb::SubmitTasksRequest { swarm: "wake-ups".into(), tasks: tasks.collect(), ..Default::default() };
    coordinator.admin_client().await.submit_tasks(request).await.unwrap().into_inner().task_ids
}

async fn delivered(claim: JoinHandle<Vec<pb::Assignment>>) -> Vec<String> {
    let assignments = tokio::time::timeout(DELIVERY, claim).await.expect("a wake-up within 10 s").unwrap();
    assignments.into_iter().map(|assignment| assignment.task_id).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_reaches_the_only_worker_that_can_take_it_when_another_was_woken_first() {
    let (_db, coordinator) = coordinator().await;
    let first = FakeWorker::register(&coordinator, "offers-a", &["a"], 1).await;
    let second = FakeWorker::register(&coordinator, "offers-b", &["b"], 1).await;
    // The longest-waiting claim is woken first: the one that cannot take the task.
    let claim_a = wait_for_work(&coordinator, first, 1).await;
    let claim_b = wait_for_work(&coordinator, second, 1).await;

    let for_b = submit(&coordinator, "b", 1).await;
    assert_eq!(delivered(claim_b).await, for_b);
    assert!(!claim_a.is_finished(), "the claim for agent a was answered without a task for it");

    let for_a = submit(&coordinator, "a", 1).await;
    assert_eq!(delivered(claim_a).await, for_a);
    assert_eq!(claims_waiting(&coordinator).await, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_burst_larger_than_one_batch_reaches_every_waiting_claim() {
    let (_db, coordinator) = coordinator().await;
    let mut claims = Vec::new();
    for index in 0..3 {
        let worker = FakeWorker::register(&coordinator, &format!("worker-{index}"), &["x"], 4).await;
        claims.push(wait_for_work(&coordinator, worker, 4).await);
    }

    let mut submitted = submit(&coordinator, "x", 12).await;
    let mut claimed = Vec::new();
    for claim in claims {
        let batch = delivered(claim).await;
        assert_eq!(batch.len(), 4, "each claim fills its batch of 4");
        claimed.extend(batch);
    }
    submitted.sort();
    claimed.sort();
    assert_eq!(claimed, submitted, "every task handed out exactly once");
}
