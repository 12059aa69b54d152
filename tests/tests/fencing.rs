//! Fencing: once an attempt is superseded, everything its worker says about it
//! is refused and changes nothing; the current attempt's outcome is recorded once.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use hive_shared::convert::{json_to_struct, struct_to_json};
use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::postgres::{TestDb, fresh_database};

fn result(value: serde_json::Value) -> Option<prost_types::Struct> {
    let serde_json::Value::Object(object) = value else { panic!("not an object") };
    Some(json_to_struct(object))
}

struct TaskState {
    status: String,
    attempts: i32,
    current_attempt: Option<uuid::Uuid>,
    lease_expires_at: Option<chrono::DateTime<chrono::Utc>>,
    result: Option<serde_json::Value>,
    log_rows: i64,
}

async fn state(db: &TestDb, task_id: &str) -> TaskState {
    let id = uuid::Uuid::parse_str(task_id).unwrap();
    let (status, attempts, current_attempt, lease_expires_at, result): (
        String,
        i32,
        Option<uuid::Uuid>,
        Option<chrono::DateTime<chrono::Utc>>,
        Option<serde_json::Value>,
    ) = sqlx::query_as(
        "select s.status::text, s.attempts, coalesce(s.attempt_id, (select a.id from attempts a where a.task_id = s.task_id order by a.number desc limit 1)), s.lease_expires_at, (select a.result from attempts a where a.task_id = s.task_id and a.number = s.result_attempt) from task_states s where s.task_id = $1",
    )
    .bind(id)
    .fetch_one(&db.pool)
    .await
    .unwrap();
    let log_rows = sqlx::query_scalar("select count(*) from task_logs where task_id = $1")
        .bind(id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    TaskState { status, attempts, current_attempt, lease_expires_at, result, log_rows }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_attempt_is_refused_everywhere_and_changes_nothing() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.leases.ttl = Duration::from_secs(1);
    config.leases.heartbeat_interval = Duration::from_millis(500);
    let coordinator = TestCoordinator::start(config).await;
    let mut admin = coordinator.admin_client().await;
    let task = pb::TaskSpec { agent: "noop".into(), prompt: "p".into(), max_attempts: 5, ..Default::default() };
    let submitted = admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "fence".into(), tasks: vec![task], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let task_id = submitted.task_ids[0].clone();

    // Worker A claims, then goes silent; its lease expires and the reaper requeues the task.
    let mut worker_a = FakeWorker::register(&coordinator, "a", &["noop"], 1).await;
    let first = worker_a.claim(1, Duration::ZERO).await.pop().expect("A claims the task");
    let (mut a, a_id) = (worker_a.client.clone(), worker_a.id.clone());
    assert_eq!(first.attempt, 1);

    // Worker B long-polls and gets the task as soon as A's lease has been reaped.
    let mut worker_b = FakeWorker::register(&coordinator, "b", &["noop"], 1).await;
    let second = worker_b.claim(1, Duration::from_secs(10)).await.pop().expect("B claims the reaped task");
    let (mut b, b_id) = (worker_b.client.clone(), worker_b.id.clone());
    assert_eq!(second.task_id, task_id);
    assert_eq!(second.attempt, 2);
    assert_ne!(second.attempt_id, first.attempt_id);
    let before = state(&db, &task_id).await;
    assert_eq!(before.status, "running");
    assert_eq!(before.current_attempt.unwrap().to_string(), second.attempt_id);

    // A's Complete is refused.
    let completion = pb::Completion {
        task_id: task_id.clone(),
        attempt_id: first.attempt_id.clone(),
        result: result(serde_json::json!({"by": "a"})),
        ..Default::default()
    };
    let acks = a
        .complete(pb::CompleteRequest { worker_id: a_id.clone(), completions: vec![completion] })
        .await
        .unwrap()
        .into_inner()
        .acks;
    assert_eq!(acks[0].status(), pb::AckStatus::LeaseLost);
    assert!(acks[0].message.contains(&first.attempt_id), "{}", acks[0].message);

    // A's Fail is refused.
    let failure = pb::Failure {
        task_id: task_id.clone(),
        attempt_id: first.attempt_id.clone(),
        error: "late".into(),
        class: pb::FailureClass::Permanent.into(),
        ..Default::default()
    };
    let acks =
        a.fail(pb::FailRequest { worker_id: a_id.clone(), failures: vec![failure] }).await.unwrap().into_inner().acks;
    assert_eq!(acks[0].status(), pb::AckStatus::LeaseLost);

    // A's heartbeat for the old attempt does not extend anything and tells A to stop it.
    let beat = pb::HeartbeatRequest {
        worker_id: a_id.clone(),
        attempt_ids: vec![first.attempt_id.clone()],
        free_slots: 0,
        resources: None,
        draining: false,
        unavailable: Default::default(),
        stalled_attempt_ids: vec![first.attempt_id.clone()],
    };
    let mut replies = a.heartbeat(tokio_stream::iter([beat])).await.unwrap().into_inner();
    let reply = replies.message().await.unwrap().expect("a heartbeat reply");
    let Some(pb::worker_command::Command::CancelAttempt(cancel)) = reply.commands[0].command.clone() else {
        panic!("{reply:?}")
    };
    assert_eq!(cancel.attempt_id, first.attempt_id);

    // A's output is refused.
    let chunk = pb::LogChunk {
        task_id: task_id.clone(),
        attempt_id: first.attempt_id.clone(),
        stream: 1,
        data: b"stale".to_vec(),
        seq: 0,
    };
    let summary = a
        .append_logs(tokio_stream::iter([pb::AppendLogsRequest { chunks: vec![chunk], worker_id: a_id.clone() }]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((summary.accepted_chunks, summary.rejected_chunks), (0, 1));

    let after = state(&db, &task_id).await;
    assert_eq!(after.status, "running");
    assert_eq!(after.attempts, 2);
    assert_eq!(after.current_attempt, before.current_attempt);
    assert_eq!(after.lease_expires_at, before.lease_expires_at, "A's heartbeat must not extend B's lease");
    assert_eq!(after.result, None);
    assert_eq!(after.log_rows, 0);

    // The history lists A's lost attempt and B's, still running (held on the task row until it ends).
    let shown = admin.get_task(pb::GetTaskRequest { task_id: task_id.clone() }).await.unwrap().into_inner();
    let history: Vec<(u32, pb::AttemptOutcome, bool)> =
        shown.attempts.iter().map(|a| (a.number, a.outcome(), a.finished_at.is_some())).collect();
    assert_eq!(history, [(1, pb::AttemptOutcome::Lost, true), (2, pb::AttemptOutcome::Running, false)]);
    assert_eq!(shown.attempts[1].id, second.attempt_id);
    assert_eq!(shown.attempts[1].worker_id, b_id);

    // B's completion is recorded once; a resend is acknowledged without a second write.
    let completion = pb::Completion {
        task_id: task_id.clone(),
        attempt_id: second.attempt_id.clone(),
        result: result(serde_json::json!({"by": "b"})),
        ..Default::default()
    };
    let request = pb::CompleteRequest { worker_id: b_id.clone(), completions: vec![completion] };
    let acks = b.complete(request.clone()).await.unwrap().into_inner().acks;
    assert_eq!(acks[0].status(), pb::AckStatus::Recorded);
    let acks = b.complete(request).await.unwrap().into_inner().acks;
    assert_eq!(acks[0].status(), pb::AckStatus::AlreadyRecorded);

    let done = state(&db, &task_id).await;
    assert_eq!(done.status, "succeeded");
    assert_eq!(done.result, Some(serde_json::json!({"by": "b"})));
    let shown = admin.get_task(pb::GetTaskRequest { task_id: task_id.clone() }).await.unwrap().into_inner();
    let outcomes: Vec<pb::AttemptOutcome> = shown.attempts.iter().map(pb::Attempt::outcome).collect();
    assert_eq!(outcomes, [pb::AttemptOutcome::Lost, pb::AttemptOutcome::Succeeded]);
    assert_eq!(struct_to_json(shown.task.unwrap().result.unwrap())["by"], "b");
    coordinator.stop().await.unwrap();
}
