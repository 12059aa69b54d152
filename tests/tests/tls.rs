//! Real TLS against an in-process coordinator, with certificates made by the
//! real `hivectl certs dev`: grpcurl and hivectl work with the CA; plaintext
//! and silent clients are refused without holding up others; a certificate
//! replaced on disk is served without a restart; with client certificates
//! required, a worker without one is refused, one whose certificate names
//! another host is refused at Register, and a real worker whose certificate
//! names it runs a task end to end; `hive-coordinator healthcheck` probes a
//! plaintext and a TLS coordinator over loopback.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::path::{Path, PathBuf};
use std::time::Duration;

use hive_shared::client::{ClientTls, Connect};
use hive_shared::pb;
use hive_shared::pb::worker_service_client::WorkerServiceClient;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{TestDb, fresh_database};
use hive_tests::procs::{CliOutput, Proc, binary, grpcurl, hivectl_output};
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};
use tokio::process::Command;

/// Runs `hivectl certs dev --dir DIR ARGS...`; panics with its stderr if it fails.
async fn make_certs(dir: &Path, args: &[&str]) {
    let output =
        Command::new(binary("hivectl")).args(["certs", "dev", "--dir"]).arg(dir).args(args).output().await.unwrap();
    assert!(output.status.success(), "certs dev: {}", String::from_utf8_lossy(&output.stderr));
}

fn file(dir: &Path, name: &str) -> PathBuf {
    dir.join(name)
}

fn trusting(dir: &Path) -> ClientTls {
    ClientTls { ca: Some(file(dir, "ca.pem")), ..ClientTls::default() }
}

fn with_client(dir: &Path, name: &str) -> ClientTls {
    ClientTls {
        cert: Some(file(dir, &format!("client-{name}.pem"))),
        key: Some(file(dir, &format!("client-{name}-key.pem"))),
        ..trusting(dir)
    }
}

/// A coordinator serving `dir`'s server certificate; with `client_ca`, requiring client certificates.
async fn coordinator(db: &TestDb, dir: &Path, client: ClientTls, client_ca: bool) -> TestCoordinator {
    let mut config = test_config(db);
    config.tls.cert = Some(file(dir, "server.pem"));
    config.tls.key = Some(file(dir, "server-key.pem"));
    config.tls.client_ca = client_ca.then(|| file(dir, "ca.pem"));
    TestCoordinator::start_tls(config, client).await
}

/// Whether a client with `tls` gets a health answer from `url`.
async fn healthy(url: &str, tls: &ClientTls) -> bool {
    let connect = Connect { url: url.to_owned(), token: None, tls: tls.clone() };
    let Ok(channel) = connect.connect().await else { return false };
    let request = tonic_health::pb::HealthCheckRequest { service: String::new() };
    tonic_health::pb::health_client::HealthClient::new(channel).check(request).await.is_ok()
}

async fn hivectl_tls(url: &str, tls: &ClientTls, args: &[&str]) -> CliOutput {
    let mut all: Vec<String> = Vec::new();
    for (flag, path) in [("--tls-ca", &tls.ca), ("--tls-cert", &tls.cert), ("--tls-key", &tls.key)] {
        if let Some(path) = path {
            all.extend([flag.to_owned(), path.display().to_string()]);
        }
    }
    all.extend(args.iter().map(|arg| (*arg).to_owned()));
    hivectl_output(url, &all.iter().map(String::as_str).collect::<Vec<_>>()).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grpcurl_and_hivectl_work_with_the_ca_and_plaintext_is_refused() {
    let db = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), &[]).await;
    let coordinator = coordinator(&db, dir.path(), trusting(dir.path()), false).await;
    let port = coordinator.addr.port();
    let by_name = format!("https://localhost:{port}");

    let ca = file(dir.path(), "ca.pem");
    let grpcurl = |args: &[&str]| {
        let mut command = Command::new(grpcurl());
        command.arg("-cacert").arg(&ca).args(args);
        command
    };
    let target = format!("localhost:{port}");
    let list = grpcurl(&[&target, "list"]).output().await.unwrap();
    assert!(list.status.success(), "{}", String::from_utf8_lossy(&list.stderr));
    assert!(String::from_utf8_lossy(&list.stdout).contains("hive.v1.AdminService"));
    let bearer = format!("authorization: Bearer {}", hive_tests::auth::admin_token());
    let stats = grpcurl(&["-H", &bearer, "-d", "{}", &target, "hive.v1.AdminService/GetStats"]).output().await.unwrap();
    assert!(stats.status.success(), "GetStats: {}", String::from_utf8_lossy(&stats.stderr));

    let status = hivectl_tls(&by_name, &trusting(dir.path()), &["status"]).await;
    assert!(status.status.success(), "hivectl over TLS: {}", status.stderr);
    let untrusted = hivectl_output(&by_name, &["status"]).await;
    assert!(!untrusted.status.success(), "a client that does not trust the CA is refused");

    // A client that connects and says nothing holds up nobody.
    let silent = tokio::net::TcpStream::connect(coordinator.addr).await.unwrap();
    let plaintext = hivectl_output(&format!("http://127.0.0.1:{port}"), &["status"]).await;
    assert!(!plaintext.status.success(), "a plaintext client is refused");
    let again = hivectl_tls(&by_name, &trusting(dir.path()), &["status"]).await;
    assert!(again.status.success(), "TLS clients are still served: {}", again.stderr);
    drop(silent);
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_certificate_replaced_on_disk_is_served_without_a_restart() {
    let db = fresh_database().await;
    let (served, next) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    make_certs(served.path(), &[]).await;
    make_certs(next.path(), &[]).await;
    let coordinator = coordinator(&db, served.path(), trusting(served.path()), false).await;
    // The rotation below writes the new CA's ca.pem into the served folder too.
    let old_ca_file = next.path().join("old-ca.pem");
    std::fs::copy(file(served.path(), "ca.pem"), &old_ca_file).unwrap();
    let old_ca = ClientTls { ca: Some(old_ca_file), ..ClientTls::default() };
    let new_ca = trusting(next.path());
    assert!(!healthy(&coordinator.url, &new_ca).await, "the new CA is not trusted yet");

    // Rotate: a server certificate issued by the new CA, written over the served files.
    let from = next.path().display().to_string();
    make_certs(served.path(), &["--ca-from", &from, "--force"]).await;
    eventually("the new certificate to be served", Duration::from_secs(10), || healthy(&coordinator.url, &new_ca))
        .await;
    assert!(!healthy(&coordinator.url, &old_ca).await, "new connections no longer get the old certificate");
    coordinator.stop().await.unwrap();
}

/// Reports the CA file the agent was given (never the worker's key).
const ECHO: &str = r#"cat >/dev/null; printf '{"ca": "%s", "key": "%s"}\n' "$HIVE_TLS_CA" "$HIVE_TLS_KEY""#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_client_certificates_required_a_worker_must_present_one_naming_it() {
    let db = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), &["--client", "worker-1", "--client", "elsewhere"]).await;
    let admin_tls = with_client(dir.path(), "elsewhere");
    let coordinator = coordinator(&db, dir.path(), admin_tls.clone(), true).await;
    let url = coordinator.url.clone();

    assert!(!healthy(&url, &trusting(dir.path())).await, "a client without a certificate is refused");

    let channel = Connect { url: url.clone(), token: None, tls: admin_tls.clone() }
        .with_token(hive_tests::auth::worker_token())
        .connect()
        .await
        .unwrap();
    let register = pb::RegisterRequest {
        worker_id: uuid::Uuid::now_v7().to_string(),
        name: "worker-1".into(),
        hostname: "not-elsewhere".into(),
        agents: vec!["echo".into()],
        slots: 1,
        ..Default::default()
    };
    let refused = WorkerServiceClient::new(channel).register(register).await.unwrap_err();
    assert_eq!(refused.code(), tonic::Code::PermissionDenied, "{refused:?}");
    assert!(refused.message().contains("elsewhere") && refused.message().contains("worker-1"), "{refused:?}");

    let config = WorkerSetup::new().slots(1).agent("echo", Agent::shell(ECHO)).write(dir.path(), "worker");
    let worker_tls = with_client(dir.path(), "worker-1");
    let mut command = Command::new(binary("hive-worker"));
    command.arg("--config").arg(&config).args(["--coordinator", &url, "--name", "worker-1"]);
    for (flag, path) in [("--tls-ca", &worker_tls.ca), ("--tls-cert", &worker_tls.cert), ("--tls-key", &worker_tls.key)]
    {
        command.arg(flag).arg(path.as_ref().unwrap());
    }
    command.env("RUST_LOG", "info").env("HIVE_TOKEN", hive_tests::auth::worker_token());
    let worker = Proc::spawn(command, dir.path().join("worker-1.log"));

    let submitted = hivectl_tls(&url, &admin_tls, &["--json", "submit", "--agent", "echo", "--prompt", "hi"]).await;
    assert!(submitted.status.success(), "submit: {}", submitted.stderr);
    let swarm: serde_json::Value = serde_json::from_str(&submitted.stdout).unwrap();
    let swarm_id = swarm["swarm_id"].as_str().unwrap();
    let waited = tokio::time::timeout(
        Duration::from_secs(60),
        hivectl_tls(&url, &admin_tls, &["--json", "status", swarm_id, "--wait"]),
    )
    .await
    .unwrap_or_else(|_| panic!("the task finishes; worker log:\n{}", worker.log_text()));
    assert!(waited.status.success(), "status --wait: {}\nworker log:\n{}", waited.stderr, worker.log_text());
    let tasks = hivectl_tls(&url, &admin_tls, &["--json", "tasks", "list", "--swarm", swarm_id]).await;
    let tasks: serde_json::Value = serde_json::from_str(&tasks.stdout).unwrap();
    assert_eq!(tasks[0]["status"], "succeeded", "{tasks}\nworker log:\n{}", worker.log_text());
    let shown = hivectl_tls(&url, &admin_tls, &["--json", "tasks", "show", tasks[0]["id"].as_str().unwrap()]).await;
    let shown: serde_json::Value = serde_json::from_str(&shown.stdout).unwrap();
    let ca = worker_tls.ca.as_ref().unwrap().display().to_string();
    assert_eq!(shown["task"]["result"], serde_json::json!({"ca": ca, "key": ""}), "agents get the CA, not the key");
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

/// Runs `hive-coordinator healthcheck` with the server's own environment
/// (`env`) plus `extra`; its exit status and stderr.
async fn healthcheck(db: &TestDb, env: &[(&str, String)], extra: &[&str]) -> (bool, String) {
    let output = Command::new(binary("hive-coordinator"))
        .env_clear()
        .env("DATABASE_URL", &db.url)
        .envs(env.iter().map(|(key, value)| (*key, value)))
        .arg("healthcheck")
        .args(extra)
        .output()
        .await
        .unwrap();
    (output.status.success(), String::from_utf8_lossy(&output.stderr).into_owned())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn healthcheck_probes_plaintext_and_tls_coordinators_on_loopback() {
    let db = fresh_database().await;
    let dir = tempfile::tempdir().unwrap();
    make_certs(dir.path(), &[]).await;

    let plain = TestCoordinator::start(test_config(&db)).await;
    let listen = ("HIVE_LISTEN", plain.addr.to_string());
    let (ok, stderr) = healthcheck(&db, std::slice::from_ref(&listen), &[]).await;
    assert!(ok, "plaintext probe: {stderr}");
    plain.stop().await.unwrap();
    let (ok, stderr) = healthcheck(&db, &[listen], &[]).await;
    assert!(!ok && stderr.contains("cannot reach the coordinator"), "{stderr}");

    let tls = coordinator(&db, dir.path(), trusting(dir.path()), false).await;
    let server = [
        ("HIVE_LISTEN", tls.addr.to_string()),
        ("HIVE_COORDINATOR__TLS__CERT", file(dir.path(), "server.pem").display().to_string()),
        ("HIVE_COORDINATOR__TLS__KEY", file(dir.path(), "server-key.pem").display().to_string()),
    ];
    let (ok, stderr) = healthcheck(&db, &server, &[]).await;
    assert!(!ok && stderr.contains("--tls-ca"), "a TLS probe without the CA names the flag: {stderr}");
    let ca = file(dir.path(), "ca.pem").display().to_string();
    let (ok, stderr) = healthcheck(&db, &server, &["--tls-ca", &ca]).await;
    assert!(ok, "TLS probe with the CA: {stderr}");
    let (ok, stderr) = healthcheck(&db, &server, &["--tls-ca", &ca, "--tls-server-name", "elsewhere"]).await;
    assert!(!ok, "a certificate not naming the server name is refused: {stderr}");
}
