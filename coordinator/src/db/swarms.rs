//! Statements on `swarms`: creating one (once per idempotency key) and its budget.

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
        select s.id, array(select t.id from tasks t where t.swarm_id = s.id order by t.id) as "tasks!: Vec<Uuid>"
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
