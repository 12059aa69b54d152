//! Routing and admission: tasks requiring labels run only on workers that
//! carry them; a task no live worker can take is reported as waiting, naming
//! its agent and labels; an agent whose memory estimate does not fit is not
//! claimed; workers report each running agent's process-tree memory.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::collections::HashMap;
use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{count, fresh_database};
use hive_tests::procs::{hivectl_json, start_worker};
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn labels_route_tasks_admission_holds_what_does_not_fit_and_waiting_is_explained() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let agents = WorkerSetup::new()
        .agent("job", Agent::shell("sleep $(cat)"))
        .agent("huge", Agent::command(["true"]).memory("100TiB"));
    let gpu = agents.clone().slots(2).label("gpu", "true").write(dir.path(), "gpu");
    let plain = agents.slots(4).write(dir.path(), "plain");
    let gpu_worker = start_worker(&coordinator.url, &gpu, "gpu", dir.path());
    let plain_worker = start_worker(&coordinator.url, &plain, "plain", dir.path());
    eventually("both workers to register", Duration::from_secs(20), || async {
        hivectl_json(&coordinator.url, &["workers"]).await.as_array().unwrap().len() == 2
    })
    .await;

    let gpu_labels: HashMap<String, String> = [("gpu".to_owned(), "true".to_owned())].into();
    let mut tasks: Vec<pb::TaskSpec> = (0..8)
        .map(|_| pb::TaskSpec {
            agent: "job".into(),
            prompt: "0.1".into(),
            labels: gpu_labels.clone(),
            ..Default::default()
        })
        .collect();
    tasks.extend((0..8).map(|_| pb::TaskSpec { agent: "job".into(), prompt: "0.1".into(), ..Default::default() }));
    tasks.push(pb::TaskSpec {
        agent: "job".into(),
        prompt: "3".into(),
        key: "hold".into(),
        labels: gpu_labels.clone(),
        ..Default::default()
    });
    let eu: HashMap<String, String> = [("region".to_owned(), "eu".to_owned())].into();
    tasks.push(pb::TaskSpec {
        agent: "job".into(),
        prompt: "0".into(),
        key: "eu".into(),
        labels: eu,
        ..Default::default()
    });
    tasks.push(pb::TaskSpec { agent: "huge".into(), prompt: "x".into(), key: "huge".into(), ..Default::default() });
    let mut admin = coordinator.admin_client().await;
    let submitted = admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "routing".into(), tasks, ..Default::default() })
        .await
        .unwrap()
        .into_inner();

    // While the long GPU task runs, its worker reports the agent's memory.
    eventually("the running agent's memory to be reported", Duration::from_secs(20), || async {
        let workers = hivectl_json(&coordinator.url, &["workers"]).await;
        let gpu = workers.as_array().unwrap().iter().find(|w| w["name"] == "gpu").cloned().unwrap();
        gpu["agents_rss_bytes"].as_object().is_some_and(|rss| rss.values().any(|bytes| bytes.as_u64().unwrap_or(0) > 0))
    })
    .await;
    let workers = hivectl_json(&coordinator.url, &["workers"]).await;
    let gpu_row = workers.as_array().unwrap().iter().find(|w| w["name"] == "gpu").unwrap();
    assert_eq!(gpu_row["labels"], serde_json::json!({"gpu": "true"}));
    assert!(gpu_row["memory_total_bytes"].as_u64().unwrap() > 0);

    eventually("every task that can run to finish", Duration::from_secs(30), || async {
        count(&db.pool, "select count(*) from task_states where status = 'succeeded'").await == 17
    })
    .await;
    let gpu_id = gpu_row["id"].as_str().unwrap();
    let off_gpu = sqlx::query_scalar::<_, i64>(
        "select count(*) from attempts a join tasks t on t.id = a.task_id where t.required_labels ? 'gpu' and a.worker_id <> $1::uuid",
    )
    .bind(gpu_id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(off_gpu, 0, "tasks requiring gpu=true ran only on the gpu worker");

    // The region=eu task waits, and says why; the huge one was never claimed.
    let status = hivectl_json(&coordinator.url, &["status", &submitted.swarm_id]).await;
    let waiting: Vec<String> =
        status[0]["waiting"].as_array().unwrap().iter().map(|w| w.as_str().unwrap().to_owned()).collect();
    assert!(
        waiting.iter().any(|w| w == "waiting: no live worker offers agent job with labels region=eu, or each that does reports it unavailable (1 task(s))"),
        "{waiting:?}"
    );
    let huge: (String, i32) = sqlx::query_as(
        "select s.status::text, s.attempts from tasks t join task_states s on s.task_id = t.id where t.key = 'huge'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(huge, ("ready".into(), 0), "an agent whose memory estimate does not fit is not claimed");

    gpu_worker.terminate().await;
    plain_worker.terminate().await;
    coordinator.stop().await.unwrap();
}
