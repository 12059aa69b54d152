//! Named tokens and attempt tokens on real coordinators: `hivectl tokens`
//! makes, lists and revokes them; a revocation on one coordinator is
//! refused by another within a second; an agent's token works for its own
//! attempt only while that attempt is current; ownership holds between
//! tokens of the same role; heartbeat and watch streams end once their
//! token is revoked.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::{Duration, Instant};

use hive_shared::convert::duration;
use hive_shared::pb;
use hive_shared::pb::admin_service_client::AdminServiceClient;
use hive_shared::pb::worker_service_client::WorkerServiceClient;
use hive_tests::auth::admin_token;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::postgres::fresh_database;
use hive_tests::procs::hivectl_as;
use tonic::Code;

fn create(name: &str, role: &str) -> pb::CreateTokenRequest {
    pb::CreateTokenRequest { name: name.into(), role: role.into(), expires_in: None }
}

fn submit(swarm: &str) -> pb::SubmitTasksRequest {
    let task = pb::TaskSpec { agent: "echo".into(), prompt: "p".into(), ..Default::default() };
    pb::SubmitTasksRequest { swarm: swarm.into(), tasks: vec![task], ..Default::default() }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_revoked_on_one_coordinator_is_refused_by_another_within_a_second() {
    let db = fresh_database().await;
    let first = TestCoordinator::start(test_config(&db)).await;
    let second = TestCoordinator::start(test_config(&db)).await;
    let made = first.admin_client().await.create_token(create("ci", "viewer")).await.unwrap().into_inner();
    let mut on_second = AdminServiceClient::new(second.connect(&made.token).connect().await.unwrap());
    on_second.get_stats(pb::GetStatsRequest::default()).await.expect("the new token works on the other coordinator");

    first.admin_client().await.revoke_token(pb::RevokeTokenRequest { name: "ci".into() }).await.unwrap();
    hive_tests::wait::eventually("the other coordinator to refuse it", Duration::from_secs(1), || {
        let mut on_second = on_second.clone();
        async move { on_second.get_stats(pb::GetStatsRequest::default()).await.is_err() }
    })
    .await;
    let refused = on_second.get_stats(pb::GetStatsRequest::default()).await.unwrap_err();
    assert_eq!(refused.code(), Code::Unauthenticated);
    assert!(refused.message().contains("revoked"), "{}", refused.message());
    first.stop().await.unwrap();
    second.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hivectl_makes_lists_and_revokes_tokens_and_never_lists_secrets() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let url = coordinator.url.clone();
    let made = hivectl_as(
        admin_token(),
        &url,
        &["tokens", "create", "--role", "submitter", "--name", "ci", "--expires", "90d"],
    )
    .await;
    assert!(made.status.success(), "{}", made.stderr);
    let token = made.stdout.trim().to_owned();
    assert!(token.starts_with("hive_s_") && token.len() == 71, "{token}");

    let listed = hivectl_as(admin_token(), &url, &["--json", "tokens", "list"]).await;
    let listed: serde_json::Value = serde_json::from_str(&listed.stdout).unwrap();
    let entry = listed.as_array().unwrap().iter().find(|entry| entry["name"] == "ci").unwrap().clone();
    assert_eq!(entry["role"], "submitter");
    assert!(entry["expires_at"].is_string(), "{entry}");
    assert!(!listed.to_string().contains(&token[7..]), "the list never shows a secret");
    let stored: Vec<u8> =
        sqlx::query_scalar("select hash from api_tokens where name = 'ci'").fetch_one(&db.pool).await.unwrap();
    assert_eq!(stored, hive_shared::tokens::hash(&token).to_vec(), "only the hash is stored");

    // The submitter submits with its token; a viewer token may not.
    let status = hivectl_as(&token, &url, &["status"]).await;
    assert!(!status.status.success() && status.stderr.contains("must name one of its swarms"), "{}", status.stderr);
    let taken = hivectl_as(admin_token(), &url, &["tokens", "create", "--role", "viewer", "--name", "ci"]).await;
    assert!(!taken.status.success() && taken.stderr.contains("exists already"), "{}", taken.stderr);

    let revoked = hivectl_as(admin_token(), &url, &["tokens", "revoke", "ci"]).await;
    assert!(revoked.status.success(), "{}", revoked.stderr);
    // Coordinators trust what they looked up for at most half a second.
    hive_tests::wait::eventually("the revoked token to be refused", Duration::from_secs(1), || {
        let (token, url) = (token.clone(), url.clone());
        async move {
            let refused = hivectl_as(&token, &url, &["tasks", "list"]).await;
            refused.stderr.contains("Unauthenticated") && refused.stderr.contains("revoked")
        }
    })
    .await;
    let missing = hivectl_as(admin_token(), &url, &["tokens", "revoke", "nobody"]).await;
    assert!(missing.stderr.contains("NotFound") && missing.stderr.contains("nobody"), "{}", missing.stderr);
    let anonymous = hivectl_as("", &url, &["tasks", "list"]).await;
    assert!(anonymous.stderr.contains("no token"), "{}", anonymous.stderr);
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_attempt_token_takes_locks_for_its_own_attempt_only_while_it_is_current() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let two = pb::SubmitTasksRequest {
        tasks: vec![submit("x").tasks[0].clone(), submit("x").tasks[0].clone()],
        ..submit("locks")
    };
    admin.submit_tasks(two).await.unwrap();
    let mut worker = FakeWorker::register(&coordinator, "w", &["echo"], 2).await;
    let claimed = worker.claim(2, Duration::from_secs(5)).await;
    assert_eq!(claimed.len(), 2);
    let (mine, other) = (&claimed[0], &claimed[1]);
    let mut agent = WorkerServiceClient::new(coordinator.connect(&mine.agent_token).connect().await.unwrap());
    let lock = |task: &pb::Assignment, key: &str| pb::AcquireLockRequest {
        task_id: task.task_id.clone(),
        attempt_id: task.attempt_id.clone(),
        key: key.into(),
        wait: Some(duration(Duration::ZERO)),
    };
    assert!(agent.acquire_lock(lock(mine, "repo")).await.unwrap().into_inner().acquired);
    let foreign = agent.acquire_lock(lock(other, "other")).await.unwrap_err();
    assert_eq!(foreign.code(), Code::PermissionDenied, "{foreign:?}");
    let claim = pb::ClaimRequest { worker_id: worker.id.clone(), max_tasks: 1, ..Default::default() };
    let claim = agent.claim(claim).await.unwrap_err();
    assert_eq!(claim.code(), Code::PermissionDenied, "an agent cannot claim: {claim:?}");

    // The attempt ends: its token takes nothing more.
    let done =
        pb::Completion { task_id: mine.task_id.clone(), attempt_id: mine.attempt_id.clone(), ..Default::default() };
    worker
        .client
        .complete(pb::CompleteRequest { worker_id: worker.id.clone(), completions: vec![done] })
        .await
        .unwrap();
    let after = agent.acquire_lock(lock(mine, "later")).await.unwrap_err();
    assert_eq!(after.code(), Code::Aborted, "the attempt is over: {after:?}");
    let held: i64 = sqlx::query_scalar("select count(*) from task_locks").fetch_one(&db.pool).await.unwrap();
    assert_eq!(held, 0, "the ended attempt's lock was released and no new one taken");
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_of_one_role_cannot_touch_each_others_work() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let token = |name: &'static str, role: &'static str| {
        let mut admin = admin.clone();
        async move { admin.create_token(create(name, role)).await.unwrap().into_inner().token }
    };
    let (alice, bob) = (token("alice", "submitter").await, token("bob", "submitter").await);
    let other_workers = token("other-workers", "worker").await;
    let mut alice = AdminServiceClient::new(coordinator.connect(&alice).connect().await.unwrap());
    let mut bob = AdminServiceClient::new(coordinator.connect(&bob).connect().await.unwrap());

    let swarm = alice.submit_tasks(submit("alice")).await.unwrap().into_inner();
    let task = swarm.task_ids[0].clone();
    let stats = pb::GetStatsRequest { swarm_id: swarm.swarm_id.clone() };
    alice.get_stats(stats.clone()).await.expect("alice reads her swarm");
    let hers = || Some(pb::TaskFilter { swarm_id: swarm.swarm_id.clone(), ..Default::default() });
    for refused in [
        bob.get_stats(stats).await.map(|_| ()),
        bob.get_task(pb::GetTaskRequest { task_id: task.clone() }).await.map(|_| ()),
        bob.cancel_task(pb::CancelTaskRequest { task_id: task.clone(), reason: String::new() }).await.map(|_| ()),
        bob.list_tasks(pb::ListTasksRequest::default()).await.map(|_| ()),
        bob.list_tasks(pb::ListTasksRequest { swarm_id: swarm.swarm_id.clone(), ..Default::default() })
            .await
            .map(|_| ()),
        bob.cancel_tasks(pb::CancelTasksRequest { filter: hers(), reason: String::new() }).await.map(|_| ()),
        bob.get_task_logs(pb::GetTaskLogsRequest { task_id: task.clone(), ..Default::default() }).await.map(|_| ()),
    ] {
        let status = refused.unwrap_err();
        assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    }
    let keyed = pb::SubmitTasksRequest { idempotency_key: "k".into(), ..submit("alice") };
    let first = alice.submit_tasks(keyed.clone()).await.unwrap().into_inner();
    let again = alice.submit_tasks(keyed.clone()).await.unwrap().into_inner();
    assert!(again.existing && again.swarm_id == first.swarm_id, "a key is idempotent for its token");
    let bobs = bob.submit_tasks(keyed).await.unwrap().into_inner();
    assert!(
        !bobs.existing && bobs.swarm_id != first.swarm_id,
        "keys are per token: bob neither sees nor blocks alice's"
    );
    let depends = pb::SubmitTasksRequest {
        tasks: vec![pb::TaskSpec { depends_on: vec![task.clone()], ..submit("b").tasks[0].clone() }],
        ..submit("bob")
    };
    let reads_alice = bob.submit_tasks(depends).await.unwrap_err();
    assert_eq!(reads_alice.code(), Code::PermissionDenied, "a dependency on another's task: {reads_alice:?}");
    admin.get_task(pb::GetTaskRequest { task_id: task }).await.expect("an admin reads everything");

    // A worker registered with one worker token is not another worker token's to use.
    let worker = FakeWorker::register(&coordinator, "w", &["echo"], 1).await;
    let mut intruder = WorkerServiceClient::new(coordinator.connect(&other_workers).connect().await.unwrap());
    let claim = pb::ClaimRequest { worker_id: worker.id.clone(), max_tasks: 1, ..Default::default() };
    let status = intruder.claim(claim).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let hijack = pb::RegisterRequest {
        worker_id: worker.id.clone(),
        name: "evil".into(),
        agents: vec!["echo".into()],
        slots: 1,
        ..Default::default()
    };
    let status = intruder.register(hijack).await.unwrap_err();
    assert_eq!(status.code(), Code::PermissionDenied, "{status:?}");
    let name: String = sqlx::query_scalar("select name from workers").fetch_one(&db.pool).await.unwrap();
    assert_eq!(name, "w", "the refused registration changed nothing");
    coordinator.stop().await.unwrap();
}

#[tokio::test]
async fn without_auth_a_coordinator_refuses_to_serve_beyond_loopback() {
    let output = tokio::process::Command::new(hive_tests::procs::binary("hive-coordinator"))
        .args(["--listen", "0.0.0.0:0", "--check-config"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .env_remove("HIVE_COORDINATOR__AUTH__ADMIN_TOKEN_FILE")
        .output()
        .await
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not a loopback address") && stderr.contains("--insecure"), "{stderr}");
    let insecure = tokio::process::Command::new(hive_tests::procs::binary("hive-coordinator"))
        .args(["--listen", "0.0.0.0:0", "--insecure", "--check-config"])
        .env("DATABASE_URL", "postgres://nobody@127.0.0.1:1/none")
        .output()
        .await
        .unwrap();
    assert!(insecure.status.success(), "{}", String::from_utf8_lossy(&insecure.stderr));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_heartbeat_stream_ends_once_its_token_is_revoked() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let token = admin.create_token(create("fleet-b", "worker")).await.unwrap().into_inner().token;
    let mut client = WorkerServiceClient::new(coordinator.connect(&token).connect().await.unwrap());
    let worker_id = uuid::Uuid::new_v4().to_string();
    let registration = pb::RegisterRequest {
        worker_id: worker_id.clone(),
        name: "b".into(),
        agents: vec!["echo".into()],
        slots: 1,
        ..Default::default()
    };
    client.register(registration).await.unwrap();
    let (beats, outbound) = tokio::sync::mpsc::channel(4);
    let beat = pb::HeartbeatRequest { worker_id, ..Default::default() };
    let beater = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(50));
        while beats.send(beat.clone()).await.is_ok() {
            every.tick().await;
        }
    });
    let mut replies =
        client.heartbeat(tokio_stream::wrappers::ReceiverStream::new(outbound)).await.unwrap().into_inner();
    replies.message().await.expect("a first reply while the token is good");

    admin.revoke_token(pb::RevokeTokenRequest { name: "fleet-b".into() }).await.unwrap();
    let revoked_at = Instant::now();
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), replies.message()).await.expect("the stream moves") {
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream closed without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(revoked_at.elapsed() < Duration::from_secs(1), "ended after {:?}", revoked_at.elapsed());
    beater.abort();
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_whose_token_is_revoked_stops() {
    use hive_tests::worker_setup::{Agent, WorkerSetup};
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let token = admin.create_token(create("doomed", "worker")).await.unwrap().into_inner().token;
    let dir = tempfile::tempdir().unwrap();
    let config = WorkerSetup::new().slots(1).agent("echo", Agent::shell("echo '{}'")).write(dir.path(), "worker");
    let mut command = tokio::process::Command::new(hive_tests::procs::binary("hive-worker"));
    command.arg("--config").arg(&config).args(["--coordinator", &coordinator.url, "--name", "doomed"]);
    command.env("HIVE_TOKEN", &token).env("RUST_LOG", "info");
    let mut worker = hive_tests::procs::Proc::spawn(command, dir.path().join("doomed.log"));
    hive_tests::wait::eventually("the worker to register", Duration::from_secs(20), || {
        let pool = db.pool.clone();
        async move {
            let n: i64 = sqlx::query_scalar("select count(*) from workers where registered_by = 'doomed'")
                .fetch_one(&pool)
                .await
                .unwrap();
            n == 1
        }
    })
    .await;

    admin.revoke_token(pb::RevokeTokenRequest { name: "doomed".into() }).await.unwrap();
    let exited = tokio::time::timeout(Duration::from_secs(20), worker.child.wait()).await;
    let status = exited.expect("the worker stops once its token is refused").unwrap();
    assert!(status.code().is_some(), "it exits, not killed: {status:?}");
    assert!(worker.log_text().contains("refuses this worker's token"), "{}", worker.log_text());
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_submitter_cannot_change_a_concurrency_keys_limit_and_an_admin_can() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let carol = admin.create_token(create("carol", "submitter")).await.unwrap().into_inner().token;
    let mut carol = AdminServiceClient::new(coordinator.connect(&carol).connect().await.unwrap());
    let keyed = |limit: u32| pb::SubmitTasksRequest {
        swarm: "keyed".into(),
        tasks: vec![pb::TaskSpec {
            agent: "a".into(),
            prompt: "p".into(),
            concurrency: [("repo:api".to_owned(), limit)].into(),
            ..Default::default()
        }],
        ..Default::default()
    };
    let limit = || async {
        sqlx::query_scalar::<_, i32>("select max_running from concurrency_slots where key = 'repo:api'")
            .fetch_one(&db.pool)
            .await
            .unwrap()
    };
    carol.submit_tasks(keyed(2)).await.expect("a new key takes the first limit given");
    carol.submit_tasks(keyed(2)).await.expect("the same limit again");
    let refused = carol.submit_tasks(keyed(50)).await.unwrap_err();
    assert_eq!(refused.code(), Code::InvalidArgument);
    assert!(refused.message().contains("concurrency.repo:api: limit 50, but the key's limit is 2"), "{refused:?}");
    assert_eq!(limit().await, 2, "unchanged");
    let tasks: i64 = sqlx::query_scalar("select count(*) from tasks").fetch_one(&db.pool).await.unwrap();
    assert_eq!(tasks, 2, "the refused submission queued nothing");
    let changed = admin.submit_tasks(keyed(5)).await.unwrap().into_inner();
    assert!(changed.warnings.iter().any(|warning| warning.contains("from 2 to 5")), "{:?}", changed.warnings);
    assert_eq!(limit().await, 5);
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watch_ends_once_its_token_is_revoked() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let token = admin.create_token(create("eyes", "viewer")).await.unwrap().into_inner().token;
    let mut viewer = AdminServiceClient::new(coordinator.connect(&token).connect().await.unwrap());
    let mut pages = viewer.watch(pb::WatchRequest::default()).await.unwrap().into_inner();
    pages.message().await.expect("the start position while the token is good");
    admin.submit_tasks(submit("seen")).await.unwrap();
    pages.message().await.expect("an event while the token is good");

    admin.revoke_token(pb::RevokeTokenRequest { name: "eyes".into() }).await.unwrap();
    let revoked_at = Instant::now();
    // Events keep coming, as beats do on a heartbeat stream.
    let mut submitter = admin.clone();
    let submitting = tokio::spawn(async move {
        let mut every = tokio::time::interval(Duration::from_millis(100));
        while submitter.submit_tasks(submit("after")).await.is_ok() {
            every.tick().await;
        }
    });
    let ended = loop {
        match tokio::time::timeout(Duration::from_secs(5), pages.message()).await.expect("the stream moves") {
            // Pages the watcher had read before the revocation was looked up again.
            Ok(Some(_)) => continue,
            Ok(None) => panic!("the stream closed without saying why"),
            Err(status) => break status,
        }
    };
    assert_eq!(ended.code(), Code::Unauthenticated, "{ended:?}");
    assert!(revoked_at.elapsed() < Duration::from_secs(1), "ended after {:?}", revoked_at.elapsed());
    submitting.abort();
    coordinator.stop().await.unwrap();
}
