//! A worker killed with SIGKILL mid-task: its lease expires, the task runs
//! again on another worker and succeeds once, within the lease plus a second,
//! and the lost attempt is not charged to the task. A task whose agent kills
//! its worker every time ends after `tasks.max_lost_attempts`. Agents die
//! with their worker; a worker that stops cleanly keeps its kept folders.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::{Duration, Instant};

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{fresh_database, wait_all_finished};
use hive_tests::procs::start_worker;
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};
use nix::sys::signal::Signal;

const LEASE: Duration = Duration::from_secs(2);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_on_a_killed_worker_runs_again_elsewhere_within_the_lease_and_succeeds_once() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.leases.ttl = LEASE;
    config.leases.heartbeat_interval = Duration::from_millis(500);
    let coordinator = TestCoordinator::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let ledger = dir.path().join("ledger");
    let slow = Agent::shell(format!(
        r#"echo start $HIVE_ATTEMPT_ID >> {ledger}; sleep 2; echo '{{"done": true}}'"#,
        ledger = ledger.display()
    ));
    let config = WorkerSetup::new().slots(1).agent("slow", slow).write(dir.path(), "worker");

    let first = start_worker(&coordinator.url, &config, "first", dir.path());
    let mut admin = coordinator.admin_client().await;
    let task = pb::TaskSpec { agent: "slow".into(), prompt: "p".into(), ..Default::default() };
    admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "death".into(), tasks: vec![task], ..Default::default() })
        .await
        .unwrap();
    eventually("the first worker's agent to start", Duration::from_secs(20), || async {
        std::fs::read_to_string(&ledger).is_ok_and(|text| text.lines().count() == 1)
    })
    .await;

    let second = start_worker(&coordinator.url, &config, "second", dir.path());
    first.signal(Signal::SIGKILL);
    let killed_at = chrono::Utc::now();
    let killed = Instant::now();

    wait_all_finished(&db.pool, Duration::from_secs(30)).await;
    let attempts: Vec<(i32, String, chrono::DateTime<chrono::Utc>)> =
        sqlx::query_as("select number, outcome::text, started_at from attempts order by number")
            .fetch_all(&db.pool)
            .await
            .unwrap();
    assert_eq!(attempts.len(), 2, "{attempts:?}");
    assert_eq!((attempts[0].0, attempts[0].1.as_str()), (1, "lost"));
    assert_eq!((attempts[1].0, attempts[1].1.as_str()), (2, "succeeded"));
    let recovery = (attempts[1].2 - killed_at).to_std().unwrap_or_default();
    eprintln!("recovery after SIGKILL: {recovery:?} (lease {LEASE:?})");
    assert!(recovery <= LEASE + Duration::from_secs(1), "recovered in {recovery:?}; the lease is {LEASE:?}");
    assert!(killed.elapsed() < Duration::from_secs(30));

    let (status, failures): (String, i32) =
        sqlx::query_as("select status::text, failures from task_states").fetch_one(&db.pool).await.unwrap();
    assert_eq!((status.as_str(), failures), ("succeeded", 0), "a lost attempt is not the task's failure");
    let successes: i64 = sqlx::query_scalar("select count(*) from attempts where outcome = 'succeeded'")
        .fetch_one(&db.pool)
        .await
        .unwrap();
    assert_eq!(successes, 1, "success recorded exactly once");

    second.terminate().await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_agent_kills_its_worker_each_time_is_dead_after_max_lost_attempts() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.leases.ttl = Duration::from_secs(1);
    config.leases.heartbeat_interval = Duration::from_millis(200);
    config.leases.reap_interval = Duration::from_millis(100);
    config.tasks.max_lost_attempts = 2;
    let coordinator = TestCoordinator::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    // The agent's parent is its worker.
    let killer = Agent::shell("kill -9 $PPID; sleep 30");
    let config = WorkerSetup::new().slots(1).agent("killer", killer).write(dir.path(), "worker");
    let mut admin = coordinator.admin_client().await;
    let task = pb::TaskSpec { agent: "killer".into(), prompt: "p".into(), max_attempts: 10, ..Default::default() };
    admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "killer".into(), tasks: vec![task], ..Default::default() })
        .await
        .unwrap();

    // A supervisor restarts the worker each time its agent kills it.
    let mut worker = start_worker(&coordinator.url, &config, "worker-0", dir.path());
    let mut restarts = 0;
    let deadline = Instant::now() + Duration::from_secs(60);
    while hive_tests::postgres::count(&db.pool, "select count(*) from task_states where status = 'dead'").await == 0 {
        assert!(Instant::now() < deadline, "the task never died");
        if worker.child.try_wait().unwrap().is_some() {
            restarts += 1;
            worker = start_worker(&coordinator.url, &config, &format!("worker-{restarts}"), dir.path());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let outcomes: Vec<String> =
        sqlx::query_scalar("select outcome::text from attempts order by number").fetch_all(&db.pool).await.unwrap();
    assert_eq!(outcomes, ["lost", "lost"], "two lost attempts, then dead");
    let (failures, error): (i32, String) =
        sqlx::query_as("select failures, error from task_states").fetch_one(&db.pool).await.unwrap();
    assert_eq!(failures, 0, "lost attempts are not counted against max_attempts");
    assert!(error.contains("lost 2 attempts") && error.contains("tasks.max_lost_attempts"), "{error}");
    let _ = worker.terminate().await;

    let id: uuid::Uuid = sqlx::query_scalar("select task_id from task_states").fetch_one(&db.pool).await.unwrap();
    let retried = hive_tests::procs::hivectl_output(&coordinator.url, &["retry", &id.to_string()]).await;
    assert!(retried.status.success(), "{}", retried.stderr);
    let (status, losses): (String, i32) =
        sqlx::query_as("select status::text, losses from task_states").fetch_one(&db.pool).await.unwrap();
    assert_eq!((status.as_str(), losses), ("ready", 0), "a retried task gets a fresh budget of losses too");
    coordinator.stop().await.unwrap();
}

/// Whether process `pid` is gone (or a zombie nobody has reaped yet).
fn gone(pid: i32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit_once(')').is_some_and(|(_, rest)| rest.trim_start().starts_with('Z')),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn agents_and_their_children_die_within_seconds_of_their_worker_being_killed() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let pids = dir.path().join("pids");
    std::fs::create_dir_all(&pids).unwrap();
    // The agent starts a grandchild in its own session (it leaves the
    // agent's process group), records both, and waits.
    let script = format!(
        "setsid sleep 300 & echo $! > {pids}/$HIVE_ATTEMPT_ID.child; echo $$ > {pids}/$HIVE_ATTEMPT_ID.agent; wait",
        pids = pids.display()
    );
    let config = WorkerSetup::new().slots(2).agent("stuck", Agent::shell(script)).write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &config, "doomed", dir.path());
    let mut admin = coordinator.admin_client().await;
    let tasks = (0..2).map(|i| pb::TaskSpec { agent: "stuck".into(), prompt: i.to_string(), ..Default::default() });
    let request = pb::SubmitTasksRequest { swarm: "s".into(), tasks: tasks.collect(), ..Default::default() };
    admin.submit_tasks(request).await.unwrap();
    eventually("both agents and their children to start", Duration::from_secs(20), || {
        let pids = pids.clone();
        async move { std::fs::read_dir(&pids).map(|entries| entries.count() == 4).unwrap_or(false) }
    })
    .await;
    let recorded: Vec<i32> = std::fs::read_dir(&pids)
        .unwrap()
        .map(|entry| std::fs::read_to_string(entry.unwrap().path()).unwrap().trim().parse().unwrap())
        .collect();
    assert!(recorded.iter().all(|pid| !gone(*pid)), "all running before the kill");

    worker.kill_hard();
    let killed_at = std::time::Instant::now();
    eventually("every agent and child to die with the worker", Duration::from_secs(5), || {
        let recorded = recorded.clone();
        async move { recorded.iter().all(|pid| gone(*pid)) }
    })
    .await;
    assert!(killed_at.elapsed() < Duration::from_secs(3), "took {:?}", killed_at.elapsed());
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_that_stops_cleanly_dismisses_its_guardian_and_its_kept_folders_stay() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let agent = Agent::shell("echo kept > kept.txt");
    let config = WorkerSetup::new().slots(1).keep_work_dirs().agent("keeper", agent).write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &config, "keeper", dir.path());
    let mut admin = coordinator.admin_client().await;
    let task = pb::TaskSpec { agent: "keeper".into(), prompt: "p".into(), ..Default::default() };
    let request = pb::SubmitTasksRequest { swarm: "s".into(), tasks: vec![task], ..Default::default() };
    admin.submit_tasks(request).await.unwrap();
    wait_all_finished(&db.pool, Duration::from_secs(20)).await;
    let work = dir.path().join("worker-work");
    let kept: Vec<std::path::PathBuf> = std::fs::read_dir(&work)
        .unwrap()
        .flatten()
        .map(|entry| entry.path().join("kept.txt"))
        .filter(|file| file.exists())
        .collect();
    assert_eq!(kept.len(), 1, "the attempt's folder, kept");

    worker.terminate().await;
    let guarding = |needle: String| {
        std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
            std::fs::read(entry.path().join("cmdline"))
                .is_ok_and(|cmdline| String::from_utf8_lossy(&cmdline).contains(&needle))
        })
    };
    let needle = format!("--guard-work-dir\0{}", work.display());
    eventually("the guardian to exit after its worker", Duration::from_secs(10), || {
        let needle = needle.clone();
        async move { !guarding(needle) }
    })
    .await;
    assert!(kept[0].exists(), "the guardian of a worker that stopped cleanly removed its kept folder");
    coordinator.stop().await.unwrap();
}
