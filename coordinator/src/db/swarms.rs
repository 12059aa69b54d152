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
    submitted_by: Option<&str>,
) -> sqlx::Result<bool> {
    let result = sqlx::query!(
        r#"
        insert into swarms (id, name, idempotency_key, budget, submitted_by) values ($1, $2, $3, $4, $5)
        on conflict (submitted_by, idempotency_key) where idempotency_key is not null do nothing
        "#,
        id,
        name,
        idempotency_key,
        budget,
        submitted_by,
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// A swarm found by its idempotency key.
#[derive(Debug)]
pub struct Keyed {
    /// Swarm id.
    pub id: Uuid,
    /// Its tasks in submission order.
    pub tasks: Vec<Uuid>,
}

/// The swarm `owner` submitted with this idempotency key.
pub async fn by_key(executor: impl PgExecutor<'_>, key: &str, owner: Option<&str>) -> sqlx::Result<Option<Keyed>> {
    sqlx::query_as!(
        Keyed,
        r#"
        select s.id, array(select t.id from tasks t where t.swarm_id = s.id order by t.id) as "tasks!: Vec<Uuid>"
        from swarms s where s.idempotency_key = $1 and s.submitted_by is not distinct from $2
        "#,
        key,
        owner
    )
    .fetch_optional(executor)
    .await
}

/// Who submitted the swarm: `None` for an unknown swarm, `Some(None)` when auth was off.
pub async fn submitted_by(executor: impl PgExecutor<'_>, swarm: Uuid) -> sqlx::Result<Option<Option<String>>> {
    let row =
        sqlx::query_scalar!("select submitted_by from swarms where id = $1", swarm).fetch_optional(executor).await?;
    Ok(row)
}

/// Who submitted the swarm of `task`: `None` for an unknown task.
pub async fn submitted_by_of_task(executor: impl PgExecutor<'_>, task: Uuid) -> sqlx::Result<Option<Option<String>>> {
    let row = sqlx::query_scalar!(
        "select s.submitted_by from tasks t join swarms s on s.id = t.swarm_id where t.id = $1",
        task
    )
    .fetch_optional(executor)
    .await?;
    Ok(row)
}

/// Sets a swarm's budget (`None` clears it), and lets `swarm.budget_exhausted`
/// be announced again once a raise left room; returns (budget, spent), or
/// `None` for an unknown swarm.
pub async fn set_budget(
    executor: impl PgExecutor<'_>,
    swarm: Uuid,
    budget: Option<f64>,
) -> sqlx::Result<Option<(Option<f64>, f64)>> {
    let row = sqlx::query!(
        r#"
        with changed as (
            update swarms set budget = $2 where id = $1 returning budget, spent
        ), rearmed as (
            update swarm_progress p set budget_exhausted = false
            from changed c
            where p.swarm_id = $1 and p.budget_exhausted and not coalesce(c.spent >= c.budget, false)
        )
        select budget, spent as "spent!" from changed
        "#,
        swarm,
        budget
    )
    .fetch_optional(executor)
    .await?;
    Ok(row.map(|row| (row.budget, row.spent)))
}

/// Those of `tasks` whose swarm `owner` did not submit.
pub async fn tasks_not_submitted_by(
    executor: impl PgExecutor<'_>,
    tasks: &[Uuid],
    owner: &str,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        "select t.id from tasks t join swarms s on s.id = t.swarm_id \
         where t.id = any($1) and s.submitted_by is distinct from $2 order by t.id limit 10",
        tasks,
        owner
    )
    .fetch_all(executor)
    .await
}
