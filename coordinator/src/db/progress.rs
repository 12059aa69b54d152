//! Per-swarm progress: task counts by status, times and usage, and the
//! ready tasks that no live worker can take.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::status::TaskStatus;

/// How many tasks of one swarm are in one status.
#[derive(Debug)]
pub struct SwarmCount {
    /// Swarm id.
    pub swarm_id: Uuid,
    /// Swarm name.
    pub name: String,
    /// When the swarm was submitted.
    pub created_at: DateTime<Utc>,
    /// What its agents have spent.
    pub spent: f64,
    /// Its budget, if it has one.
    pub budget: Option<f64>,
    /// Status.
    pub status: TaskStatus,
    /// Task count.
    pub count: i64,
}

/// Counts per swarm and status from the kept counts (`swarm_totals`, never
/// the tasks), newest swarm first; one swarm when given.
pub async fn counts(executor: impl PgExecutor<'_>, swarm: Option<Uuid>) -> sqlx::Result<Vec<SwarmCount>> {
    sqlx::query_as!(
        SwarmCount,
        r#"
        select w.id as swarm_id, w.name, w.created_at, w.spent, w.budget, t.status as "status!: TaskStatus", t.tasks as "count!"
        from swarm_totals t join swarms w on w.id = t.swarm_id
        where t.tasks <> 0 and ($1::uuid is null or t.swarm_id = $1)
        order by w.created_at desc, w.id, t.status
        "#,
        swarm
    )
    .fetch_all(executor)
    .await
}

/// Counts per status of the `limit` newest swarms, newest first: one walk
/// of `swarms_created_idx` and a probe of the kept counts per swarm.
pub async fn newest(executor: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<SwarmCount>> {
    sqlx::query_as!(
        SwarmCount,
        r#"
        with newest as materialized (
            select id, name, created_at, spent, budget from swarms order by created_at desc, id limit $1
        )
        select w.id as "swarm_id!", w.name as "name!", w.created_at as "created_at!", w.spent as "spent!", w.budget,
               t.status as "status!: TaskStatus", t.tasks as "count!"
        from newest w join swarm_totals t on t.swarm_id = w.id
        where t.swarm_id = any(array(select id from newest)) and t.tasks <> 0
        order by w.created_at desc, w.id, t.status
        "#,
        limit
    )
    .fetch_all(executor)
    .await
}

/// One swarm's totals.
#[derive(Debug)]
pub struct Summary {
    /// Swarm id.
    pub id: Uuid,
    /// Budget.
    pub budget: Option<f64>,
    /// Spent.
    pub spent: f64,
    /// When its first task first started.
    pub started_at: Option<DateTime<Utc>>,
    /// When a task of it last finished (a finish a retry undid still counts).
    pub finished_at: Option<DateTime<Utc>>,
    /// Input tokens its attempts reported.
    pub input_tokens: i64,
    /// Output tokens its attempts reported.
    pub output_tokens: i64,
}

/// Totals per swarm (one swarm when given), all kept on the way: its first
/// start and last finish (`swarm_spans`), and its tokens and cost (on its
/// row). Reads no task and no attempt.
pub async fn summaries(executor: impl PgExecutor<'_>, swarm: Option<Uuid>) -> sqlx::Result<Vec<Summary>> {
    sqlx::query_as!(
        Summary,
        r#"
        select w.id as "id!", w.budget, w.spent as "spent!", t.first_started_at as started_at,
               t.last_finished_at as finished_at, w.input_tokens as "input_tokens!", w.output_tokens as "output_tokens!"
        from swarms w left join swarm_spans t on t.swarm_id = w.id
        where $1::uuid is null or w.id = $1
        "#,
        swarm
    )
    .fetch_all(executor)
    .await
}

/// Ready tasks no live worker can take: by swarm, agent and required labels.
#[derive(Debug)]
pub struct Unserved {
    /// Swarm id.
    pub swarm_id: Uuid,
    /// Agent.
    pub agent: String,
    /// Required labels.
    pub labels: Json,
    /// How many tasks.
    pub count: i64,
}

/// Groups of ready tasks that no worker seen within `live_seconds` can run
/// (none offers the agent with the labels, or each that does reports it,
/// its work folder or its disk unavailable). The ready tasks per swarm and
/// agent come from the counts; only those that require labels are read.
pub async fn unserved(
    executor: impl PgExecutor<'_>,
    swarm: Option<Uuid>,
    live_seconds: f64,
) -> sqlx::Result<Vec<Unserved>> {
    sqlx::query_as!(
        Unserved,
        r#"
        with ready as (
            select t.swarm_id, t.agent, t.tasks from swarm_agent_totals t
            where t.status = 'ready' and t.tasks > 0 and ($1::uuid is null or t.swarm_id = $1)
        ), labelled as (
            select s.swarm_id, s.run_agent as agent, t.required_labels, count(*) as count
            from task_states s join tasks t on t.id = s.task_id
            where s.status = 'ready' and s.has_labels and ($1::uuid is null or s.swarm_id = $1)
            group by 1, 2, 3
        ), grouped as (
            -- The workers are asked once per group, not once per task.
            select r.swarm_id, r.agent, '{}'::jsonb as required_labels,
                   r.tasks - coalesce((select sum(l.count) from labelled l
                                       where l.swarm_id = r.swarm_id and l.agent = r.agent), 0) as count
            from ready r
            union all
            select swarm_id, agent, required_labels, count from labelled
        )
        select g.swarm_id as "swarm_id!", g.agent as "agent!", g.required_labels as "labels!", g.count::int8 as "count!"
        from grouped g
        where g.count > 0
          and not exists (
              select 1 from workers w
              where w.last_seen_at > now() - make_interval(secs => $2)
                and g.agent = any(w.agents)
                and g.required_labels <@ w.labels
                and not w.unavailable ?| array[g.agent, 'work_dir', 'disk'])
        order by 1, 2, 3
        "#,
        swarm,
        live_seconds,
    )
    .fetch_all(executor)
    .await
}
