//! Stored output: bounded per task with a truncation marker, resends stored
//! once, readable in order with a cursor.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use bytesize::ByteSize;
use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::postgres::fresh_database;

fn chunk(assignment: &pb::Assignment, seq: u64, data: Vec<u8>) -> pb::LogChunk {
    pb::LogChunk {
        task_id: assignment.task_id.clone(),
        attempt_id: assignment.attempt_id.clone(),
        stream: 1,
        data,
        seq,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn output_is_capped_per_task_behind_a_marker_and_resends_are_stored_once() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.limits.max_log_size_per_task = ByteSize::b(1024);
    let coordinator = TestCoordinator::start(config).await;
    let mut admin = coordinator.admin_client().await;

    let tasks =
        (0..2).map(|_| pb::TaskSpec { agent: "noop".into(), prompt: "p".into(), ..Default::default() }).collect();
    admin.submit_tasks(pb::SubmitTasksRequest { swarm: "logs".into(), tasks, ..Default::default() }).await.unwrap();
    let mut fake = FakeWorker::register(&coordinator, "w", &["noop"], 2).await;
    let assignments = fake.claim(2, Duration::ZERO).await;
    let (capped, resent) = (&assignments[0], &assignments[1]);

    let batch =
        vec![chunk(capped, 0, vec![b'a'; 600]), chunk(capped, 1, vec![b'b'; 600]), chunk(capped, 2, vec![b'c'; 600])];
    let summary = fake
        .client
        .append_logs(tokio_stream::iter([pb::AppendLogsRequest { chunks: batch }]))
        .await
        .unwrap()
        .into_inner();
    assert_eq!((summary.accepted_chunks, summary.rejected_chunks), (3, 0));

    let page = admin
        .get_task_logs(pb::GetTaskLogsRequest { task_id: capped.task_id.clone(), limit: 2, ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert!(page.more && page.truncated);
    let rest = admin
        .get_task_logs(pb::GetTaskLogsRequest {
            task_id: capped.task_id.clone(),
            cursor: page.next_cursor,
            ..Default::default()
        })
        .await
        .unwrap()
        .into_inner();
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
        let again = vec![chunk(resent, 0, b"once\n".to_vec())];
        fake.client.append_logs(tokio_stream::iter([pb::AppendLogsRequest { chunks: again }])).await.unwrap();
    }
    let stored = admin
        .get_task_logs(pb::GetTaskLogsRequest { task_id: resent.task_id.clone(), ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    assert_eq!(stored.chunks.len(), 1);
    assert_eq!(stored.chunks[0].data, b"once\n");
    assert!(!stored.truncated);
    coordinator.stop().await.unwrap();
}
