//! What a `/metrics` scrape reads, each statement bounded by the number of
//! agents, statuses or live workers (never by the tasks), and the fold that
//! keeps the task counts (`task_counts`, see `docs/data-model.md`, "Task
//! counts") small to read.

use sqlx::PgExecutor;

/// Tasks of one agent in one status, with the age of its oldest ready task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskTotal {
    /// The agent the task's next attempt runs (`task_states.run_agent`).
    pub agent: String,
    /// Status as stored (`blocked`, `ready`, …).
    pub status: String,
    /// How many.
    pub tasks: i64,
    /// For `ready` with tasks: seconds since the agent's oldest ready task
    /// could first be claimed (0 when none is due yet); none for the other
    /// statuses.
    pub oldest_ready_seconds: Option<f64>,
}

/// The task counts by agent and status (`task_totals`: the folded counts
/// plus the changes not folded yet), with each agent's oldest ready task
/// (one probe of `task_states_ready_age_idx` per agent with ready tasks).
pub async fn task_totals(executor: impl PgExecutor<'_>) -> sqlx::Result<Vec<TaskTotal>> {
    sqlx::query_as!(
        TaskTotal,
        r#"
        select t.agent as "agent!", t.status::text as "status!", t.tasks as "tasks!",
               case when o.run_after is not null
                    then greatest(extract(epoch from now() - o.run_after), 0)::float8 end as oldest_ready_seconds
        from task_totals t
        left join lateral (
            select s.run_after from task_states s
            where s.status = 'ready' and s.run_agent = t.agent
            order by s.run_after
            limit 1
        ) o on t.status = 'ready' and t.tasks > 0
        order by t.agent, t.status
        "#,
    )
    .fetch_all(executor)
    .await
}

/// Live workers (not found gone or lost) offering one agent.
#[derive(Debug, Clone, PartialEq)]
pub struct AgentWorkers {
    /// The agent.
    pub agent: String,
    /// Workers taking tasks.
    pub live: i64,
    /// Workers draining.
    pub draining: i64,
    /// Free slots of the workers taking tasks.
    pub free_slots: i64,
}

/// Live workers and their free slots, by agent they offer.
pub async fn workers_by_agent(executor: impl PgExecutor<'_>) -> sqlx::Result<Vec<AgentWorkers>> {
    sqlx::query_as!(
        AgentWorkers,
        r#"
        select a.agent as "agent!",
               count(*) filter (where not w.draining) as "live!",
               count(*) filter (where w.draining) as "draining!",
               coalesce(sum(w.free_slots) filter (where not w.draining), 0)::int8 as "free_slots!"
        from workers w cross join lateral unnest(w.agents) as a (agent)
        where w.gone_at is null
        group by a.agent
        order by a.agent
        "#,
    )
    .fetch_all(executor)
    .await
}

/// The fleet and the event log, as one row.
#[derive(Debug, Clone, PartialEq)]
pub struct Fleet {
    /// Live workers taking tasks.
    pub live_workers: i64,
    /// Live workers draining.
    pub draining_workers: i64,
    /// Seconds since the live worker heard from least recently last beat.
    pub heartbeat_age_max_seconds: f64,
    /// The newest event number.
    pub event_head: i64,
    /// Seconds since the oldest event not numbered yet was appended (0 when all are).
    pub event_lag_seconds: f64,
}

/// Live and draining workers, the oldest heartbeat, and how far the event log's numbering is behind.
pub async fn fleet(executor: impl PgExecutor<'_>) -> sqlx::Result<Fleet> {
    sqlx::query_as!(
        Fleet,
        r#"
        select count(*) filter (where not w.draining) as "live_workers!",
               count(*) filter (where w.draining) as "draining_workers!",
               coalesce(max(extract(epoch from now() - w.last_seen_at)), 0)::float8 as "heartbeat_age_max_seconds!",
               (select h.last_seq from event_head h) as "event_head!",
               coalesce((select extract(epoch from now() - e.at) from events e
                         where e.seq is null order by e.id limit 1), 0)::float8 as "event_lag_seconds!"
        from workers w
        where w.gone_at is null
        "#,
    )
    .fetch_one(executor)
    .await
}

/// Folds the committed changes of task counts into `task_counts` (by agent
/// and status) and `swarm_counts` (by swarm, agent and status), and their starts
/// and finishes into `swarm_times` (each swarm's earliest and latest); any
/// number of coordinators may, each change is folded once. How many change
/// rows it folded.
pub async fn fold_task_counts(executor: impl PgExecutor<'_>) -> sqlx::Result<u64> {
    let folded = sqlx::query_scalar!(
        r#"
        with folded as (
            delete from task_count_changes
            returning swarm_id, agent, status, change, first_started_at, last_finished_at
        ), by_agent as (
            insert into task_counts as c (agent, status, tasks)
            select agent, status, sum(change)::int8 from folded group by agent, status
            on conflict (agent, status) do update set tasks = c.tasks + excluded.tasks
        ), by_swarm as (
            insert into swarm_counts as c (swarm_id, agent, status, tasks)
            select swarm_id, agent, status, sum(change)::int8 from folded group by swarm_id, agent, status
            on conflict (swarm_id, agent, status) do update set tasks = c.tasks + excluded.tasks
        ), spans as (
            insert into swarm_times as t (swarm_id, first_started_at, last_finished_at)
            select swarm_id, min(first_started_at), max(last_finished_at) from folded
            group by swarm_id
            having min(first_started_at) is not null or max(last_finished_at) is not null
            on conflict (swarm_id) do update
            set first_started_at = least(t.first_started_at, excluded.first_started_at),
                last_finished_at = greatest(t.last_finished_at, excluded.last_finished_at)
        )
        select count(*) as "rows!" from folded
        "#,
    )
    .fetch_one(executor)
    .await?;
    Ok(u64::try_from(folded).unwrap_or(0))
}

/// Forgets swarm counts that folded to zero (every task of the swarm has
/// left that status), so a swarm keeps a row only per status in use; a
/// change not folded yet brings its row back at the next fold.
pub async fn prune_swarm_counts(executor: impl PgExecutor<'_>) -> sqlx::Result<u64> {
    let pruned = sqlx::query!("delete from swarm_counts where tasks = 0").execute(executor).await?;
    Ok(pruned.rows_affected())
}
