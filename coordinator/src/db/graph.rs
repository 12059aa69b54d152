//! Statements on the dependency graph: edges recorded at submission, and
//! what a task's end does downstream — dependents unblocked when their last
//! dependency succeeds, cancelled (transitively) when one dies or is
//! cancelled, and put back when it is retried; and a swarm's tasks as the
//! nodes of its graph (the dashboard draws them).

use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::status::TaskStatus;

/// Records dependency edges: `tasks[i]` depends on `upstream[i]`.
pub async fn insert_deps(conn: &mut PgConnection, tasks: &[Uuid], upstream: &[Uuid]) -> sqlx::Result<()> {
    sqlx::query!(
        "insert into task_deps (task_id, depends_on) select * from unnest($1::uuid[], $2::uuid[])",
        tasks,
        upstream
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Counts one succeeded dependency off each blocked dependent of `tasks`;
/// returns how many became ready.
pub async fn unblock_dependents(conn: &mut PgConnection, tasks: &[Uuid]) -> sqlx::Result<i64> {
    let ready = sqlx::query_scalar!(
        r#"
        with unblocked as (
            update task_states s
            set waiting_on = s.waiting_on - n.count,
                status = case when s.waiting_on = n.count then 'ready'::task_status else s.status end
            from (select task_id, count(*)::int as count from task_deps where depends_on = any($1) group by task_id) n
            where s.task_id = n.task_id and s.status = 'blocked'
            returning s.status
        )
        select count(*) as "ready!" from unblocked where status = 'ready'
        "#,
        tasks,
    )
    .fetch_one(conn)
    .await?;
    Ok(ready)
}

/// Cancels, transitively, every task downstream of `tasks` (which died or
/// were cancelled) that has not started, marking them cancelled by their
/// upstream.
pub async fn cancel_downstream(conn: &mut PgConnection, tasks: &[Uuid], reason: &str) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"
        with recursive downstream(id) as (
            select task_id from task_deps where depends_on = any($1)
            union
            select d.task_id from task_deps d join downstream on d.depends_on = downstream.id
        ), cancelled as (
            update task_states
            set status = 'cancelled', cancelled_upstream = true, error = $2, finished_at = now(), waiting_on = 0
            where task_id in (select id from downstream) and status in ('blocked', 'ready')
            returning task_id, swarm_id
        ), logged as (
            insert into events (kind, task_ids, swarm_ids, details)
            select 'task.cancelled', array_agg(task_id), array_agg(swarm_id),
                   array_agg(jsonb_build_object('error', $2::text, 'upstream', true))
            from cancelled
            where task_events_on()
            having count(*) > 0
        )
        select task_id as "task_id!" from cancelled
        "#,
        tasks,
        reason,
    )
    .fetch_all(conn)
    .await
}

/// Puts back the tasks downstream of `tasks` (just retried) that were
/// cancelled by their upstream: blocked again, waiting on every dependency
/// that has not succeeded.
pub async fn restore_downstream(conn: &mut PgConnection, tasks: &[Uuid]) -> sqlx::Result<u64> {
    let restored = sqlx::query_scalar!(
        r#"
        with recursive downstream(id) as (
            select task_id from task_deps where depends_on = any($1)
            union
            select d.task_id from task_deps d join downstream on d.depends_on = downstream.id
        ), restored as (
            update task_states s
            set status = 'blocked', cancelled_upstream = false, error = null, finished_at = null,
                waiting_on = (select count(*) from task_deps d join task_states u on u.task_id = d.depends_on
                              where d.task_id = s.task_id and u.status <> 'succeeded')
            where s.task_id in (select id from downstream) and s.status = 'cancelled' and s.cancelled_upstream
            returning s.task_id, s.swarm_id
        ), logged as (
            -- Waiting for their dependencies again, as at submission.
            insert into events (kind, task_ids, swarm_ids)
            select 'task.restored', array_agg(task_id), array_agg(swarm_id)
            from restored
            where task_events_on()
            having count(*) > 0
        )
        select count(*) as "restored!" from restored
        "#,
        tasks,
    )
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(restored).unwrap_or(0))
}

/// A task as a node of its swarm's graph.
#[derive(Debug)]
pub struct Node {
    /// Task id.
    pub id: Uuid,
    /// Its key in the task file.
    pub key: Option<String>,
    /// Status.
    pub status: TaskStatus,
    /// `build` or `validate`.
    pub stage: String,
    /// Validator round, from 1.
    pub round: i32,
    /// Rounds allowed.
    pub max_rounds: i32,
    /// The tasks it waits for.
    pub depends_on: Vec<Uuid>,
}

/// The first `limit` tasks of `swarm` (in submission order, through
/// `tasks_swarm_idx`) with their dependencies.
pub async fn swarm_nodes(executor: impl PgExecutor<'_>, swarm: Uuid, limit: i64) -> sqlx::Result<Vec<Node>> {
    sqlx::query_as!(
        Node,
        r#"
        select t.id as "id!", t.key, s.status as "status!: TaskStatus", s.stage as "stage!", s.round as "round!",
               t.max_rounds as "max_rounds!",
               array(select d.depends_on from task_deps d where d.task_id = t.id order by d.depends_on) as "depends_on!: Vec<Uuid>"
        from tasks t
        join task_states s on s.task_id = t.id
        where t.swarm_id = $1
        order by t.id
        limit $2
        "#,
        swarm,
        limit,
    )
    .fetch_all(executor)
    .await
}
