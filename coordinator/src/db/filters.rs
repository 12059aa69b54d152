//! Statements that act on every task a filter matches (ids, swarm, agent,
//! error text): an operator's cancel, and a retry of dead tasks; and which
//! of the ids an operator named exist.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::status::TaskStatus;

/// Which tasks a bulk operation touches; `None` fields match everything, and
/// the use-case insists that at least one is set.
#[derive(Debug, Default, Clone)]
pub struct TaskFilter {
    /// These ids.
    pub task_ids: Option<Vec<Uuid>>,
    /// This swarm.
    pub swarm_id: Option<Uuid>,
    /// This agent.
    pub agent: Option<String>,
    /// Last error containing this text.
    pub error_contains: Option<String>,
}

/// A task a cancel touched.
#[derive(Debug)]
pub struct Cancelled {
    /// Task id.
    pub id: Uuid,
    /// Cancelled (it had not started) or cancelling (its worker must stop it).
    pub status: TaskStatus,
    /// The worker to tell, for cancelling tasks.
    pub worker_id: Option<Uuid>,
}

/// Cancels every unfinished task matching `filter`: those not started at
/// once, running ones become cancelling until their worker stops the agent.
pub async fn cancel_matching(
    conn: &mut PgConnection,
    filter: &TaskFilter,
    reason: &str,
) -> sqlx::Result<Vec<Cancelled>> {
    sqlx::query_as!(
        Cancelled,
        r#"
        with cancelled as (
            update task_states s
            set status = case when s.status = 'running' then 'cancelling'::task_status else 'cancelled'::task_status end,
                error = case when s.status = 'running' then null else $5 end,
                finished_at = case when s.status = 'running' then null else now() end,
                waiting_on = 0
            from tasks t
            where t.id = s.task_id
              and s.status in ('ready', 'blocked', 'running')
              and ($1::uuid[] is null or s.task_id = any($1))
              and ($2::uuid is null or s.swarm_id = $2)
              and ($3::text is null or t.agent = $3)
              -- An unfinished task's error is its last attempt's.
              and ($4::text is null or strpos(
                  (select a.error from attempts a where a.task_id = s.task_id order by a.number desc limit 1), $4) > 0)
            returning s.task_id, s.swarm_id, s.status, s.worker_id, s.attempts
        ), logged as (
            -- Finished now (not started), or cancelling (its worker stops it).
            insert into events (kind, task_ids, swarm_ids, worker_ids, attempts, details)
            select case when c.status = 'cancelling' then 'task.cancelling' else 'task.cancelled' end,
                   array_agg(c.task_id), array_agg(c.swarm_id), array_agg(c.worker_id), array_agg(c.attempts),
                   array_agg(jsonb_build_object('error', $5::text))
            from cancelled c
            where task_events_on()
            group by c.status = 'cancelling'
        )
        select task_id as id, status as "status: TaskStatus", worker_id from cancelled
        "#,
        filter.task_ids.as_deref(),
        filter.swarm_id,
        filter.agent,
        filter.error_contains,
        reason,
    )
    .fetch_all(conn)
    .await
}

/// Puts dead tasks matching `filter` back in the queue with a fresh failure budget.
pub async fn retry_dead(executor: impl PgExecutor<'_>, filter: &TaskFilter) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"
        with retried as (
            update task_states s
            set status = 'ready', failures = 0, losses = 0, refusals = 0, run_after = now(), finished_at = null, error = null,
                run_agent = case when s.stage = 'build' then t.agent else s.run_agent end
            from tasks t
            where t.id = s.task_id
              and s.status = 'dead'
              and ($1::uuid[] is null or s.task_id = any($1))
              and ($2::uuid is null or s.swarm_id = $2)
              and ($3::text is null or t.agent = $3)
              and ($4::text is null or strpos(s.error, $4) > 0)
            returning s.task_id, s.swarm_id
        ), logged as (
            insert into events (kind, task_ids, swarm_ids)
            select 'task.retried', array_agg(task_id), array_agg(swarm_id)
            from retried
            where task_events_on()
            having count(*) > 0
        )
        select task_id as "task_id!" from retried
        "#,
        filter.task_ids.as_deref(),
        filter.swarm_id,
        filter.agent,
        filter.error_contains,
    )
    .fetch_all(executor)
    .await
}

/// Dead tasks sharing the start of their error.
#[derive(Debug)]
pub struct DeadGroup {
    /// The error's first characters (empty for tasks with none).
    pub error: String,
    /// How many dead tasks.
    pub tasks: i64,
}

/// Dead tasks grouped by their error's first `chars` characters, most first,
/// at most `limit` groups (a walk of `task_states_dead_idx`).
pub async fn dead_by_error(executor: impl PgExecutor<'_>, chars: i32, limit: i64) -> sqlx::Result<Vec<DeadGroup>> {
    sqlx::query_as!(
        DeadGroup,
        r#"
        select left(coalesce(error, ''), $1) as "error!", count(*) as "tasks!"
        from task_states
        where status = 'dead'
        group by 1
        order by 2 desc, 1
        limit $2
        "#,
        chars,
        limit
    )
    .fetch_all(executor)
    .await
}

/// How many dead tasks [`retry_dead`] with `filter` would retry now.
pub async fn count_dead(executor: impl PgExecutor<'_>, filter: &TaskFilter) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"
        select count(*) as "tasks!"
        from task_states s join tasks t on t.id = s.task_id
        where s.status = 'dead'
          and ($1::uuid[] is null or s.task_id = any($1))
          and ($2::uuid is null or s.swarm_id = $2)
          and ($3::text is null or t.agent = $3)
          and ($4::text is null or strpos(s.error, $4) > 0)
        "#,
        filter.task_ids.as_deref(),
        filter.swarm_id,
        filter.agent,
        filter.error_contains,
    )
    .fetch_one(executor)
    .await
}

/// How many unfinished tasks [`cancel_matching`] with `filter` would touch
/// now (their dependents, cancelled with them, are not counted).
pub async fn count_unfinished(executor: impl PgExecutor<'_>, filter: &TaskFilter) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"
        select count(*) as "tasks!"
        from task_states s join tasks t on t.id = s.task_id
        where s.status in ('ready', 'blocked', 'running')
          and ($1::uuid[] is null or s.task_id = any($1))
          and ($2::uuid is null or s.swarm_id = $2)
          and ($3::text is null or t.agent = $3)
          and ($4::text is null or strpos(
              (select a.error from attempts a where a.task_id = s.task_id order by a.number desc limit 1), $4) > 0)
        "#,
        filter.task_ids.as_deref(),
        filter.swarm_id,
        filter.agent,
        filter.error_contains,
    )
    .fetch_one(executor)
    .await
}

/// The ids among `ids` that name no task, in the order given.
pub async fn missing_tasks(executor: impl PgExecutor<'_>, ids: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"
        select given.id as "id!"
        from unnest($1::uuid[]) with ordinality as given(id, position)
        where not exists (select 1 from task_states s where s.task_id = given.id)
        order by given.position
        "#,
        ids,
    )
    .fetch_all(executor)
    .await
}
