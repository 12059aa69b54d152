//! Chaos: two coordinators and four workers on one PostgreSQL run a swarm
//! whose agent appends its task id to a ledger, while workers are SIGKILLed at
//! random moments (and restarted), one coordinator is SIGKILLed and restarted,
//! PostgreSQL itself crashes and recovers, and a fifth worker whose agent's
//! program has gone missing claims tasks it cannot run. Every task still ends
//! terminal, every success is recorded exactly once, none is lost, and none
//! is charged a failure: each task is allowed a single attempt, which a lost
//! lease (its worker was killed) does not spend.
//!
//! `HIVE_CHAOS_TASKS` sets the size (default 400, what CI runs);
//! `HIVE_CHAOS_SEED` replays a run.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, Instant};

use hive_tests::invariants::assert_invariants;
use hive_tests::postgres::{count, wait_all_finished};
use hive_tests::procs::{Proc, hivectl_json, start_worker};
use hive_tests::worker_setup::{Agent, WorkerSetup};
use hivectl::local_pg::{Durability, LocalPostgres, free_port};
use sqlx::PgPool;
use tokio::process::Command;

const WORKERS: usize = 4;
const COORDINATOR_ENV: [(&str, &str); 5] = [
    ("HIVE_COORDINATOR__LEASES__TTL", "2s"),
    ("HIVE_COORDINATOR__LEASES__HEARTBEAT_INTERVAL", "500ms"),
    ("HIVE_COORDINATOR__LEASES__REAP_INTERVAL", "200ms"),
    ("HIVE_COORDINATOR__CLAIMS__RECHECK_INTERVAL", "500ms"),
    // A worker is killed every ~1.5 s: a task may lose several.
    ("HIVE_COORDINATOR__TASKS__MAX_LOST_ATTEMPTS", "1000"),
];

/// A small deterministic generator, so a failing run can be replayed from its seed.
struct Dice(u64);

impl Dice {
    fn next(&mut self, below: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % below
    }
}

fn coordinator(database_url: &str, port: u16, dir: &Path, generation: usize) -> Proc {
    let mut command = Command::new(hive_tests::procs::binary("hive-coordinator"));
    command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", database_url)
        .env("RUST_LOG", "info,sqlx=warn")
        .envs(COORDINATOR_ENV);
    Proc::spawn(command, dir.join(format!("coordinator-{port}-{generation}.log")))
}

async fn ledger_counts(path: &Path) -> HashMap<String, usize> {
    let text = tokio::fs::read_to_string(path).await.unwrap_or_default();
    let mut counts = HashMap::new();
    for line in text.lines() {
        *counts.entry(line.to_owned()).or_insert(0) += 1;
    }
    counts
}

async fn outcome_counts(pool: &PgPool) -> Vec<(String, i64)> {
    sqlx::query_as("select outcome::text, count(*) from attempts group by 1 order by 1")
        .fetch_all(pool)
        .await
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nothing_is_lost_or_recorded_twice_through_worker_kills_a_coordinator_crash_and_a_database_crash() {
    let tasks: usize = std::env::var("HIVE_CHAOS_TASKS").ok().and_then(|n| n.parse().ok()).unwrap_or(400);
    let seed: u64 = std::env::var("HIVE_CHAOS_SEED").ok().and_then(|n| n.parse().ok()).unwrap_or_else(|| {
        u64::from(std::process::id()) << 20 | u64::from(chrono::Utc::now().timestamp_subsec_micros())
    });
    eprintln!("chaos: {tasks} tasks, seed {seed} (HIVE_CHAOS_SEED={seed} replays it)");
    let mut dice = Dice(seed.max(1));

    let dir = tempfile::Builder::new().prefix("hive-chaos-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut postgres = LocalPostgres::start(&dir.path().join("pg"), Durability::Durable).await.unwrap();
    let database_url = postgres.url();
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&database_url).await.unwrap();
    hive_coordinator::MIGRATOR.run(&pool).await.unwrap();

    let ports = [free_port().unwrap(), free_port().unwrap()];
    let mut coordinators: Vec<Proc> =
        ports.iter().map(|port| coordinator(&database_url, *port, dir.path(), 0)).collect();
    let urls: Vec<String> = ports.iter().map(|port| format!("http://127.0.0.1:{port}")).collect();
    hive_tests::wait::eventually("both coordinators to serve", Duration::from_secs(30), || async {
        let mut up = true;
        for url in &urls {
            up &= hive_tests::procs::hivectl_output(url, &["workers"]).await.status.success();
        }
        up
    })
    .await;

    let ledger = dir.path().join("ledger");
    let agent =
        Agent::shell(format!(r#"echo $HIVE_TASK_ID >> {}; sleep $(cat); echo '{{"ok": true}}'"#, ledger.display()));
    let setup = WorkerSetup::new().slots(4).drain_grace("2s").agent("ledger", agent);
    let configs: Vec<_> = (0..WORKERS).map(|i| setup.write(dir.path(), &format!("worker-{i}"))).collect();
    let spawn_worker =
        |index: usize| start_worker(&urls[index % 2], &configs[index], &format!("worker-{index}"), dir.path());
    let mut workers: Vec<Proc> = (0..WORKERS).map(spawn_worker).collect();
    // A broken worker among them: its agent's program goes missing once it
    // has started, so every task it claims goes back uncharged.
    let doomed = dir.path().join("doomed-agent");
    std::fs::write(&doomed, "#!/bin/sh\nexit 0\n").unwrap();
    std::fs::set_permissions(&doomed, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let broken_setup = WorkerSetup::new().slots(4).agent("ledger", Agent::command([doomed.to_str().unwrap()]));
    let broken_config = broken_setup.write(dir.path(), "broken");
    let broken = start_worker(&urls[0], &broken_config, "broken", dir.path());
    hive_tests::wait::eventually("the broken worker to register", Duration::from_secs(30), || async {
        hive_tests::procs::hivectl_output(&urls[0], &["workers"]).await.stdout.contains("broken")
    })
    .await;
    std::fs::remove_file(&doomed).unwrap();

    let mut file = String::from("swarm: chaos\ndefaults:\n  agent: ledger\n  max_attempts: 1\ntasks:\n");
    for i in 0..tasks {
        // ~0.4 s on average: 400 tasks on 16 slots keep the chaos busy for ~10 s.
        let pause = ["0.1", "0.2", "0.4", "0.6", "0.8"][i % 5];
        writeln!(file, "  - {{id: t{i}, prompt: \"{pause}\"}}").unwrap();
    }
    let task_file = dir.path().join("tasks.yaml");
    std::fs::write(&task_file, file).unwrap();
    let started = Instant::now();
    hivectl_json(&urls[1], &["submit", task_file.to_str().unwrap()]).await;

    // The chaos: a worker killed every ~1.5 s; coordinator 0 crashes once; PostgreSQL crashes once.
    let (mut kills, mut coordinator_crashed, mut database_crashed) = (0, false, false);
    let unfinished = |pool: PgPool| async move {
        count(&pool, "select count(*) from task_states where status not in ('succeeded', 'dead', 'cancelled')").await
    };
    while unfinished(pool.clone()).await > 0 && started.elapsed() < Duration::from_secs(240) {
        tokio::time::sleep(Duration::from_millis(700 + dice.next(1600))).await;
        let victim = usize::try_from(dice.next(WORKERS as u64)).unwrap();
        workers[victim].kill_hard();
        let _ = workers[victim].child.wait().await;
        kills += 1;
        workers[victim] = spawn_worker(victim);
        if !coordinator_crashed && started.elapsed() > Duration::from_millis(1500) {
            eprintln!("chaos: crashing coordinator 0 at {:?}", started.elapsed());
            coordinators[0].kill_hard();
            let _ = coordinators[0].child.wait().await;
            tokio::time::sleep(Duration::from_millis(500)).await;
            coordinators[0] = coordinator(&database_url, ports[0], dir.path(), 1);
            coordinator_crashed = true;
        } else if coordinator_crashed && !database_crashed && started.elapsed() > Duration::from_secs(4) {
            eprintln!("chaos: crashing PostgreSQL at {:?}", started.elapsed());
            postgres.crash_and_restart().await.unwrap();
            database_crashed = true;
        }
    }
    assert!(
        coordinator_crashed && database_crashed,
        "the run ended before all the chaos happened; raise HIVE_CHAOS_TASKS"
    );

    wait_all_finished(&pool, Duration::from_secs(120)).await;
    let elapsed = started.elapsed();
    let outcomes = outcome_counts(&pool).await;
    let ledger = ledger_counts(&ledger).await;
    let ids: HashSet<String> = sqlx::query_scalar::<_, String>("select id::text from tasks")
        .fetch_all(&pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    let executions: usize = ledger.values().sum();
    eprintln!(
        "chaos: {tasks} tasks in {elapsed:?}; {kills} worker kills; {executions} agent runs for {} tasks; attempts by outcome {outcomes:?}",
        ledger.len()
    );

    assert_eq!(ids.len(), tasks, "every submitted task exists");
    assert_eq!(
        count(&pool, "select count(*) from task_states where status = 'succeeded'").await,
        tasks as i64,
        "every task succeeded: {outcomes:?}"
    );
    assert_eq!(count(&pool, "select count(*) from task_states s where not exists (select 1 from attempts a where a.task_id = s.task_id and a.number = s.result_attempt and a.result is not null)").await, 0, "every result is stored");
    let recorded_twice = count(
        &pool,
        "select count(*) from (select task_id from attempts where outcome = 'succeeded' group by task_id having count(*) <> 1) t",
    )
    .await;
    assert_eq!(recorded_twice, 0, "each success recorded exactly once");
    assert_eq!(
        count(&pool, "select count(*) from attempts where outcome = 'failed'").await,
        0,
        "no attempt was charged as a failure: {outcomes:?}"
    );
    let ran: HashSet<String> = ledger.keys().cloned().collect();
    assert_eq!(ran, ids, "every task ran at least once, and nothing else ran");
    assert_invariants(&pool).await;

    let handed_back = count(
        &pool,
        "select count(*) from attempts a join workers w on w.id = a.worker_id where w.name = 'broken' and a.outcome = 'released'",
    )
    .await;
    eprintln!("chaos: the broken worker handed back {handed_back} tasks");
    for worker in workers.into_iter().chain([broken]) {
        worker.terminate().await;
    }
    for coordinator in coordinators {
        coordinator.terminate().await;
    }
    pool.close().await;
    postgres.stop().await;
}
