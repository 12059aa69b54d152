//! Lease statements: the reaper finds the expired ones; claims whose reply
//! never reached their worker are found here too. Heartbeats extend leases
//! in `beats`. Running attempts also carry their agents' progress reports
//! and, from beats, whether they are stalled.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::outcomes::StoppedAttempt;
use crate::status::TaskStatus;

/// Locks tasks leased to `worker` whose attempt it does not list and that were
/// claimed more than `min_age_seconds` ago: claims whose reply never reached
/// the worker (the call was cut or abandoned after the claim committed).
pub async fn lock_unheld(
    conn: &mut PgConnection,
    worker: Uuid,
    held: &[Uuid],
    min_age_seconds: f64,
) -> sqlx::Result<Vec<StoppedAttempt>> {
    sqlx::query_as!(
        StoppedAttempt,
        r#"
        select s.task_id as "id!", s.attempt_id as "attempt_id!", s.status as "status!: TaskStatus",
               s.failures as "failures!", s.losses as "losses!", s.refusals as "refusals!", s.stage as "stage!",
               s.run_agent as "run_agent!", array_prepend(t.agent, t.fallback_agents) as "agents!", t.max_attempts, t.backoff_initial_ms,
               t.backoff_max_ms, t.backoff_multiplier, false as "lease_expired!",
               extract(epoch from now() - s.attempt_started_at)::float8 as "ran_seconds!"
        from task_states s join tasks t on t.id = s.task_id
        where s.worker_id = $1 and s.lease_expires_at is not null and s.attempt_id <> all($2)
          and s.attempt_started_at < now() - make_interval(secs => $3)
        order by s.task_id
        for update of s skip locked
        "#,
        worker,
        held,
        min_age_seconds,
    )
    .fetch_all(conn)
    .await
}

/// Attempts of `worker` whose task is being cancelled.
pub async fn cancelling_attempts(executor: impl PgExecutor<'_>, worker: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"
        select attempt_id as "attempt!" from task_states
        where worker_id = $1 and lease_expires_at is not null and status = 'cancelling'
        "#,
        worker
    )
    .fetch_all(executor)
    .await
}

/// Locks up to `limit` leased tasks whose lease or deadline has passed,
/// skipping rows another reaper holds (so reapers never double-reap).
pub async fn lock_expired(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<StoppedAttempt>> {
    sqlx::query_as!(
        StoppedAttempt,
        r#"
        select s.task_id as "id!", s.attempt_id as "attempt_id!", s.status as "status!: TaskStatus",
               s.failures as "failures!", s.losses as "losses!", s.refusals as "refusals!", s.stage as "stage!",
               s.run_agent as "run_agent!", array_prepend(t.agent, t.fallback_agents) as "agents!", t.max_attempts, t.backoff_initial_ms,
               t.backoff_max_ms, t.backoff_multiplier, s.lease_expires_at < now() as "lease_expired!",
               extract(epoch from now() - s.attempt_started_at)::float8 as "ran_seconds!"
        from task_states s join tasks t on t.id = s.task_id
        where s.lease_expires_at is not null and least(s.lease_expires_at, s.attempt_deadline) < now()
        order by least(s.lease_expires_at, s.attempt_deadline)
        limit $1
        for update of s skip locked
        "#,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// Records an agent's progress report on its attempt: at most one write a
/// second unless the message changes. `false` when the attempt is not the
/// task's current, leased one.
pub async fn report_progress(
    executor: impl PgExecutor<'_>,
    task: Uuid,
    attempt: Uuid,
    message: &str,
) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"
        with current as (
            select task_id from task_states
            where task_id = $1 and attempt_id = $2 and status in ('running', 'cancelling')
        ), reported as (
            update task_states s
            set progress_at = now(), progress = $3
            where s.task_id = (select task_id from current) and s.attempt_id = $2
              and (s.progress_at is null or s.progress_at < now() - interval '1 second' or s.progress is distinct from $3)
        )
        select exists(select 1 from current) as "is_current!"
        "#,
        task,
        attempt,
        message,
    )
    .fetch_one(executor)
    .await
}

/// A running attempt whose worker says its agent is stalled.
#[derive(Debug)]
pub struct Stalled {
    /// Task id.
    pub task_id: Uuid,
    /// Its swarm.
    pub swarm_id: Uuid,
    /// Attempt id.
    pub attempt_id: Uuid,
    /// Worker running it.
    pub worker_id: Uuid,
    /// Since when.
    pub since: chrono::DateTime<chrono::Utc>,
}

/// Stalled attempts (of one swarm, when given), longest stalled first, at most `limit`.
pub async fn stalled(executor: impl PgExecutor<'_>, swarm: Option<Uuid>, limit: i64) -> sqlx::Result<Vec<Stalled>> {
    sqlx::query_as!(
        Stalled,
        r#"
        select task_id, swarm_id, attempt_id as "attempt_id!", worker_id as "worker_id!", stalled_since as "since!"
        from task_states
        where stalled_since is not null and ($1::uuid is null or swarm_id = $1)
        order by stalled_since
        limit $2
        "#,
        swarm,
        limit,
    )
    .fetch_all(executor)
    .await
}
