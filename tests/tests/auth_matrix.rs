//! Every RPC the coordinator serves, found through server reflection, called
//! as every kind of caller: no token, a malformed, revoked or expired token,
//! each role's token, and an agent's attempt token. Each cell answers as
//! the table in this test says, and every refused call changes nothing.
//! An RPC the table does not know fails the test, so a new RPC needs a rule.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::collections::BTreeMap;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes};
use futures_util::StreamExt;
use hive_shared::client::Connect;
use hive_shared::convert::duration;
use hive_shared::pb;
use hive_tests::auth::{admin_token, worker_token};
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::fake_worker::FakeWorker;
use hive_tests::postgres::fresh_database;
use hive_tests::wait::eventually;
use prost::Message;
use tonic::codec::{Codec, DecodeBuf, Decoder, EncodeBuf, Encoder};
use tonic::{Code, Status};
use tonic_reflection::pb::v1::server_reflection_client::ServerReflectionClient;
use tonic_reflection::pb::v1::server_reflection_request::MessageRequest;
use tonic_reflection::pb::v1::server_reflection_response::MessageResponse;
use tonic_reflection::pb::v1::{ServerReflectionRequest, ServerReflectionResponse};

/// Who may call each Hive RPC: this test's own copy of the rules.
fn allowed(service: &str, method: &str) -> Option<&'static [&'static str]> {
    const WORKERS: &[&str] = &["admin", "worker"];
    const AGENTS: &[&str] = &["admin", "agent"];
    const READERS: &[&str] = &["admin", "submitter", "viewer"];
    const FLEET_READERS: &[&str] = &["admin", "viewer"];
    const SUBMITTERS: &[&str] = &["admin", "submitter"];
    const ADMINS: &[&str] = &["admin"];
    Some(match (service, method) {
        (
            "hive.v1.WorkerService",
            "Register" | "Claim" | "Complete" | "Fail" | "Heartbeat" | "AppendLogs" | "SaveSession" | "LoadSession",
        ) => WORKERS,
        ("hive.v1.WorkerService", "AcquireLock" | "ReleaseLock" | "ReportProgress") => AGENTS,
        ("hive.v1.AdminService", "GetTask" | "ListTasks" | "GetTaskLogs" | "GetStats") => READERS,
        (
            "hive.v1.AdminService",
            "ListWorkers"
            | "ListLocks"
            | "ListAudit"
            | "VerifyAudit"
            | "ListPauses"
            | "ListCooldowns"
            | "Watch"
            | "ListWebhookDeliveries",
        ) => FLEET_READERS,
        ("hive.v1.AdminService", "SubmitTasks" | "CancelTask" | "CancelTasks") => SUBMITTERS,
        (
            "hive.v1.AdminService",
            "RetryTasks"
            | "StopWorkers"
            | "SetSwarmBudget"
            | "CreateToken"
            | "RevokeToken"
            | "ListTokens"
            | "Pause"
            | "Resume"
            | "ClearCooldown"
            | "ResendWebhookDelivery",
        ) => ADMINS,
        _ => return None,
    })
}

/// One RPC as reflection describes it.
#[derive(Debug, Clone)]
struct Rpc {
    service: String,
    method: String,
    client_streaming: bool,
    server_streaming: bool,
}

impl Rpc {
    fn path(&self) -> String {
        format!("/{}/{}", self.service, self.method)
    }
}

/// Passes encoded messages through unchanged, so any RPC can be called.
#[derive(Debug, Clone, Default)]
struct RawCodec;

impl Codec for RawCodec {
    type Encode = Bytes;
    type Decode = Bytes;
    type Encoder = RawCodec;
    type Decoder = RawCodec;

    fn encoder(&mut self) -> Self::Encoder {
        RawCodec
    }

    fn decoder(&mut self) -> Self::Decoder {
        RawCodec
    }
}

impl Encoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn encode(&mut self, item: Bytes, dst: &mut EncodeBuf<'_>) -> Result<(), Status> {
        dst.put(item);
        Ok(())
    }
}

impl Decoder for RawCodec {
    type Item = Bytes;
    type Error = Status;

    fn decode(&mut self, src: &mut DecodeBuf<'_>) -> Result<Option<Bytes>, Status> {
        Ok(Some(src.copy_to_bytes(src.remaining())))
    }
}

/// Every RPC of the Hive services the coordinator lists through reflection.
async fn reflected_rpcs(url: &str) -> Vec<Rpc> {
    let channel = tonic::transport::Channel::from_shared(url.to_owned()).unwrap().connect().await.unwrap();
    let client = ServerReflectionClient::new(channel);
    let ask = |request: MessageRequest| ServerReflectionRequest { host: String::new(), message_request: Some(request) };
    let answers = |request| {
        let mut client = client.clone();
        async move {
            let stream = futures_util::stream::iter(vec![ask(request)]);
            let mut replies = client.server_reflection_info(stream).await.expect("reflection call").into_inner();
            let reply: ServerReflectionResponse =
                replies.next().await.expect("a reflection reply").expect("reflection");
            reply.message_response.expect("a reflection answer")
        }
    };
    let MessageResponse::ListServicesResponse(listed) = answers(MessageRequest::ListServices(String::new())).await
    else {
        panic!("reflection did not list services");
    };
    let mut rpcs = Vec::new();
    for service in listed.service.into_iter().map(|service| service.name).filter(|name| name.starts_with("hive.")) {
        let MessageResponse::FileDescriptorResponse(files) =
            answers(MessageRequest::FileContainingSymbol(service.clone())).await
        else {
            panic!("no descriptor for {service}");
        };
        for file in &files.file_descriptor_proto {
            let file = prost_types::FileDescriptorProto::decode(file.as_slice()).expect("a file descriptor");
            let package = file.package().to_owned();
            for described in
                file.service.iter().filter(|described| format!("{package}.{}", described.name()) == service)
            {
                for method in &described.method {
                    rpcs.push(Rpc {
                        service: service.clone(),
                        method: method.name().to_owned(),
                        client_streaming: method.client_streaming(),
                        server_streaming: method.server_streaming(),
                    });
                }
            }
        }
    }
    rpcs.sort_by_key(Rpc::path);
    rpcs.dedup_by_key(|rpc| rpc.path());
    rpcs
}

/// What the test knows about the coordinator's state: real ids to aim calls at.
#[derive(Debug)]
struct World {
    task_id: String,
    swarm_id: String,
    worker_id: String,
    attempt_id: String,
    victim_token: String,
}

/// A request that would change something if it were allowed (for the
/// state-changing RPCs), or an empty one.
fn request(rpc: &Rpc, world: &World, cell: usize) -> Bytes {
    let task = || world.task_id.clone();
    let encoded: Vec<u8> = match rpc.method.as_str() {
        "SubmitTasks" => pb::SubmitTasksRequest {
            swarm: format!("matrix-{cell}"),
            tasks: vec![pb::TaskSpec { agent: "echo".into(), prompt: "p".into(), ..Default::default() }],
            ..Default::default()
        }
        .encode_to_vec(),
        "CancelTask" => pb::CancelTaskRequest { task_id: task(), reason: "matrix".into() }.encode_to_vec(),
        "CancelTasks" | "RetryTasks" => {
            let filter = Some(pb::TaskFilter { swarm_id: world.swarm_id.clone(), ..Default::default() });
            if rpc.method == "CancelTasks" {
                pb::CancelTasksRequest { filter, reason: "matrix".into() }.encode_to_vec()
            } else {
                pb::RetryTasksRequest { filter }.encode_to_vec()
            }
        }
        "StopWorkers" => pb::StopWorkersRequest { all: true, ..Default::default() }.encode_to_vec(),
        "SetSwarmBudget" => pb::SetSwarmBudgetRequest { swarm_id: world.swarm_id.clone(), budget: 1.0 }.encode_to_vec(),
        "CreateToken" => {
            pb::CreateTokenRequest { name: format!("made-{cell}"), role: "admin".into(), expires_in: None }
                .encode_to_vec()
        }
        "RevokeToken" => pb::RevokeTokenRequest { name: world.victim_token.clone() }.encode_to_vec(),
        "Register" => pb::RegisterRequest {
            worker_id: uuid::Uuid::new_v4().to_string(),
            name: format!("matrix-{cell}"),
            agents: vec!["echo".into()],
            slots: 1,
            ..Default::default()
        }
        .encode_to_vec(),
        "Pause" => pb::PauseRequest {
            scope: pb::PauseScope::Swarm.into(),
            target: world.swarm_id.clone(),
            reason: format!("matrix-{cell}"),
            duration: None,
            stop_running: false,
        }
        .encode_to_vec(),
        "Resume" => pb::ResumeRequest { scope: pb::PauseScope::Agent.into(), target: "held".into() }.encode_to_vec(),
        "ListPauses" => pb::ListPausesRequest {}.encode_to_vec(),
        "ListCooldowns" => pb::ListCooldownsRequest {}.encode_to_vec(),
        "Watch" => pb::WatchRequest { after: Some(0), ..Default::default() }.encode_to_vec(),
        "ClearCooldown" => pb::ClearCooldownRequest { account: "anthropic/held".into() }.encode_to_vec(),
        "ListWebhookDeliveries" => pb::ListWebhookDeliveriesRequest::default().encode_to_vec(),
        "ResendWebhookDelivery" => pb::ResendWebhookDeliveryRequest { id: HELD_DELIVERY.into() }.encode_to_vec(),
        "SaveSession" => pb::SaveSessionRequest {
            worker_id: world.worker_id.clone(),
            task_id: task(),
            attempt_id: world.attempt_id.clone(),
            session_id: format!("matrix-{cell}"),
            state: b"transcript".to_vec(),
        }
        .encode_to_vec(),
        "LoadSession" => pb::LoadSessionRequest {
            worker_id: world.worker_id.clone(),
            task_id: task(),
            attempt_id: world.attempt_id.clone(),
        }
        .encode_to_vec(),
        "Claim" => {
            pb::ClaimRequest { worker_id: world.worker_id.clone(), max_tasks: 1, ..Default::default() }.encode_to_vec()
        }
        "Fail" => pb::FailRequest {
            worker_id: world.worker_id.clone(),
            failures: vec![pb::Failure {
                task_id: task(),
                attempt_id: world.attempt_id.clone(),
                class: pb::FailureClass::Permanent.into(),
                error: "matrix".into(),
                ..Default::default()
            }],
        }
        .encode_to_vec(),
        "Complete" => pb::CompleteRequest {
            worker_id: world.worker_id.clone(),
            completions: vec![pb::Completion {
                task_id: task(),
                attempt_id: world.attempt_id.clone(),
                ..Default::default()
            }],
        }
        .encode_to_vec(),
        "AcquireLock" => pb::AcquireLockRequest {
            task_id: task(),
            attempt_id: world.attempt_id.clone(),
            key: format!("matrix-{cell}"),
            wait: Some(duration(Duration::ZERO)),
        }
        .encode_to_vec(),
        "AppendLogs" => pb::AppendLogsRequest {
            chunks: vec![pb::LogChunk {
                task_id: task(),
                attempt_id: world.attempt_id.clone(),
                seq: u64::try_from(cell).unwrap(),
                stream: pb::LogStream::Stdout.into(),
                data: b"matrix".to_vec(),
            }],
            worker_id: world.worker_id.clone(),
        }
        .encode_to_vec(),
        "ReleaseLock" => {
            pb::ReleaseLockRequest { task_id: task(), attempt_id: world.attempt_id.clone(), key: "held".into() }
                .encode_to_vec()
        }
        "ReportProgress" => pb::ReportProgressRequest {
            task_id: task(),
            attempt_id: world.attempt_id.clone(),
            message: format!("matrix {cell}"),
        }
        .encode_to_vec(),
        "GetTask" | "GetTaskLogs" => pb::GetTaskRequest { task_id: task() }.encode_to_vec(),
        "Heartbeat" => pb::HeartbeatRequest {
            worker_id: world.worker_id.clone(),
            attempt_ids: vec![world.attempt_id.clone()],
            draining: true,
            ..Default::default()
        }
        .encode_to_vec(),
        _ => Vec::new(),
    };
    Bytes::from(encoded)
}

/// Calls `rpc` with `message` as whoever `connect` carries; the status it ends with.
async fn call(connect: &Connect, rpc: &Rpc, message: Bytes) -> Status {
    let channel = connect.connect().await.expect("connect");
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.expect("channel ready");
    let path = rpc.path().parse().expect("a path");
    let request = || tonic::Request::new(message.clone());
    let stream = || tonic::Request::new(futures_util::stream::iter(vec![message.clone()]));
    let outcome = match (rpc.client_streaming, rpc.server_streaming) {
        (false, false) => grpc.unary(request(), path, RawCodec).await.map(|_| ()),
        (true, false) => grpc.client_streaming(stream(), path, RawCodec).await.map(|_| ()),
        (false, true) => match grpc.server_streaming(request(), path, RawCodec).await {
            Ok(response) => first_message(response.into_inner()).await,
            Err(status) => Err(status),
        },
        (true, true) => match grpc.streaming(stream(), path, RawCodec).await {
            Ok(response) => first_message(response.into_inner()).await,
            Err(status) => Err(status),
        },
    };
    outcome.err().unwrap_or_else(|| Status::ok(""))
}

async fn first_message(mut replies: tonic::Streaming<Bytes>) -> Result<(), Status> {
    match tokio::time::timeout(Duration::from_secs(3), replies.message()).await {
        Ok(Err(status)) => Err(status),
        _ => Ok(()),
    }
}

/// The webhook delivery the matrix's resend calls name.
const HELD_DELIVERY: &str = "0192f1e4-7b5c-7d3e-8a9b-0c1d2e3f4a5b";

/// A fingerprint of everything a call could change (the audit log aside).
async fn state(pool: &sqlx::PgPool) -> String {
    sqlx::query_scalar(
        "select concat_ws('|',
            (select count(*) from tasks), (select count(*) from swarms), (select count(*) from workers),
            (select string_agg(name || coalesce(revoked_at::text, ''), ',' order by name) from api_tokens),
            (select string_agg(task_id::text || status::text || coalesce(attempt_id::text, '')
                               || coalesce(lease_expires_at::text, ''), ',' order by task_id) from task_states),
            (select string_agg(id::text || coalesce(command, '') || draining::text || free_slots::text
                               || last_seen_at::text, ',' order by id) from workers),
            (select count(*) from task_logs),
            (select string_agg(key, ',' order by key) from task_locks),
            (select string_agg(task_id::text || session_id || saved_at::text, ',' order by task_id) from task_sessions),
            (select string_agg(scope::text || target || paused_at::text, ',' order by scope, target) from pauses),
            (select string_agg(account || until::text, ',' order by account) from provider_cooldowns),
            (select string_agg(id::text || status || next_attempt_at::text, ',' order by id) from webhook_deliveries),
            (select string_agg(coalesce(budget::text, '-'), ',' order by id) from swarms),
            (select count(*) from attempts))",
    )
    .fetch_one(pool)
    .await
    .expect("read the state")
}

/// Whether an allowed call ended as a handler answers (OK, or a code about
/// the request or the state), not as a failure of the coordinator.
fn answered(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Ok
            | Code::InvalidArgument
            | Code::NotFound
            | Code::FailedPrecondition
            | Code::Aborted
            | Code::AlreadyExists
            | Code::PermissionDenied
    )
}

/// Whether a refusal is the role check's (not a handler's ownership check or a bad argument).
fn refused_by_role(status: &Status) -> bool {
    status.code() == Code::PermissionDenied && status.message().contains("may not call")
}

#[tokio::test]
async fn every_rpc_answers_every_caller_as_the_table_says_and_refusals_change_nothing() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let mut admin = coordinator.admin_client().await;
    let make = |name: &str, role: &str, expires: Option<Duration>| pb::CreateTokenRequest {
        name: name.into(),
        role: role.into(),
        expires_in: expires.map(duration),
    };
    let mut tokens: BTreeMap<&str, String> = BTreeMap::new();
    for role in ["submitter", "viewer", "metrics"] {
        let made = admin.create_token(make(role, role, None)).await.expect("create a token").into_inner();
        tokens.insert(role, made.token);
    }
    let revoked = admin.create_token(make("revoked", "admin", None)).await.unwrap().into_inner().token;
    admin.revoke_token(pb::RevokeTokenRequest { name: "revoked".into() }).await.unwrap();
    let expired = admin.create_token(make("expired", "admin", Some(Duration::from_secs(1)))).await.unwrap();
    let victim = admin.create_token(make("victim", "viewer", None)).await.unwrap().into_inner();
    drop(victim.token);

    // A pause in force, for refused Resume calls to leave alone.
    let pause = pb::PauseRequest { scope: pb::PauseScope::Agent.into(), target: "held".into(), ..Default::default() };
    admin.pause(pause).await.unwrap();
    // A cool-down, for refused ClearCooldown calls to leave alone.
    sqlx::query("insert into provider_cooldowns (account, until, step, reason) values ('anthropic/held', now() + interval '1 hour', 1, 'matrix')")
        .execute(&db.pool)
        .await
        .unwrap();

    // A delivery that gave up, for refused ResendWebhookDelivery calls to leave alone.
    sqlx::query(
        "insert into webhook_deliveries (id, webhook, first_seq, last_seq, events, body, status, attempts, last_error)
         values ($1::uuid, 'ops', 1, 1, 1, '{}', 'failed', 3, 'answered 500')",
    )
    .bind(HELD_DELIVERY)
    .execute(&db.pool)
    .await
    .unwrap();

    // A running task and its attempt, with the attempt's agent token.
    let spec = pb::TaskSpec { agent: "echo".into(), prompt: "p".into(), ..Default::default() };
    let submitted = admin
        .submit_tasks(pb::SubmitTasksRequest { swarm: "matrix".into(), tasks: vec![spec], ..Default::default() })
        .await
        .unwrap()
        .into_inner();
    let mut worker = FakeWorker::register(&coordinator, "matrix-worker", &["echo"], 4).await;
    let claimed = worker.claim(1, Duration::from_secs(5)).await;
    let assignment = claimed.first().expect("the task is claimed");
    assert!(assignment.agent_token.starts_with("hive_t_"), "claims hand out attempt tokens");
    // A lock the attempt holds, for refused ReleaseLock calls to leave alone.
    let agent = coordinator.connect(&assignment.agent_token).connect().await.unwrap();
    let held = pb::worker_service_client::WorkerServiceClient::new(agent)
        .acquire_lock(pb::AcquireLockRequest {
            task_id: assignment.task_id.clone(),
            attempt_id: assignment.attempt_id.clone(),
            key: "held".into(),
            wait: None,
        })
        .await
        .unwrap();
    assert!(held.into_inner().acquired);
    let world = World {
        task_id: assignment.task_id.clone(),
        swarm_id: submitted.swarm_id.clone(),
        worker_id: worker.id.clone(),
        attempt_id: assignment.attempt_id.clone(),
        victim_token: "victim".into(),
    };
    let expired = expired.into_inner().token;
    let probe = coordinator.connect(&expired);
    eventually("the short-lived token to expire", Duration::from_secs(10), || {
        let probe = probe.clone();
        async move {
            let mut stats = pb::admin_service_client::AdminServiceClient::new(probe.connect().await.unwrap());
            stats.get_stats(pb::GetStatsRequest::default()).await.is_err()
        }
    })
    .await;

    let callers: Vec<(&str, Option<String>)> = vec![
        ("no token", None),
        ("malformed", Some("hive_a_nothex".into())),
        ("unknown", Some(hive_shared::tokens::generate(hive_shared::tokens::Role::Admin))),
        ("revoked", Some(revoked)),
        ("expired", Some(expired)),
        ("admin", Some(admin_token().to_owned())),
        ("worker", Some(worker_token().to_owned())),
        ("submitter", Some(tokens["submitter"].clone())),
        ("viewer", Some(tokens["viewer"].clone())),
        ("metrics", Some(tokens["metrics"].clone())),
        ("agent", Some(assignment.agent_token.clone())),
    ];

    let rpcs = reflected_rpcs(&coordinator.url).await;
    let unknown: Vec<String> =
        rpcs.iter().filter(|rpc| allowed(&rpc.service, &rpc.method).is_none()).map(Rpc::path).collect();
    assert!(
        unknown.is_empty(),
        "RPCs without a rule in this test (add them to `allowed` and to auth/rules.rs): {unknown:?}"
    );
    assert!(rpcs.len() >= 20, "reflection lists the Hive RPCs: {rpcs:?}");

    // Refused cells first, each checked to change nothing; then the allowed ones.
    let mut cells: Vec<(&Rpc, &str, &Option<String>, bool)> = Vec::new();
    for rpc in &rpcs {
        let roles = allowed(&rpc.service, &rpc.method).expect("checked above");
        for (caller, token) in &callers {
            cells.push((rpc, caller, token, roles.contains(caller)));
        }
    }
    cells.sort_by_key(|(_, _, _, allowed)| *allowed);
    let mut wrong = Vec::new();
    for (index, (rpc, caller, token, allowed)) in cells.iter().enumerate() {
        let connect = match token {
            Some(token) => coordinator.connect(token),
            None => Connect::plain(coordinator.url.clone()),
        };
        let before = if *allowed { String::new() } else { state(&db.pool).await };
        let status = call(&connect, rpc, request(rpc, &world, index)).await;
        let cell = format!("{} as {caller}", rpc.path());
        let anonymous = matches!(*caller, "no token" | "malformed" | "unknown" | "revoked" | "expired");
        match (allowed, anonymous) {
            (true, _) => {
                if refused_by_role(&status) || !answered(&status) {
                    wrong.push(format!("{cell}: refused or failed ({:?}: {})", status.code(), status.message()));
                }
            }
            (false, true) => {
                let says = match *caller {
                    "no token" => "no token",
                    "malformed" => "malformed",
                    "unknown" => "unknown token",
                    "revoked" => "revoked",
                    _ => "expired",
                };
                if status.code() != Code::Unauthenticated || !status.message().contains(says) {
                    wrong.push(format!(
                        "{cell}: wanted UNAUTHENTICATED saying `{says}`, got {:?}: {}",
                        status.code(),
                        status.message()
                    ));
                }
            }
            (false, false) => {
                if !refused_by_role(&status) {
                    wrong.push(format!(
                        "{cell}: wanted PERMISSION_DENIED by role, got {:?}: {}",
                        status.code(),
                        status.message()
                    ));
                }
            }
        }
        if !allowed {
            let after = state(&db.pool).await;
            if after != before {
                wrong.push(format!("{cell}: a refused call changed the state"));
            }
        }
    }
    assert!(wrong.is_empty(), "{} of {} cells are wrong:\n{}", wrong.len(), cells.len(), wrong.join("\n"));

    // Probes need no token.
    let channel = tonic::transport::Channel::from_shared(coordinator.url.clone()).unwrap().connect().await.unwrap();
    let health = tonic_health::pb::health_client::HealthClient::new(channel)
        .check(tonic_health::pb::HealthCheckRequest { service: String::new() })
        .await;
    assert!(health.is_ok(), "health checks are open: {health:?}");
    coordinator.stop().await.unwrap();
}
