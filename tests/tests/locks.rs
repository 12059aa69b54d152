//! Locks between agents: 20 tasks declaring one lock run on 4 workers and
//! never overlap (checked from the agents' own timestamps), and all finish.
//! Agents can also take locks while they run (`hivectl lock`), and a lock goes
//! when its attempt ends, even one that never released it.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{count, fresh_database, wait_all_finished};
use hive_tests::procs::{binary, hivectl_json, start_worker};
use hive_tests::worker_setup::{Agent, WorkerSetup};

/// Intervals (start, end) in nanoseconds from the agents' own clock readings.
fn intervals(path: &std::path::Path) -> Vec<(u128, u128)> {
    let text = std::fs::read_to_string(path).unwrap();
    let mut starts = std::collections::HashMap::new();
    let mut spans = Vec::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let (kind, task, at) = (parts[0], parts[1], parts[2].parse::<u128>().unwrap());
        if kind == "start" {
            starts.insert(task.to_owned(), at);
        } else {
            spans.push((starts[task], at));
        }
    }
    spans.sort_unstable();
    spans
}

fn assert_no_overlap(spans: &[(u128, u128)]) {
    for pair in spans.windows(2) {
        assert!(pair[0].1 <= pair[1].0, "two holders of one lock overlapped: {:?} and {:?}", pair[0], pair[1]);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_tasks_sharing_a_lock_never_overlap_on_four_workers() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let edit = Agent::shell(format!(
        "echo start $HIVE_TASK_ID $(date +%s%N) >> {t}; sleep 0.1; echo end $HIVE_TASK_ID $(date +%s%N) >> {t}",
        t = trace.display()
    ));
    let config = WorkerSetup::new().slots(3).agent("edit", edit).write(dir.path(), "worker");
    let workers: Vec<_> =
        (0..4).map(|i| start_worker(&coordinator.url, &config, &format!("w{i}"), dir.path())).collect();
    let mut admin = coordinator.admin_client().await;
    let mut tasks: Vec<pb::TaskSpec> = (0..20)
        .map(|i| pb::TaskSpec {
            agent: "edit".into(),
            prompt: i.to_string(),
            locks: vec!["src/lib.rs".into()],
            ..Default::default()
        })
        .collect();
    // Unrelated tasks keep the other slots busy meanwhile.
    tasks.extend((0..10).map(|i| pb::TaskSpec {
        agent: "edit".into(),
        prompt: format!("free {i}"),
        ..Default::default()
    }));
    admin.submit_tasks(pb::SubmitTasksRequest { swarm: "locks".into(), tasks, ..Default::default() }).await.unwrap();

    wait_all_finished(&db.pool, Duration::from_secs(60)).await;
    assert_eq!(count(&db.pool, "select count(*) from task_states where status = 'succeeded'").await, 30, "all finish");
    let locked: Vec<String> = sqlx::query_scalar("select id::text from tasks where cardinality(locks) > 0")
        .fetch_all(&db.pool)
        .await
        .unwrap();
    let text = std::fs::read_to_string(&trace).unwrap();
    let locked_trace: String = text
        .lines()
        .filter(|line| locked.iter().any(|id| line.contains(id.as_str())))
        .map(|line| format!("{line}\n"))
        .collect();
    let locked_file = dir.path().join("locked-trace");
    std::fs::write(&locked_file, locked_trace).unwrap();
    let spans = intervals(&locked_file);
    assert_eq!(spans.len(), 20);
    assert_no_overlap(&spans);
    assert_eq!(count(&db.pool, "select count(*) from task_locks").await, 0, "every lock was released");
    for worker in workers {
        worker.terminate().await;
    }
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_take_locks_while_running_and_a_lock_goes_with_its_attempt() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let trace = dir.path().join("trace");
    let hivectl = binary("hivectl");
    let (h, t) = (hivectl.display(), trace.display());
    let polite = Agent::shell(format!(
        "{h} lock acquire shared --wait 30s >/dev/null || exit 1; echo start $HIVE_TASK_ID $(date +%s%N) >> {t}; sleep 0.2; echo end $HIVE_TASK_ID $(date +%s%N) >> {t}; {h} lock release shared"
    ));
    let careless = Agent::shell(format!("{h} lock acquire forgotten && exit 1"));
    let config =
        WorkerSetup::new().slots(4).agent("polite", polite).agent("careless", careless).write(dir.path(), "worker");
    let workers: Vec<_> =
        (0..2).map(|i| start_worker(&coordinator.url, &config, &format!("w{i}"), dir.path())).collect();
    let mut admin = coordinator.admin_client().await;
    let mut tasks: Vec<pb::TaskSpec> =
        (0..6).map(|i| pb::TaskSpec { agent: "polite".into(), prompt: i.to_string(), ..Default::default() }).collect();
    tasks.push(pb::TaskSpec { agent: "careless".into(), prompt: "x".into(), max_attempts: 1, ..Default::default() });
    admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "runtime-locks".into(), tasks, ..Default::default() })
        .await
        .unwrap();

    wait_all_finished(&db.pool, Duration::from_secs(60)).await;
    let failed: Vec<(String, Option<String>)> =
        sqlx::query_as("select t.prompt, s.error from tasks t join task_states s on s.task_id = t.id where t.agent = 'polite' and s.status <> 'succeeded'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert!(failed.is_empty(), "every polite agent succeeds: {failed:?}");
    let spans = intervals(&trace);
    assert_eq!(spans.len(), 6);
    assert_no_overlap(&spans);
    let careless: String = sqlx::query_scalar(
        "select s.status::text from tasks t join task_states s on s.task_id = t.id where t.agent = 'careless'",
    )
    .fetch_one(&db.pool)
    .await
    .unwrap();
    assert_eq!(careless, "dead");
    let held = hivectl_json(&coordinator.url, &["locks"]).await;
    assert_eq!(held, serde_json::json!([]), "a lock goes when its attempt ends, released or not");
    for worker in workers {
        worker.terminate().await;
    }
    coordinator.stop().await.unwrap();
}
