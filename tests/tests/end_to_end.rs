//! A real swarm: a coordinator process, three worker processes and hivectl,
//! on a real PostgreSQL. Every task runs, each exactly once, and its result
//! and output can be read back through hivectl.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::collections::HashSet;
use std::fmt::Write as _;
use std::time::Duration;

use hive_tests::invariants::assert_invariants;
use hive_tests::postgres::{count, fresh_database};
use hive_tests::procs::{hivectl_json, hivectl_output, start_coordinator, start_worker};
use hive_tests::worker_setup::{Agent, WorkerSetup};
use hive_worker::config::PromptMode;

const TASKS: usize = 300;
const WORKERS: usize = 3;

const AGENT: &str = r#"#!/bin/sh
prompt=$(cat)
echo "$HIVE_TASK_ID" >> "$LEDGER"
echo "working on: $prompt"
echo "a note on stderr" >&2
printf '{"task": "%s", "prompt": "%s"}\n' "$HIVE_TASK_ID" "$prompt"
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_worker_processes_run_three_hundred_tasks_each_exactly_once() {
    let db = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let agent = dir.path().join("ledger-agent.sh");
    std::fs::write(&agent, AGENT).unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let (coordinator, url) = start_coordinator(&db.url, dir.path(), &[]).await;
    let ledger_agent = Agent::command([agent.display().to_string()])
        .prompt(PromptMode::Stdin)
        .env("LEDGER", ledger.display().to_string());
    let config = WorkerSetup::new().slots(4).agent("ledger", ledger_agent).write(dir.path(), "worker");
    let workers: Vec<_> =
        (1..=WORKERS).map(|i| start_worker(&url, &config, &format!("worker-{i}"), dir.path())).collect();

    let mut file = String::from("swarm: ledger\ndefaults:\n  agent: ledger\ntasks:\n");
    for i in 0..TASKS {
        writeln!(file, "  - id: t-{i:03}\n    prompt: \"job {i}\"").unwrap();
    }
    let task_file = dir.path().join("tasks.yaml");
    std::fs::write(&task_file, file).unwrap();
    let submitted = hivectl_json(&url, &["submit", task_file.to_str().unwrap()]).await;
    let swarm_id = submitted["swarm_id"].as_str().unwrap().to_owned();
    let submitted_ids: HashSet<String> =
        submitted["tasks"].as_array().unwrap().iter().map(|task| task["id"].as_str().unwrap().to_owned()).collect();
    assert_eq!(submitted_ids.len(), TASKS);

    let waited = tokio::time::timeout(Duration::from_secs(180), hivectl_output(&url, &["status", &swarm_id, "--wait"]))
        .await
        .expect("the swarm finishes within 3 minutes");
    assert!(waited.status.success(), "status --wait failed: {}", waited.stderr);

    // The ledger: every task ran, and no task ran twice.
    let text = std::fs::read_to_string(&ledger).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let ran: HashSet<String> = lines.iter().map(|line| (*line).to_owned()).collect();
    assert_eq!(lines.len(), TASKS, "agent runs recorded in the ledger");
    assert_eq!(ran, submitted_ids, "each submitted task ran exactly once");

    // Through hivectl: statuses, results, attempts, logs, workers.
    let tasks = hivectl_json(&url, &["tasks", "list", "--swarm", &swarm_id, "--limit", "1000"]).await;
    let tasks = tasks.as_array().unwrap();
    assert_eq!(tasks.len(), TASKS);
    assert!(
        tasks.iter().all(|task| task["status"] == "succeeded" && task["attempts"] == 1),
        "all succeeded on the first attempt"
    );

    let sample = tasks.iter().find(|task| task["key"] == "t-042").unwrap();
    let id = sample["id"].as_str().unwrap();
    let detail = hivectl_json(&url, &["tasks", "show", id]).await;
    assert_eq!(detail["task"]["result"], serde_json::json!({"task": id, "prompt": "job 42"}));
    assert_eq!(detail["attempts"][0]["outcome"], "succeeded");
    let logs = hivectl_output(&url, &["logs", id]).await;
    assert!(logs.status.success(), "{}", logs.stderr);
    assert!(logs.stdout.contains("working on: job 42"), "stdout: {}", logs.stdout);
    assert!(logs.stderr.contains("a note on stderr"), "stderr: {}", logs.stderr);

    let listed = hivectl_json(&url, &["workers"]).await;
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), WORKERS);
    assert!(listed.iter().all(|worker| worker["status"] == "live"));

    assert_eq!(count(&db.pool, "select count(*) from task_states where status = 'succeeded'").await, TASKS as i64);
    assert_eq!(count(&db.pool, "select count(*) from attempts").await, TASKS as i64);
    assert_invariants(&db.pool).await;

    for worker in workers {
        let log = worker.log_text();
        let status = worker.terminate().await;
        assert!(status.success(), "worker exit {status}: {log}");
    }
    let status = coordinator.terminate().await;
    assert!(status.success(), "coordinator exit {status}");
}
