//! Aggregate reads: task counts by status, per swarm.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::tasks::state::TaskStatus;

/// How many tasks of one swarm are in one status.
#[derive(Debug)]
pub struct SwarmCount {
    /// Swarm id.
    pub swarm_id: Uuid,
    /// Swarm name.
    pub name: String,
    /// When the swarm was submitted.
    pub created_at: DateTime<Utc>,
    /// Status.
    pub status: TaskStatus,
    /// Task count.
    pub count: i64,
}

/// Counts per swarm and status, newest swarm first; one swarm when given.
pub async fn counts(executor: impl PgExecutor<'_>, swarm: Option<Uuid>) -> sqlx::Result<Vec<SwarmCount>> {
    sqlx::query_as!(
        SwarmCount,
        r#"
        select s.id as swarm_id, s.name, s.created_at, t.status as "status!: TaskStatus", count(*) as "count!"
        from swarms s join tasks t on t.swarm_id = s.id
        where $1::uuid is null or s.id = $1
        group by s.id, t.status
        order by s.created_at desc, s.id
        "#,
        swarm
    )
    .fetch_all(executor)
    .await
}
