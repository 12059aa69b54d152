//! Statements on the event log (`events`, `event_head`): append a batch of
//! events of one kind, number committed rows (the sequencer), read numbered
//! events in order, and remove those past retention. The hot statements
//! (claims, completions, fates) append their rows themselves, in the same
//! statement; see `docs/data-model.md` ("The event log").

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// The advisory lock key the sequencer's session holds ("hiveevnt").
const SEQUENCER_LOCK: i64 = 0x6869_7665_6576_6e74;

/// Events of one kind to append: one element per event in each array the
/// kind uses (the others empty).
#[derive(Debug, Default)]
pub struct Batch {
    /// The tasks.
    pub task_ids: Vec<Uuid>,
    /// Their swarms.
    pub swarm_ids: Vec<Uuid>,
    /// The workers.
    pub worker_ids: Vec<Uuid>,
    /// Attempt numbers.
    pub attempts: Vec<i32>,
    /// What else each event says.
    pub details: Vec<Json>,
}

/// Appends `batch` as one row of `kind`; numbered once its transaction
/// commits. An empty batch appends nothing, and neither does one of task
/// events while they are off (`task_events_on`).
pub async fn append(executor: impl PgExecutor<'_>, kind: &str, batch: &Batch) -> sqlx::Result<()> {
    if batch.task_ids.is_empty() && batch.worker_ids.is_empty() && batch.details.is_empty() {
        return Ok(());
    }
    sqlx::query!(
        r#"
        insert into events (kind, task_ids, swarm_ids, worker_ids, attempts, details)
        select $1, nullif($2::uuid[], '{}'), nullif($3::uuid[], '{}'), nullif($4::uuid[], '{}'),
               nullif($5::int4[], '{}'), nullif($6::jsonb[], '{}')
        where not starts_with($1, 'task.') or task_events_on()
        "#,
        kind,
        &batch.task_ids,
        &batch.swarm_ids,
        &batch.worker_ids,
        &batch.attempts,
        &batch.details,
    )
    .execute(executor)
    .await?;
    Ok(())
}

/// Makes this session the sequencer, if no other session is (an advisory
/// lock held until the session ends); whether it is now. A leading session
/// that sits idle for 10 s (its coordinator cut off from the database) is
/// ended by the server, so the lock does not wait for TCP to notice.
pub async fn lead(conn: &mut PgConnection) -> sqlx::Result<bool> {
    let leading = sqlx::query_scalar!(r#"select pg_try_advisory_lock($1) as "leading!""#, SEQUENCER_LOCK)
        .fetch_one(&mut *conn)
        .await?;
    if leading {
        sqlx::query!("set idle_session_timeout = '10s'").execute(conn).await?;
    }
    Ok(leading)
}

/// Stops this session leading (it led), so another may at once.
pub async fn resign(conn: &mut PgConnection) -> sqlx::Result<()> {
    sqlx::query_scalar!(r#"select pg_advisory_unlock($1) as "unlocked!""#, SEQUENCER_LOCK).fetch_one(conn).await?;
    Ok(())
}

/// Numbers committed rows not numbered yet, in the order they were
/// inserted, at most `limit` rows, and derives the swarm events from them,
/// in one statement; returns the newest event number when any was numbered,
/// and announces it on `hive_events` at commit. Only the session that
/// [`lead`]s may call it: one numberer at a time is what keeps numbers
/// without gaps, and since it took the lock after any earlier numberer's
/// session ended, its statements see all that one numbered.
///
/// The swarm events (in `swarm_progress`): each swarm's count of unfinished
/// tasks moves with its numbered task events (submitted, retried, restored: +1; succeeded, dead,
/// cancelled: −1); `swarm.finished` for those an ending brings to zero, and
/// `swarm.budget_exhausted` for those whose spending reached their budget
/// (once, until a raise lets it be announced again).
pub async fn number(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Option<i64>> {
    sqlx::query_scalar!(
        r#"
        with pending as (
            select e.id, e.n, sum(e.n) over (order by e.id) as upto
            from events e
            where e.seq is null
            order by e.id
            limit $1
        ), numbered as (
            update events e
            set seq = h.last_seq + p.upto - p.n + 1
            from pending p, event_head h
            where e.id = p.id
            returning e.last_seq, e.kind, e.swarm_ids
        ), head as (
            update event_head h
            set last_seq = (select max(last_seq) from numbered)
            where exists(select 1 from numbered)
            returning h.last_seq
        ), deltas as (
            select x.swarm_id,
                   sum(case when e.kind in ('task.submitted', 'task.retried', 'task.restored') then 1
                            when e.kind in ('task.succeeded', 'task.dead', 'task.cancelled') then -1
                            else 0 end) as delta,
                   bool_or(e.kind in ('task.succeeded', 'task.dead', 'task.cancelled')) as ended,
                   bool_or(e.kind in ('task.succeeded', 'task.retry_scheduled', 'task.dead', 'task.cancelled',
                                      'task.next_stage')) as charged
            from numbered e cross join lateral unnest(e.swarm_ids) as x(swarm_id)
            where e.kind in ('task.submitted', 'task.retried', 'task.restored', 'task.succeeded', 'task.dead',
                             'task.cancelled', 'task.retry_scheduled', 'task.next_stage')
            group by x.swarm_id
        ), progress_before as (
            -- As the last round left them (only the sequencer and a budget change write these rows).
            select p.swarm_id, p.budget_exhausted from swarm_progress p where p.swarm_id in (select swarm_id from deltas)
        ), counted as (
            insert into swarm_progress as p (swarm_id, unfinished, budget_exhausted)
            select d.swarm_id, d.delta, d.charged and coalesce(w.spent >= w.budget, false)
            from deltas d join swarms w on w.id = d.swarm_id
            on conflict (swarm_id) do update
                set unfinished = p.unfinished + excluded.unfinished,
                    budget_exhausted = p.budget_exhausted or excluded.budget_exhausted
            returning p.swarm_id, p.unfinished, p.budget_exhausted
        ), judged as (
            select c.swarm_id as id, c.unfinished, d.ended, w.name, w.spent, w.budget,
                   c.budget_exhausted and not coalesce(b.budget_exhausted, false) as exhausted_now
            from counted c
            join deltas d on d.swarm_id = c.swarm_id
            join swarms w on w.id = c.swarm_id
            left join progress_before b on b.swarm_id = c.swarm_id
        ), finished as (
            insert into events (kind, swarm_ids, details)
            select 'swarm.finished', array_agg(id), array_agg(jsonb_build_object('name', name))
            from judged
            where unfinished = 0 and ended
            having count(*) > 0
        ), exhausted as (
            insert into events (kind, swarm_ids, details)
            select 'swarm.budget_exhausted', array_agg(id),
                   array_agg(jsonb_build_object('name', name, 'spent', spent, 'budget', budget))
            from judged
            where exhausted_now
            having count(*) > 0
        )
        select h.last_seq as "last_seq!"
        from head h cross join lateral (select pg_notify('hive_events', h.last_seq::text)) as announced
        "#,
        limit,
    )
    .fetch_optional(conn)
    .await
}

/// The newest event numbered, and the oldest kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Head {
    /// The newest event's number (0 before the first).
    pub last_seq: i64,
    /// The oldest kept event's number (`last_seq + 1` when none is kept).
    pub first_seq: i64,
}

/// Reads [`Head`].
pub async fn head(executor: impl PgExecutor<'_>) -> sqlx::Result<Head> {
    sqlx::query_as!(Head, "select last_seq, first_seq from event_head").fetch_one(executor).await
}

/// One event as read back.
#[derive(Debug, Clone)]
pub struct EventRow {
    /// Its number.
    pub seq: i64,
    /// When the transaction that wrote it began.
    pub at: DateTime<Utc>,
    /// Dotted name.
    pub kind: String,
    /// The task, for task events.
    pub task_id: Option<Uuid>,
    /// The task's swarm, or the swarm of a swarm event.
    pub swarm_id: Option<Uuid>,
    /// The worker, for attempt and worker events.
    pub worker_id: Option<Uuid>,
    /// Attempt number, for attempt events.
    pub attempt: Option<i32>,
    /// What else it says.
    pub detail: Option<Json>,
}

/// Numbered events after `after` and up to `upto`, oldest first, at most
/// `limit` (a row is read whole, so a page may end inside it).
pub async fn after(executor: impl PgExecutor<'_>, after: i64, upto: i64, limit: i64) -> sqlx::Result<Vec<EventRow>> {
    sqlx::query_as!(
        EventRow,
        r#"
        select e.seq + x.i - 1 as "seq!", e.at as "at!", e.kind as "kind!", x.task_id as "task_id?",
               x.swarm_id as "swarm_id?", x.worker_id as "worker_id?", x.attempt as "attempt?", x.detail as "detail?"
        from (select * from events
              where seq is not null and last_seq > $1 and seq <= $2
              order by last_seq
              limit $3) e
        cross join lateral unnest(e.task_ids, e.swarm_ids, e.worker_ids, e.attempts, e.details)
            with ordinality as x(task_id, swarm_id, worker_id, attempt, detail, i)
        where e.seq + x.i - 1 > $1 and e.seq + x.i - 1 <= $2
        order by e.last_seq, x.i
        limit $3
        "#,
        after,
        upto,
        limit,
    )
    .fetch_all(executor)
    .await
}

/// Removes the oldest numbered rows, up to the first whose events began
/// within `retention_seconds`, at most `limit` rows (and reading no more),
/// and moves the kept floor past them; returns how many rows went. Only a
/// prefix goes, so the events kept have no gaps.
pub async fn prune(executor: impl PgExecutor<'_>, retention_seconds: f64, limit: i64) -> sqlx::Result<u64> {
    let removed = sqlx::query_scalar!(
        r#"
        with oldest as (
            -- The oldest rows, each marked once a row at or before it is young.
            select id, last_seq,
                   bool_or(at >= now() - make_interval(secs => $1)) over (order by last_seq) as kept
            from (select id, last_seq, at from events where seq is not null order by last_seq limit $2) o
        ), removed as (
            delete from events e using oldest o where e.id = o.id and not o.kept returning e.last_seq
        ), floor as (
            update event_head set first_seq = greatest(first_seq, (select max(last_seq) + 1 from removed))
            where exists(select 1 from removed)
        )
        select count(*) as "removed!" from removed
        "#,
        retention_seconds,
        limit,
    )
    .fetch_one(executor)
    .await?;
    Ok(u64::try_from(removed).unwrap_or(0))
}
