//! Claims are atomic: many workers claiming at once never get the same task.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::collections::HashSet;
use std::time::Duration;

use hive_shared::convert::duration;
use hive_shared::ids::WorkerId;
use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{count, fresh_database};

const TASKS: usize = 10_000;
const CLAIMERS: usize = 8;

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn eight_concurrent_claimers_get_each_of_ten_thousand_tasks_exactly_once() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.leases.ttl = Duration::from_secs(600); // no lease may expire mid-test
    let coordinator = TestCoordinator::start(config).await;

    let tasks =
        (0..TASKS).map(|i| pb::TaskSpec { agent: "noop".into(), prompt: format!("task {i}"), ..Default::default() });
    let submitted = coordinator
        .admin_client()
        .await
        .submit_tasks(pb::SubmitTasksRequest { swarm: "race".into(), tasks: tasks.collect(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(submitted.task_ids.len(), TASKS);

    let mut claimers = Vec::new();
    for index in 0..CLAIMERS {
        let mut client = coordinator.worker_client().await;
        let worker_id = WorkerId::new().to_string();
        client
            .register(pb::RegisterRequest {
                worker_id: worker_id.clone(),
                name: format!("claimer-{index}"),
                agents: vec!["noop".into()],
                slots: 64,
                ..Default::default()
            })
            .await
            .unwrap();
        claimers.push(tokio::spawn(async move {
            let mut claimed = Vec::new();
            loop {
                let request = pb::ClaimRequest {
                    worker_id: worker_id.clone(),
                    max_tasks: 37,
                    wait: Some(duration(Duration::ZERO)),
                    agents: vec![],
                };
                let batch = client.claim(request).await.unwrap().into_inner().assignments;
                if batch.is_empty() {
                    return claimed;
                }
                claimed.extend(batch.into_iter().map(|assignment| (assignment.task_id, assignment.attempt)));
            }
        }));
    }
    let mut all = Vec::new();
    let mut per_claimer = Vec::new();
    for claimer in claimers {
        let claimed = claimer.await.unwrap();
        per_claimer.push(claimed.len());
        all.extend(claimed);
    }

    let unique: HashSet<&String> = all.iter().map(|(task, _)| task).collect();
    assert_eq!(all.len(), TASKS, "claims handed out (per claimer: {per_claimer:?})");
    assert_eq!(unique.len(), TASKS, "every task handed out once");
    assert!(all.iter().all(|(_, attempt)| *attempt == 1), "every claim is a first attempt");
    assert!(per_claimer.iter().filter(|n| **n > 0).count() > 1, "claims spread over claimers: {per_claimer:?}");
    assert_eq!(
        count(&db.pool, "select count(*) from task_states where status = 'running' and attempts = 1").await,
        TASKS as i64
    );
    // Each claim started one attempt, held on its task row until it ends.
    assert_eq!(
        count(&db.pool, "select count(distinct attempt_id) from task_states where status = 'running'").await,
        TASKS as i64
    );
    assert_eq!(count(&db.pool, "select count(*) from task_states where attempt_id is not null").await, TASKS as i64);
    assert_eq!(count(&db.pool, "select count(*) from attempts").await, 0, "no attempt has ended");
    coordinator.stop().await.unwrap();
}
