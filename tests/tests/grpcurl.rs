//! The real grpcurl against a live coordinator: reflection lists and
//! describes the services, health answers, and tasks can be submitted and read
//! as JSON. The examples are the README's own, run line by line.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::path::{Path, PathBuf};

use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::fresh_database;
use hive_tests::procs::grpcurl;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The lines of the README's grpcurl example block.
fn readme_examples() -> Vec<String> {
    let readme = std::fs::read_to_string(workspace().join("README.md")).unwrap();
    let after_marker = readme.split("<!-- grpcurl-examples").nth(1).expect("README has the grpcurl-examples marker");
    let block = after_marker.split("```sh").nth(1).unwrap().split("```").next().unwrap();
    block.lines().map(str::trim).filter(|line| line.starts_with("grpcurl ")).map(str::to_owned).collect()
}

struct Run {
    code: i32,
    stdout: String,
    stderr: String,
}

async fn sh(line: &str, grpcurl: &Path, addr: &str) -> Run {
    let line = line.replacen("grpcurl", &grpcurl.display().to_string(), 1).replace("localhost:50051", addr);
    let output = tokio::process::Command::new("sh")
        .args(["-c", &line])
        .env("HIVE_TOKEN", hive_tests::auth::admin_token())
        .output()
        .await
        .unwrap();
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_readme_grpcurl_examples_work_against_a_live_coordinator() {
    let grpcurl = grpcurl();
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let addr = coordinator.addr.to_string();

    let examples = readme_examples();
    assert_eq!(examples.len(), 6, "{examples:#?}");
    let mut outputs = Vec::new();
    for line in &examples {
        let run = sh(line, &grpcurl, &addr).await;
        assert_eq!(run.code, 0, "`{line}` failed: {}", run.stderr);
        outputs.push(run.stdout);
    }
    for service in [
        "hive.v1.AdminService",
        "hive.v1.WorkerService",
        "grpc.health.v1.Health",
        "grpc.reflection.v1alpha.ServerReflection",
    ] {
        assert!(outputs[0].contains(service), "list shows {service}: {}", outputs[0]);
    }
    assert!(outputs[1].contains("rpc SubmitTasks"), "describe: {}", outputs[1]);
    assert!(outputs[2].contains("SERVING"), "health: {}", outputs[2]);
    let submitted: serde_json::Value = serde_json::from_str(&outputs[3]).unwrap();
    let task_id = submitted["taskIds"][0].as_str().expect("SubmitTasks returns the task id").to_owned();
    assert!(outputs[4].contains(&task_id), "ListTasks shows the task: {}", outputs[4]);
    assert!(outputs[5].contains("\"ready\": \"1\""), "GetStats counts it: {}", outputs[5]);

    // Read the task back: status, input as JSON.
    let get = format!(
        "grpcurl -plaintext -H \"authorization: Bearer $HIVE_TOKEN\" -d '{{\"task_id\": \"{task_id}\"}}' localhost:50051 hive.v1.AdminService/GetTask"
    );
    let run = sh(&get, &grpcurl, &addr).await;
    assert_eq!(run.code, 0, "{}", run.stderr);
    let task: serde_json::Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(task["task"]["status"], "TASK_STATUS_READY");
    assert_eq!(task["task"]["input"], serde_json::json!({"n": 1}));
    assert_eq!(task["task"]["swarm"], "demo");

    // A bad request: a clear code and message naming the field.
    let bad = r#"grpcurl -plaintext -H "authorization: Bearer $HIVE_TOKEN" -d '{"swarm": "demo", "tasks": [{"agent": "", "prompt": "x"}]}' localhost:50051 hive.v1.AdminService/SubmitTasks"#;
    let run = sh(bad, &grpcurl, &addr).await;
    assert_ne!(run.code, 0);
    assert!(
        run.stderr.contains("InvalidArgument") && run.stderr.contains("tasks[0].agent: must not be empty"),
        "{}",
        run.stderr
    );

    // Without a token: a clear refusal, and nothing submitted.
    let anonymous = r#"grpcurl -plaintext -d '{"swarm": "demo", "tasks": [{"agent": "echo", "prompt": "x"}]}' localhost:50051 hive.v1.AdminService/SubmitTasks"#;
    let run = sh(anonymous, &grpcurl, &addr).await;
    assert!(run.stderr.contains("Unauthenticated") && run.stderr.contains("no token"), "{}", run.stderr);
    coordinator.stop().await.unwrap();
}
