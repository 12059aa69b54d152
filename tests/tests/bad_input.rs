//! Bad input gets a clear error naming what is wrong, changes nothing, and
//! never panics: task files, oversized payloads, bad ids, states and
//! nonsense values (no slots, negative waits, unknown enum values) over gRPC,
//! bad config files.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use hive_shared::convert::duration;
use hive_shared::ids::{AttemptId, TaskId, WorkerId};
use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::postgres::{TestDb, count, fresh_database};
use hive_tests::procs::{binary, hivectl_output};
use tonic::Code;

async fn nothing_queued(db: &TestDb) {
    assert_eq!(count(&db.pool, "select count(*) from tasks").await, 0, "no task may be queued");
    assert_eq!(count(&db.pool, "select count(*) from swarms").await, 0, "no swarm may be recorded");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_task_files_are_refused_with_line_and_field_and_submit_nothing() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        ("malformed.yaml", "swarm: s\ntasks:\n  - agent: \"echo\n    prompt: x\n", &["line 3"][..]),
        (
            "flow-in-scalar.yaml",
            "swarm: s\ntasks:\n  - agent: [echo\n    prompt: x\n",
            &["tasks[0].agent", "line 3"][..],
        ),
        ("unknown-field.yaml", "swarm: s\ntasks:\n  - agent: echo\n    promtp: x\n", &["promtp", "line 4"][..]),
        ("wrong-type.yaml", "swarm: s\ntasks:\n  - agent: echo\n    priority: urgent\n", &["priority", "line 4"][..]),
        (
            "duplicate-ids.yaml",
            "swarm: s\ntasks:\n  - id: a\n    agent: echo\n  - id: a\n    agent: echo\n",
            &["tasks[1].id (line 5): duplicate id `a`, first used by tasks[0]"][..],
        ),
        (
            "empty-agent.yaml",
            "swarm: s\ntasks:\n  - agent: \"\"\n    prompt: x\n",
            &["tasks[0].agent: must not be empty"][..],
        ),
        ("no-tasks.yaml", "swarm: s\ntasks: []\n", &["the file has no tasks"][..]),
    ];
    for (name, text, expected) in cases {
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let output = hivectl_output(&coordinator.url, &["submit", path.to_str().unwrap()]).await;
        assert_eq!(output.status.code(), Some(1), "{name}: {}", output.stderr);
        assert!(output.stderr.contains(name), "{name}: the error names the file: {}", output.stderr);
        for needle in expected {
            assert!(output.stderr.contains(needle), "{name}: expected `{needle}` in: {}", output.stderr);
        }
    }
    let missing = hivectl_output(&coordinator.url, &["submit", "/nonexistent/tasks.yaml"]).await;
    assert!(missing.stderr.contains("cannot read"), "{}", missing.stderr);
    nothing_queued(&db).await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_payloads_are_refused_and_change_nothing() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await.max_encoding_message_size(64 << 20);

    let big_prompt = "x".repeat(1024 * 1024 + 1);
    let task = pb::TaskSpec { agent: "echo".into(), prompt: big_prompt, ..Default::default() };
    let err = admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "big".into(), tasks: vec![task], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert_eq!(err.message(), "tasks[0].prompt: 1048577 bytes; the limit is 1048576");

    // Over the message limit (16 MiB): refused before it is decoded.
    let tasks =
        (0..20).map(|_| pb::TaskSpec { agent: "echo".into(), prompt: "y".repeat(1024 * 1024), ..Default::default() });
    let err = admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "huge".into(), tasks: tasks.collect(), ..Default::default() })
        .await
        .unwrap_err();
    assert!(matches!(err.code(), Code::OutOfRange | Code::ResourceExhausted), "{err:?}");
    assert!(err.message().contains("too large"), "{err:?}");

    nothing_queued(&db).await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_name_the_field_the_id_or_the_state() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let mut worker = coordinator.worker_client().await;

    let err = admin.get_task(pb::GetTaskRequest { task_id: "nope".into() }).await.unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "task_id: `nope` is not a valid task id (expected a UUID)")
    );
    let missing = TaskId::new();
    let err = admin.get_task(pb::GetTaskRequest { task_id: missing.to_string() }).await.unwrap_err();
    assert_eq!((err.code(), err.message().to_owned()), (Code::NotFound, format!("task {missing} not found")));

    let tasks = vec![
        pb::TaskSpec { agent: String::new(), prompt: "x".into(), ..Default::default() },
        pb::TaskSpec { agent: "ok".into(), key: "k".into(), max_attempts: 1000, ..Default::default() },
        pb::TaskSpec { agent: "ok".into(), key: "k".into(), ..Default::default() },
    ];
    let err = admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "s".into(), tasks, ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    for needle in
        ["tasks[0].agent: must not be empty", "tasks[1].max_attempts: 1000", "tasks[2].key: duplicate key `k`"]
    {
        assert!(err.message().contains(needle), "{needle} in {}", err.message());
    }
    let err = admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "s".into(), tasks: vec![], ..Default::default() })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "tasks: at least one task is required");
    nothing_queued(&db).await;

    let err = worker
        .register(pb::RegisterRequest {
            worker_id: "w".into(),
            name: "w".into(),
            agents: vec!["a".into()],
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(
        (err.code(), err.message()),
        (Code::InvalidArgument, "worker_id: `w` is not a valid worker id (expected a UUID)")
    );
    let err = worker
        .register(pb::RegisterRequest {
            worker_id: WorkerId::new().to_string(),
            name: "w".into(),
            agents: vec!["has space".into()],
            slots: 1,
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert!(err.message().starts_with("agents[0]: `has space` contains ' '"), "{}", err.message());
    let stranger = WorkerId::new();
    let err = worker
        .claim(pb::ClaimRequest {
            worker_id: stranger.to_string(),
            max_tasks: 1,
            wait: Some(duration(Duration::ZERO)),
            agents: vec![],
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(err.message().contains("is not registered"), "{}", err.message());
    let completion =
        pb::Completion { task_id: TaskId::new().to_string(), attempt_id: "bad".into(), ..Default::default() };
    let err = worker
        .complete(pb::CompleteRequest { worker_id: stranger.to_string(), completions: vec![completion] })
        .await
        .unwrap_err();
    assert_eq!(err.message(), "completions[0].attempt_id: `bad` is not a valid attempt id (expected a UUID)");

    // Cancelling: a queued task can be cancelled once; a second cancel names the state.
    let task = pb::TaskSpec { agent: "echo".into(), prompt: "x".into(), ..Default::default() };
    let submitted = admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "c".into(), tasks: vec![task], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let id = submitted.task_ids[0].clone();
    let cancelled = admin
        .cancel_task(pb::CancelTaskRequest { task_id: id.clone(), reason: String::new() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(cancelled.task.unwrap().status(), pb::TaskStatus::Cancelled);
    let err =
        admin.cancel_task(pb::CancelTaskRequest { task_id: id.clone(), reason: String::new() }).await.unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    assert!(
        err.message()
            .contains("is cancelled: cancel is only possible for unfinished tasks (blocked, ready or running)"),
        "{}",
        err.message()
    );
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn submitting_for_an_agent_no_worker_offers_warns_by_name() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let output = hivectl_output(&coordinator.url, &["submit", "--agent", "nobody-runs-me", "--prompt", "hi"]).await;
    assert!(output.status.success(), "{}", output.stderr);
    assert!(output.stderr.contains("no registered worker offers agent `nobody-runs-me`"), "{}", output.stderr);
    coordinator.stop().await.unwrap();
}

/// Runs `binary --config FILE --check-config` with `text` as the file; returns (exit code, stderr).
async fn check_config(binary_name: &str, dir: &std::path::Path, text: &str) -> (Option<i32>, String) {
    let path = dir.join(format!("{binary_name}.toml"));
    std::fs::write(&path, text).unwrap();
    let output = tokio::process::Command::new(binary(binary_name))
        .args(["--config", path.to_str().unwrap(), "--check-config"])
        .env_remove("DATABASE_URL")
        .output()
        .await
        .unwrap();
    (output.status.code(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test]
async fn bad_config_files_are_reported_with_every_problem_and_no_panic() {
    let dir = tempfile::tempdir().unwrap();
    let cases: [(&str, &str, &[&str]); 6] = [
        ("hive-coordinator", "listen = \"127.0.0.1:0\"\n[leases]\nttl = \"soon\"\n", &["ttl", "soon"]),
        (
            "hive-worker",
            "slots = \"many\"\nclaim_wait = 5\ncolour = \"blue\"\n[agents.a]\ncommand = [\"true\"]\ntimeout = true\n",
            &["key \"slots\"", "key \"claim_wait\"", "key \"agents.a.timeout\"", "unknown field: found `colour`"],
        ),
        (
            "hive-coordinator",
            "[leases]\nttl = 3\nreap_interval = \"often\"\n[tasks]\nmax_attempts = -1\n",
            &["key \"leases.ttl\"", "key \"leases.reap_interval\"", "key \"tasks.max_attempts\""],
        ),
        (
            "hive-coordinator",
            "[database]\nmax_connections = 1\nurl = \"mysql://x\"\n[claims]\nmax_batch = 0\n",
            &["database.url must start with postgres://", "database.max_connections", "claims.max_batch"],
        ),
        ("hive-worker", "slots = 0\n[agents.a]\ncommand = []\nprompt = \"carrier-pigeon\"\n", &["carrier-pigeon"]),
        (
            "hive-worker",
            "slots = 0\n[agents.a]\ncommand = []\n",
            &["slots: 0", "agents.a.command: must name a program"],
        ),
    ];
    for (binary_name, text, expected) in cases {
        let (code, stderr) = check_config(binary_name, dir.path(), text).await;
        assert_eq!(code, Some(1), "{binary_name} exits with an error, not a panic: {stderr}");
        for needle in expected {
            assert!(stderr.contains(needle), "{binary_name}: `{needle}` in {stderr}");
        }
    }
    let (code, stderr) = check_config("hive-worker", dir.path(), "[agents.a]\ncommand = [\"true\"]\n").await;
    assert_eq!(code, Some(0), "a good worker config passes: {stderr}");
}

/// A coordinator with one registered worker, for calls that need a known worker id.
async fn coordinator_and_worker() -> (TestDb, TestCoordinator, FakeWorker) {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let worker = FakeWorker::register(&coordinator, "w", &["a"], 1).await;
    (db, coordinator, worker)
}

/// Asserts a call was refused as INVALID_ARGUMENT with a message starting with `expected`.
fn assert_refused<T: std::fmt::Debug>(result: Result<T, tonic::Status>, expected: &str) {
    let err = result.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().starts_with(expected), "`{expected}` starts {}", err.message());
}

fn negative_second() -> Option<prost_types::Duration> {
    Some(prost_types::Duration { seconds: -1, nanos: 0 })
}

fn registration(slots: u32) -> pb::RegisterRequest {
    pb::RegisterRequest {
        worker_id: WorkerId::new().to_string(),
        name: "w".into(),
        agents: vec!["a".into()],
        slots,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_registering_with_no_slots_is_refused() {
    let (_db, coordinator, mut worker) = coordinator_and_worker().await;
    assert_refused(worker.client.register(registration(0)).await, "slots: must be at least 1");
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_registering_with_more_slots_than_can_be_stored_is_refused() {
    let (_db, coordinator, mut worker) = coordinator_and_worker().await;
    assert_refused(worker.client.register(registration(u32::MAX)).await, "slots: 4294967295 is more than");
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_for_no_tasks_is_refused() {
    let (_db, coordinator, mut worker) = coordinator_and_worker().await;
    let request = pb::ClaimRequest { worker_id: worker.id.clone(), max_tasks: 0, ..Default::default() };
    assert_refused(worker.client.claim(request).await, "max_tasks: must be at least 1");
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_claim_with_a_negative_wait_is_refused() {
    let (_db, coordinator, mut worker) = coordinator_and_worker().await;
    let request =
        pb::ClaimRequest { worker_id: worker.id.clone(), max_tasks: 1, wait: negative_second(), agents: vec![] };
    assert_refused(worker.client.claim(request).await, "wait: must be a positive duration");
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_wait_that_is_negative_is_refused() {
    let (_db, coordinator, _worker) = coordinator_and_worker().await;
    let channel = coordinator.connect(hive_tests::auth::admin_token()).connect().await.unwrap();
    let mut client = pb::worker_service_client::WorkerServiceClient::new(channel);
    let request = pb::AcquireLockRequest {
        task_id: TaskId::new().to_string(),
        attempt_id: AttemptId::new().to_string(),
        key: "k".into(),
        wait: negative_second(),
    };
    assert_refused(client.acquire_lock(request).await, "wait: must be a positive duration");
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failure_of_an_unknown_class_is_refused() {
    let (_db, coordinator, mut worker) = coordinator_and_worker().await;
    let failure = pb::Failure {
        task_id: TaskId::new().to_string(),
        attempt_id: AttemptId::new().to_string(),
        class: 99,
        ..Default::default()
    };
    let request = pb::FailRequest { worker_id: worker.id.clone(), failures: vec![failure] };
    assert_refused(worker.client.fail(request).await, "failures[0].class: 99 is not a failure class");
    coordinator.stop().await.unwrap();
}

/// A completion, by `worker`, of an attempt nobody holds, reporting `usage`.
fn completion_reporting(worker: &FakeWorker, usage: pb::Usage) -> pb::CompleteRequest {
    let completion = pb::Completion {
        task_id: TaskId::new().to_string(),
        attempt_id: AttemptId::new().to_string(),
        usage: Some(usage),
        ..Default::default()
    };
    pb::CompleteRequest { worker_id: worker.id.clone(), completions: vec![completion] }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_with_a_negative_cost_is_refused() {
    let (_db, coordinator, mut worker) = coordinator_and_worker().await;
    let request = completion_reporting(&worker, pb::Usage { cost: -0.5, ..Default::default() });
    assert_refused(worker.client.complete(request).await, "completions[0].usage.cost: -0.5");
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_completion_with_more_tokens_than_can_be_stored_is_refused() {
    let (_db, coordinator, mut worker) = coordinator_and_worker().await;
    let request = completion_reporting(&worker, pb::Usage { input_tokens: u64::MAX, ..Default::default() });
    assert_refused(worker.client.complete(request).await, "completions[0].usage.input_tokens: 18446744073709551615");
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn log_chunks_of_no_known_stream_are_refused() {
    let (_db, coordinator, mut worker) = coordinator_and_worker().await;
    for stream in [0, 7] {
        let chunk = pb::LogChunk {
            task_id: TaskId::new().to_string(),
            attempt_id: AttemptId::new().to_string(),
            stream,
            data: b"x".to_vec(),
            seq: 0,
        };
        let batch = pb::AppendLogsRequest { chunks: vec![chunk], worker_id: worker.id.clone() };
        let expected = format!("chunks[0].stream: {stream} is not a stream");
        assert_refused(worker.client.append_logs(tokio_stream::iter([batch])).await, &expected);
    }
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_with_nonsense_figures_is_refused_naming_the_field() {
    let (_db, coordinator, mut worker) = coordinator_and_worker().await;
    let beat = |free_slots: u32, cpu_percent: f64| pb::HeartbeatRequest {
        worker_id: worker.id.clone(),
        free_slots,
        resources: Some(pb::ResourceUsage { cpu_percent, ..Default::default() }),
        ..Default::default()
    };
    for (request, expected) in [
        (beat(u32::MAX, 1.0), "free_slots: is larger than"),
        (beat(1, f64::NAN), "resources.cpu_percent: must be a percentage"),
        (beat(1, -5.0), "resources.cpu_percent: must be a percentage"),
    ] {
        let mut replies = worker.client.heartbeat(tokio_stream::iter([request])).await.unwrap().into_inner();
        assert_refused(replies.message().await, expected);
    }
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeats_list_of_what_is_unavailable_is_stored_bounded_and_the_beat_counts() {
    let (db, coordinator, mut worker) = coordinator_and_worker().await;
    let mut unavailable: std::collections::HashMap<String, String> =
        (0..100).map(|i| (format!("agent-{i:03}"), "gone".to_owned())).collect();
    unavailable.insert("a".into(), format!("bad\0reason {}", "x".repeat(5000)));
    unavailable.insert("n".repeat(1000), "long name".into());
    let beat = pb::HeartbeatRequest { worker_id: worker.id.clone(), unavailable, ..Default::default() };
    let mut replies = worker.client.heartbeat(tokio_stream::iter([beat])).await.unwrap().into_inner();
    assert!(replies.message().await.unwrap().is_some(), "the beat is answered, not refused");
    let stored: serde_json::Value =
        sqlx::query_scalar("select unavailable from workers").fetch_one(&db.pool).await.unwrap();
    let stored = stored.as_object().unwrap();
    assert_eq!(stored.len(), 64, "at most 64 entries are kept");
    let reason = stored["a"].as_str().unwrap();
    assert!(reason.len() <= 1024 && reason.starts_with("bad\u{FFFD}reason"), "{reason}");
    assert!(stored.keys().all(|name| name.len() <= 128));
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registration_out_of_bounds_is_refused_listing_every_problem() {
    let (db, coordinator, mut worker) = coordinator_and_worker().await;
    let request = pb::RegisterRequest {
        worker_id: uuid::Uuid::nil().to_string(),
        name: "n".repeat(10_000),
        hostname: "h".repeat(1_000),
        agents: (0..300).map(|i| format!("agent-{i}")).collect(),
        labels: (0..40).map(|i| (format!("k{i}"), "v".to_owned())).collect(),
        slots: 1,
        ..Default::default()
    };
    let err = worker.client.register(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    for needle in [
        "worker_id: the nil UUID",
        "name: is 10000 characters",
        "hostname: 1000 characters",
        "agents: offer 1 to 256",
        "labels: 40 labels",
    ] {
        assert!(err.message().contains(needle), "{needle} in {}", err.message());
    }
    assert_refused(worker.client.register(registration(20_000)).await, "slots: 20000 is more than 10000");
    assert_eq!(count(&db.pool, "select count(*) from workers").await, 1, "only the worker registered first");
    coordinator.stop().await.unwrap();
}

/// `SubmitTasksRequest` with its `swarm` (a string) as raw bytes, so a test
/// can send what no well-behaved client would: invalid UTF-8.
#[derive(Clone, PartialEq, prost::Message)]
struct RawSubmit {
    #[prost(bytes = "vec", tag = "1")]
    swarm: Vec<u8>,
}

/// A JSON value nested `depth` lists deep.
fn nested(depth: usize) -> prost_types::Value {
    use prost_types::value::Kind;
    (0..depth).fold(prost_types::Value { kind: Some(Kind::NumberValue(1.0)) }, |inner, _| prost_types::Value {
        kind: Some(Kind::ListValue(prost_types::ListValue { values: vec![inner] })),
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn messages_that_cannot_be_decoded_are_invalid_argument_and_change_nothing() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;

    let channel = coordinator.connect(hive_tests::auth::admin_token()).connect().await.unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let codec = hive_shared::codec::HiveCodec::<RawSubmit, pb::SubmitTasksResponse>::default();
    let path = tonic::codegen::http::uri::PathAndQuery::from_static("/hive.v1.AdminService/SubmitTasks");
    let request = tonic::Request::new(RawSubmit { swarm: vec![b'o', 0xff, 0xfe, b'k'] });
    let err = grpc.unary(request, path, codec).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("could not be decoded") && err.message().contains("UTF-8"), "{}", err.message());

    let mut admin = coordinator.admin_client().await;
    let input = prost_types::Struct { fields: [("deep".to_owned(), nested(200))].into() };
    let task = pb::TaskSpec { agent: "a".into(), prompt: "p".into(), input: Some(input), ..Default::default() };
    let request = pb::SubmitTasksRequest { swarm: "deep".into(), tasks: vec![task], ..Default::default() };
    let err = admin.submit_tasks(request).await.unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument, "{err:?}");
    assert!(err.message().contains("recursion limit"), "{}", err.message());

    nothing_queued(&db).await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_named_with_its_cause_and_without_its_password() {
    let port = hivectl::local_pg::free_port().unwrap();
    let output = tokio::process::Command::new(binary("hive-coordinator"))
        .args(["--listen", "127.0.0.1:0"])
        .env("DATABASE_URL", format!("postgres://hive:hunter2@127.0.0.1:{port}/hive"))
        .env("HIVE_COORDINATOR__DATABASE__CONNECT_TIMEOUT", "1s")
        .env("RUST_BACKTRACE", "0")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(stderr.contains(&format!("cannot connect to PostgreSQL at 127.0.0.1:{port}, database hive")), "{stderr}");
    assert!(stderr.contains("Connection refused"), "the cause is given: {stderr}");
    let everything = format!("{stderr}{}", String::from_utf8_lossy(&output.stdout));
    assert!(!everything.contains("hunter2"), "the password stays secret: {everything}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_file_over_the_message_limit_is_refused_before_anything_is_sent() {
    let dir = tempfile::tempdir().unwrap();
    let prompt = "x".repeat(1_000_000);
    let mut file = String::from("swarm: big\ntasks:\n");
    for _ in 0..17 {
        file.push_str(&format!("  - {{agent: a, prompt: \"{prompt}\"}}\n"));
    }
    let path = dir.path().join("big.yaml");
    std::fs::write(&path, file).unwrap();
    // Nothing listens on this port: had hivectl sent anything, it would say it cannot connect.
    let nowhere = format!("http://127.0.0.1:{}", hivectl::local_pg::free_port().unwrap());
    let output = hivectl_output(&nowhere, &["submit", path.to_str().unwrap()]).await;
    assert!(!output.status.success());
    assert!(
        output.stderr.contains("over the coordinator's message limit of 16.0 MiB")
            && output.stderr.contains("nothing was sent"),
        "{}",
        output.stderr
    );
}
