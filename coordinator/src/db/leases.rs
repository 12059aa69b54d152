//! Lease statements: the reaper finds the expired ones; claims whose reply
//! never reached their worker are found here too. Heartbeats extend leases
//! in `beats`.

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::outcomes::StoppedAttempt;
use crate::tasks::state::TaskStatus;

/// Locks tasks leased to `worker` whose attempt it does not list and that were
/// claimed more than `min_age_seconds` ago: claims whose reply never reached
/// the worker (the call was cut or abandoned after the claim committed).
/// Queued ones are written back onto their rows first.
pub async fn lock_unheld(
    conn: &mut PgConnection,
    worker: Uuid,
    held: &[Uuid],
    min_age_seconds: f64,
) -> sqlx::Result<Vec<StoppedAttempt>> {
    super::queue::write_back_unheld(&mut *conn, worker, held, min_age_seconds).await?;
    sqlx::query_as!(
        StoppedAttempt,
        r#"
        select t.id, t.current_attempt as "attempt_id!", t.status as "status: TaskStatus", t.failures,
               t.max_attempts, t.backoff_initial_ms, t.backoff_max_ms, t.backoff_multiplier,
               false as "lease_expired!"
        from task_rows t
        where t.worker_id = $1 and t.lease_expires_at is not null and t.current_attempt <> all($2)
          and t.attempt_started_at < now() - make_interval(secs => $3)
        for update of t skip locked
        "#,
        worker,
        held,
        min_age_seconds,
    )
    .fetch_all(conn)
    .await
}

/// Attempts of `worker` whose task is being cancelled (a cancel writes a
/// queued task back onto its row first, so only rows are cancelling).
pub async fn cancelling_attempts(executor: impl PgExecutor<'_>, worker: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"
        select current_attempt as "attempt!" from task_rows
        where worker_id = $1 and lease_expires_at is not null and status = 'cancelling'
        "#,
        worker
    )
    .fetch_all(executor)
    .await
}

/// Locks up to `limit` leased tasks whose lease or deadline has passed,
/// skipping rows another reaper holds (so reapers never double-reap); up to
/// `limit` queued ones are written back onto their rows first.
pub async fn lock_expired(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<StoppedAttempt>> {
    super::queue::write_back_expired(&mut *conn, limit).await?;
    sqlx::query_as!(
        StoppedAttempt,
        r#"
        select id, current_attempt as "attempt_id!", status as "status: TaskStatus", failures, max_attempts,
               backoff_initial_ms, backoff_max_ms, backoff_multiplier,
               lease_expires_at < now() as "lease_expired!"
        from task_rows
        where lease_expires_at is not null and least(lease_expires_at, attempt_deadline) < now()
        order by least(lease_expires_at, attempt_deadline)
        limit $1
        for update skip locked
        "#,
        limit,
    )
    .fetch_all(conn)
    .await
}
