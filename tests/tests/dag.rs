//! A 50-task DAG on three worker processes: a root fans out to 24 tasks, each
//! feeding one more, all fanning in to a join whose result a validator checks
//! (and rejects once, so the builder runs again with its feedback). Results
//! flow from each task to its dependents. One injected permanent failure
//! cancels exactly its descendants; retrying it completes the swarm.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::fmt::Write as _;
use std::time::Duration;

use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{count, fresh_database, wait_all_finished};
use hive_tests::procs::{hivectl_json, start_worker};
use hive_tests::worker_setup::{Agent, WorkerSetup};

const FANOUT: usize = 24;

const AGENT: &str = r#"#!/usr/bin/python3
import json, os, sys
prompt = sys.stdin.read().strip()
def load(name):
    path = os.environ.get(name)
    return json.load(open(path)) if path else None
inputs = load("HIVE_INPUTS_FILE") or {}
def done(result):
    json.dump(result, open(os.environ["HIVE_RESULT_FILE"], "w"))
if os.environ.get("HIVE_STAGE") == "validate":
    built = load("HIVE_BUILD_RESULT_FILE")
    if built.get("fixed"):
        done({"verdict": "pass"})
    else:
        done({"verdict": "fail", "feedback": "please fix"})
elif prompt == "root":
    done({"value": 1})
elif prompt.startswith("a"):
    i = int(prompt[1:])
    if i == 5 and not os.path.exists(os.environ["HEALED"]):
        print("injected failure", file=sys.stderr)
        sys.exit(3)
    done({"value": inputs["root"]["value"] + i})
elif prompt.startswith("b"):
    done({"value": inputs["a" + prompt[1:]]["value"] * 2})
elif prompt == "join":
    done({"inputs": len(inputs), "sum": sum(v["value"] for v in inputs.values()), "fixed": load("HIVE_FEEDBACK_FILE") is not None})
"#;

fn dag_file() -> String {
    let mut file = String::from("swarm: dag\ndefaults:\n  agent: dag\ntasks:\n  - {id: root, prompt: root}\n");
    for i in 0..FANOUT {
        writeln!(file, "  - {{id: a{i:02}, prompt: a{i:02}, depends_on: [root]}}").unwrap();
        writeln!(file, "  - {{id: b{i:02}, prompt: b{i:02}, depends_on: [a{i:02}]}}").unwrap();
    }
    let all_b: Vec<String> = (0..FANOUT).map(|i| format!("b{i:02}")).collect();
    writeln!(file, "  - id: join\n    prompt: join\n    depends_on: [{}]", all_b.join(", ")).unwrap();
    file.push_str("    validate: {agent: check, prompt: check the join, max_rounds: 3}\n");
    file
}

async fn status_of(pool: &sqlx::PgPool, key: &str) -> (String, bool) {
    sqlx::query_as("select s.status::text, s.cancelled_upstream from tasks t join task_states s on s.task_id = t.id where t.key = $1")
        .bind(key)
        .fetch_one(pool)
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fifty_task_dag_flows_results_propagates_a_failure_and_completes_after_a_retry() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = dir.path().join("dag-agent.py");
    std::fs::write(&agent, AGENT).unwrap();
    std::fs::set_permissions(&agent, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let healed = dir.path().join("healed");
    let dag_agent = Agent::command([agent.display().to_string()]).env("HEALED", healed.display().to_string());
    let config = WorkerSetup::new()
        .slots(4)
        .agent("dag", dag_agent.clone())
        .agent("check", dag_agent)
        .write(dir.path(), "worker");
    let workers: Vec<_> =
        (0..3).map(|i| start_worker(&coordinator.url, &config, &format!("w{i}"), dir.path())).collect();
    let file = dir.path().join("dag.yaml");
    std::fs::write(&file, dag_file()).unwrap();
    let submitted = hivectl_json(&coordinator.url, &["submit", file.to_str().unwrap()]).await;
    assert_eq!(submitted["tasks"].as_array().unwrap().len(), 2 + 2 * FANOUT);

    // The injected failure kills a05; exactly its descendants (b05, join) are cancelled.
    wait_all_finished(&db.pool, Duration::from_secs(90)).await;
    assert_eq!(status_of(&db.pool, "a05").await, ("dead".into(), false));
    assert_eq!(status_of(&db.pool, "b05").await, ("cancelled".into(), true));
    assert_eq!(status_of(&db.pool, "join").await, ("cancelled".into(), true));
    assert_eq!(count(&db.pool, "select count(*) from task_states where status = 'succeeded'").await, 47);

    // Heal the agent and retry a05: it and everything below it run, the swarm completes.
    std::fs::write(&healed, "").unwrap();
    let a05 = submitted["tasks"].as_array().unwrap().iter().find(|task| task["key"] == "a05").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    hivectl_json(&coordinator.url, &["retry", &a05]).await;
    wait_all_finished(&db.pool, Duration::from_secs(90)).await;
    assert_eq!(count(&db.pool, "select count(*) from task_states where status = 'succeeded'").await, 50);

    // Results flowed: the join saw all 24 branches, each (1 + i) × 2, and was fixed after the validator's feedback.
    let (result, round): (serde_json::Value, i32) =
        sqlx::query_as("select (select a.result from attempts a where a.task_id = s.task_id and a.number = s.result_attempt), s.round from tasks t join task_states s on s.task_id = t.id where t.key = 'join'").fetch_one(&db.pool).await.unwrap();
    let expected_sum: usize = (0..FANOUT).map(|i| (1 + i) * 2).sum();
    assert_eq!(result, serde_json::json!({"inputs": FANOUT, "sum": expected_sum, "fixed": true}));
    assert_eq!(round, 2, "the validator sent the join back once");
    let stages: Vec<(String, Option<serde_json::Value>)> = sqlx::query_as(
        "select a.stage, a.result from attempts a join tasks t on t.id = a.task_id where t.key = 'join' order by a.number",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let stage_names: Vec<&str> = stages.iter().map(|(stage, _)| stage.as_str()).collect();
    assert_eq!(stage_names, ["build", "validate", "build", "validate"]);
    assert_eq!(stages[1].1.as_ref().unwrap()["verdict"], "fail", "the first verdict is kept");
    assert_eq!(stages[3].1.as_ref().unwrap()["verdict"], "pass");

    let swarms = hivectl_json(&coordinator.url, &["swarms"]).await;
    assert_eq!(swarms[0]["progress_percent"], 100);
    assert_eq!(swarms[0]["remaining_seconds"], 0.0);

    for worker in workers {
        worker.terminate().await;
    }
    coordinator.stop().await.unwrap();
}
