//! Property tests over what reaches the coordinator from the network: task
//! specs from submitters, and results, session ids, usage and errors from
//! agents (through their workers). Whatever the values — NUL and control
//! characters, NaN and infinite numbers, huge counts, nested JSON, durations
//! and times out of range — the coordinator answers without INTERNAL or
//! UNKNOWN and without panicking, and keeps serving.
//!
//! `HIVE_FUZZ_CASES` sets the cases per property (default 64).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use hive_shared::convert::json_to_struct;
use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::postgres::fresh_database;
use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use tonic::Code;

fn cases() -> u32 {
    std::env::var("HIVE_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(64)
}

/// Text as hostile parties write it: any Unicode, NUL, escapes, long runs.
fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        4 => any::<String>(),
        1 => Just("\0".to_owned()),
        1 => "[a-z\\x00\\x1b\\n\\u{202e}]{0,12}",
        1 => (0_usize..5000).prop_map(|n| "\u{1F41D}".repeat(n)),
    ]
}

fn number() -> impl Strategy<Value = f64> {
    prop_oneof![any::<f64>(), Just(f64::NAN), Just(f64::INFINITY), Just(-0.0), Just(1e308)]
}

/// JSON as agents write it, a few levels deep.
fn json() -> impl Strategy<Value = serde_json::Value> {
    let leaf = prop_oneof![
        Just(serde_json::Value::Null),
        any::<bool>().prop_map(serde_json::Value::Bool),
        any::<f64>().prop_filter_map("finite", |n| serde_json::Number::from_f64(n).map(serde_json::Value::Number)),
        text().prop_map(serde_json::Value::String),
    ];
    leaf.prop_recursive(4, 32, 6, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..6).prop_map(serde_json::Value::Array),
            prop::collection::btree_map(text(), inner, 0..6)
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
        ]
    })
}

fn object() -> impl Strategy<Value = Option<prost_types::Struct>> {
    prop::option::of(
        prop::collection::btree_map(text(), json(), 0..5).prop_map(|map| json_to_struct(map.into_iter().collect())),
    )
}

/// A prost `Value` carrying a number JSON cannot hold.
fn with_odd_number(mut object: prost_types::Struct, number: f64) -> prost_types::Struct {
    object.fields.insert("n".into(), prost_types::Value { kind: Some(prost_types::value::Kind::NumberValue(number)) });
    object
}

fn duration() -> impl Strategy<Value = Option<prost_types::Duration>> {
    prop::option::of((any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| prost_types::Duration { seconds, nanos }))
}

fn timestamp() -> impl Strategy<Value = Option<prost_types::Timestamp>> {
    prop::option::of(
        (any::<i64>(), any::<i32>()).prop_map(|(seconds, nanos)| prost_types::Timestamp { seconds, nanos }),
    )
}

fn usage() -> impl Strategy<Value = Option<pb::Usage>> {
    prop::option::of((any::<u64>(), any::<u64>(), number()).prop_map(|(input_tokens, output_tokens, cost)| pb::Usage {
        input_tokens,
        output_tokens,
        cost,
    }))
}

fn task_spec() -> impl Strategy<Value = pb::TaskSpec> {
    let names = (text(), prop_oneof![Just("a".to_owned()), text()], text());
    let numbers = (any::<i32>(), any::<u32>(), number(), duration(), duration(), duration(), timestamp());
    let lists = (
        prop::collection::vec(text(), 0..3),
        prop::collection::btree_map(text(), text(), 0..3),
        prop::collection::vec(text(), 0..3),
        prop::option::of((text(), text(), any::<u32>())),
        any::<i32>(),
        prop::collection::vec(text(), 0..3),
    );
    let keys = prop::collection::hash_map(text(), any::<u32>(), 0..3);
    (names, object(), numbers, lists, keys).prop_map(
        |(
            (key, agent, prompt),
            input,
            (priority, max_attempts, backoff_multiplier, timeout, backoff_initial, backoff_max, run_after),
            (depends_on, labels, locks, validate, session, fallback_agents),
            concurrency,
        )| pb::TaskSpec {
            key,
            agent,
            prompt,
            input,
            priority,
            max_attempts,
            timeout,
            backoff_initial,
            backoff_max,
            backoff_multiplier,
            run_after,
            depends_on,
            labels: labels.into_iter().collect(),
            locks,
            validate: validate.map(|(agent, prompt, max_rounds)| pb::ValidateSpec { agent, prompt, max_rounds }),
            session,
            fallback_agents,
            concurrency,
        },
    )
}

fn refused_cleanly(result: Result<impl std::fmt::Debug, tonic::Status>, what: &str) -> Result<(), TestCaseError> {
    if let Err(status) = &result {
        prop_assert!(
            !matches!(status.code(), Code::Internal | Code::Unknown),
            "{what} answered {:?}: {}",
            status.code(),
            status.message()
        );
    }
    Ok(())
}

#[test]
fn no_submission_gets_internal_or_unknown() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (db, coordinator) = runtime.block_on(async {
        let db = fresh_database().await;
        let coordinator = TestCoordinator::start(test_config(&db)).await;
        (db, coordinator)
    });
    let admin = runtime.block_on(coordinator.admin_client());
    let strategy = (text(), prop::collection::vec(task_spec(), 1..4), text(), number());
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    runner
        .run(&strategy, |(swarm, tasks, idempotency_key, budget)| {
            let request = pb::SubmitTasksRequest { swarm, tasks, idempotency_key, budget };
            refused_cleanly(runtime.block_on(admin.clone().submit_tasks(request)), "SubmitTasks")
        })
        .unwrap();
    runtime.block_on(async {
        coordinator.stop().await.unwrap();
        drop(db);
    });
}

#[test]
fn no_agent_outcome_gets_internal_or_unknown() {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let (db, coordinator, worker) = runtime.block_on(async {
        let db = fresh_database().await;
        let coordinator = TestCoordinator::start(test_config(&db)).await;
        let worker = FakeWorker::register(&coordinator, "fuzz", &["a"], 1).await;
        (db, coordinator, worker)
    });
    let admin = runtime.block_on(coordinator.admin_client());
    let worker = tokio::sync::Mutex::new(worker);
    let outcome = (object(), text(), usage(), text(), number(), any::<bool>(), any::<i32>());
    let mut runner = TestRunner::new(Config { cases: cases(), failure_persistence: None, ..Config::default() });
    runner
        .run(&outcome, |(result, session_id, usage, error, odd, succeed, class)| {
            runtime.block_on(async {
                let mut worker = worker.lock().await;
                let task = pb::TaskSpec { agent: "a".into(), prompt: "p".into(), ..Default::default() };
                let request = pb::SubmitTasksRequest { swarm: "fuzz".into(), tasks: vec![task], ..Default::default() };
                admin.clone().submit_tasks(request).await.unwrap();
                let claimed = worker.claim(1, Duration::from_secs(5)).await;
                prop_assert_eq!(claimed.len(), 1);
                let (task_id, attempt_id) = (claimed[0].task_id.clone(), claimed[0].attempt_id.clone());
                let worker_id = worker.id.clone();
                if succeed {
                    let result = result.map(|object| with_odd_number(object, odd));
                    let completion = pb::Completion { task_id, attempt_id, result, session_id, usage, probe: false };
                    let request = pb::CompleteRequest { worker_id, completions: vec![completion] };
                    refused_cleanly(worker.client.complete(request).await, "Complete")
                } else {
                    let failure =
                        pb::Failure { task_id, attempt_id, class, error, session_id, usage, ..Default::default() };
                    let request = pb::FailRequest { worker_id, failures: vec![failure] };
                    refused_cleanly(worker.client.fail(request).await, "Fail")
                }
            })?;
            // A refused outcome leaves its task running; the next case claims a fresh one.
            Ok(())
        })
        .unwrap();
    runtime.block_on(async {
        coordinator.stop().await.unwrap();
        drop(db);
    });
}
