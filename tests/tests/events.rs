//! The event log over real gRPC, on two coordinators sharing a real
//! PostgreSQL, and through the real `hivectl watch`: task events arrive in
//! order, numbered with no gaps; a watch resumed from any number sees the
//! rest exactly once, even across a coordinator restart; filters pick by
//! swarm, task, worker and kind; swarm and worker events are derived once;
//! a resume point that retention removed is refused with OUT_OF_RANGE, as
//! is a bad filter with INVALID_ARGUMENT naming the field.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::collections::HashMap;
use std::process::Stdio;
use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::postgres::fresh_database;
use hive_tests::procs::binary;
use tokio::io::{AsyncBufReadExt, BufReader};
use tonic::Code;

/// An open watch and the position its first message gave.
struct Watch {
    stream: tonic::Streaming<pb::WatchResponse>,
    start: u64,
}

async fn watch(coordinator: &TestCoordinator, request: pb::WatchRequest) -> Watch {
    let mut stream = coordinator.admin_client().await.watch(request).await.unwrap().into_inner();
    let first = stream.message().await.unwrap().expect("a first message");
    assert!(first.events.is_empty(), "the first message only says where the watch starts");
    Watch { stream, start: first.position }
}

async fn watch_after(coordinator: &TestCoordinator, after: Option<u64>) -> Watch {
    watch(coordinator, pb::WatchRequest { after, ..Default::default() }).await
}

/// Reads events until `done` holds for those read, for at most ten seconds.
async fn read_until(watch: &mut Watch, done: impl Fn(&[pb::Event]) -> bool) -> Vec<pb::Event> {
    let mut events = Vec::new();
    let reading = async {
        while !done(&events) {
            let page = watch.stream.message().await.unwrap().expect("the watch goes on");
            events.extend(page.events);
        }
    };
    tokio::time::timeout(Duration::from_secs(10), reading)
        .await
        .unwrap_or_else(|_| panic!("timed out; read so far: {:?}", kinds(&events)));
    events
}

fn kinds(events: &[pb::Event]) -> Vec<&str> {
    events.iter().map(|event| event.kind.as_str()).collect()
}

fn count(events: &[pb::Event], kind: &str) -> usize {
    events.iter().filter(|event| event.kind == kind).count()
}

async fn submit(coordinator: &TestCoordinator, swarm: &str, n: usize, budget: f64) -> pb::SubmitTasksResponse {
    let tasks = (0..n).map(|i| pb::TaskSpec {
        agent: "a".into(),
        prompt: i.to_string(),
        max_attempts: 2,
        ..Default::default()
    });
    let request = pb::SubmitTasksRequest { swarm: swarm.into(), tasks: tasks.collect(), budget, ..Default::default() };
    coordinator.admin_client().await.submit_tasks(request).await.unwrap().into_inner()
}

async fn complete(worker: &mut FakeWorker, assignments: &[pb::Assignment], cost: f64) {
    let completions = assignments
        .iter()
        .map(|assignment| pb::Completion {
            task_id: assignment.task_id.clone(),
            attempt_id: assignment.attempt_id.clone(),
            usage: Some(pb::Usage { cost, ..Default::default() }),
            ..Default::default()
        })
        .collect();
    worker.client.complete(pb::CompleteRequest { worker_id: worker.id.clone(), completions }).await.unwrap();
}

async fn fail(worker: &mut FakeWorker, assignment: &pb::Assignment, class: pb::FailureClass) {
    let failure = pb::Failure {
        task_id: assignment.task_id.clone(),
        attempt_id: assignment.attempt_id.clone(),
        class: class.into(),
        error: "it broke".into(),
        ..Default::default()
    };
    worker.client.fail(pb::FailRequest { worker_id: worker.id.clone(), failures: vec![failure] }).await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn task_events_arrive_in_order_without_gaps_and_a_resumed_watch_sees_the_rest_once() {
    let db = fresh_database().await;
    let first = TestCoordinator::start(test_config(&db)).await;
    let second = TestCoordinator::start(test_config(&db)).await;
    let mut live = watch_after(&second, None).await;

    let submitted = submit(&first, "five", 5, 0.0).await;
    let mut worker = FakeWorker::register(&first, "w", &["a"], 8).await;
    let claimed = worker.claim(5, Duration::from_secs(5)).await;
    assert_eq!(claimed.len(), 5);
    complete(&mut worker, &claimed[..3], 0.0).await;
    fail(&mut worker, &claimed[3], pb::FailureClass::Transient).await;
    fail(&mut worker, &claimed[4], pb::FailureClass::Permanent).await;

    let events = read_until(&mut live, |events| {
        count(events, "task.succeeded") == 3
            && count(events, "task.retry_scheduled") == 1
            && count(events, "task.dead") == 1
    })
    .await;
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    let expected: Vec<u64> = (live.start + 1..=live.start + events.len() as u64).collect();
    assert_eq!(seqs, expected, "numbered one after another from where the watch started: {:?}", kinds(&events));
    assert_eq!(count(&events, "task.submitted"), 5);
    assert_eq!(count(&events, "task.started"), 5);
    assert_eq!(count(&events, "admin.submit_tasks"), 1);
    assert_eq!(count(&events, "worker.joined"), 1);
    // Each task's events in the order they happened, with its ids.
    for task in &submitted.task_ids {
        let own: Vec<&pb::Event> = events.iter().filter(|event| &event.task_id == task).collect();
        assert_eq!(own[0].kind, "task.submitted");
        assert_eq!(own[1].kind, "task.started");
        assert_eq!((own[1].worker_id.as_str(), own[1].attempt), (worker.id.as_str(), 1));
        assert!(own.iter().all(|event| event.swarm_id == submitted.swarm_id));
    }
    let dead = events.iter().find(|event| event.kind == "task.dead").unwrap();
    assert_eq!(dead.task_id, claimed[4].task_id);
    let detail: serde_json::Value = serde_json::from_str(&dead.detail).unwrap();
    assert_eq!(detail["error"], "it broke");
    let retry = events.iter().find(|event| event.kind == "task.retry_scheduled").unwrap();
    let detail: serde_json::Value = serde_json::from_str(&retry.detail).unwrap();
    assert_eq!((&detail["outcome"], detail["retry_in_s"].is_number()), (&"failed".into(), true));

    // Resumed from the middle, on the other coordinator: exactly the rest.
    let middle = events[6].seq;
    let mut resumed = watch_after(&first, Some(middle)).await;
    assert_eq!(resumed.start, middle);
    let last = events.last().unwrap().seq;
    let rest = read_until(&mut resumed, |read| read.last().is_some_and(|event| event.seq >= last)).await;
    assert_eq!(rest, events[7..].to_vec());
    // From 0: every event kept, the live ones among them.
    let mut everything = watch_after(&first, Some(0)).await;
    let all = read_until(&mut everything, |read| read.last().is_some_and(|event| event.seq >= last)).await;
    assert_eq!(all.first().unwrap().seq, 1);
    assert_eq!(&all[all.len() - events.len()..], &events[..]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_filters_by_swarm_task_worker_and_kind_and_refuses_bad_filters_naming_them() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let ours = submit(&coordinator, "ours", 2, 0.0).await;
    let theirs = submit(&coordinator, "theirs", 2, 0.0).await;
    let mut worker = FakeWorker::register(&coordinator, "w", &["a"], 8).await;
    let claimed = worker.claim(4, Duration::from_secs(5)).await;
    complete(&mut worker, &claimed, 0.0).await;
    let finished = |events: &[pb::Event]| events.iter().any(|event| event.kind == "swarm.finished");

    let by_swarm = pb::WatchRequest { after: Some(0), swarm_id: ours.swarm_id.clone(), ..Default::default() };
    let events = read_until(&mut watch(&coordinator, by_swarm).await, finished).await;
    assert!(events.iter().all(|event| event.swarm_id == ours.swarm_id), "{:?}", kinds(&events));
    assert_eq!(kinds(&events).iter().filter(|kind| kind.starts_with("task.")).count(), 6, "{:?}", kinds(&events));

    let task = theirs.task_ids[1].clone();
    let by_task = pb::WatchRequest { after: Some(0), task_id: task.clone(), ..Default::default() };
    let events = read_until(&mut watch(&coordinator, by_task).await, |events| events.len() == 3).await;
    assert_eq!(kinds(&events), ["task.submitted", "task.started", "task.succeeded"]);
    assert!(events.iter().all(|event| event.task_id == task));

    let by_kind = pb::WatchRequest {
        after: Some(0),
        worker_id: worker.id.clone(),
        kinds: vec!["worker.*".into(), "task.succeeded".into()],
        ..Default::default()
    };
    let events = read_until(&mut watch(&coordinator, by_kind).await, |events| events.len() == 5).await;
    assert_eq!(
        kinds(&events),
        ["worker.joined", "task.succeeded", "task.succeeded", "task.succeeded", "task.succeeded"]
    );

    let refused = refusal(
        &coordinator,
        pb::WatchRequest { kinds: vec!["task.*".into(), "task.exploded".into()], ..Default::default() },
    )
    .await;
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("kinds[1]") && refused.message().contains("task.exploded"), "{refused:?}");
    let refused = refusal(&coordinator, pb::WatchRequest { task_id: "not-an-id".into(), ..Default::default() }).await;
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("task_id"), "{refused:?}");
    let refused = refusal(&coordinator, pb::WatchRequest { after: Some(1_000_000), ..Default::default() }).await;
    assert_eq!(refused.code(), Code::OutOfRange);
    assert!(refused.message().contains("not in the log"), "{refused:?}");

    // Retention removes the oldest rows: resuming before them is refused,
    // resuming from the oldest kept goes on.
    sqlx::query("update events set at = now() - interval '30 days'").execute(&db.pool).await.unwrap();
    let removed = hive_coordinator::db::events::prune(&db.pool, 3600.0, 10_000).await.unwrap();
    assert!(removed > 0);
    let first_kept = u64::try_from(hive_coordinator::db::events::head(&db.pool).await.unwrap().first_seq).unwrap();
    assert!(first_kept > 2);
    let refused = refusal(&coordinator, pb::WatchRequest { after: Some(1), ..Default::default() }).await;
    assert_eq!(refused.code(), Code::OutOfRange);
    assert!(refused.message().contains("no longer kept") && refused.message().contains("resync"), "{refused:?}");
    // 0 means every event kept: it starts at the floor.
    let mut resumed = watch_after(&coordinator, Some(0)).await;
    assert_eq!(resumed.start, first_kept - 1);
    let filter = pb::TaskFilter { swarm_id: ours.swarm_id.clone(), ..Default::default() };
    let cancel = pb::CancelTasksRequest { filter: Some(filter), reason: "nothing left".into() };
    coordinator.admin_client().await.cancel_tasks(cancel).await.unwrap();
    let events = read_until(&mut resumed, |events| count(events, "admin.cancel_tasks") == 1).await;
    let seqs: Vec<u64> = events.iter().map(|event| event.seq).collect();
    let expected: Vec<u64> = (first_kept..first_kept + seqs.len() as u64).collect();
    assert_eq!(seqs, expected);
}

async fn refusal(coordinator: &TestCoordinator, request: pb::WatchRequest) -> tonic::Status {
    coordinator.admin_client().await.watch(request).await.map(|_| ()).unwrap_err()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn swarm_and_worker_events_are_derived_once() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut live = watch_after(&coordinator, Some(0)).await;
    let spender = submit(&coordinator, "spender", 3, 1.0).await;
    let mut worker = FakeWorker::register(&coordinator, "drains", &["a"], 8).await;
    let claimed = worker.claim(3, Duration::from_secs(5)).await;
    assert_eq!(claimed.len(), 3);
    complete(&mut worker, &claimed[..2], 0.6).await;
    complete(&mut worker, &claimed[2..], 0.1).await;

    // A worker that says it drains, then stops beating, is gone; one that
    // stops beating while it works is lost.
    let draining = pb::HeartbeatRequest { worker_id: worker.id.clone(), draining: true, ..Default::default() };
    let mut beats = worker.client.clone();
    let mut replies = beats.heartbeat(tokio_stream::iter(vec![draining])).await.unwrap().into_inner();
    // Its reply says the beat was recorded; hanging up before it could drop the beat unread.
    replies.message().await.unwrap().expect("a reply to the draining beat");
    drop(replies);
    let mut lost = FakeWorker::register(&coordinator, "vanishes", &["b"], 1).await;
    let beating = lost.keep_beating(Vec::new(), Duration::from_millis(200)).await;
    drop(beating);

    let events = read_until(&mut live, |events| {
        count(events, "worker.gone") == 1 && count(events, "worker.lost") == 1 && count(events, "swarm.finished") == 1
    })
    .await;
    let of = |kind: &str| events.iter().find(|event| event.kind == kind).unwrap().clone();
    let finished = of("swarm.finished");
    assert_eq!(finished.swarm_id, spender.swarm_id);
    assert!(finished.seq > events.iter().filter(|event| event.kind == "task.succeeded").map(|e| e.seq).max().unwrap());
    let exhausted = of("swarm.budget_exhausted");
    assert_eq!(exhausted.swarm_id, spender.swarm_id);
    assert_eq!(count(&events, "swarm.budget_exhausted"), 1, "announced once, though spending went on");
    assert_eq!(of("worker.draining").worker_id, worker.id);
    assert_eq!(of("worker.gone").worker_id, worker.id);
    assert_eq!(of("worker.lost").worker_id, lost.id);
    let joined: Vec<&str> =
        events.iter().filter(|event| event.kind == "worker.joined").map(|event| event.worker_id.as_str()).collect();
    assert_eq!(joined, [worker.id.as_str(), lost.id.as_str()]);
    let detail: serde_json::Value = serde_json::from_str(&of("worker.lost").detail).unwrap();
    assert_eq!(detail["name"], "vanishes");

    // Raising the budget lets a later exhaustion be announced again. Its
    // event comes after everything above: read up to it, nothing repeated.
    let mut admin = coordinator.admin_client().await;
    let raise = pb::SetSwarmBudgetRequest { swarm_id: spender.swarm_id.clone(), budget: 5.0 };
    admin.set_swarm_budget(raise).await.unwrap();
    let later = read_until(&mut live, |events| count(events, "admin.set_swarm_budget") == 1).await;
    for kind in ["swarm.finished", "swarm.budget_exhausted", "worker.gone", "worker.lost"] {
        assert_eq!(count(&later, kind), 0, "{kind} announced twice");
    }
    let swarm: (i64, bool) =
        sqlx::query_as("select unfinished, budget_exhausted from swarm_progress where swarm_id = $1::uuid")
            .bind(&spender.swarm_id)
            .fetch_one(&db.pool)
            .await
            .unwrap();
    assert_eq!(swarm, (0, false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hivectl_watch_prints_every_event_once_across_a_coordinator_restart() {
    let db = fresh_database().await;
    let config = test_config(&db);
    let coordinator = TestCoordinator::start(config.clone()).await;
    let address: std::net::SocketAddr = coordinator.url.trim_start_matches("http://").parse().unwrap();
    submit(&coordinator, "before", 3, 0.0).await;

    let mut hivectl = tokio::process::Command::new(binary("hivectl"))
        .env("HIVE_TOKEN", hive_tests::auth::admin_token())
        .env_remove("HIVE_TOKEN_FILE")
        .args(["--coordinator", &coordinator.url, "--json", "watch", "--after", "0", "--kinds", "task.*"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(hivectl.stdout.take().unwrap()).lines();
    let mut seen: Vec<serde_json::Value> = Vec::new();
    read_lines(&mut lines, &mut seen, 3).await;

    coordinator.stop().await.unwrap();
    let coordinator = TestCoordinator::start_at(config, address).await;
    submit(&coordinator, "after", 2, 0.0).await;
    read_lines(&mut lines, &mut seen, 5).await;
    let seqs: Vec<u64> = seen.iter().map(|event| event["seq"].as_u64().unwrap()).collect();
    let mut sorted = seqs.clone();
    sorted.dedup();
    assert_eq!(sorted, seqs, "no event printed twice");
    assert!(seqs.windows(2).all(|pair| pair[0] < pair[1]), "in order: {seqs:?}");
    let kinds: HashMap<&str, usize> = seen.iter().fold(HashMap::new(), |mut counts, event| {
        *counts.entry(event["kind"].as_str().unwrap()).or_default() += 1;
        counts
    });
    assert_eq!(kinds, HashMap::from([("task.submitted", 5)]));
}

/// Reads hivectl's lines into `seen` until it holds `n`, for at most twenty seconds.
async fn read_lines(
    lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>,
    seen: &mut Vec<serde_json::Value>,
    n: usize,
) {
    let reading = async {
        while seen.len() < n {
            let line = lines.next_line().await.unwrap().expect("hivectl goes on");
            seen.push(serde_json::from_str(&line).unwrap());
        }
    };
    tokio::time::timeout(Duration::from_secs(20), reading).await.expect("hivectl printed the events");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cooldowns_pauses_and_operators_changes_are_events() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    // Retention passes (which end pauses given a duration) run every second.
    config.workers.retention = Duration::from_secs(10);
    let coordinator = TestCoordinator::start(config).await;
    let mut live = watch_after(&coordinator, Some(0)).await;
    let mut client = coordinator.worker_client().await;
    let worker_id = uuid::Uuid::new_v4().to_string();
    let registration = pb::RegisterRequest {
        worker_id: worker_id.clone(),
        name: "w".into(),
        agents: vec!["a".into()],
        slots: 1,
        accounts: HashMap::from([("a".to_owned(), "stubai/team-a".to_owned())]),
        ..Default::default()
    };
    client.register(registration).await.unwrap();
    let mut worker = FakeWorker { client, id: worker_id };
    let swarm = submit(&coordinator, "cools", 1, 0.0).await;
    let task = worker.claim(1, Duration::from_secs(5)).await.remove(0);
    let refusal = pb::Failure {
        task_id: task.task_id.clone(),
        attempt_id: task.attempt_id.clone(),
        class: pb::FailureClass::RateLimited.into(),
        error: "429".into(),
        provider_account: "stubai/team-a".into(),
        ..Default::default()
    };
    worker.client.fail(pb::FailRequest { worker_id: worker.id.clone(), failures: vec![refusal] }).await.unwrap();
    let mut admin = coordinator.admin_client().await;
    admin.clear_cooldown(pb::ClearCooldownRequest { account: "stubai/team-a".into() }).await.unwrap();
    let pause = pb::PauseRequest {
        scope: pb::PauseScope::Swarm.into(),
        target: swarm.swarm_id.clone(),
        reason: "a second".into(),
        duration: Some(hive_shared::convert::duration(Duration::from_secs(1))),
        stop_running: false,
    };
    admin.pause(pause).await.unwrap();
    let pause = pb::PauseRequest {
        scope: pb::PauseScope::Agent.into(),
        target: "a".into(),
        reason: "until resumed".into(),
        duration: None,
        stop_running: false,
    };
    admin.pause(pause).await.unwrap();
    admin.resume(pb::ResumeRequest { scope: pb::PauseScope::Agent.into(), target: "a".into() }).await.unwrap();

    let events = read_until(&mut live, |events| count(events, "pause.expired") == 1).await;
    let kinds: Vec<&str> = kinds(&events).into_iter().filter(|kind| !kind.starts_with("task.")).collect();
    assert_eq!(
        kinds,
        [
            "worker.joined",
            "admin.submit_tasks",
            "cooldown.started",
            // The change, then its audit row (the last step of its transaction).
            "cooldown.ended",
            "admin.clear_cooldown",
            "admin.pause",
            "admin.pause",
            "admin.resume",
            "pause.expired",
        ]
    );
    let detail = |kind: &str| -> serde_json::Value {
        serde_json::from_str(&events.iter().find(|event| event.kind == kind).unwrap().detail).unwrap()
    };
    assert_eq!(
        (&detail("cooldown.started")["account"], &detail("cooldown.started")["step"]),
        (&"stubai/team-a".into(), &1.into())
    );
    assert_eq!(detail("cooldown.ended")["by"], "operator");
    assert_eq!(
        (&detail("pause.expired")["scope"], &detail("pause.expired")["target"]),
        (&"swarm".into(), &swarm.swarm_id.as_str().into())
    );
    let cleared = detail("admin.clear_cooldown");
    assert_eq!(
        (&cleared["actor"], &cleared["target"]["account"], &cleared["affected"]),
        (&"admin".into(), &"stubai/team-a".into(), &1.into())
    );
    assert!(cleared["audit_seq"].is_number());
    let retried = events.iter().find(|event| event.kind == "task.retry_scheduled").unwrap();
    let outcome: serde_json::Value = serde_json::from_str(&retried.detail).unwrap();
    assert_eq!(outcome["counted"], false, "a refusal is not counted against the task");
}
