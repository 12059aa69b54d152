//! Saved sessions over real gRPC: only the worker holding a task's current
//! attempt may save or load its session; an oversized or malformed save is
//! refused naming the field and changes nothing; a retry is handed the
//! saved session to resume; old sessions of finished tasks are pruned.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::postgres::fresh_database;
use hive_tests::wait::eventually;
use tonic::Code;

fn save(worker: &FakeWorker, assignment: &pb::Assignment, session: &str, state: &[u8]) -> pb::SaveSessionRequest {
    pb::SaveSessionRequest {
        worker_id: worker.id.clone(),
        task_id: assignment.task_id.clone(),
        attempt_id: assignment.attempt_id.clone(),
        session_id: session.into(),
        state: state.to_vec(),
    }
}

fn load(worker: &FakeWorker, assignment: &pb::Assignment) -> pb::LoadSessionRequest {
    pb::LoadSessionRequest {
        worker_id: worker.id.clone(),
        task_id: assignment.task_id.clone(),
        attempt_id: assignment.attempt_id.clone(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_the_current_attempt_saves_and_loads_and_its_retry_resumes_the_saved_session() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.sessions.max_size = bytesize::ByteSize::kib(1);
    config.sessions.retention = Duration::from_secs(1);
    let coordinator = TestCoordinator::start(config).await;
    let mut admin = coordinator.admin_client().await;
    let task = pb::TaskSpec {
        agent: "claude".into(),
        prompt: "p".into(),
        session: pb::SessionPolicy::Resume.into(),
        backoff_initial: Some(hive_shared::convert::duration(Duration::ZERO)),
        ..Default::default()
    };
    let request = pb::SubmitTasksRequest { swarm: "s".into(), tasks: vec![task], ..Default::default() };
    admin.submit_tasks(request).await.unwrap();
    let mut worker = FakeWorker::register(&coordinator, "holder", &["claude"], 1).await;
    let mut other = FakeWorker::register(&coordinator, "other", &["claude"], 1).await;
    let first = worker.claim(1, Duration::from_secs(5)).await.remove(0);
    assert!(first.keep_session && first.resume_session.is_empty(), "a first attempt saves and resumes nothing");

    let nothing = worker.client.load_session(load(&worker, &first)).await.unwrap().into_inner();
    assert!(!nothing.found);
    let refusals = [
        (save(&other, &first, "s-1", b"x"), Code::Aborted, "not the current attempt"),
        (save(&worker, &first, "", b"x"), Code::InvalidArgument, "session_id"),
        (
            save(&worker, &first, "s-1", &[7; 1025]),
            Code::InvalidArgument,
            "state: 1.0 KiB is larger than sessions.max_size",
        ),
    ];
    for (request, code, message) in refusals {
        let status = worker.client.save_session(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{status:?}");
        assert!(status.message().contains(message), "{} lacks {message}", status.message());
    }
    let saved: i64 = sqlx::query_scalar("select count(*) from task_sessions").fetch_one(&db.pool).await.unwrap();
    assert_eq!(saved, 0, "refused saves change nothing");
    let status = other.client.load_session(load(&other, &first)).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "another worker cannot read the session");

    worker.client.save_session(save(&worker, &first, "s-1", b"first transcript")).await.unwrap();
    worker.client.save_session(save(&worker, &first, "s-2", b"longer transcript")).await.unwrap();
    let failure = pb::Failure {
        task_id: first.task_id.clone(),
        attempt_id: first.attempt_id.clone(),
        class: pb::FailureClass::Transient.into(),
        error: "killed".into(),
        ..Default::default()
    };
    worker.client.fail(pb::FailRequest { worker_id: worker.id.clone(), failures: vec![failure] }).await.unwrap();
    let status = worker.client.save_session(save(&worker, &first, "s-3", b"late")).await.unwrap_err();
    assert_eq!(status.code(), Code::Aborted, "an ended attempt saves nothing");

    let retry = other.claim(1, Duration::from_secs(5)).await.remove(0);
    assert_eq!(retry.resume_session, "s-2", "the retry resumes the newest saved session");
    let loaded = other.client.load_session(load(&other, &retry)).await.unwrap().into_inner();
    assert_eq!((loaded.session_id.as_str(), loaded.state.as_slice()), ("s-2", &b"longer transcript"[..]));

    let done =
        pb::Completion { task_id: retry.task_id.clone(), attempt_id: retry.attempt_id.clone(), ..Default::default() };
    other.client.complete(pb::CompleteRequest { worker_id: other.id.clone(), completions: vec![done] }).await.unwrap();
    eventually("the finished task's session to be pruned after the retention", Duration::from_secs(10), || async {
        sqlx::query_scalar::<_, i64>("select count(*) from task_sessions").fetch_one(&db.pool).await.unwrap() == 0
    })
    .await;
    coordinator.stop().await.unwrap();
}
