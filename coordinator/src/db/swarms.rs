//! Statements on `swarms`: creating one (once per idempotency key), budgets,
//! and per-swarm progress: usage, times, and why ready tasks are waiting.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// Records a swarm; `false` when its idempotency key was used before (nothing inserted).
pub async fn insert(
    conn: &mut PgConnection,
    id: Uuid,
    name: &str,
    idempotency_key: Option<&str>,
    budget: Option<f64>,
) -> sqlx::Result<bool> {
    let result = sqlx::query!(
        r#"
        insert into swarms (id, name, idempotency_key, budget) values ($1, $2, $3, $4)
        on conflict (idempotency_key) do nothing
        "#,
        id,
        name,
        idempotency_key,
        budget,
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The swarm submitted with this idempotency key, and its tasks in submission order.
pub async fn by_key(executor: impl PgExecutor<'_>, key: &str) -> sqlx::Result<Option<(Uuid, Vec<Uuid>)>> {
    let row = sqlx::query!(
        r#"
        select s.id, array(select t.id from task_rows t where t.swarm_id = s.id order by t.id) as "tasks!: Vec<Uuid>"
        from swarms s where s.idempotency_key = $1
        "#,
        key
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|row| (row.id, row.tasks)))
}

/// Sets a swarm's budget (`None` clears it); returns (budget, spent), or `None` for an unknown swarm.
pub async fn set_budget(
    executor: impl PgExecutor<'_>,
    swarm: Uuid,
    budget: Option<f64>,
) -> sqlx::Result<Option<(Option<f64>, f64)>> {
    let row = sqlx::query!("update swarms set budget = $2 where id = $1 returning budget, spent", swarm, budget)
        .fetch_optional(executor)
        .await?;
    Ok(row.map(|row| (row.budget, row.spent)))
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
    /// First start.
    pub started_at: Option<DateTime<Utc>>,
    /// Last finish.
    pub finished_at: Option<DateTime<Utc>>,
    /// Usage.
    pub input_tokens: i64,
    /// Usage.
    pub output_tokens: i64,
}

/// Totals per swarm (one swarm when given).
pub async fn summaries(executor: impl PgExecutor<'_>, swarm: Option<Uuid>) -> sqlx::Result<Vec<Summary>> {
    sqlx::query_as!(
        Summary,
        r#"
        select s.id, s.budget, s.spent, min(t.started_at) as started_at, max(t.finished_at) as finished_at,
               coalesce(sum(t.input_tokens), 0)::int8 as "input_tokens!", coalesce(sum(t.output_tokens), 0)::int8 as "output_tokens!"
        from swarms s join tasks t on t.swarm_id = s.id
        where $1::uuid is null or s.id = $1
        group by s.id
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

/// Groups of ready tasks that no worker seen within `live_seconds` can run.
pub async fn unserved(
    executor: impl PgExecutor<'_>,
    swarm: Option<Uuid>,
    live_seconds: f64,
) -> sqlx::Result<Vec<Unserved>> {
    sqlx::query_as!(
        Unserved,
        r#"
        with ready as (
            select t.swarm_id, t.run_agent, t.required_labels
            from task_rows t
            where t.status = 'ready' and ($1::uuid is null or t.swarm_id = $1)
            union all
            select q.swarm_id, q.run_agent, t.required_labels
            from queue q join task_rows t on t.id = q.task_id
            where q.worker_id is null and ($1::uuid is null or q.swarm_id = $1)
        )
        select t.swarm_id as "swarm_id!", t.run_agent as "agent!",
               t.required_labels as "labels!", count(*) as "count!"
        from ready t
        where not exists (
              select 1 from workers w
              where w.last_seen_at > now() - make_interval(secs => $2)
                and t.run_agent = any(w.agents)
                and t.required_labels <@ w.labels)
        group by 1, 2, 3
        order by 1, 2
        "#,
        swarm,
        live_seconds,
    )
    .fetch_all(executor)
    .await
}
