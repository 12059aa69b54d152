//! The planner statistics the coordinator keeps fresh on the queue's
//! tables itself (see `maintenance::statistics`): PostgreSQL's own row
//! counts, and a targeted `analyze`.

use sqlx::PgExecutor;

/// The tables whose planner statistics the coordinator keeps fresh itself.
///
/// `tasks` is analysed with `task_states` (submissions fill both at once).
/// Every analyze here makes each hot connection plan its statements again
/// on their next use, so tables whose statistics change no plan are left to
/// autovacuum.
pub const QUEUE_TABLES: [&str; 4] = ["task_states", "attempts", "task_deps", "task_locks"];

/// PostgreSQL's own row counts of one of [`QUEUE_TABLES`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TableCounts {
    /// The table.
    pub table: &'static str,
    /// Rows inserted since the statistics were reset (only ever grows).
    pub inserted: i64,
    /// Rows live now.
    pub live: i64,
    /// Rows it held at its last analyze (negative: never analyzed).
    pub analyzed_rows: f32,
}

/// The row counts of [`QUEUE_TABLES`], as PostgreSQL publishes them (within a second or so).
pub async fn table_counts(executor: impl PgExecutor<'_>) -> sqlx::Result<Vec<TableCounts>> {
    let names = QUEUE_TABLES.map(str::to_owned);
    let rows = sqlx::query!(
        r#"
        select s.relname as "relname!", s.n_tup_ins as "inserted!", s.n_live_tup as "live!",
               c.reltuples as "analyzed_rows!"
        from pg_stat_user_tables s join pg_class c on c.oid = s.relid
        where s.schemaname = current_schema() and s.relname = any($1)
        "#,
        &names,
    )
    .fetch_all(executor)
    .await?;
    Ok(QUEUE_TABLES
        .into_iter()
        .filter_map(|table| {
            let row = rows.iter().find(|row| row.relname == table)?;
            Some(TableCounts { table, inserted: row.inserted, live: row.live, analyzed_rows: row.analyzed_rows })
        })
        .collect())
}

/// Refreshes the planner's statistics on one of [`QUEUE_TABLES`]: only the
/// columns statements filter, join and order on (the wide ones — prompts,
/// inputs, results — make a full `analyze` several times dearer). `tasks`
/// is analysed with `task_states`: submissions fill both.
///
/// # Errors
/// Database failures.
pub async fn analyze(executor: impl PgExecutor<'_>, table: &'static str) -> sqlx::Result<()> {
    let statement = match table {
        "task_states" => {
            "analyze task_states (status, has_locks, has_labels, run_agent, run_after, priority, swarm_id, worker_id, \
             lease_expires_at, attempt_deadline, attempt_id); \
             analyze tasks (swarm_id, key, agent)"
        }
        "attempts" => "analyze attempts (task_id, number, id, stage, outcome)",
        "task_deps" => "analyze task_deps",
        "task_locks" => "analyze task_locks",
        _ => return Ok(()),
    };
    sqlx::raw_sql(statement).execute(executor).await?;
    Ok(())
}
