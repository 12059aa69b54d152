//! Lease statements: heartbeats extend them; the reaper finds the expired
//! ones; claims whose reply never reached their worker are found here too.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::outcomes::StoppedAttempt;
use crate::tasks::state::TaskStatus;

/// An attempt whose lease a heartbeat extended, with its task's status.
#[derive(Debug)]
pub struct Extended {
    /// The attempt.
    pub attempt_id: Uuid,
    /// Running or cancelling.
    pub status: TaskStatus,
}

/// What a heartbeat's lease extension found.
#[derive(Debug)]
pub struct Extension {
    /// Attempts extended.
    pub extended: Vec<Extended>,
    /// The new lease end.
    pub lease_expires_at: DateTime<Utc>,
    /// Tasks leased to the worker in all, listed or not.
    pub leased: i64,
}

/// Extends the leases of the worker's attempts that are still current; also
/// counts every task leased to the worker, so the caller can tell whether it
/// holds leases the worker does not know about.
pub async fn extend_leases(
    executor: impl PgExecutor<'_>,
    worker: Uuid,
    attempt_ids: &[Uuid],
    lease_seconds: f64,
) -> sqlx::Result<Extension> {
    let row = sqlx::query!(
        r#"
        with extended as (
            update tasks
            set lease_expires_at = now() + make_interval(secs => $3)
            where current_attempt = any($2) and lease_expires_at is not null and worker_id = $1
            returning current_attempt, status
        )
        select array(select current_attempt from extended) as "attempts!: Vec<Uuid>",
               array(select status from extended) as "statuses!: Vec<TaskStatus>",
               now() + make_interval(secs => $3) as "lease_expires_at!",
               (select count(*) from tasks where worker_id = $1 and lease_expires_at is not null) as "leased!"
        "#,
        worker,
        attempt_ids,
        lease_seconds,
    )
    .fetch_one(executor)
    .await?;
    let extended = row
        .attempts
        .into_iter()
        .zip(row.statuses)
        .map(|(attempt_id, status)| Extended { attempt_id, status })
        .collect();
    Ok(Extension { extended, lease_expires_at: row.lease_expires_at, leased: row.leased })
}

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
        select t.id, t.current_attempt as "attempt_id!", t.status as "status: TaskStatus", t.failures,
               t.max_attempts, t.backoff_initial_ms, t.backoff_max_ms, t.backoff_multiplier,
               false as "lease_expired!"
        from tasks t join attempts a on a.id = t.current_attempt
        where t.worker_id = $1 and t.lease_expires_at is not null and t.current_attempt <> all($2)
          and a.started_at < now() - make_interval(secs => $3)
        for update of t skip locked
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
        r#"select current_attempt as "attempt!" from tasks where worker_id = $1 and status = 'cancelling'"#,
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
        select id, current_attempt as "attempt_id!", status as "status: TaskStatus", failures, max_attempts,
               backoff_initial_ms, backoff_max_ms, backoff_multiplier,
               lease_expires_at < now() as "lease_expired!"
        from tasks
        where lease_expires_at is not null and (lease_expires_at < now() or attempt_deadline < now())
        order by least(lease_expires_at, attempt_deadline)
        limit $1
        for update skip locked
        "#,
        limit,
    )
    .fetch_all(conn)
    .await
}
