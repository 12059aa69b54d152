//! A claim's reply fits in one gRPC message: a batch of tasks whose prompts
//! together exceed `limits.max_message_size` is cut short, and the tasks left
//! out stay ready for the next claim (none is lost, none handed out twice).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::collections::HashSet;
use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::postgres::{count, fresh_database};

const TASKS: usize = 48;
const PROMPT: usize = 900 * 1024;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_batch_larger_than_one_message_is_cut_short_and_the_rest_stays_ready() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.leases.ttl = Duration::from_secs(600); // nothing may come back by expiry
    let max_message = usize::try_from(config.limits.max_message_size.as_u64()).unwrap();
    assert!(TASKS * PROMPT > 2 * max_message, "the queue must span several messages");
    let coordinator = TestCoordinator::start(config).await;
    let mut admin = coordinator.admin_client().await;
    let mut submitted = HashSet::new();
    for chunk in 0..TASKS / 4 {
        let tasks = (0..4)
            .map(|i| pb::TaskSpec {
                agent: "big".into(),
                prompt: format!("{chunk}-{i} ") + &"x".repeat(PROMPT),
                ..Default::default()
            })
            .collect();
        let request = pb::SubmitTasksRequest { swarm: "big".into(), tasks, ..Default::default() };
        submitted.extend(admin.submit_tasks(request).await.unwrap().into_inner().task_ids);
    }
    assert_eq!(submitted.len(), TASKS);

    let mut worker = FakeWorker::register(&coordinator, "greedy", &["big"], 64).await;
    let mut claimed = HashSet::new();
    let mut batches = 0;
    while claimed.len() < TASKS {
        let batch = worker.claim(64, Duration::ZERO).await;
        assert!(!batch.is_empty(), "a claim found nothing with {} of {TASKS} tasks still ready", TASKS - claimed.len());
        let bytes: usize = batch.iter().map(|assignment| assignment.prompt.len()).sum();
        assert!(bytes < max_message, "a reply of {bytes} bytes, over the {max_message}-byte message limit");
        for assignment in batch {
            assert!(claimed.insert(assignment.task_id), "a task handed out twice");
        }
        batches += 1;
    }
    assert!(batches >= 3, "{TASKS} prompts of {PROMPT} bytes came in {batches} replies");
    assert_eq!(claimed, submitted);
    assert_eq!(
        count(&db.pool, "select count(*) from task_states where status = 'running' and attempts = 1").await,
        TASKS as i64
    );
}
