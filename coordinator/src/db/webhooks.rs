//! Statements on alert webhooks: each webhook's cursor in the event log
//! (`webhook_cursors`), the deliveries made from it (`webhook_deliveries`),
//! taking due deliveries to post and recording how each post went, listing
//! and resending them. See `crate::webhooks`.

use chrono::{DateTime, Utc};
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use super::events::EventRow;

/// Gives each of `webhooks` without a cursor one at the newest event: a
/// webhook is sent what happens after it is configured, not the history.
pub async fn ensure_cursors(executor: impl PgExecutor<'_>, webhooks: &[String]) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        insert into webhook_cursors (webhook, after_seq)
        select w, (select h.last_seq from event_head h) from unnest($1::text[]) as w
        on conflict (webhook) do nothing
        "#,
        webhooks,
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Where `webhook`'s cursor is and the newest event number, with the
/// cursor's row locked until the transaction ends; `None` when another
/// session holds it (that one is making the webhook's deliveries).
pub async fn lock_cursor(conn: &mut PgConnection, webhook: &str) -> sqlx::Result<Option<(i64, i64)>> {
    let row = sqlx::query!(
        r#"
        select c.after_seq, (select h.last_seq from event_head h) as "head!"
        from webhook_cursors c
        where c.webhook = $1
        for update of c skip locked
        "#,
        webhook,
    )
    .fetch_optional(conn)
    .await?;
    Ok(row.map(|row| (row.after_seq, row.head)))
}

/// Events after `after` and up to `upto` whose kind is like one of
/// `patterns` (SQL `like`), oldest first, at most `limit`, and how many
/// match in all, by kind.
pub async fn matching(
    conn: &mut PgConnection,
    after: i64,
    upto: i64,
    patterns: &[String],
    limit: i64,
) -> sqlx::Result<(Vec<EventRow>, Vec<(String, i64)>)> {
    let events = sqlx::query_as!(
        EventRow,
        r#"
        select e.seq + x.i - 1 as "seq!", e.at as "at!", e.kind as "kind!", x.task_id as "task_id?",
               x.swarm_id as "swarm_id?", x.worker_id as "worker_id?", x.attempt as "attempt?", x.detail as "detail?"
        from (select * from events
              where seq is not null and last_seq > $1 and seq <= $2 and kind like any($3)
              order by last_seq
              limit $4) e
        cross join lateral unnest(e.task_ids, e.swarm_ids, e.worker_ids, e.attempts, e.details)
            with ordinality as x(task_id, swarm_id, worker_id, attempt, detail, i)
        order by e.last_seq, x.i
        limit $4
        "#,
        after,
        upto,
        patterns,
        limit,
    )
    .fetch_all(&mut *conn)
    .await?;
    let counts = sqlx::query!(
        r#"
        select kind, sum(n)::int8 as "events!"
        from events
        where seq is not null and last_seq > $1 and seq <= $2 and kind like any($3)
        group by kind
        order by kind
        "#,
        after,
        upto,
        patterns,
    )
    .fetch_all(conn)
    .await?;
    Ok((events, counts.into_iter().map(|row| (row.kind, row.events)).collect()))
}

/// A delivery to make.
#[derive(Debug, Clone)]
pub struct NewDelivery<'a> {
    /// Its id (the `webhook-id` the receiver may deduplicate by).
    pub id: Uuid,
    /// The webhook.
    pub webhook: &'a str,
    /// The first and last event number it covers.
    pub first_seq: i64,
    /// See `first_seq`.
    pub last_seq: i64,
    /// How many events it covers.
    pub events: i64,
    /// The JSON to post.
    pub body: &'a str,
}

/// Queues `delivery` and moves its webhook's cursor to `after`, in one statement.
pub async fn queue(conn: &mut PgConnection, delivery: &NewDelivery<'_>, after: i64) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        with queued as (
            insert into webhook_deliveries (id, webhook, first_seq, last_seq, events, body)
            values ($1, $2, $3, $4, $5, $6)
        )
        update webhook_cursors set after_seq = $7 where webhook = $2
        "#,
        delivery.id,
        delivery.webhook,
        delivery.first_seq,
        delivery.last_seq,
        i32::try_from(delivery.events).unwrap_or(i32::MAX),
        delivery.body,
        after,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Moves `webhook`'s cursor to `after` (nothing after it matched).
pub async fn advance(conn: &mut PgConnection, webhook: &str, after: i64) -> sqlx::Result<()> {
    sqlx::query!("update webhook_cursors set after_seq = $2 where webhook = $1", webhook, after).execute(conn).await?;
    Ok(())
}

/// A delivery taken to post.
#[derive(Debug, Clone)]
pub struct Due {
    /// Its id.
    pub id: Uuid,
    /// The webhook.
    pub webhook: String,
    /// The JSON to post.
    pub body: String,
    /// Posts tried, this one included.
    pub attempts: i32,
    /// Seconds since it was queued (or resent).
    pub pending_seconds: f64,
}

/// Takes up to `limit` pending deliveries of `webhooks` that are due,
/// counting an attempt on each and holding them for `hold_seconds` (after
/// which another coordinator may take one whose post never finished).
pub async fn take_due(
    executor: impl PgExecutor<'_>,
    webhooks: &[String],
    limit: i64,
    hold_seconds: f64,
) -> sqlx::Result<Vec<Due>> {
    sqlx::query_as!(
        Due,
        r#"
        update webhook_deliveries d
        set attempts = d.attempts + 1, last_attempt_at = now(),
            next_attempt_at = now() + make_interval(secs => $2)
        where d.id in (select id from webhook_deliveries
                       where status = 'pending' and next_attempt_at <= now() and webhook = any($3)
                       order by next_attempt_at
                       limit $1
                       for update skip locked)
        returning d.id, d.webhook, d.body, d.attempts,
                  extract(epoch from now() - coalesce(d.resent_at, d.created_at))::float8 as "pending_seconds!"
        "#,
        limit,
        hold_seconds,
        webhooks,
    )
    .fetch_all(executor)
    .await
}

/// Records that the post of `id` was answered 2xx with `status`.
pub async fn delivered(executor: impl PgExecutor<'_>, id: Uuid, status: i32) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        update webhook_deliveries
        set status = 'delivered', delivered_at = now(), last_status = $2, last_error = null
        where id = $1 and status = 'pending'
        "#,
        id,
        status,
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Records a failed post of `id`: tried again in `retry_in_seconds`, or,
/// with none, given up (`failed`).
pub async fn post_failed(
    executor: impl PgExecutor<'_>,
    id: Uuid,
    status: Option<i32>,
    error: &str,
    retry_in_seconds: Option<f64>,
) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        update webhook_deliveries
        set status = case when $4::float8 is null then 'failed' else 'pending' end,
            next_attempt_at = now() + make_interval(secs => coalesce($4, 0)),
            last_status = $2, last_error = $3
        where id = $1 and status = 'pending'
        "#,
        id,
        status,
        error,
        retry_in_seconds,
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// A delivery, as listed.
#[derive(Debug, Clone)]
pub struct DeliveryRow {
    /// Its id.
    pub id: Uuid,
    /// The webhook.
    pub webhook: String,
    /// The first event number it covers.
    pub first_seq: i64,
    /// The last.
    pub last_seq: i64,
    /// How many events.
    pub events: i32,
    /// `pending`, `delivered` or `failed` (given up).
    pub status: String,
    /// Posts tried.
    pub attempts: i32,
    /// When it was queued.
    pub created_at: DateTime<Utc>,
    /// When it is next posted (pending).
    pub next_attempt_at: DateTime<Utc>,
    /// When it was last posted.
    pub last_attempt_at: Option<DateTime<Utc>>,
    /// The HTTP status of the last answer.
    pub last_status: Option<i32>,
    /// Why the last post failed.
    pub last_error: Option<String>,
    /// When a post succeeded.
    pub delivered_at: Option<DateTime<Utc>>,
    /// The JSON posted.
    pub body: String,
}

/// Deliveries, newest first, of `webhook` and in `status` when given, at most `limit`.
pub async fn list(
    executor: impl PgExecutor<'_>,
    webhook: Option<&str>,
    status: Option<&str>,
    limit: i64,
) -> sqlx::Result<Vec<DeliveryRow>> {
    sqlx::query_as!(
        DeliveryRow,
        r#"
        select id, webhook, first_seq, last_seq, events, status, attempts, created_at, next_attempt_at,
               last_attempt_at, last_status, last_error, delivered_at, body
        from webhook_deliveries
        where ($1::text is null or webhook = $1) and ($2::text is null or status = $2)
        order by created_at desc, id desc
        limit $3
        "#,
        webhook,
        status,
        limit,
    )
    .fetch_all(executor)
    .await
}

/// Queues `id` to be posted again now, whatever became of it; whether it exists.
pub async fn resend(executor: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<bool> {
    let resent = sqlx::query!(
        r#"
        update webhook_deliveries
        set status = 'pending', delivered_at = null, next_attempt_at = now(), resent_at = now()
        where id = $1
        "#,
        id,
    )
    .execute(executor)
    .await?;
    Ok(resent.rows_affected() > 0)
}

/// Removes delivered and given-up deliveries queued more than `retention_seconds` ago.
pub async fn prune(executor: impl PgExecutor<'_>, retention_seconds: f64) -> sqlx::Result<u64> {
    let pruned = sqlx::query!(
        r#"
        delete from webhook_deliveries
        where status <> 'pending' and created_at < now() - make_interval(secs => $1)
        "#,
        retention_seconds,
    )
    .execute(executor)
    .await?;
    Ok(pruned.rows_affected())
}
