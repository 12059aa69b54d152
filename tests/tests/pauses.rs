//! Pauses over real gRPC and the real `hivectl`: claims skip a paused
//! swarm, agent or worker (on every coordinator at once, since claims read
//! the pause in their own statement); a running task still finishes, unless
//! the pause stops it (`--stop`: a real worker stops the agent's process
//! tree and hands the task back uncharged); a pause with a duration ends by
//! itself; each change is audited; bad targets are refused naming the field
//! and change nothing.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::postgres::count;
use hive_tests::postgres::fresh_database;
use hive_tests::procs::{hivectl_output, sleeping, start_worker};
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};
use tonic::Code;

async fn submit(coordinator: &TestCoordinator, swarm: &str, agent: &str, count: usize) -> String {
    let mut admin = coordinator.admin_client().await;
    let tasks = (0..count).map(|i| pb::TaskSpec { agent: agent.into(), prompt: i.to_string(), ..Default::default() });
    let request = pb::SubmitTasksRequest { swarm: swarm.into(), tasks: tasks.collect(), ..Default::default() };
    admin.submit_tasks(request).await.unwrap().into_inner().swarm_id
}

fn swarms_of(assignments: &[pb::Assignment]) -> Vec<String> {
    let mut swarms: Vec<String> = assignments.iter().map(|assignment| assignment.swarm_id.clone()).collect();
    swarms.dedup();
    swarms
}

async fn hivectl(coordinator: &TestCoordinator, args: &[&str]) -> String {
    let output = hivectl_output(&coordinator.url, args).await;
    assert!(output.status.success(), "hivectl {args:?}: {}", output.stderr);
    output.stdout
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_swarm_is_skipped_by_every_coordinator_and_claimed_again_once_resumed() {
    let db = fresh_database().await;
    let first = TestCoordinator::start(test_config(&db)).await;
    let second = TestCoordinator::start(test_config(&db)).await;
    let big = submit(&first, "big", "a", 3).await;
    let small = submit(&first, "small", "a", 3).await;
    let mut worker = FakeWorker::register(&second, "w", &["a"], 8).await;
    let running = worker.claim(1, Duration::from_secs(5)).await;
    assert_eq!(swarms_of(&running), [big.as_str()], "the oldest swarm's task runs first");

    let paused = hivectl(&first, &["pause", "swarm", &big, "--reason", "budget review"]).await;
    assert!(paused.contains(&format!("paused swarm {big} until resumed")), "{paused}");
    let claimed = worker.claim(8, Duration::ZERO).await;
    assert_eq!(swarms_of(&claimed), [small.as_str()], "the other coordinator skips the paused swarm at once");
    assert_eq!(claimed.len(), 3);

    // The task that was running when the pause began finishes.
    let done = pb::Completion {
        task_id: running[0].task_id.clone(),
        attempt_id: running[0].attempt_id.clone(),
        ..Default::default()
    };
    worker
        .client
        .complete(pb::CompleteRequest { worker_id: worker.id.clone(), completions: vec![done] })
        .await
        .unwrap();
    let status: String = sqlx::query_scalar("select status::text from task_states where task_id = $1::uuid")
        .bind(&running[0].task_id)
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(status, "succeeded");

    let listed = hivectl(&first, &["pauses"]).await;
    assert!(listed.contains(&big) && listed.contains("budget review") && listed.contains("swarm"), "{listed}");
    // However the id is written, it names the same swarm.
    let urn = format!("urn:uuid:{}", big.to_uppercase());
    let again = hivectl(&first, &["pause", "swarm", &urn]).await;
    assert!(again.contains(&big), "{again}");
    assert!(worker.claim(8, Duration::ZERO).await.is_empty(), "still paused, and claims still work");
    let resumed = hivectl(&second, &["resume", "swarm", &big]).await;
    assert!(resumed.contains("resumed"), "{resumed}");
    let claimed = worker.claim(8, Duration::from_secs(5)).await;
    assert_eq!((swarms_of(&claimed), claimed.len()), (vec![big.clone()], 2), "resumed, its tasks are claimed");
    let again = hivectl(&second, &["resume", "swarm", &big]).await;
    assert!(again.contains("was not paused"), "{again}");

    let audited: Vec<String> =
        sqlx::query_scalar("select action from audit_log where action in ('Pause', 'Resume') order by seq")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(audited, ["Pause", "Pause", "Resume", "Resume"]);
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_agents_and_workers_are_skipped_and_a_timed_pause_ends_by_itself() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    submit(&coordinator, "s", "a", 2).await;
    submit(&coordinator, "s", "b", 2).await;
    let mut one = FakeWorker::register(&coordinator, "one", &["a", "b"], 8).await;
    let mut two = FakeWorker::register(&coordinator, "two", &["a", "b"], 8).await;

    hivectl(&coordinator, &["pause", "agent", "a", "--for", "2s"]).await;
    hivectl(&coordinator, &["pause", "worker", "one"]).await;
    assert!(one.claim(8, Duration::ZERO).await.is_empty(), "a paused worker claims nothing");
    let claimed = two.claim(8, Duration::ZERO).await;
    assert!(
        claimed.iter().all(|task| task.agent == "b") && claimed.len() == 2,
        "a paused agent is skipped: {claimed:?}"
    );
    let done = claimed.iter().map(|task| pb::Completion {
        task_id: task.task_id.clone(),
        attempt_id: task.attempt_id.clone(),
        ..Default::default()
    });
    two.client.complete(pb::CompleteRequest { worker_id: two.id.clone(), completions: done.collect() }).await.unwrap();
    let listed = hivectl(&coordinator, &["--json", "pauses"]).await;
    let listed: serde_json::Value = serde_json::from_str(&listed).unwrap();
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    assert!(listed[0]["until"].is_string() && listed[1]["until"].is_null(), "{listed}");

    // The agent's pause ends by itself; a waiting claim is woken by the recheck.
    let claimed = two.claim(8, Duration::from_secs(10)).await;
    let agents: Vec<&str> = claimed.iter().map(|task| task.agent.as_str()).collect();
    assert_eq!(claimed.len(), 2, "claimed once the timed pause ended: {agents:?}");
    assert!(claimed.iter().all(|task| task.agent == "a"));
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_pauses_are_refused_naming_the_field_and_change_nothing() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let cases = [
        (pb::PauseScope::Unspecified, "x", None, Code::InvalidArgument, "scope"),
        (pb::PauseScope::Swarm, "not-a-uuid", None, Code::InvalidArgument, "target: `not-a-uuid` is not a swarm id"),
        (pb::PauseScope::Swarm, "6f1d1c7e-6a44-4b8e-a4c5-6b9b4c0e2f55", None, Code::NotFound, "swarm"),
        (pb::PauseScope::Agent, "", None, Code::InvalidArgument, "target"),
        (pb::PauseScope::Agent, "a", Some(Duration::ZERO), Code::InvalidArgument, "duration"),
    ];
    for (scope, target, duration, code, needle) in cases {
        let request = pb::PauseRequest {
            scope: scope.into(),
            target: target.into(),
            reason: String::new(),
            duration: duration.map(hive_shared::convert::duration),
            stop_running: false,
        };
        let status = admin.pause(request).await.unwrap_err();
        assert_eq!(status.code(), code, "{target}: {status:?}");
        assert!(status.message().contains(needle), "{target}: {}", status.message());
    }
    let count = hive_tests::postgres::count(&db.pool, "select count(*) from pauses").await;
    assert_eq!(count, 0);
    let output = hivectl_output(&coordinator.url, &["pause", "swarm", "nope"]).await;
    assert!(!output.status.success() && output.stderr.contains("is not a swarm id"), "{}", output.stderr);
    coordinator.stop().await.unwrap();
}

/// An agent that succeeds once `gate` exists, and until then runs a tree of
/// two `sleep MARKER` processes.
fn gated(gate: &std::path::Path, marker: &str) -> Agent {
    Agent::shell(format!("[ -e {} ] && exit 0; sleep {marker} & sleep {marker} & wait", gate.display()))
        .kill_grace("1s")
}

/// How many of `swarm`'s tasks `sql` counts (`$1`: the swarm's id).
async fn counted(pool: &sqlx::PgPool, sql: &'static str, swarm: &str) -> i64 {
    sqlx::query_scalar(sql).bind(swarm).fetch_one(pool).await.unwrap()
}

/// How many of `swarm`'s tasks are in `status`.
async fn tasks_of(db: &hive_tests::postgres::TestDb, swarm: &str, status: &str) -> i64 {
    let sql = "select count(*) from task_states where swarm_id = $1::uuid and status::text = $2";
    sqlx::query_scalar(sql).bind(swarm).bind(status).fetch_one(&db.pool).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pause_with_stop_hands_running_tasks_back_uncharged_and_they_run_once_resumed() {
    const A: &str = "1006.2461";
    const B: &str = "1006.2462";
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.leases.heartbeat_interval = Duration::from_millis(500);
    let holder = TestCoordinator::start(config.clone()).await;
    let other = TestCoordinator::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let (gate_a, gate_b) = (dir.path().join("gate-a"), dir.path().join("gate-b"));
    let setup = WorkerSetup::new().slots(4).agent("a", gated(&gate_a, A)).agent("b", gated(&gate_b, B));
    let worker = start_worker(&holder.url, &setup.write(dir.path(), "worker"), "w", dir.path());
    let stopped = submit(&holder, "stopped", "a", 2).await;
    let untouched = submit(&holder, "untouched", "a", 1).await;
    let by_agent = submit(&holder, "by-agent", "b", 1).await;
    eventually("four agents to run", Duration::from_secs(20), || async { sleeping(A) == 6 && sleeping(B) == 2 }).await;

    // A swarm, through the coordinator that does not hold the worker's stream:
    // only its own attempts stop, not another swarm's of the same agent.
    let paused = hivectl(&other, &["pause", "swarm", &stopped, "--stop", "--reason", "wrong prompt"]).await;
    assert!(paused.contains("its running tasks are being stopped"), "{paused}");
    eventually("the paused swarm's tasks to be handed back", Duration::from_secs(10), || async {
        tasks_of(&db, &stopped, "ready").await == 2
    })
    .await;
    assert_eq!((sleeping(A), sleeping(B)), (2, 2), "the other agents run on; worker log:\n{}", worker.log_text());
    let uncharged = "select count(*) from task_states where swarm_id = $1::uuid and failures = 0";
    assert_eq!(counted(&db.pool, uncharged, &stopped).await, 2, "a stop by pause is not the task's failure");
    let listed = hivectl(&holder, &["pauses"]).await;
    assert!(listed.contains("stopped") && listed.contains("wrong prompt"), "{listed}");

    // An agent, on every worker.
    hivectl(&holder, &["pause", "agent", "b", "--stop"]).await;
    eventually("the paused agent's task to be handed back", Duration::from_secs(10), || async {
        tasks_of(&db, &by_agent, "ready").await == 1
    })
    .await;
    assert_eq!((sleeping(A), sleeping(B)), (2, 0), "only the paused agent stopped");

    // A worker: everything it runs.
    hivectl(&holder, &["pause", "worker", "w", "--stop"]).await;
    eventually("the paused worker's last task to be handed back", Duration::from_secs(10), || async {
        tasks_of(&db, &untouched, "ready").await == 1
    })
    .await;
    assert_eq!((sleeping(A), sleeping(B)), (0, 0), "every agent of the paused worker stopped");
    let handed_back = count(
        &db.pool,
        "select count(*) from attempts where outcome = 'released' and error like 'a pause stopped the agent%'",
    )
    .await;
    assert_eq!(handed_back, 4, "each attempt says a pause stopped it");

    // Resumed, with the gates open: every task runs again and succeeds.
    std::fs::write(&gate_a, "").unwrap();
    std::fs::write(&gate_b, "").unwrap();
    hivectl(&holder, &["resume", "swarm", &stopped]).await;
    hivectl(&holder, &["resume", "agent", "b"]).await;
    hivectl(&holder, &["resume", "worker", "w"]).await;
    eventually("every task to succeed", Duration::from_secs(20), || async {
        count(&db.pool, "select count(*) from task_states where status = 'succeeded'").await == 4
    })
    .await;
    let failures = count(&db.pool, "select coalesce(sum(failures), 0) from task_states").await;
    assert_eq!(failures, 0, "no attempt stopped by a pause was charged");

    let audited: Vec<serde_json::Value> =
        sqlx::query_scalar("select target from audit_log where action = 'Pause' order by seq")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(audited.len(), 3);
    assert!(audited.iter().all(|detail| detail["stop_running"] == true), "{audited:?}");
    worker.terminate().await;
    holder.stop().await.unwrap();
    other.stop().await.unwrap();
}
