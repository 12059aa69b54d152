//! `hive.v1.WorkerService`: decode, call a use-case, encode. No SQL here.

use std::pin::Pin;
use std::time::SystemTime;

use futures_util::Stream;
use hive_shared::convert::{duration, struct_to_json};
use hive_shared::ids::{AttemptId, TaskId, WorkerId};
use hive_shared::pb::{self, worker_service_server::WorkerService};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::instrument;
use uuid::Uuid;

use super::convert::{self, assignment, parse_id};
use crate::app::App;
use crate::auth::{Caller, ownership};
use crate::error::Result;
use crate::tasks::logs;
use crate::tasks::report::{self, Ack};
use crate::tasks::sessions;
use crate::{db, scheduler, workers};

/// The WorkerService implementation.
#[derive(Debug, Clone)]
pub(crate) struct WorkerApi {
    app: App,
}

impl WorkerApi {
    /// Serves workers with `app`.
    pub(crate) fn new(app: App) -> Self {
        Self { app }
    }

    /// Records the spans of reports handled since `started`: each (task,
    /// attempt, error) of `traced` with its ack (nothing without a tracer).
    fn trace_reports(
        &self,
        name: &'static str,
        started: SystemTime,
        traced: &[(Uuid, Uuid, Option<String>)],
        acks: &[Ack],
    ) {
        let Some(tracer) = &self.app.tracer else { return };
        for ((task, attempt, error), ack) in traced.iter().zip(acks) {
            let taken = match ack {
                Ack::Recorded => "recorded",
                Ack::AlreadyRecorded => "already_recorded",
                Ack::LeaseLost(_) => "lease_lost",
            };
            crate::traces::reported(tracer, name, started, *task, *attempt, taken, error.as_deref());
        }
    }
}

fn worker_id(text: &str) -> Result<WorkerId> {
    parse_id("worker_id", text, WorkerId::parse)
}

fn ids(index: usize, list: &str, task: &str, attempt: &str) -> Result<(TaskId, AttemptId)> {
    Ok((
        parse_id(format_args!("{list}[{index}].task_id"), task, TaskId::parse)?,
        parse_id(format_args!("{list}[{index}].attempt_id"), attempt, AttemptId::parse)?,
    ))
}

impl WorkerApi {
    /// The worker a batch of output says it comes from, checked against the
    /// caller's token once per stream (`sender` remembers it); `None` when
    /// the batch names none and the caller need not.
    async fn log_sender(&self, caller: &Caller, text: &str, sender: &mut Option<WorkerId>) -> Result<Option<WorkerId>> {
        if text.is_empty() {
            if caller.limited_to_own_workers() {
                return Err(crate::error::Error::invalid("worker_id", "a worker token must say which worker sends"));
            }
            return Ok(None);
        }
        if let Some(known) = *sender
            && known.to_string() == text
        {
            return Ok(Some(known));
        }
        let worker = worker_id(text)?;
        self.app.worker_owners.check(&self.app.pool, caller, worker.0).await?;
        *sender = Some(worker);
        Ok(Some(worker))
    }
}

type HeartbeatStream = Pin<Box<dyn Stream<Item = Result<pb::HeartbeatResponse, Status>> + Send>>;

#[tonic::async_trait]
impl WorkerService for WorkerApi {
    #[instrument(skip_all, fields(worker_id = %request.get_ref().worker_id))]
    async fn register(&self, request: Request<pb::RegisterRequest>) -> Result<Response<pb::RegisterResponse>, Status> {
        let caller = Caller::of(&request)?;
        if self.app.config.tls.client_certs_required() {
            let (certs, body) = (request.peer_certs(), request.get_ref());
            super::identity::check_worker(certs.as_deref().map(Vec::as_slice), &body.name, &body.hostname)?;
        }
        let request = request.into_inner();
        let registration = db::workers::Registration {
            id: worker_id(&request.worker_id)?.0,
            name: &request.name,
            hostname: &request.hostname,
            agents: &request.agents,
            slots: convert::slots(request.slots)?,
            version: &request.version,
            labels: serde_json::to_value(&request.labels).unwrap_or_default(),
            accounts: convert::accounts(&request.accounts, &request.agents)?,
            registered_by: caller.owner_name(),
        };
        workers::register(&self.app.pool, &registration).await?;
        self.app.worker_owners.remember(registration.id, &caller.name);
        tracing::info!(name = %request.name, agents = ?request.agents, slots = request.slots, "worker registered");
        Ok(Response::new(pb::RegisterResponse {
            heartbeat_interval: Some(duration(self.app.config.leases.heartbeat_interval)),
            lease_ttl: Some(duration(self.app.config.leases.ttl)),
        }))
    }

    #[instrument(skip_all, fields(worker_id = %request.get_ref().worker_id, max = request.get_ref().max_tasks))]
    async fn claim(&self, request: Request<pb::ClaimRequest>) -> Result<Response<pb::ClaimResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let worker = worker_id(&request.worker_id)?;
        self.app.worker_owners.check(&self.app.pool, &caller, worker.0).await?;
        let max_tasks = convert::max_tasks(request.max_tasks)?;
        let wait = convert::wait("wait", request.wait.as_ref())?;
        let app = &self.app;
        let claim = scheduler::ClaimRequest { worker, max_tasks, wait, agents: request.agents };
        let claimed = scheduler::claim(
            &app.hot_pool,
            &app.notifications,
            &app.config,
            &claim,
            &app.rpc_shutdown,
            &app.tracker,
            &app.claim_hints,
        )
        .await?;
        let probe = claimed.probe;
        let assignments = claimed
            .tasks
            .into_iter()
            .map(|task| {
                app.metrics.claimed(&task.agent, task.queued_seconds);
                if let Some(tracer) = &app.tracer {
                    let (id, attempt, agent) = (task.id, task.attempt_id, task.agent.as_str());
                    crate::traces::claimed(tracer, id, attempt, task.attempt, agent, worker.0, task.queued_seconds);
                }
                let agent_token = app.agent_token(task.attempt_id);
                let probing = probe == Some(task.attempt_id);
                pb::Assignment { probe: probing, ..assignment(task, agent_token, app.tracer.is_some()) }
            })
            .collect();
        Ok(Response::new(pb::ClaimResponse { assignments }))
    }

    #[instrument(skip_all, fields(worker_id = %request.get_ref().worker_id, n = request.get_ref().completions.len()))]
    async fn complete(&self, request: Request<pb::CompleteRequest>) -> Result<Response<pb::CompleteResponse>, Status> {
        let caller = Caller::of(&request)?;
        let started = std::time::SystemTime::now();
        let request = request.into_inner();
        let worker = worker_id(&request.worker_id)?;
        let mut attempts = Vec::with_capacity(request.completions.len());
        let mut traced = Vec::new();
        let mut completions = Vec::with_capacity(request.completions.len());
        for (index, item) in request.completions.into_iter().enumerate() {
            let (task, attempt) = ids(index, "completions", &item.task_id, &item.attempt_id)?;
            if self.app.tracer.is_some() {
                traced.push((task.0, attempt.0, None));
            }
            attempts.push(item.attempt_id);
            completions.push(report::Completion {
                task,
                attempt,
                result: item.result.map(struct_to_json).unwrap_or_default(),
                spend: convert::spend(format_args!("completions[{index}]"), item.session_id, item.usage)?,
                probe: item.probe,
            });
        }
        self.app.worker_owners.check(&self.app.pool, &caller, worker.0).await?;
        let acks =
            report::complete(&self.app.hot_pool, &self.app.config.limits, &self.app.metrics, worker, completions)
                .await?;
        self.trace_reports("hive.complete", started, &traced, &acks);
        Ok(Response::new(pb::CompleteResponse { acks: convert::acks(attempts, acks) }))
    }

    #[instrument(skip_all, fields(worker_id = %request.get_ref().worker_id, n = request.get_ref().failures.len()))]
    async fn fail(&self, request: Request<pb::FailRequest>) -> Result<Response<pb::FailResponse>, Status> {
        let caller = Caller::of(&request)?;
        let started = std::time::SystemTime::now();
        let request = request.into_inner();
        let worker = worker_id(&request.worker_id)?;
        let mut attempts = Vec::with_capacity(request.failures.len());
        let mut traced = Vec::new();
        let mut failures = Vec::with_capacity(request.failures.len());
        for (index, item) in request.failures.into_iter().enumerate() {
            let (task, attempt) = ids(index, "failures", &item.task_id, &item.attempt_id)?;
            if self.app.tracer.is_some() {
                traced.push((task.0, attempt.0, Some(item.error.clone())));
            }
            let stop = convert::stop(|| format!("failures[{index}].class"), item.class)?;
            let refusal = convert::refusal(index, &item)?;
            attempts.push(item.attempt_id);
            failures.push(report::Failure {
                task,
                attempt,
                stop,
                error: item.error,
                exit_code: item.exit_code,
                signal: item.signal,
                spend: convert::spend(format_args!("failures[{index}]"), item.session_id, item.usage)?,
                refusal,
            });
        }
        self.app.worker_owners.check(&self.app.pool, &caller, worker.0).await?;
        let (acks, earliest_retry) =
            report::fail(&self.app.hot_pool, &self.app.config, &self.app.metrics, worker, failures).await?;
        self.trace_reports("hive.fail", started, &traced, &acks);
        if let Some(delay) = earliest_retry {
            self.app.wake_after(delay);
        }
        Ok(Response::new(pb::FailResponse { acks: convert::acks(attempts, acks) }))
    }

    type HeartbeatStream = HeartbeatStream;

    async fn heartbeat(
        &self,
        request: Request<Streaming<pb::HeartbeatRequest>>,
    ) -> Result<Response<Self::HeartbeatStream>, Status> {
        let caller = Caller::of(&request)?;
        let (replies, outbound) = mpsc::channel(workers::session::REPLY_BUFFER);
        let session = workers::session::run(self.app.clone(), caller, request.into_inner(), replies);
        hive_shared::tracked::spawn(&self.app.tracker, "heartbeat session", session);
        Ok(Response::new(Box::pin(ReceiverStream::new(outbound))))
    }

    async fn acquire_lock(
        &self,
        request: Request<pb::AcquireLockRequest>,
    ) -> Result<Response<pb::AcquireLockResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let task = parse_id("task_id", &request.task_id, TaskId::parse)?;
        let attempt = parse_id("attempt_id", &request.attempt_id, AttemptId::parse)?;
        ownership::check_attempt(&caller, attempt.0)?;
        let wait = convert::wait("wait", request.wait.as_ref())?;
        let holder = crate::tasks::locks::acquire(&self.app.pool, task, attempt, &request.key, wait).await?;
        Ok(Response::new(pb::AcquireLockResponse {
            acquired: holder.is_none(),
            held_by_task_id: holder.map(|task| task.to_string()).unwrap_or_default(),
        }))
    }

    async fn release_lock(
        &self,
        request: Request<pb::ReleaseLockRequest>,
    ) -> Result<Response<pb::ReleaseLockResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let attempt = parse_id("attempt_id", &request.attempt_id, AttemptId::parse)?;
        ownership::check_attempt(&caller, attempt.0)?;
        let released = crate::tasks::locks::release(&self.app.pool, attempt, &request.key).await?;
        Ok(Response::new(pb::ReleaseLockResponse { released }))
    }

    async fn report_progress(
        &self,
        request: Request<pb::ReportProgressRequest>,
    ) -> Result<Response<pb::ReportProgressResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let task = parse_id("task_id", &request.task_id, TaskId::parse)?;
        let attempt = parse_id("attempt_id", &request.attempt_id, AttemptId::parse)?;
        ownership::check_attempt(&caller, attempt.0)?;
        crate::tasks::stalls::report(&self.app.pool, task, attempt, &request.message).await?;
        Ok(Response::new(pb::ReportProgressResponse {}))
    }

    #[instrument(skip_all, fields(task_id = %request.get_ref().task_id, bytes = request.get_ref().state.len()))]
    async fn save_session(
        &self,
        request: Request<pb::SaveSessionRequest>,
    ) -> Result<Response<pb::SaveSessionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let worker = worker_id(&request.worker_id)?;
        self.app.worker_owners.check(&self.app.pool, &caller, worker.0).await?;
        let save = sessions::Save {
            task: parse_id("task_id", &request.task_id, TaskId::parse)?,
            attempt: parse_id("attempt_id", &request.attempt_id, AttemptId::parse)?,
            worker,
            session_id: &request.session_id,
            state: &request.state,
        };
        sessions::save(&self.app.pool, &save, self.app.config.sessions.max_size).await?;
        Ok(Response::new(pb::SaveSessionResponse {}))
    }

    #[instrument(skip_all, fields(task_id = %request.get_ref().task_id))]
    async fn load_session(
        &self,
        request: Request<pb::LoadSessionRequest>,
    ) -> Result<Response<pb::LoadSessionResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let worker = worker_id(&request.worker_id)?;
        self.app.worker_owners.check(&self.app.pool, &caller, worker.0).await?;
        let task = parse_id("task_id", &request.task_id, TaskId::parse)?;
        let attempt = parse_id("attempt_id", &request.attempt_id, AttemptId::parse)?;
        let saved = sessions::load(&self.app.pool, task, attempt, worker).await?;
        Ok(Response::new(saved.map_or_else(pb::LoadSessionResponse::default, |saved| pb::LoadSessionResponse {
            found: true,
            session_id: saved.session_id,
            state: saved.state,
        })))
    }

    #[instrument(skip_all)]
    async fn append_logs(
        &self,
        request: Request<Streaming<pb::AppendLogsRequest>>,
    ) -> Result<Response<pb::AppendLogsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let mut batches = request.into_inner();
        let max_bytes = self.app.config.limits.max_log_size_per_task.as_u64();
        let mut total = pb::AppendLogsResponse::default();
        let mut sender: Option<WorkerId> = None;
        while let Some(batch) = batches.message().await? {
            if let Some(book) = &self.app.tokens {
                book.recheck(&caller).await?;
            }
            let worker = self.log_sender(&caller, &batch.worker_id, &mut sender).await?;
            let mut chunks = Vec::with_capacity(batch.chunks.len());
            for (index, chunk) in batch.chunks.into_iter().enumerate() {
                let (task, attempt) = ids(index, "chunks", &chunk.task_id, &chunk.attempt_id)?;
                let stream = convert::log_stream(|| format!("chunks[{index}].stream"), chunk.stream)?;
                let seq = i64::try_from(chunk.seq)
                    .map_err(|_| crate::error::Error::invalid(format!("chunks[{index}].seq"), "is too large"))?;
                chunks.push(logs::Chunk { task, attempt, seq, stream, data: chunk.data });
            }
            let stored = logs::append(&self.app.hot_pool, max_bytes, worker.map(|id| id.0), chunks).await?;
            total.accepted_chunks += stored.accepted;
            total.rejected_chunks += stored.rejected;
        }
        Ok(Response::new(total))
    }
}
