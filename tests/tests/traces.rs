//! OpenTelemetry traces end to end: an in-process OTLP collector receives
//! the spans of a real coordinator, real worker binaries and a real agent
//! process (`traced-agent`, which joins through `TRACEPARENT`), and they
//! form one trace per task with the right parents: the task's root, its
//! waits in the queue, each attempt on its worker (the first fails, the
//! retry runs on whichever worker claims it), each agent process, the agent's
//! own span, and the coordinator's handling of each report. A collector that
//! does not answer slows nothing down.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::collections::HashMap;
use std::time::{Duration, Instant};

use hive_shared::pb;
use hive_shared::traces::ExportConfig;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::otlp::{Collector, Received};
use hive_tests::postgres::{fresh_database, wait_all_finished};
use hive_tests::procs::{binary, start_worker_with_env};
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};

fn export(endpoint: &str, service: &str, more: &[(&str, &str)]) -> ExportConfig {
    let vars = [("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint), ("OTEL_BSP_SCHEDULE_DELAY", "50")];
    let vars = vars.iter().chain(more).map(|(key, value)| ((*key).to_owned(), (*value).to_owned()));
    ExportConfig::from_env(service, vars).unwrap().unwrap()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|byte| format!("{byte:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coordinator_worker_and_agent_spans_form_one_trace_per_task_with_the_right_parents() {
    let db = fresh_database().await;
    let collector = Collector::start().await;
    let mut config = test_config(&db);
    config.traces = Some(export(&collector.endpoint(), "hive-coordinator", &[]));
    let coordinator = TestCoordinator::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::command([binary("traced-agent").display().to_string()])
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint())
        .env("OTEL_BSP_SCHEDULE_DELAY", "50")
        .env("FAIL_ONCE", dir.path().join("failed-once").display().to_string());
    let config = WorkerSetup::new().agent("traced", agent).write(dir.path(), "worker");
    let env = [("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint()), ("OTEL_BSP_SCHEDULE_DELAY", "50".into())];
    let env: Vec<(&str, &str)> = env.iter().map(|(key, value)| (*key, value.as_str())).collect();
    let workers = [
        start_worker_with_env(&coordinator.url, &config, "one", dir.path(), &env),
        start_worker_with_env(&coordinator.url, &config, "two", dir.path(), &env),
    ];
    let task = pb::TaskSpec {
        agent: "traced".into(),
        prompt: "p".into(),
        max_attempts: 3,
        backoff_initial: Some(hive_shared::convert::duration(Duration::from_millis(100))),
        ..Default::default()
    };
    let request = pb::SubmitTasksRequest { swarm: "traced".into(), tasks: vec![task], ..Default::default() };
    let submitted = coordinator.admin_client().await.submit_tasks(request).await.unwrap().into_inner();
    wait_all_finished(&db.pool, Duration::from_secs(60)).await;
    let task_id: uuid::Uuid = submitted.task_ids[0].parse().unwrap();
    let trace = hex(task_id.as_bytes());

    let complete = |spans: &[Received]| {
        let count = |name: &str| spans.iter().filter(|kept| kept.span.name == name).count();
        count("hive.task") == 1
            && count("hive.queued") == 2
            && count("hive.attempt") == 2
            && count("hive.agent") == 2
            && count("agent.work") == 2
            && count("hive.fail") == 1
            && count("hive.complete") == 1
    };
    eventually("every span of the task's trace", Duration::from_secs(20), || {
        let done = complete(&collector.spans());
        async move { done }
    })
    .await;
    let spans = collector.spans();
    assert!(complete(&spans), "no span came twice: {spans:#?}");
    assert!(spans.iter().all(|kept| hex(&kept.span.trace_id) == trace), "one trace, named by the task id: {spans:#?}");
    let by_id: HashMap<Vec<u8>, &Received> = spans.iter().map(|kept| (kept.span.span_id.clone(), kept)).collect();
    let parent = |kept: &Received| by_id.get(&kept.span.parent_span_id).map(|parent| parent.span.name.as_str());
    for kept in &spans {
        let (expected_parent, service) = match kept.span.name.as_str() {
            "hive.task" => (None, "hive-coordinator"),
            "hive.queued" => (Some("hive.task"), "hive-coordinator"),
            "hive.attempt" => (Some("hive.task"), "hive-worker"),
            "hive.agent" => (Some("hive.attempt"), "hive-worker"),
            "agent.work" => (Some("hive.agent"), "traced-agent"),
            "hive.fail" | "hive.complete" => (Some("hive.attempt"), "hive-coordinator"),
            other => panic!("unexpected span {other}"),
        };
        assert_eq!(parent(kept), expected_parent, "{}'s parent", kept.span.name);
        assert_eq!(kept.service, service, "{} comes from {service}", kept.span.name);
        assert!(kept.span.start_time_unix_nano <= kept.span.end_time_unix_nano);
    }
    assert!(spans.iter().find(|kept| kept.span.name == "hive.task").unwrap().span.parent_span_id.is_empty());
    // The failed attempt's spans say so; the report of each attempt is a child of that attempt.
    let failed = spans.iter().find(|kept| kept.span.name == "hive.fail").unwrap();
    let failed_attempt = by_id[&failed.span.parent_span_id];
    assert_eq!(failed_attempt.span.status.as_ref().unwrap().code, 2, "an error status: {failed_attempt:?}");
    let completed = spans.iter().find(|kept| kept.span.name == "hive.complete").unwrap();
    assert_ne!(completed.span.parent_span_id, failed.span.parent_span_id, "each report is its own attempt's child");
    for worker in workers {
        worker.terminate().await;
    }
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_collector_that_does_not_answer_slows_nothing_down() {
    let db = fresh_database().await;
    // Accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let endpoint = format!("http://{}", silent.local_addr().unwrap());
    let mut config = test_config(&db);
    // A small queue, so spans are dropped while the export hangs, and a short export timeout.
    let settings = [("OTEL_BSP_MAX_QUEUE_SIZE", "4"), ("OTEL_EXPORTER_OTLP_TIMEOUT", "2000")];
    config.traces = Some(export(&endpoint, "hive-coordinator", &settings));
    let coordinator = TestCoordinator::start(config).await;
    let mut admin = coordinator.admin_client().await;
    let started = Instant::now();
    for round in 0..20 {
        let task = pb::TaskSpec { agent: "a".into(), prompt: round.to_string(), ..Default::default() };
        let request = pb::SubmitTasksRequest { swarm: format!("s{round}"), tasks: vec![task], ..Default::default() };
        admin.submit_tasks(request).await.unwrap();
    }
    // Each export waits out its 2 s timeout; a submission never waits on one
    // (twenty that did would take 40 s), and spans that find the queue full are dropped.
    assert!(started.elapsed() < Duration::from_secs(10), "20 submissions took {:?}", started.elapsed());
    drop(silent);
    coordinator.stop().await.unwrap();
}
