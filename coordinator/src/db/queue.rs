//! The narrow queue beside the task rows (docs/queue-split.md): a plain task
//! is queued at submission, its claims update its `queue` row, and its
//! success replaces that row with a `results` row (see `claims` and
//! `outcomes`); its task row says `queued` throughout. Every other path
//! first writes the queue row back onto the task row ([`write_back`]) and
//! then works on the task row as for any other task. This module finds the
//! queued tasks those paths touch and writes them back.

use sqlx::PgConnection;
use uuid::Uuid;

use super::tasks::TaskFilter;

/// Moves the live state of these queued tasks (ready or leased) onto their
/// task rows, which become `ready` or `running` as if they had never been
/// queued, and deletes their queue rows. Tasks not in the queue (succeeded
/// already, or never queued) are left alone. Returns the tasks moved.
pub async fn write_back(conn: &mut PgConnection, tasks: &[Uuid]) -> sqlx::Result<Vec<Uuid>> {
    if tasks.is_empty() {
        return Ok(Vec::new());
    }
    sqlx::query_scalar!(
        r#"
        with moved as (
            delete from queue q
            where q.task_id = any($1)
            returning q.task_id, q.worker_id, q.attempt_id, q.attempts, q.lease_expires_at, q.attempt_deadline,
                      q.started_at, q.attempt_started_at
        )
        update task_rows t
        set status = case when m.worker_id is null then 'ready'::task_status else 'running'::task_status end,
            attempts = m.attempts, current_attempt = m.attempt_id, worker_id = m.worker_id,
            lease_expires_at = m.lease_expires_at, attempt_deadline = m.attempt_deadline,
            started_at = m.started_at, attempt_started_at = m.attempt_started_at, updated_at = now()
        from moved m
        where t.id = m.task_id and t.status = 'queued'
        returning t.id
        "#,
        tasks,
    )
    .fetch_all(conn)
    .await
}

/// Writes back the queued tasks whose leased attempt is among the reported
/// ones (paired by position), before their failures are recorded.
pub async fn write_back_reported(
    conn: &mut PgConnection,
    task_ids: &[Uuid],
    attempt_ids: &[Uuid],
) -> sqlx::Result<Vec<Uuid>> {
    let tasks = sqlx::query_scalar!(
        r#"
        select q.task_id
        from queue q join unnest($1::uuid[], $2::uuid[]) as r(task_id, attempt_id)
          on q.task_id = r.task_id and q.attempt_id = r.attempt_id
        order by q.task_id
        for update of q
        "#,
        task_ids,
        attempt_ids,
    )
    .fetch_all(&mut *conn)
    .await?;
    write_back(conn, &tasks).await
}

/// Writes back up to `limit` queued tasks whose lease or deadline has
/// passed, skipping rows another reaper holds, for the reaper.
pub async fn write_back_expired(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<Uuid>> {
    let tasks = sqlx::query_scalar!(
        r#"
        select task_id from queue
        where worker_id is not null and least(lease_expires_at, attempt_deadline) < now()
        order by least(lease_expires_at, attempt_deadline)
        limit $1
        for update skip locked
        "#,
        limit,
    )
    .fetch_all(&mut *conn)
    .await?;
    write_back(conn, &tasks).await
}

/// Writes back the queued tasks leased to `worker` whose attempt it does not
/// list and that were claimed more than `min_age_seconds` ago.
pub async fn write_back_unheld(
    conn: &mut PgConnection,
    worker: Uuid,
    held: &[Uuid],
    min_age_seconds: f64,
) -> sqlx::Result<Vec<Uuid>> {
    let tasks = sqlx::query_scalar!(
        r#"
        select task_id from queue
        where worker_id = $1 and attempt_id <> all($2)
          and attempt_started_at < now() - make_interval(secs => $3)
        order by task_id
        for update skip locked
        "#,
        worker,
        held,
        min_age_seconds,
    )
    .fetch_all(&mut *conn)
    .await?;
    write_back(conn, &tasks).await
}

/// Writes back the queued tasks an operator's cancel matches (a queued task
/// has no error yet, so a filter on the error matches none).
pub async fn write_back_matching(conn: &mut PgConnection, filter: &TaskFilter) -> sqlx::Result<Vec<Uuid>> {
    if filter.error_contains.is_some() {
        return Ok(Vec::new());
    }
    let tasks = sqlx::query_scalar!(
        r#"
        select q.task_id
        from queue q join task_rows t on t.id = q.task_id
        where ($1::uuid[] is null or q.task_id = any($1))
          and ($2::uuid is null or q.swarm_id = $2)
          and ($3::text is null or t.agent = $3)
        order by q.task_id
        for update of q
        "#,
        filter.task_ids.as_deref(),
        filter.swarm_id,
        filter.agent,
    )
    .fetch_all(&mut *conn)
    .await?;
    write_back(conn, &tasks).await
}
