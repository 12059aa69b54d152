//! Lease statements: the reaper finds the expired ones; claims whose reply
//! never reached their worker are found here too. Heartbeats extend leases
//! in `beats`.

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
               t.backoff_max_ms, t.backoff_multiplier, false as "lease_expired!"
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
               t.backoff_max_ms, t.backoff_multiplier, s.lease_expires_at < now() as "lease_expired!"
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
