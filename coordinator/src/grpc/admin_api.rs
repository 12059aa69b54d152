//! `hive.v1.AdminService`: decode, call a use-case, encode. No SQL here.

use hive_shared::ids::{AttemptId, SwarmId, TaskId, WorkerId};
use hive_shared::pb::{self, admin_service_server::AdminService};
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::audit_api;
use super::convert::{self, optional_id, parse_id};
use super::watch_api::{self, WatchStream};
use crate::app::App;
use crate::auth::tokens as auth_tokens;
use crate::auth::{Caller, ownership};
use crate::error::{Error, Result};
use crate::status::TaskStatus;
use crate::tasks::submit::Submission;
use crate::{db, tasks, workers};

/// The AdminService implementation.
#[derive(Debug, Clone)]
pub(crate) struct AdminApi {
    app: App,
}

impl AdminApi {
    /// Serves operators with `app`.
    pub(crate) fn new(app: App) -> Self {
        Self { app }
    }
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    #[instrument(skip_all, fields(swarm = %request.get_ref().swarm, n = request.get_ref().tasks.len()))]
    async fn submit_tasks(
        &self,
        request: Request<pb::SubmitTasksRequest>,
    ) -> Result<Response<pb::SubmitTasksResponse>, Status> {
        let caller = Caller::of(&request)?;
        let started = std::time::SystemTime::now();
        let request = request.into_inner();
        let tasks = request
            .tasks
            .into_iter()
            .enumerate()
            .map(|(index, spec)| convert::new_task(index, spec))
            .collect::<Result<Vec<_>>>()?;
        let submission = Submission {
            swarm: request.swarm,
            tasks,
            idempotency_key: (!request.idempotency_key.is_empty()).then_some(request.idempotency_key),
            budget: (request.budget != 0.0).then_some(request.budget),
            submitted_by: caller.owner_name().map(str::to_owned),
        };
        let app = &self.app;
        ownership::check_submission(&app.pool, &caller, &submission).await?;
        let agents: Vec<String> = match &app.tracer {
            Some(_) => submission.tasks.iter().map(|task| task.agent.clone()).collect(),
            None => Vec::new(),
        };
        let submitted =
            tasks::submit::submit(&app.pool, &caller, &app.config.tasks, &app.config.limits, submission).await?;
        if let Some(tracer) = app.tracer.as_ref().filter(|_| !submitted.existing) {
            let tasks = submitted.task_ids.iter().map(|id| id.0).zip(agents.iter().map(String::as_str));
            crate::traces::submitted(tracer, started, submitted.swarm_id.0, tasks);
        }
        tracing::info!(swarm_id = %submitted.swarm_id, tasks = submitted.task_ids.len(), "swarm submitted");
        if !submitted.existing {
            app.statistics.submitted(i64::try_from(submitted.task_ids.len()).unwrap_or(i64::MAX));
        }
        Ok(Response::new(pb::SubmitTasksResponse {
            swarm_id: submitted.swarm_id.to_string(),
            task_ids: submitted.task_ids.iter().map(ToString::to_string).collect(),
            warnings: submitted.warnings,
            existing: submitted.existing,
        }))
    }

    async fn get_task(&self, request: Request<pb::GetTaskRequest>) -> Result<Response<pb::GetTaskResponse>, Status> {
        let task = parse_id("task_id", &request.get_ref().task_id, TaskId::parse)?;
        ownership::check_task(&self.app.pool, &Caller::of(&request)?, task.0).await?;
        let (row, attempts) = tasks::get(&self.app.pool, task).await?;
        Ok(Response::new(pb::GetTaskResponse {
            task: Some(convert::task(row)),
            attempts: attempts.into_iter().map(convert::attempt).collect(),
        }))
    }

    async fn list_tasks(
        &self,
        request: Request<pb::ListTasksRequest>,
    ) -> Result<Response<pb::ListTasksResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let status = pb::TaskStatus::try_from(request.status)
            .map_err(|_| Error::invalid("status", format!("{} is not a task status", request.status)))?;
        let filter = db::tasks::ListFilter {
            status: TaskStatus::from_pb(status),
            swarm_id: optional_id("swarm_id", &request.swarm_id, SwarmId::parse)?.map(|id| id.0),
            agent: convert::agent_filter(request.agent)?,
            summary: !request.full,
            ..db::tasks::ListFilter::default()
        };
        ownership::check_swarm_filter(&self.app.pool, &caller, filter.swarm_id).await?;
        let token = optional_id("page_token", &request.page_token, TaskId::parse)?.map(|id| id.0);
        // Half a message: the rest of the reply and its encoding have room.
        let max_bytes = usize::try_from(self.app.config.limits.max_message_size.as_u64() / 2).unwrap_or(usize::MAX);
        let page = tasks::Page { size: request.page_size, max_bytes };
        let (rows, next) = tasks::list(&self.app.pool, filter, page, token).await?;
        Ok(Response::new(pb::ListTasksResponse {
            tasks: rows.into_iter().map(convert::task).collect(),
            next_page_token: next.map(|id| id.to_string()).unwrap_or_default(),
        }))
    }

    #[instrument(skip_all, fields(task_id = %request.get_ref().task_id))]
    async fn cancel_task(
        &self,
        request: Request<pb::CancelTaskRequest>,
    ) -> Result<Response<pb::CancelTaskResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let task = parse_id("task_id", &request.task_id, TaskId::parse)?;
        ownership::check_task(&self.app.pool, &caller, task.0).await?;
        let row = tasks::cancel(&self.app.pool, &caller, task, &request.reason).await?;
        Ok(Response::new(pb::CancelTaskResponse { task: Some(convert::task(row)) }))
    }

    #[instrument(skip_all)]
    async fn cancel_tasks(
        &self,
        request: Request<pb::CancelTasksRequest>,
    ) -> Result<Response<pb::CancelTasksResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let filter = convert::task_filter(request.filter)?;
        ownership::check_swarm_filter(&self.app.pool, &caller, filter.swarm_id).await?;
        let (cancelled, cancelling) = tasks::cancel_matching(&self.app.pool, &caller, &filter, &request.reason).await?;
        tracing::info!(cancelled, cancelling, "tasks cancelled");
        Ok(Response::new(pb::CancelTasksResponse { cancelled, cancelling }))
    }

    #[instrument(skip_all)]
    async fn retry_tasks(
        &self,
        request: Request<pb::RetryTasksRequest>,
    ) -> Result<Response<pb::RetryTasksResponse>, Status> {
        let caller = Caller::of(&request)?;
        let filter = convert::task_filter(request.into_inner().filter)?;
        let retried = tasks::retry(&self.app.pool, &caller, &filter).await?;
        tracing::info!(retried = retried.len(), "dead tasks retried");
        Ok(Response::new(pb::RetryTasksResponse {
            retried: retried.len() as u64,
            task_ids: retried.iter().map(ToString::to_string).collect(),
        }))
    }

    #[instrument(skip_all)]
    async fn stop_workers(
        &self,
        request: Request<pb::StopWorkersRequest>,
    ) -> Result<Response<pb::StopWorkersResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let ids = request
            .worker_ids
            .iter()
            .enumerate()
            .map(|(index, id)| parse_id(format_args!("worker_ids[{index}]"), id, WorkerId::parse))
            .collect::<Result<Vec<_>>>()?;
        let lease = self.app.config.leases.ttl;
        let told = workers::stop(&self.app.pool, &caller, &ids, request.all, request.now, lease).await?;
        tracing::info!(workers = told.len(), now = request.now, "workers told to stop");
        Ok(Response::new(pb::StopWorkersResponse { worker_ids: told.iter().map(ToString::to_string).collect() }))
    }

    async fn get_task_logs(
        &self,
        request: Request<pb::GetTaskLogsRequest>,
    ) -> Result<Response<pb::GetTaskLogsResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let task = parse_id("task_id", &request.task_id, TaskId::parse)?;
        ownership::check_task(&self.app.pool, &caller, task.0).await?;
        let attempt = optional_id("attempt_id", &request.attempt_id, AttemptId::parse)?;
        let cursor = i64::try_from(request.cursor).map_err(|_| Error::invalid("cursor", "is too large"))?;
        let page = tasks::logs::page(&self.app.pool, task, attempt, cursor, request.limit).await?;
        let next_cursor = page.chunks.last().map_or(request.cursor, |chunk| u64::try_from(chunk.id).unwrap_or(0));
        Ok(Response::new(pb::GetTaskLogsResponse {
            chunks: page.chunks.into_iter().map(|chunk| convert::chunk(&request.task_id, chunk)).collect(),
            next_cursor,
            more: page.more,
            truncated: page.truncated,
        }))
    }

    async fn list_workers(
        &self,
        request: Request<pb::ListWorkersRequest>,
    ) -> Result<Response<pb::ListWorkersResponse>, Status> {
        let rows = workers::list(&self.app.pool, self.app.config.leases.ttl, request.get_ref().include_gone).await?;
        Ok(Response::new(pb::ListWorkersResponse { workers: rows.into_iter().map(convert::worker).collect() }))
    }

    async fn get_stats(&self, request: Request<pb::GetStatsRequest>) -> Result<Response<pb::GetStatsResponse>, Status> {
        let swarm = optional_id("swarm_id", &request.get_ref().swarm_id, SwarmId::parse)?;
        ownership::check_swarm_filter(&self.app.pool, &Caller::of(&request)?, swarm.map(|id| id.0)).await?;
        let progress = tasks::progress::of(&self.app.pool, swarm.map(|id| id.0), self.app.config.leases.ttl).await?;
        let mut totals = pb::StatusCounts::default();
        for swarm in &progress {
            for (status, count) in &swarm.counts {
                convert::add_count(&mut totals, *status, *count);
            }
        }
        let swarms = progress.into_iter().map(convert::swarm).collect();
        let claims_waiting = u32::try_from(self.app.notifications.claims_waiting()).unwrap_or(u32::MAX);
        let stalled = tasks::stalls::list(&self.app.pool, swarm.map(|id| id.0)).await?;
        let stalled = stalled.into_iter().map(convert::stalled).collect();
        Ok(Response::new(pb::GetStatsResponse { totals: Some(totals), swarms, claims_waiting, stalled }))
    }

    async fn set_swarm_budget(
        &self,
        request: Request<pb::SetSwarmBudgetRequest>,
    ) -> Result<Response<pb::SetSwarmBudgetResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let swarm = parse_id("swarm_id", &request.swarm_id, SwarmId::parse)?;
        let budget = (request.budget != 0.0).then_some(request.budget);
        let (budget, spent) = tasks::progress::set_budget(&self.app.pool, &caller, swarm.0, budget).await?;
        Ok(Response::new(pb::SetSwarmBudgetResponse { budget: budget.unwrap_or(0.0), spent }))
    }

    #[instrument(skip_all, fields(target = %request.get_ref().target))]
    async fn pause(&self, request: Request<pb::PauseRequest>) -> Result<Response<pb::PauseResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let scope = convert::pause_scope(request.scope())?;
        let duration = convert::optional_duration(|| "duration".to_owned(), request.duration.as_ref())?;
        let paused = crate::pauses::pause(
            &self.app.pool,
            &caller,
            crate::pauses::PauseRequest {
                scope,
                target: &request.target,
                reason: &request.reason,
                duration,
                stop_running: request.stop_running,
            },
        )
        .await?;
        Ok(Response::new(pb::PauseResponse { pause: Some(convert::pause(paused)) }))
    }

    #[instrument(skip_all, fields(target = %request.get_ref().target))]
    async fn resume(&self, request: Request<pb::ResumeRequest>) -> Result<Response<pb::ResumeResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let scope = convert::pause_scope(request.scope())?;
        let resumed = crate::pauses::resume(&self.app.pool, &caller, scope, &request.target).await?;
        Ok(Response::new(pb::ResumeResponse { resumed }))
    }

    async fn list_pauses(
        &self,
        _request: Request<pb::ListPausesRequest>,
    ) -> Result<Response<pb::ListPausesResponse>, Status> {
        let rows = crate::pauses::list(&self.app.pool).await?;
        Ok(Response::new(pb::ListPausesResponse { pauses: rows.into_iter().map(convert::pause).collect() }))
    }

    async fn list_cooldowns(
        &self,
        _request: Request<pb::ListCooldownsRequest>,
    ) -> Result<Response<pb::ListCooldownsResponse>, Status> {
        let rows = crate::cooldowns::list(&self.app.pool).await?;
        Ok(Response::new(pb::ListCooldownsResponse { cooldowns: rows.into_iter().map(convert::cooldown).collect() }))
    }

    #[instrument(skip_all, fields(account = %request.get_ref().account))]
    async fn clear_cooldown(
        &self,
        request: Request<pb::ClearCooldownRequest>,
    ) -> Result<Response<pb::ClearCooldownResponse>, Status> {
        let caller = Caller::of(&request)?;
        let cleared = crate::cooldowns::clear(&self.app.pool, &caller, &request.get_ref().account).await?;
        Ok(Response::new(pb::ClearCooldownResponse { cleared }))
    }

    async fn list_webhook_deliveries(
        &self,
        request: Request<pb::ListWebhookDeliveriesRequest>,
    ) -> Result<Response<pb::ListWebhookDeliveriesResponse>, Status> {
        let request = request.into_inner();
        let rows =
            crate::webhooks::deliveries::list(&self.app.pool, &request.webhook, &request.status, request.limit).await?;
        Ok(Response::new(pb::ListWebhookDeliveriesResponse {
            deliveries: rows.into_iter().map(convert::delivery).collect(),
        }))
    }

    #[instrument(skip_all, fields(id = %request.get_ref().id))]
    async fn resend_webhook_delivery(
        &self,
        request: Request<pb::ResendWebhookDeliveryRequest>,
    ) -> Result<Response<pb::ResendWebhookDeliveryResponse>, Status> {
        let caller = Caller::of(&request)?;
        crate::webhooks::deliveries::resend(&self.app.pool, &caller, &request.get_ref().id).await?;
        self.app.webhooks_queued.notify_one();
        Ok(Response::new(pb::ResendWebhookDeliveryResponse {}))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, request: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let caller = Caller::of(&request)?;
        Ok(Response::new(watch_api::watch(&self.app, caller, request.into_inner()).await?))
    }

    async fn list_locks(
        &self,
        _request: Request<pb::ListLocksRequest>,
    ) -> Result<Response<pb::ListLocksResponse>, Status> {
        let rows = tasks::locks::list(&self.app.pool).await?;
        Ok(Response::new(pb::ListLocksResponse { locks: rows.into_iter().map(convert::lock).collect() }))
    }

    #[instrument(skip_all, fields(name = %request.get_ref().name, role = %request.get_ref().role))]
    async fn create_token(
        &self,
        request: Request<pb::CreateTokenRequest>,
    ) -> Result<Response<pb::CreateTokenResponse>, Status> {
        let caller = Caller::of(&request)?;
        let request = request.into_inner();
        let expires_in = convert::optional_duration(|| "expires_in".to_owned(), request.expires_in.as_ref())?;
        let (token, row) =
            auth_tokens::create(&self.app.pool, &caller, &request.name, &request.role, expires_in).await?;
        tracing::info!(name = %row.name, role = %row.role, by = %caller.name, "token created");
        Ok(Response::new(pb::CreateTokenResponse { token, info: Some(convert::token(row)) }))
    }

    async fn list_tokens(
        &self,
        _request: Request<pb::ListTokensRequest>,
    ) -> Result<Response<pb::ListTokensResponse>, Status> {
        let rows = auth_tokens::list(&self.app.pool).await?;
        Ok(Response::new(pb::ListTokensResponse { tokens: rows.into_iter().map(convert::token).collect() }))
    }

    #[instrument(skip_all, fields(name = %request.get_ref().name))]
    async fn revoke_token(
        &self,
        request: Request<pb::RevokeTokenRequest>,
    ) -> Result<Response<pb::RevokeTokenResponse>, Status> {
        let caller = Caller::of(&request)?;
        let row = auth_tokens::revoke(&self.app.pool, &caller, &request.get_ref().name).await?;
        tracing::info!(name = %row.name, by = %caller.name, "token revoked");
        Ok(Response::new(pb::RevokeTokenResponse { info: Some(convert::token(row)) }))
    }

    async fn list_audit(
        &self,
        request: Request<pb::ListAuditRequest>,
    ) -> Result<Response<pb::ListAuditResponse>, Status> {
        Ok(Response::new(audit_api::list(&self.app.pool, request.into_inner()).await?))
    }

    async fn verify_audit(
        &self,
        _request: Request<pb::VerifyAuditRequest>,
    ) -> Result<Response<pb::VerifyAuditResponse>, Status> {
        Ok(Response::new(audit_api::verify(&self.app.pool).await?))
    }
}
