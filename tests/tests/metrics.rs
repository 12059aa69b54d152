//! `/metrics` on the coordinator's HTTP listener, over real HTTP against a
//! real PostgreSQL: a scrape shows the tasks by agent and status (from the
//! kept counts), the workers, and what this coordinator counted (claims,
//! attempts ended by outcome and class, retries, dead letters, RPC
//! latency), and `promtool check metrics` accepts the page; only a
//! `metrics` or `admin` token may read it; the kept counts stay equal to
//! the tasks through folding. A real worker binary serves its own: running
//! agents, their memory, spawn times, output bytes and stalls.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::io::Write as _;
use std::process::{Command, Stdio};
use std::time::Duration;

use hive_shared::pb;
use hive_tests::auth::admin_token;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::http::{get, try_get};
use hive_tests::invariants::assert_invariants;
use hive_tests::postgres::{TestDb, fresh_database, wait_all_finished};
use hive_tests::procs::start_worker;
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};

async fn start(db: &TestDb) -> TestCoordinator {
    let mut config = test_config(db);
    config.http.listen = Some("127.0.0.1:0".parse().unwrap());
    TestCoordinator::start(config).await
}

async fn submit(coordinator: &TestCoordinator, agent: &str, n: usize) {
    let tasks = (0..n).map(|i| pb::TaskSpec {
        agent: agent.into(),
        prompt: i.to_string(),
        max_attempts: 3,
        ..Default::default()
    });
    let request = pb::SubmitTasksRequest { swarm: agent.into(), tasks: tasks.collect(), ..Default::default() };
    coordinator.admin_client().await.submit_tasks(request).await.unwrap();
}

async fn token(coordinator: &TestCoordinator, name: &str, role: &str) -> String {
    let request = pb::CreateTokenRequest { name: name.into(), role: role.into(), expires_in: None };
    coordinator.admin_client().await.create_token(request).await.unwrap().into_inner().token
}

/// The value of the sample written exactly as `series` (name and labels).
fn sample(page: &str, series: &str) -> Option<f64> {
    page.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
}

/// Runs `promtool check metrics` on `page`; its complaints, if any.
fn promtool_problems(page: &str) -> Option<String> {
    let mut child = Command::new("promtool")
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run promtool (scripts/setup installs it, from Debian's prometheus package)");
    child.stdin.take().unwrap().write_all(page.as_bytes()).unwrap();
    let output = child.wait_with_output().unwrap();
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    (!output.status.success() || !said.trim().is_empty()).then_some(said)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_scrape_shows_tasks_workers_and_counts_and_promtool_accepts_it() {
    let db = fresh_database().await;
    let coordinator = start(&db).await;
    let http = coordinator.http_addr.unwrap();
    submit(&coordinator, "a", 5).await;
    submit(&coordinator, "b", 2).await;
    let mut worker = FakeWorker::register(&coordinator, "w", &["a"], 8).await;
    let claimed = worker.claim(5, Duration::from_secs(5)).await;
    assert_eq!(claimed.len(), 5);
    let completions = claimed[..3]
        .iter()
        .map(|task| pb::Completion {
            task_id: task.task_id.clone(),
            attempt_id: task.attempt_id.clone(),
            ..Default::default()
        })
        .collect();
    worker.client.complete(pb::CompleteRequest { worker_id: worker.id.clone(), completions }).await.unwrap();
    let failures = [(3, pb::FailureClass::Transient), (4, pb::FailureClass::Permanent)]
        .into_iter()
        .map(|(at, class)| pb::Failure {
            task_id: claimed[at].task_id.clone(),
            attempt_id: claimed[at].attempt_id.clone(),
            class: class.into(),
            error: "it broke".into(),
            ..Default::default()
        })
        .collect();
    worker.client.fail(pb::FailRequest { worker_id: worker.id.clone(), failures }).await.unwrap();

    let reply = get(http, "/metrics", Some(admin_token())).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert!(reply.header("content-type").unwrap().starts_with("text/plain; version=0.0.4"));
    let page = reply.body;
    let expected = [
        (r#"hive_tasks{agent="a",status="succeeded"}"#, 3.0),
        (r#"hive_tasks{agent="a",status="ready"}"#, 1.0),
        (r#"hive_tasks{agent="a",status="dead"}"#, 1.0),
        (r#"hive_tasks{agent="a",status="running"}"#, 0.0),
        (r#"hive_tasks{agent="b",status="ready"}"#, 2.0),
        (r#"hive_tasks_claimed_total{agent="a"}"#, 5.0),
        (r#"hive_queue_wait_seconds_count{agent="a"}"#, 5.0),
        (r#"hive_attempts_ended_total{agent="a",outcome="succeeded"}"#, 3.0),
        (r#"hive_attempts_ended_total{agent="a",outcome="failed"}"#, 2.0),
        (r#"hive_attempt_duration_seconds_count{agent="a",outcome="succeeded"}"#, 3.0),
        (r#"hive_attempt_failures_total{agent="a",class="transient"}"#, 1.0),
        (r#"hive_attempt_failures_total{agent="a",class="permanent"}"#, 1.0),
        (r#"hive_task_retries_total{agent="a"}"#, 1.0),
        (r#"hive_tasks_dead_total{agent="a"}"#, 1.0),
        (r#"hive_workers{agent="a",state="live"}"#, 1.0),
        (r#"hive_workers{agent="a",state="draining"}"#, 0.0),
        (r#"hive_fleet_workers{state="live"}"#, 1.0),
        (r#"hive_rpc_duration_seconds_count{method="hive.v1.WorkerService/Claim",code="OK"}"#, 1.0),
    ];
    for (series, value) in expected {
        assert_eq!(sample(&page, series), Some(value), "{series} in:\n{page}");
    }
    // The free slots are what the worker last reported (none: it never beat).
    assert!(sample(&page, r#"hive_worker_free_slots{agent="a"}"#).is_some(), "{page}");
    assert!(sample(&page, r#"hive_oldest_ready_task_age_seconds{agent="b"}"#).unwrap() > 0.0, "{page}");
    assert!(sample(&page, "hive_event_log_head").unwrap() >= 0.0, "{page}");
    assert!(sample(&page, r#"hive_db_connections_max{pool="hot"}"#).unwrap() >= 2.0, "{page}");
    assert!(!page.contains(&claimed[0].task_id), "no series is labelled with a task id");
    assert_eq!(promtool_problems(&page), None, "promtool check metrics on:\n{page}");

    // The counts read the changes not folded yet; folded, they are the same.
    hive_coordinator::db::metrics::fold_task_counts(&db.pool).await.unwrap();
    let left: i64 = sqlx::query_scalar("select count(*) from task_count_changes").fetch_one(&db.pool).await.unwrap();
    assert_eq!(left, 0, "the fold took every change");
    let page = get(http, "/metrics", Some(admin_token())).await.body;
    assert_eq!(sample(&page, r#"hive_tasks{agent="a",status="succeeded"}"#), Some(3.0));
    assert_invariants(&db.pool).await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_a_metrics_or_admin_token_reads_metrics() {
    let db = fresh_database().await;
    let coordinator = start(&db).await;
    let http = coordinator.http_addr.unwrap();
    let metrics = token(&coordinator, "scraper", "metrics").await;
    let viewer = token(&coordinator, "looker", "viewer").await;

    let none = get(http, "/metrics", None).await;
    assert_eq!((none.status, none.header("www-authenticate")), (401, Some("Bearer")), "{}", none.body);
    assert!(none.body.contains("no token"), "{}", none.body);
    let forged = format!("hive_m_{}", "0".repeat(64));
    let bad = get(http, "/metrics", Some(&forged)).await;
    assert_eq!(bad.status, 401, "{}", bad.body);
    let refused = get(http, "/metrics", Some(&viewer)).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert!(refused.body.contains("a viewer token may not read /metrics"), "{}", refused.body);
    assert!(!refused.body.contains("hive_tasks"), "a refusal shows nothing");
    for token in [metrics.as_str(), admin_token()] {
        let reply = get(http, "/metrics", Some(token)).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        assert!(reply.body.contains("# TYPE hive_tasks gauge"), "{}", reply.body);
    }
    assert_eq!(get(http, "/nothing-here", Some(admin_token())).await.status, 404);
    coordinator.stop().await.unwrap();
}

/// Scrapes the worker's `/metrics` until `done` holds for the page (30 s at most); the page.
async fn scrape_until(http: std::net::SocketAddr, what: &str, done: impl Fn(&str) -> bool) -> String {
    let page = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    eventually(what, Duration::from_secs(30), || {
        let (page, done) = (std::sync::Arc::clone(&page), &done);
        async move {
            // The worker binds its listener once it has registered.
            let fresh = try_get(http, "/metrics", None).await.map(|reply| reply.body).unwrap_or_default();
            let held = done(&fresh);
            *page.lock().unwrap() = fresh;
            held
        }
    })
    .await;
    page.lock().unwrap().clone()
}

/// A port free on loopback now (for a worker binary's `http.listen`).
fn free_port() -> std::net::SocketAddr {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_serves_its_running_agents_their_memory_output_and_stalls() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("release");
    nix::unistd::mkfifo(fifo.as_path(), nix::sys::stat::Mode::S_IRWXU).unwrap();
    // Writes to both streams, then waits, idle, until released.
    let agent = Agent::shell(format!(
        r#"printf 'hello'; printf 'oops' >&2; read line < {fifo}; echo '{{"ok": true}}'"#,
        fifo = fifo.display()
    ))
    .stall("2s", "ignore");
    let http = free_port();
    let config = WorkerSetup::new().http_listen(http).agent("talk", agent).write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &config, "worker", dir.path());
    submit(&coordinator, "talk", 1).await;

    let page = scrape_until(http, "the agent to run, write and stall", |page| {
        sample(page, r#"hive_worker_stalls_total{agent="talk"}"#) == Some(1.0)
            && sample(page, r#"hive_worker_output_bytes_total{agent="talk",stream="stderr"}"#) == Some(4.0)
    })
    .await;
    assert_eq!(sample(&page, r#"hive_worker_running_agents{agent="talk"}"#), Some(1.0), "{page}");
    assert!(sample(&page, r#"hive_worker_agent_rss_bytes{agent="talk"}"#).unwrap() > 0.0, "{page}");
    assert_eq!(sample(&page, r#"hive_worker_output_bytes_total{agent="talk",stream="stdout"}"#), Some(5.0), "{page}");
    assert_eq!(sample(&page, r#"hive_worker_agent_spawn_seconds_count{agent="talk"}"#), Some(1.0), "{page}");
    assert_eq!(promtool_problems(&page), None, "promtool check metrics on:\n{page}");

    let fifo = fifo.clone();
    tokio::task::spawn_blocking(move || std::fs::write(fifo, b"go\n")).await.unwrap().unwrap();
    wait_all_finished(&db.pool, Duration::from_secs(30)).await;
    scrape_until(http, "the agent to be gone from the page", |page| {
        sample(page, r#"hive_worker_running_agents{agent="talk"}"#) == Some(0.0)
    })
    .await;
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

/// Runs `promtool` with `args` in `dir`; its output when it fails.
fn promtool(dir: &std::path::Path, args: &[&str]) -> Result<(), String> {
    let output = Command::new("promtool").args(args).current_dir(dir).output().expect("run promtool");
    let said = format!("{}{}", String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    if output.status.success() { Ok(()) } else { Err(said) }
}

#[test]
fn the_prometheus_config_and_alert_rules_pass_promtool_and_their_unit_tests_and_the_operator_copy_matches() {
    let deploy = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    promtool(&deploy, &["check", "rules", "hive-rules.yaml"]).unwrap();
    promtool(&deploy, &["test", "rules", "hive-rules.test.yaml"]).unwrap();
    // The config names its token file beside it, as an operator writes it.
    let dir = tempfile::tempdir().unwrap();
    for file in ["prometheus.yml", "hive-rules.yaml"] {
        std::fs::copy(deploy.join(file), dir.path().join(file)).unwrap();
    }
    std::fs::write(dir.path().join("hive-metrics-token"), "hive_m_0000\n").unwrap();
    promtool(dir.path(), &["check", "config", "prometheus.yml"]).unwrap();
    // The Prometheus Operator's copy holds the same rules.
    let read = |file: &str| -> serde_json::Value {
        serde_norway::from_str(&std::fs::read_to_string(deploy.join(file)).unwrap()).unwrap()
    };
    let (rules, operator) = (read("hive-rules.yaml"), read("prometheusrule.yaml"));
    assert_eq!(operator["kind"], "PrometheusRule");
    assert_eq!(operator["spec"]["groups"], rules["groups"], "prometheusrule.yaml's groups are hive-rules.yaml's");
}
