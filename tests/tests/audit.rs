//! The audit log, end to end, with auth on: every state-changing admin RPC
//! (the AdminService methods are read from the descriptor set, so a new RPC
//! must be listed here as a read or a change) writes exactly one row with
//! its change; refused calls are recorded and a flood of them is bounded;
//! the chain verifies, the coordinator's SQL cannot rewrite it, and a row
//! changed behind its back is found. Cancel and retry of ids that name no
//! task answer NOT_FOUND naming them and change nothing.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::{Duration, Instant};

use hive_shared::client::{AuthChannel, Connect};
use hive_shared::ids::TaskId;
use hive_shared::pb;
use hive_shared::pb::admin_service_client::AdminServiceClient;
use hive_shared::pb::worker_service_client::WorkerServiceClient;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{count, fresh_database};
use hive_tests::procs::{hivectl_json, hivectl_output};
use hive_tests::wait::eventually;
use prost::Message;
use sqlx::PgPool;
use tonic::Code;

/// AdminService methods that change nothing.
const READS: &[&str] = &[
    "GetTask",
    "ListTasks",
    "GetTaskLogs",
    "ListWorkers",
    "GetStats",
    "ListLocks",
    "ListTokens",
    "ListAudit",
    "ListPauses",
    "ListCooldowns",
    "VerifyAudit",
    "Watch",
    "ListWebhookDeliveries",
];
/// AdminService methods that change state: each writes one audit row.
const CHANGES: &[&str] = &[
    "SubmitTasks",
    "CancelTask",
    "CancelTasks",
    "RetryTasks",
    "StopWorkers",
    "SetSwarmBudget",
    "CreateToken",
    "RevokeToken",
    "Pause",
    "Resume",
    "ClearCooldown",
    "ResendWebhookDelivery",
];

/// Every AdminService method, from the descriptor set the server reflects.
fn admin_methods() -> Vec<String> {
    let set = prost_types::FileDescriptorSet::decode(hive_shared::pb::FILE_DESCRIPTOR_SET).unwrap();
    set.file
        .iter()
        .flat_map(|file| file.service.iter())
        .filter(|service| service.name() == "AdminService")
        .flat_map(|service| service.method.iter().map(|method| method.name().to_owned()))
        .collect()
}

/// A coordinator with auth on (as every test's is), and its admin token.
struct Secured {
    coordinator: TestCoordinator,
    admin_token: String,
}

async fn start_secured(db: &hive_tests::postgres::TestDb) -> Secured {
    let coordinator = TestCoordinator::start(test_config(db)).await;
    Secured { coordinator, admin_token: hive_tests::auth::admin_token().to_owned() }
}

async fn channel(url: &str, token: Option<&str>) -> AuthChannel {
    let connect = Connect::plain(url);
    let connect = match token {
        Some(token) => connect.with_token(token),
        None => connect,
    };
    connect.connect().await.unwrap()
}

async fn admin_as(url: &str, token: Option<&str>) -> AdminServiceClient<AuthChannel> {
    AdminServiceClient::new(channel(url, token).await)
}

/// One audit row as the test reads it.
#[derive(Debug)]
struct Row {
    seq: i64,
    actor: String,
    role: Option<String>,
    action: String,
    affected: i64,
    outcome: String,
    reason: Option<String>,
    peer: Option<String>,
    target: serde_json::Value,
}

type RowTuple = (i64, String, Option<String>, String, i64, String, Option<String>, Option<String>, serde_json::Value);

async fn rows_where(pool: &PgPool, condition: &str) -> Vec<Row> {
    let sql = format!(
        "select seq, actor, role, action, affected, outcome, reason, peer, target from audit_log where {condition} \
         order by seq"
    );
    let rows: Vec<RowTuple> = sqlx::query_as(sqlx::AssertSqlSafe(sql)).fetch_all(pool).await.unwrap();
    rows.into_iter()
        .map(|(seq, actor, role, action, affected, outcome, reason, peer, target)| Row {
            seq,
            actor,
            role,
            action,
            affected,
            outcome,
            reason,
            peer,
            target,
        })
        .collect()
}

/// The first row matching `condition`, once one is written (refusals are written in the background).
async fn first_row_when_written(pool: &PgPool, condition: &str) -> Row {
    eventually(&format!("an audit row where {condition}"), Duration::from_secs(10), || async {
        !rows_where(pool, condition).await.is_empty()
    })
    .await;
    rows_where(pool, condition).await.remove(0)
}

/// The one row written since `after` (which moves to it): by the admin, from this host, for `action`.
async fn one_new_row(pool: &PgPool, after: &mut i64, action: &str, affected: i64) -> Row {
    let mut rows = rows_where(pool, &format!("seq > {after}")).await;
    assert_eq!(rows.len(), 1, "{action} writes exactly one audit row: {rows:?}");
    let row = rows.remove(0);
    assert_eq!(row.action, action);
    assert_eq!((row.actor.as_str(), row.role.as_deref(), row.outcome.as_str()), ("admin", Some("admin"), "ok"));
    assert_eq!(row.affected, affected, "{action}: {row:?}");
    assert_eq!(row.reason, None);
    assert!(row.peer.as_deref().is_some_and(|peer| peer.starts_with("127.0.0.1:")), "{row:?}");
    *after = row.seq;
    row
}

/// Changes a row's target the way only a superuser can: with triggers off.
async fn tamper(pool: &PgPool, seq: i64) {
    let mut conn = pool.acquire().await.unwrap();
    sqlx::query("set session_replication_role = replica").execute(&mut *conn).await.unwrap();
    sqlx::query("update audit_log set target = target || '{\"tampered\": true}' where seq = $1")
        .bind(seq)
        .execute(&mut *conn)
        .await
        .unwrap();
    sqlx::query("reset session_replication_role").execute(&mut *conn).await.unwrap();
}

#[test]
fn every_admin_method_is_listed_as_a_read_or_a_change() {
    let methods = admin_methods();
    for method in &methods {
        let (read, change) = (READS.contains(&method.as_str()), CHANGES.contains(&method.as_str()));
        assert!(read != change, "AdminService.{method}: list it in READS or CHANGES (changes must be audited)");
    }
    assert_eq!(methods.len(), READS.len() + CHANGES.len(), "the lists name methods the service lacks: {methods:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_state_changing_admin_call_writes_exactly_one_audit_row_and_the_chain_verifies() {
    let db = fresh_database().await;
    let secured = start_secured(&db).await;
    let url = secured.coordinator.url.clone();
    let mut admin = admin_as(&url, Some(&secured.admin_token)).await;
    let mut after = 0;
    let mut audited: Vec<String> = Vec::new();

    let tasks = (0..3)
        .map(|n| pb::TaskSpec { agent: "work".into(), prompt: n.to_string(), max_attempts: 1, ..Default::default() })
        .collect();
    let request = pb::SubmitTasksRequest { swarm: "audited".into(), tasks, ..Default::default() };
    let submitted = admin.submit_tasks(request).await.unwrap().into_inner();
    let row = one_new_row(&db.pool, &mut after, "SubmitTasks", 3).await;
    assert_eq!(row.target["swarm_id"], submitted.swarm_id.as_str());
    audited.push(row.action);
    let ids = submitted.task_ids;

    // Text a person typed survives jsonb's trip and still hashes the same (the chain verifies below).
    let reason = "not \"needed\" \\ ünïcödé 🐝 \u{1b}[31m\n";
    admin.cancel_task(pb::CancelTaskRequest { task_id: ids[0].clone(), reason: reason.into() }).await.unwrap();
    let row = one_new_row(&db.pool, &mut after, "CancelTask", 1).await;
    assert_eq!((&row.target["task_id"], &row.target["reason"]), (&ids[0].as_str().into(), &reason.into()));
    audited.push(row.action);

    let by_id = pb::TaskFilter { task_ids: vec![ids[1].clone()], ..Default::default() };
    admin.cancel_tasks(pb::CancelTasksRequest { filter: Some(by_id), reason: String::new() }).await.unwrap();
    let row = one_new_row(&db.pool, &mut after, "CancelTasks", 1).await;
    assert_eq!(row.target["task_ids"][0], ids[1].as_str());
    audited.push(row.action);

    // The third task dies through the worker API, which is not audited.
    let mut worker = WorkerServiceClient::new(channel(&url, Some(&secured.admin_token)).await);
    let worker_id = hive_shared::ids::WorkerId::new().to_string();
    let registration = pb::RegisterRequest {
        worker_id: worker_id.clone(),
        name: "w".into(),
        agents: vec!["work".into()],
        slots: 1,
        ..Default::default()
    };
    worker.register(registration).await.unwrap();
    let claim = pb::ClaimRequest {
        worker_id: worker_id.clone(),
        max_tasks: 1,
        wait: Some(hive_shared::convert::duration(Duration::from_secs(5))),
        agents: vec![],
    };
    let assignment = worker.claim(claim).await.unwrap().into_inner().assignments.remove(0);
    let failure = pb::Failure {
        task_id: assignment.task_id.clone(),
        attempt_id: assignment.attempt_id.clone(),
        class: pb::FailureClass::Permanent.into(),
        error: "broken".into(),
        ..Default::default()
    };
    worker.fail(pb::FailRequest { worker_id: worker_id.clone(), failures: vec![failure] }).await.unwrap();
    assert!(rows_where(&db.pool, &format!("seq > {after}")).await.is_empty(), "worker calls are not audited");

    let dead = pb::TaskFilter { task_ids: vec![ids[2].clone()], ..Default::default() };
    let retried = admin.retry_tasks(pb::RetryTasksRequest { filter: Some(dead) }).await.unwrap().into_inner();
    assert_eq!(retried.retried, 1);
    audited.push(one_new_row(&db.pool, &mut after, "RetryTasks", 1).await.action);

    let stop = pb::StopWorkersRequest { worker_ids: vec![worker_id.clone()], all: false, now: false };
    admin.stop_workers(stop).await.unwrap();
    let row = one_new_row(&db.pool, &mut after, "StopWorkers", 1).await;
    assert_eq!(row.target["worker_ids"][0], worker_id.as_str());
    audited.push(row.action);

    let budget = pb::SetSwarmBudgetRequest { swarm_id: submitted.swarm_id.clone(), budget: 12.5 };
    admin.set_swarm_budget(budget).await.unwrap();
    let row = one_new_row(&db.pool, &mut after, "SetSwarmBudget", 1).await;
    assert_eq!(row.target["budget"], 12.5);
    audited.push(row.action);

    let create = pb::CreateTokenRequest { name: "doomed".into(), role: "viewer".into(), expires_in: None };
    admin.create_token(create).await.unwrap();
    let row = one_new_row(&db.pool, &mut after, "CreateToken", 1).await;
    assert_eq!((&row.target["name"], &row.target["role"]), (&"doomed".into(), &"viewer".into()));
    audited.push(row.action);

    admin.revoke_token(pb::RevokeTokenRequest { name: "doomed".into() }).await.unwrap();
    audited.push(one_new_row(&db.pool, &mut after, "RevokeToken", 1).await.action);

    let pause = pb::PauseRequest {
        scope: pb::PauseScope::Agent.into(),
        target: "echo".into(),
        reason: "maintenance".into(),
        duration: None,
        stop_running: true,
    };
    admin.pause(pause).await.unwrap();
    let row = one_new_row(&db.pool, &mut after, "Pause", 1).await;
    assert_eq!((&row.target["target"], &row.target["reason"]), (&"echo".into(), &"maintenance".into()));
    assert_eq!(row.target["stop_running"], true);
    audited.push(row.action);
    admin.resume(pb::ResumeRequest { scope: pb::PauseScope::Agent.into(), target: "echo".into() }).await.unwrap();
    audited.push(one_new_row(&db.pool, &mut after, "Resume", 1).await.action);

    admin.clear_cooldown(pb::ClearCooldownRequest { account: "anthropic/none".into() }).await.unwrap();
    audited.push(one_new_row(&db.pool, &mut after, "ClearCooldown", 0).await.action);

    let delivery = uuid::Uuid::now_v7();
    sqlx::query("insert into webhook_deliveries (id, webhook, first_seq, last_seq, events, body, status) values ($1, 'ops', 1, 1, 1, '{}', 'failed')")
        .bind(delivery)
        .execute(&db.pool)
        .await
        .unwrap();
    admin.resend_webhook_delivery(pb::ResendWebhookDeliveryRequest { id: delivery.to_string() }).await.unwrap();
    let row = one_new_row(&db.pool, &mut after, "ResendWebhookDelivery", 1).await;
    assert_eq!(row.target["delivery"], delivery.to_string());
    audited.push(row.action);

    audited.sort();
    let mut changes: Vec<&str> = CHANGES.to_vec();
    changes.sort_unstable();
    assert_eq!(audited, changes, "every state-changing RPC was exercised");

    // Reads, and calls that fail, leave no row.
    admin.list_tasks(pb::ListTasksRequest::default()).await.unwrap();
    admin.get_stats(pb::GetStatsRequest::default()).await.unwrap();
    let missing = admin.revoke_token(pb::RevokeTokenRequest { name: "nobody".into() }).await.unwrap_err();
    assert_eq!(missing.code(), Code::NotFound);
    assert!(rows_where(&db.pool, &format!("seq > {after}")).await.is_empty());

    reading_the_log(&mut admin).await;
    the_chain_verifies_resists_rewrites_and_finds_a_tampered_row(&db.pool, &mut admin).await;
    secured.coordinator.stop().await.unwrap();
}

/// ListAudit: filters, newest-first pages, and following the log.
async fn reading_the_log(admin: &mut AdminServiceClient<AuthChannel>) {
    let only = |action: &str| pb::ListAuditRequest { action: action.into(), ..Default::default() };
    let cancels = admin.list_audit(only("CancelTask")).await.unwrap().into_inner().entries;
    assert_eq!(cancels.len(), 1, "action matches whole names");
    let target = hive_shared::convert::struct_to_json(cancels[0].target.clone().unwrap());
    assert!(target["reason"].as_str().unwrap().starts_with("not \"needed\""), "{target:?}");
    let by_nobody = pb::ListAuditRequest { actor: "nobody".into(), ..Default::default() };
    assert!(admin.list_audit(by_nobody).await.unwrap().into_inner().entries.is_empty());

    let mut seen: Vec<u64> = Vec::new();
    let mut before_seq = 0;
    loop {
        let page = pb::ListAuditRequest { limit: 3, before_seq, ..Default::default() };
        let page = admin.list_audit(page).await.unwrap().into_inner();
        seen.extend(page.entries.iter().map(|entry| entry.seq));
        if page.next_before_seq == 0 {
            break;
        }
        before_seq = page.next_before_seq;
    }
    assert_eq!(seen.len(), CHANGES.len());
    assert!(seen.windows(2).all(|pair| pair[0] > pair[1]), "newest first: {seen:?}");
    let oldest = *seen.last().unwrap();
    let following = pb::ListAuditRequest { after_seq: oldest, ..Default::default() };
    let following: Vec<u64> =
        admin.list_audit(following).await.unwrap().into_inner().entries.iter().map(|entry| entry.seq).collect();
    assert_eq!(following.len(), CHANGES.len() - 1);
    assert!(following.windows(2).all(|pair| pair[0] < pair[1]), "oldest first after a seq: {following:?}");
    let future = pb::ListAuditRequest {
        since: Some(hive_shared::convert::timestamp(chrono::Utc::now() + chrono::Duration::hours(1))),
        ..Default::default()
    };
    assert!(admin.list_audit(future).await.unwrap().into_inner().entries.is_empty());
    let both = pb::ListAuditRequest { before_seq: 5, after_seq: 1, ..Default::default() };
    assert_eq!(admin.list_audit(both).await.unwrap_err().code(), Code::InvalidArgument);
}

async fn the_chain_verifies_resists_rewrites_and_finds_a_tampered_row(
    pool: &PgPool,
    admin: &mut AdminServiceClient<AuthChannel>,
) {
    let verified = admin.verify_audit(pb::VerifyAuditRequest {}).await.unwrap().into_inner();
    assert!(verified.ok, "{verified:?}");
    assert_eq!(verified.rows_checked, CHANGES.len() as u64);

    // The coordinator's own statements cannot change or remove rows.
    for statement in ["update audit_log set actor = 'someone else'", "delete from audit_log", "truncate audit_log"] {
        let err = sqlx::query(statement).execute(pool).await.unwrap_err();
        assert!(err.to_string().contains("append-only"), "{statement}: {err}");
    }
    assert_eq!(count(pool, "select count(*) from audit_log").await, CHANGES.len() as i64);

    let cancel_tasks = rows_where(pool, "action = 'CancelTasks'").await.remove(0).seq;
    tamper(pool, cancel_tasks).await;
    let verified = admin.verify_audit(pb::VerifyAuditRequest {}).await.unwrap().into_inner();
    assert!(!verified.ok);
    assert_eq!(verified.first_bad_seq, u64::try_from(cancel_tasks).unwrap());
    assert_eq!(verified.rows_checked, 2, "the rows before it check out");
    assert!(verified.problem.contains("changed"), "{}", verified.problem);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_calls_are_audited_and_a_flood_of_them_is_bounded() {
    let db = fresh_database().await;
    let secured = start_secured(&db).await;
    let url = secured.coordinator.url.clone();
    let mut admin = admin_as(&url, Some(&secured.admin_token)).await;
    let mut nobody = admin_as(&url, None).await;

    let filter = pb::TaskFilter { swarm_id: uuid_text(), ..Default::default() };
    let refused = nobody.cancel_tasks(pb::CancelTasksRequest { filter: Some(filter), ..Default::default() }).await;
    assert_eq!(refused.unwrap_err().code(), Code::Unauthenticated);
    let row = first_row_when_written(&db.pool, "outcome = 'refused'").await;
    assert_eq!(
        (row.actor.as_str(), row.role.as_deref(), row.action.as_str()),
        ("unauthenticated", None, "CancelTasks")
    );
    assert!(row.reason.as_deref().is_some_and(|reason| reason.contains("no token")), "{row:?}");
    assert_eq!((row.affected, &row.target["service"]), (0, &"hive.v1.AdminService".into()));
    assert!(row.peer.is_some());

    let create = pb::CreateTokenRequest { name: "watcher".into(), role: "viewer".into(), expires_in: None };
    let viewer_token = admin.create_token(create).await.unwrap().into_inner().token;
    let mut viewer = admin_as(&url, Some(&viewer_token)).await;
    let read = viewer.list_tokens(pb::ListTokensRequest {}).await.unwrap_err();
    assert_eq!(read.code(), Code::PermissionDenied, "a viewer may not list tokens (a read: not audited)");
    let stop = viewer.stop_workers(pb::StopWorkersRequest { all: true, ..Default::default() }).await.unwrap_err();
    assert_eq!(stop.code(), Code::PermissionDenied);
    let row = first_row_when_written(&db.pool, "actor = 'watcher'").await;
    assert_eq!(
        (row.role.as_deref(), row.action.as_str(), row.outcome.as_str()),
        (Some("viewer"), "StopWorkers", "refused")
    );
    assert!(row.reason.as_deref().is_some_and(|reason| reason.contains("may not call")), "{row:?}");
    assert!(rows_where(&db.pool, "action = 'ListTokens'").await.is_empty(), "refused reads are not audited");

    // A flood of bad calls adds at most 20 rows a second (the coordinator's bound).
    let before = rows_where(&db.pool, "outcome = 'refused'").await.len() as u64;
    let started = Instant::now();
    for _ in 0..300 {
        let refused = nobody.submit_tasks(pb::SubmitTasksRequest::default()).await.unwrap_err();
        assert_eq!(refused.code(), Code::Unauthenticated);
    }
    let windows = started.elapsed().as_secs() + 2;
    secured.coordinator.stop().await.unwrap(); // waits for the spawned writes
    let written = rows_where(&db.pool, "outcome = 'refused'").await.len() as u64 - before;
    assert!(written >= 1 && written <= 20 * windows, "{written} refusal rows in at most {windows} windows");

    // Concurrent appends kept the chain whole.
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let verified = admin.verify_audit(pb::VerifyAuditRequest {}).await.unwrap().into_inner();
    assert!(verified.ok, "{verified:?}");
    assert_eq!(verified.rows_checked, before + written + 1, "the refusals and the CreateToken");
    coordinator.stop().await.unwrap();
}

fn uuid_text() -> String {
    uuid::Uuid::new_v4().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cancel_and_retry_of_ids_that_name_no_task_answer_not_found_and_change_nothing() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let task = pb::TaskSpec { agent: "work".into(), prompt: "x".into(), ..Default::default() };
    let request = pb::SubmitTasksRequest { swarm: "s".into(), tasks: vec![task], ..Default::default() };
    let existing = admin.submit_tasks(request).await.unwrap().into_inner().task_ids.remove(0);
    let unknown = TaskId::new().to_string();
    let both = || pb::TaskFilter { task_ids: vec![existing.clone(), unknown.clone()], ..Default::default() };

    let single = admin.cancel_task(pb::CancelTaskRequest { task_id: unknown.clone(), ..Default::default() }).await;
    let refused = [
        single.unwrap_err(),
        admin.cancel_tasks(pb::CancelTasksRequest { filter: Some(both()), ..Default::default() }).await.unwrap_err(),
        admin.retry_tasks(pb::RetryTasksRequest { filter: Some(both()) }).await.unwrap_err(),
    ];
    for status in refused {
        assert_eq!(status.code(), Code::NotFound, "{status:?}");
        assert!(status.message().contains(&unknown) && !status.message().contains(&existing), "{}", status.message());
    }
    let nul = pb::CancelTaskRequest { task_id: existing.clone(), reason: "a\0b".into() };
    assert_eq!(admin.cancel_task(nul).await.unwrap_err().code(), Code::InvalidArgument);
    let other_swarm = pb::TaskFilter { swarm_id: uuid_text(), ..Default::default() };
    let refused = admin.cancel_tasks(pb::CancelTasksRequest { filter: Some(other_swarm), ..Default::default() }).await;
    assert_eq!(refused.unwrap_err().code(), Code::NotFound);
    assert_eq!(count(&db.pool, "select count(*) from task_states where status = 'ready'").await, 1, "nothing changed");

    for command in ["cancel", "retry"] {
        let output = hivectl_output(&coordinator.url, &[command, &unknown]).await;
        assert!(!output.status.success(), "{command}");
        assert!(
            output.stderr.contains(&unknown) && output.stderr.contains("not found"),
            "{command}: {}",
            output.stderr
        );
    }

    // Only the submission was audited, by the harness's admin token.
    let rows = hivectl_json(&coordinator.url, &["audit"]).await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "{rows:?}");
    assert_eq!(
        (&rows[0]["actor"], &rows[0]["action"], &rows[0]["affected"]),
        (&"admin".into(), &"SubmitTasks".into(), &1.into())
    );
    let verified = hivectl_output(&coordinator.url, &["audit", "verify"]).await;
    assert!(verified.status.success() && verified.stdout.contains("1 row(s) checked"), "{}", verified.stderr);
    tamper(&db.pool, rows[0]["seq"].as_i64().unwrap()).await;
    let verified = hivectl_output(&coordinator.url, &["audit", "verify"]).await;
    assert!(!verified.status.success(), "a broken chain fails the command");
    assert!(verified.stderr.contains(&format!("seq {}", rows[0]["seq"])), "{}", verified.stderr);
    coordinator.stop().await.unwrap();
}
