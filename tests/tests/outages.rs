//! Outages that are nobody's fault lose and charge nothing. Tasks allowed one
//! attempt each run through a coordinator crash (back within the lease) and a
//! PostgreSQL outage longer than the lease; their agents finish while the
//! coordinator or the database is away. Every task succeeds on its first
//! attempt: workers retry their reports within a heartbeat interval of the
//! service coming back, and the reaper gives them a full lease to beat before
//! it reaps anything.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::collections::HashMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::Duration;

use hive_tests::invariants::assert_invariants;
use hive_tests::postgres::{count, wait_all_finished};
use hive_tests::procs::{Proc, hivectl_json, start_coordinator_on, start_worker};
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};
use hivectl::local_pg::{Durability, LocalPostgres, free_port};

const LEASE: Duration = Duration::from_secs(3);
const COORDINATOR_ENV: [(&str, &str); 4] = [
    ("HIVE_COORDINATOR__LEASES__TTL", "3s"),
    // Calls fail during the outage instead of waiting it out in the pool:
    // workers' beats are refused, as in an outage longer than this timeout.
    ("HIVE_COORDINATOR__DATABASE__ACQUIRE_TIMEOUT", "1s"),
    ("HIVE_COORDINATOR__LEASES__HEARTBEAT_INTERVAL", "500ms"),
    ("HIVE_COORDINATOR__LEASES__REAP_INTERVAL", "200ms"),
];
/// How long each agent runs: long enough to be running when the outage starts.
const AGENT_SECONDS: &str = "2";

fn ledger_lines(path: &Path) -> usize {
    std::fs::read_to_string(path).map(|text| text.lines().count()).unwrap_or(0)
}

async fn submit(url: &str, dir: &Path, batch: &str, tasks: usize) {
    let mut file = format!("swarm: {batch}\ndefaults:\n  agent: steady\n  max_attempts: 1\ntasks:\n");
    for i in 0..tasks {
        writeln!(file, "  - {{id: {batch}-{i}, prompt: \"{AGENT_SECONDS}\"}}").unwrap();
    }
    let path = dir.join(format!("{batch}.yaml"));
    std::fs::write(&path, file).unwrap();
    hivectl_json(url, &["submit", path.to_str().unwrap()]).await;
}

async fn wait_for_agents(ledger: &Path, started: usize) {
    eventually("every agent of the batch to start", Duration::from_secs(30), || async {
        ledger_lines(ledger) >= started
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_coordinator_crash_and_a_database_outage_longer_than_the_lease_lose_and_charge_nothing() {
    let dir = tempfile::Builder::new().prefix("hive-outages-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    let mut postgres = LocalPostgres::start(&dir.path().join("pg"), Durability::Durable).await.unwrap();
    let database_url = postgres.url();
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(&database_url).await.unwrap();
    hive_coordinator::MIGRATOR.run(&pool).await.unwrap();
    let port = free_port().unwrap();
    let (mut coordinator, url) = start_coordinator_on(port, &database_url, dir.path(), &COORDINATOR_ENV).await;

    let (ledger, finished) = (dir.path().join("ledger"), dir.path().join("finished"));
    let agent = Agent::shell(format!(
        r#"echo $HIVE_TASK_ID >> {}; sleep $(cat); echo $HIVE_TASK_ID >> {}; echo '{{"ok": true}}'"#,
        ledger.display(),
        finished.display()
    ));
    let setup = WorkerSetup::new().slots(2).agent("steady", agent);
    let workers: Vec<Proc> = (0..2)
        .map(|i| {
            start_worker(&url, &setup.write(dir.path(), &format!("worker-{i}")), &format!("worker-{i}"), dir.path())
        })
        .collect();

    // The coordinator crashes while four agents run and is back once they
    // have finished (within the lease): their results wait for it.
    submit(&url, dir.path(), "crash", 4).await;
    wait_for_agents(&ledger, 4).await;
    coordinator.kill_hard();
    let _ = coordinator.child.wait().await;
    eventually("the agents to finish while the coordinator is down", Duration::from_secs(10), || async {
        ledger_lines(&finished) >= 4
    })
    .await;
    (coordinator, _) = start_coordinator_on(port, &database_url, dir.path(), &COORDINATOR_ENV).await;
    wait_all_finished(&pool, Duration::from_secs(60)).await;

    // PostgreSQL goes away for longer than the lease while four agents run:
    // every lease lapses on the clock, but no worker stopped beating.
    submit(&url, dir.path(), "outage", 4).await;
    wait_for_agents(&ledger, 8).await;
    postgres.crash_for(LEASE + Duration::from_secs(2)).await.unwrap();
    wait_all_finished(&pool, Duration::from_secs(60)).await;

    let outcomes: Vec<(String, i64)> =
        sqlx::query_as("select outcome::text, count(*) from attempts group by 1 order by 1")
            .fetch_all(&pool)
            .await
            .unwrap();
    assert_eq!(outcomes, [("succeeded".to_owned(), 8)], "every task succeeded on its one attempt");
    assert_eq!(count(&pool, "select count(*) from task_states where status = 'succeeded' and failures = 0").await, 8);
    let mut runs: HashMap<String, usize> = HashMap::new();
    for line in std::fs::read_to_string(&ledger).unwrap().lines() {
        *runs.entry(line.to_owned()).or_default() += 1;
    }
    assert!(runs.values().all(|n| *n == 1), "each agent ran once: {runs:?}");
    assert_invariants(&pool).await;

    for worker in workers {
        worker.terminate().await;
    }
    coordinator.terminate().await;
    pool.close().await;
    postgres.stop().await;
}
