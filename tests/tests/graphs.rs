//! Task files describe graphs: exporting a swarm and importing it again gives
//! the same graph; cycles, missing dependencies and bad labels are refused
//! with the problem named, and nothing is submitted.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{count, fresh_database};
use hive_tests::procs::{hivectl_json, hivectl_output};

const GRAPH: &str = r#"swarm: roundtrip
tasks:
  - id: plan
    agent: planner
    prompt: "plan the change"
    priority: 5
    max_attempts: 2
    timeout: 10m
    labels: {gpu: "true"}
    session: resume
  - id: build-1
    agent: coder
    prompt: "part 1"
    depends_on: [plan]
    locks: [src/a.rs]
    backoff_initial: 30s
    backoff_multiplier: 3
    validate: {agent: reviewer, prompt: "review it", max_rounds: 2}
  - id: build-2
    agent: coder
    prompt: "part 2"
    input: {files: [b.rs], strict: true}
    depends_on: [plan]
  - id: merge
    agent: coder
    prompt: "merge"
    depends_on: [build-1, build-2]
"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn export_then_import_gives_the_same_graph() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let original = dir.path().join("graph.yaml");
    std::fs::write(&original, GRAPH).unwrap();
    let first = hivectl_json(&coordinator.url, &["submit", original.to_str().unwrap()]).await;
    let exported = hivectl_output(&coordinator.url, &["export", first["swarm_id"].as_str().unwrap()]).await;
    assert!(exported.status.success(), "{}", exported.stderr);

    let copy = dir.path().join("exported.yaml");
    std::fs::write(&copy, &exported.stdout).unwrap();
    let second = hivectl_json(&coordinator.url, &["submit", copy.to_str().unwrap()]).await;
    assert_ne!(first["swarm_id"], second["swarm_id"]);
    let again = hivectl_output(&coordinator.url, &["export", second["swarm_id"].as_str().unwrap()]).await;
    assert_eq!(again.stdout, exported.stdout, "the same graph, field for field");
    for needle in [
        "depends_on:\n  - build-1\n  - build-2",
        "max_rounds: 2",
        "session: resume",
        "gpu: 'true'",
        "src/a.rs",
        "backoff_initial: 30s",
    ] {
        assert!(exported.stdout.contains(needle), "missing {needle:?} in:\n{}", exported.stdout);
    }
    let edges = count(&db.pool, "select count(*) from task_deps").await;
    assert_eq!(edges, 2 * 4, "both swarms have the same four edges");
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_graphs_are_refused_with_the_problem_named_and_nothing_submitted() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let missing = uuid::Uuid::now_v7();
    let cases = [
        (
            "cycle.yaml",
            "swarm: s\ndefaults: {agent: x}\ntasks:\n  - {id: a, depends_on: [c]}\n  - {id: b, depends_on: [a]}\n  - {id: c, depends_on: [b]}\n  - {id: d, depends_on: [a]}\n".to_owned(),
            "depends_on: dependency cycle a → c → b → a".to_owned(),
        ),
        (
            "missing.yaml",
            format!("swarm: s\ntasks:\n  - {{id: a, agent: x, depends_on: [{missing}]}}\n"),
            format!("depends_on: task {missing} does not exist"),
        ),
        (
            "unknown.yaml",
            "swarm: s\ntasks:\n  - {id: a, agent: x, depends_on: [nope]}\n".to_owned(),
            "tasks[0].depends_on[0]: `nope` is neither an id in this file nor a task id".to_owned(),
        ),
        (
            "label.yaml",
            "swarm: s\ntasks:\n  - {id: a, agent: x, labels: {\"gp u\": \"true\"}}\n".to_owned(),
            "tasks[0].labels: `gp u` is not a label name".to_owned(),
        ),
        (
            "self.yaml",
            "swarm: s\ntasks:\n  - {id: a, agent: x, depends_on: [a]}\n".to_owned(),
            "depends_on: dependency cycle a → a".to_owned(),
        ),
    ];
    for (name, text, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let output = hivectl_output(&coordinator.url, &["submit", path.to_str().unwrap()]).await;
        assert_eq!(output.status.code(), Some(1), "{name}: {}", output.stderr);
        assert!(output.stderr.contains(&expected), "{name}: expected {expected:?} in {}", output.stderr);
    }
    assert_eq!(count(&db.pool, "select count(*) from tasks").await, 0, "nothing submitted");
    coordinator.stop().await.unwrap();
}
