//! Stored output: bounded per task with a truncation marker, resends stored
//! once and charged to the budget once, readable in order with a cursor.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use bytesize::ByteSize;
use hive_shared::client::AuthChannel;
use hive_shared::pb;
use hive_shared::pb::admin_service_client::AdminServiceClient;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::postgres::{TestDb, fresh_database};

fn chunk(assignment: &pb::Assignment, seq: u64, data: Vec<u8>) -> pb::LogChunk {
    pb::LogChunk {
        task_id: assignment.task_id.clone(),
        attempt_id: assignment.attempt_id.clone(),
        stream: 1,
        data,
        seq,
    }
}

/// A coordinator whose tasks may each store 1,024 bytes of output, and an admin client.
async fn with_small_budget() -> (TestDb, TestCoordinator, AdminServiceClient<AuthChannel>) {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.limits.max_log_size_per_task = ByteSize::b(1024);
    let coordinator = TestCoordinator::start(config).await;
    let admin = coordinator.admin_client().await;
    (db, coordinator, admin)
}

/// Sends one batch; (accepted, rejected).
async fn append(fake: &mut FakeWorker, chunks: Vec<pb::LogChunk>) -> (u64, u64) {
    let summary = fake
        .client
        .append_logs(tokio_stream::iter([pb::AppendLogsRequest { chunks, worker_id: fake.id.clone() }]))
        .await
        .unwrap()
        .into_inner();
    (summary.accepted_chunks, summary.rejected_chunks)
}

/// A page of a task's stored output.
async fn stored(
    admin: &mut AdminServiceClient<AuthChannel>,
    request: pb::GetTaskLogsRequest,
) -> pb::GetTaskLogsResponse {
    admin.get_task_logs(request).await.unwrap().into_inner()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_per_task_behind_a_marker_and_resends_are_stored_once() {
    let (_db, coordinator, mut admin) = with_small_budget().await;

    let tasks =
        (0..2).map(|_| pb::TaskSpec { agent: "noop".into(), prompt: "p".into(), ..Default::default() }).collect();
    admin.submit_tasks(pb::SubmitTasksRequest { swarm: "logs".into(), tasks, ..Default::default() }).await.unwrap();
    let mut fake = FakeWorker::register(&coordinator, "w", &["noop"], 2).await;
    let assignments = fake.claim(2, Duration::ZERO).await;
    let (capped, resent) = (&assignments[0], &assignments[1]);

    let batch =
        vec![chunk(capped, 0, vec![b'a'; 600]), chunk(capped, 1, vec![b'b'; 600]), chunk(capped, 2, vec![b'c'; 600])];
    assert_eq!(append(&mut fake, batch).await, (3, 0));

    let first = pb::GetTaskLogsRequest { task_id: capped.task_id.clone(), limit: 2, ..Default::default() };
    let page = stored(&mut admin, first).await;
    assert!(page.more && page.truncated);
    let next =
        pb::GetTaskLogsRequest { task_id: capped.task_id.clone(), cursor: page.next_cursor, ..Default::default() };
    let rest = stored(&mut admin, next).await;
    assert!(!rest.more);
    let chunks: Vec<pb::LogChunk> = page.chunks.into_iter().chain(rest.chunks).collect();
    let agent_bytes: Vec<u8> =
        chunks.iter().filter(|c| c.stream() == pb::LogStream::Stdout).flat_map(|c| c.data.clone()).collect();
    assert_eq!(agent_bytes.len(), 1024, "exactly the budget is stored");
    assert_eq!(agent_bytes[..600], [b'a'; 600]);
    assert_eq!(agent_bytes[600..], [b'b'; 424]);
    let marker = chunks.last().unwrap();
    assert_eq!(marker.stream(), pb::LogStream::Hive);
    assert!(String::from_utf8_lossy(&marker.data).contains("output truncated"), "{marker:?}");

    for _ in 0..2 {
        append(&mut fake, vec![chunk(resent, 0, b"once\n".to_vec())]).await;
    }
    let once =
        stored(&mut admin, pb::GetTaskLogsRequest { task_id: resent.task_id.clone(), ..Default::default() }).await;
    assert_eq!(once.chunks.len(), 1);
    assert_eq!(once.chunks[0].data, b"once\n");
    assert!(!once.truncated);
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resent_chunk_is_charged_to_the_budget_once() {
    let (_db, coordinator, mut admin) = with_small_budget().await;
    let tasks = vec![pb::TaskSpec { agent: "noop".into(), prompt: "p".into(), ..Default::default() }];
    admin.submit_tasks(pb::SubmitTasksRequest { swarm: "resends".into(), tasks, ..Default::default() }).await.unwrap();
    let mut fake = FakeWorker::register(&coordinator, "w", &["noop"], 1).await;
    let assignment = &fake.claim(1, Duration::ZERO).await[0];

    // 600 bytes sent three times (twice in one batch, once in the next, as a
    // worker retrying a batch whose reply it lost would), then 400 more:
    // 1,000 bytes of output, under the 1,024-byte budget.
    let batches = [
        vec![chunk(assignment, 0, vec![b'a'; 600]), chunk(assignment, 0, vec![b'a'; 600])],
        vec![chunk(assignment, 0, vec![b'a'; 600]), chunk(assignment, 1, vec![b'b'; 400])],
    ];
    for batch in batches {
        assert_eq!(append(&mut fake, batch).await, (2, 0));
    }
    let request = pb::GetTaskLogsRequest { task_id: assignment.task_id.clone(), ..Default::default() };
    let output = stored(&mut admin, request).await;
    assert!(!output.truncated, "1,000 bytes fit the budget; resends must not count again");
    let bytes: Vec<u8> = output.chunks.iter().flat_map(|c| c.data.clone()).collect();
    assert_eq!(bytes.len(), 1000);
    assert_eq!(bytes[..600], [b'a'; 600]);
    assert_eq!(bytes[600..], [b'b'; 400]);
    coordinator.stop().await.unwrap();
}
