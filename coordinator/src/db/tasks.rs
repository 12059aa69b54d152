//! Statements on tasks: submit, cancel, retry, and reads. Reads go through
//! the view `tasks` (a task row overlaid with its queue or results row);
//! writes go to `task_rows` (and `queue` at submission).

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::tasks::state::{AttemptOutcome, TaskStatus};

/// New tasks of one swarm, column by column (inserted with one `unnest`).
#[derive(Debug, Default)]
pub struct NewTasks {
    /// Task ids.
    pub ids: Vec<Uuid>,
    /// Keys from the task file (may be absent).
    pub keys: Vec<Option<String>>,
    /// Agent names.
    pub agents: Vec<String>,
    /// Prompts.
    pub prompts: Vec<String>,
    /// Inputs (JSON objects).
    pub inputs: Vec<Option<Json>>,
    /// Priorities.
    pub priorities: Vec<i32>,
    /// Attempts allowed.
    pub max_attempts: Vec<i32>,
    /// Per-attempt time limits.
    pub timeouts_ms: Vec<Option<i64>>,
    /// First retry delays.
    pub backoff_initial_ms: Vec<Option<i64>>,
    /// Largest retry delays.
    pub backoff_max_ms: Vec<Option<i64>>,
    /// Retry delay growth.
    pub backoff_multipliers: Vec<Option<f64>>,
    /// Earliest start (delayed tasks); `None` for now.
    pub run_after: Vec<Option<DateTime<Utc>>>,
    /// First status: ready, blocked, or cancelled (upstream).
    pub statuses: Vec<TaskStatus>,
    /// Dependencies to wait for.
    pub waiting_on: Vec<i32>,
    /// Required worker labels (JSON objects).
    pub labels: Vec<Json>,
    /// Locks (JSON arrays of strings).
    pub locks: Vec<Json>,
    /// Validator agents.
    pub validate_agents: Vec<Option<String>>,
    /// Validator prompts.
    pub validate_prompts: Vec<Option<String>>,
    /// Builder runs allowed.
    pub max_rounds: Vec<i32>,
    /// Whether retries resume the agent's session.
    pub resume_sessions: Vec<bool>,
}

/// Inserts the tasks of one swarm in one statement. A plain task (ready, no
/// locks, no validator) is queued: its row says `queued` and a narrow queue
/// row, with the bytes a claim counts for it, is what claims update.
pub async fn insert_tasks(conn: &mut PgConnection, swarm_id: Uuid, tasks: &NewTasks) -> sqlx::Result<u64> {
    let inserted = sqlx::query_scalar!(
        r#"
        with inserted as (
        insert into task_rows (id, swarm_id, key, agent, prompt, input, priority, status, max_attempts, timeout_ms,
                           backoff_initial_ms, backoff_max_ms, backoff_multiplier, run_after, waiting_on,
                           cancelled_upstream, finished_at, error, required_labels, locks, validate_agent,
                           validate_prompt, max_rounds, resume_sessions)
        select t.id, $1, t.key, t.agent, t.prompt, t.input, t.priority,
               case when t.status = 'ready' and jsonb_array_length(t.locks) = 0 and t.validate_agent is null
                    then 'queued'::task_status else t.status end,
               t.max_attempts, t.timeout_ms,
               t.backoff_initial_ms, t.backoff_max_ms, t.backoff_multiplier, coalesce(t.run_after, now()), t.waiting_on,
               t.status = 'cancelled', case when t.status = 'cancelled' then now() end,
               case when t.status = 'cancelled' then 'cancelled: a task it depends on had already died or been cancelled' end,
               t.labels, array(select jsonb_array_elements_text(t.locks)), t.validate_agent, t.validate_prompt,
               t.max_rounds, t.resume
        from unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::int4[], $8::int4[], $9::int8[],
                    $10::int8[], $11::int8[], $12::float8[], $13::timestamptz[], $14::task_status[], $15::int4[],
                    $16::jsonb[], $17::jsonb[], $18::text[], $19::text[], $20::int4[], $21::bool[])
            as t(id, key, agent, prompt, input, priority, max_attempts, timeout_ms, backoff_initial_ms, backoff_max_ms,
                 backoff_multiplier, run_after, status, waiting_on, labels, locks, validate_agent, validate_prompt,
                 max_rounds, resume)
        returning id, swarm_id, priority, run_after, run_agent, has_labels, timeout_ms, status,
                  octet_length(prompt) + coalesce(octet_length(input::text), 0) as bytes
        ), queued as (
            insert into queue (task_id, swarm_id, priority, run_after, run_agent, has_labels, timeout_ms, bytes)
            select id, swarm_id, priority, run_after, run_agent, has_labels, timeout_ms, bytes
            from inserted where status = 'queued'
        )
        select count(*) as "inserted!" from inserted
        "#,
        swarm_id,
        &tasks.ids,
        &tasks.keys as &[Option<String>],
        &tasks.agents,
        &tasks.prompts,
        &tasks.inputs as &[Option<Json>],
        &tasks.priorities,
        &tasks.max_attempts,
        &tasks.timeouts_ms as &[Option<i64>],
        &tasks.backoff_initial_ms as &[Option<i64>],
        &tasks.backoff_max_ms as &[Option<i64>],
        &tasks.backoff_multipliers as &[Option<f64>],
        &tasks.run_after as &[Option<DateTime<Utc>>],
        &tasks.statuses as &[TaskStatus],
        &tasks.waiting_on,
        &tasks.labels,
        &tasks.locks,
        &tasks.validate_agents as &[Option<String>],
        &tasks.validate_prompts as &[Option<String>],
        &tasks.max_rounds,
        &tasks.resume_sessions,
    )
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(inserted).unwrap_or(0))
}

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

/// The status of each given existing task (missing ones are left out).
pub async fn statuses(executor: impl PgExecutor<'_>, ids: &[Uuid]) -> sqlx::Result<Vec<(Uuid, TaskStatus)>> {
    let rows =
        sqlx::query!(r#"select id as "id!", status as "status!: TaskStatus" from tasks where id = any($1)"#, ids)
            .fetch_all(executor)
            .await?;
    Ok(rows.into_iter().map(|row| (row.id, row.status)).collect())
}

/// Announces on [`super::READY_CHANNEL`] that tasks became ready; delivered at commit.
pub async fn notify_ready(executor: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query!("select pg_notify('hive_task_ready', '')").execute(executor).await?;
    Ok(())
}

/// The tables whose planner statistics the coordinator keeps fresh itself.
///
/// `queue` is analysed with `task_rows` (only submissions insert into it);
/// `results` is only ever read by primary key, so autovacuum's statistics
/// do. Every analyze here makes each hot connection plan its statements
/// again on their next use (2 ms for the claim), so tables whose
/// statistics change no plan are left out.
pub const QUEUE_TABLES: [&str; 4] = ["task_rows", "past_attempts", "task_deps", "task_locks"];

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

/// Refreshes the planner's statistics on one of [`QUEUE_TABLES`]. For
/// `task_rows`, only the columns statements filter, join and order on: the
/// wide ones (prompts, inputs, results) made a full `analyze` four times
/// dearer. `queue` is analysed with it, since submissions fill both at
/// once: an unanalysed `queue` gave the claim a bitmap scan of every entry
/// and a sort, at half the speed of a walk of its claim index.
///
/// # Errors
/// Database failures.
pub async fn analyze(executor: impl PgExecutor<'_>, table: &'static str) -> sqlx::Result<()> {
    let statement = match table {
        "task_rows" => {
            "analyze task_rows (status, has_locks, has_labels, run_agent, run_after, priority, swarm_id, worker_id, \
             lease_expires_at, attempt_deadline, current_attempt, validate_agent, key); \
             analyze queue"
        }
        "past_attempts" => "analyze past_attempts",
        "task_deps" => "analyze task_deps",
        "task_locks" => "analyze task_locks",
        _ => return Ok(()),
    };
    sqlx::raw_sql(statement).execute(executor).await?;
    Ok(())
}

/// A task as stored, joined with its swarm name.
#[derive(Debug)]
pub struct TaskRow {
    /// Task id.
    pub id: Uuid,
    /// Swarm id.
    pub swarm_id: Uuid,
    /// Swarm name.
    pub swarm: String,
    /// Key.
    pub key: Option<String>,
    /// Agent.
    pub agent: String,
    /// Prompt.
    pub prompt: String,
    /// Input.
    pub input: Option<Json>,
    /// Priority.
    pub priority: i32,
    /// Status.
    pub status: TaskStatus,
    /// Attempts started.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Counted failures.
    pub failures: i32,
    /// Current attempt.
    pub current_attempt: Option<Uuid>,
    /// Worker holding it.
    pub worker_id: Option<Uuid>,
    /// Earliest claim time.
    pub run_after: DateTime<Utc>,
    /// Time limit.
    pub timeout_ms: Option<i64>,
    /// Result.
    pub result: Option<Json>,
    /// Last error.
    pub error: Option<String>,
    /// Whether output was truncated.
    pub log_truncated: bool,
    /// Dependencies.
    pub depends_on: Vec<Uuid>,
    /// Dependencies not yet succeeded.
    pub waiting_on: i32,
    /// Required labels.
    pub required_labels: Json,
    /// Locks.
    pub locks: Vec<String>,
    /// Validator agent.
    pub validate_agent: Option<String>,
    /// Validator prompt.
    pub validate_prompt: Option<String>,
    /// Builder runs allowed.
    pub max_rounds: i32,
    /// Builder round.
    pub round: i32,
    /// Stage.
    pub stage: String,
    /// Session policy.
    pub resume_sessions: bool,
    /// Usage.
    pub input_tokens: i64,
    /// Usage.
    pub output_tokens: i64,
    /// Usage.
    pub cost: f64,
    /// Backoff override.
    pub backoff_initial_ms: Option<i64>,
    /// Backoff override.
    pub backoff_max_ms: Option<i64>,
    /// Backoff override.
    pub backoff_multiplier: Option<f64>,
    /// Submitted.
    pub created_at: DateTime<Utc>,
    /// First started.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
}

/// One task by id.
pub async fn get(executor: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<TaskRow>> {
    sqlx::query_as!(
        TaskRow,
        r#"
        select t.id as "id!", t.swarm_id as "swarm_id!", s.name as swarm, t.key, t.agent as "agent!",
               t.prompt as "prompt!", t.input, t.priority as "priority!", t.status as "status!: TaskStatus",
               t.attempts as "attempts!", t.max_attempts as "max_attempts!", t.failures as "failures!",
               t.current_attempt, t.worker_id, t.run_after as "run_after!", t.timeout_ms, t.result, t.error,
               t.log_truncated as "log_truncated!",
               array(select d.depends_on from task_deps d where d.task_id = t.id order by d.depends_on) as "depends_on!: Vec<Uuid>",
               t.waiting_on as "waiting_on!", t.required_labels as "required_labels!", t.locks as "locks!",
               t.validate_agent, t.validate_prompt, t.max_rounds as "max_rounds!", t.round as "round!",
               t.stage as "stage!", t.resume_sessions as "resume_sessions!", t.input_tokens as "input_tokens!",
               t.output_tokens as "output_tokens!", t.cost as "cost!", t.backoff_initial_ms,
               t.backoff_max_ms, t.backoff_multiplier, t.created_at as "created_at!", t.started_at, t.finished_at
        from tasks t join swarms s on s.id = t.swarm_id
        where t.id = $1
        "#,
        id
    )
    .fetch_optional(executor)
    .await
}

/// Filters for [`list`]; `None` means "any".
#[derive(Debug, Default)]
pub struct ListFilter {
    /// Status.
    pub status: Option<TaskStatus>,
    /// Swarm.
    pub swarm_id: Option<Uuid>,
    /// Agent.
    pub agent: Option<String>,
    /// Only tasks older than this id (the page cursor).
    pub before: Option<Uuid>,
}

/// A page of tasks, newest first.
pub async fn list(executor: impl PgExecutor<'_>, filter: &ListFilter, limit: i64) -> sqlx::Result<Vec<TaskRow>> {
    sqlx::query_as!(
        TaskRow,
        r#"
        select t.id as "id!", t.swarm_id as "swarm_id!", s.name as swarm, t.key, t.agent as "agent!",
               t.prompt as "prompt!", t.input, t.priority as "priority!", t.status as "status!: TaskStatus",
               t.attempts as "attempts!", t.max_attempts as "max_attempts!", t.failures as "failures!",
               t.current_attempt, t.worker_id, t.run_after as "run_after!", t.timeout_ms, t.result, t.error,
               t.log_truncated as "log_truncated!",
               array(select d.depends_on from task_deps d where d.task_id = t.id order by d.depends_on) as "depends_on!: Vec<Uuid>",
               t.waiting_on as "waiting_on!", t.required_labels as "required_labels!", t.locks as "locks!",
               t.validate_agent, t.validate_prompt, t.max_rounds as "max_rounds!", t.round as "round!",
               t.stage as "stage!", t.resume_sessions as "resume_sessions!", t.input_tokens as "input_tokens!",
               t.output_tokens as "output_tokens!", t.cost as "cost!", t.backoff_initial_ms,
               t.backoff_max_ms, t.backoff_multiplier, t.created_at as "created_at!", t.started_at, t.finished_at
        from tasks t join swarms s on s.id = t.swarm_id
        where ($1::task_status is null or t.status = $1)
          and ($2::uuid is null or t.swarm_id = $2)
          and ($3::text is null or t.agent = $3)
          and ($4::uuid is null or t.id < $4)
        order by t.id desc
        limit $5
        "#,
        filter.status as Option<TaskStatus>,
        filter.swarm_id,
        filter.agent,
        filter.before,
        limit,
    )
    .fetch_all(executor)
    .await
}

/// One attempt as stored.
#[derive(Debug)]
pub struct AttemptRow {
    /// Attempt id.
    pub id: Uuid,
    /// Number.
    pub number: i32,
    /// Worker.
    pub worker_id: Uuid,
    /// Started.
    pub started_at: DateTime<Utc>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Outcome.
    pub outcome: AttemptOutcome,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Signal.
    pub signal: Option<i32>,
    /// Error.
    pub error: Option<String>,
    /// Stage.
    pub stage: String,
    /// The attempt's own result.
    pub result: Option<Json>,
    /// Session id.
    pub session_id: Option<String>,
    /// Usage.
    pub input_tokens: Option<i64>,
    /// Usage.
    pub output_tokens: Option<i64>,
    /// Usage.
    pub cost: Option<f64>,
}

/// A task's attempts, oldest first (the view `attempts`: those written out
/// when they ended, and the running one or the success from the task row,
/// the queue or `results`).
pub async fn attempts_of(executor: impl PgExecutor<'_>, task: Uuid) -> sqlx::Result<Vec<AttemptRow>> {
    sqlx::query_as!(
        AttemptRow,
        r#"
        select id as "id!", number as "number!", worker_id as "worker_id!", started_at as "started_at!", finished_at,
               outcome as "outcome!: AttemptOutcome", exit_code, signal, error, stage as "stage!", result, session_id,
               input_tokens, output_tokens, cost
        from attempts where task_id = $1
        order by number
        "#,
        task
    )
    .fetch_all(executor)
    .await
}

/// Which tasks a bulk operation touches; `None` fields match everything, and
/// the use-case insists that at least one is set.
#[derive(Debug, Default, Clone)]
pub struct TaskFilter {
    /// These ids.
    pub task_ids: Option<Vec<Uuid>>,
    /// This swarm.
    pub swarm_id: Option<Uuid>,
    /// This agent.
    pub agent: Option<String>,
    /// Last error containing this text.
    pub error_contains: Option<String>,
}

/// A task a cancel touched.
#[derive(Debug)]
pub struct Cancelled {
    /// Task id.
    pub id: Uuid,
    /// Cancelled (it had not started) or cancelling (its worker must stop it).
    pub status: TaskStatus,
    /// The worker to tell, for cancelling tasks.
    pub worker_id: Option<Uuid>,
}

/// Cancels every unfinished task matching `filter`: queued ones at once,
/// running ones become cancelling until their worker stops the agent.
/// Tasks in the narrow queue are written back onto their rows first.
pub async fn cancel_matching(
    conn: &mut PgConnection,
    filter: &TaskFilter,
    reason: &str,
) -> sqlx::Result<Vec<Cancelled>> {
    super::queue::write_back_matching(&mut *conn, filter).await?;
    sqlx::query_as!(
        Cancelled,
        r#"
        update task_rows
        set status = case when status = 'running' then 'cancelling'::task_status else 'cancelled'::task_status end,
            error = $5,
            finished_at = case when status = 'running' then null else now() end,
            updated_at = now()
        where status in ('ready', 'blocked', 'running')
          and ($1::uuid[] is null or id = any($1))
          and ($2::uuid is null or swarm_id = $2)
          and ($3::text is null or agent = $3)
          and ($4::text is null or strpos(error, $4) > 0)
        returning id, status as "status: TaskStatus", worker_id
        "#,
        filter.task_ids.as_deref(),
        filter.swarm_id,
        filter.agent,
        filter.error_contains,
        reason,
    )
    .fetch_all(conn)
    .await
}

/// Puts dead tasks matching `filter` back in the queue with a fresh failure budget.
pub async fn retry_dead(executor: impl PgExecutor<'_>, filter: &TaskFilter) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"
        update task_rows
        set status = 'ready', failures = 0, run_after = now(), finished_at = null, updated_at = now()
        where status = 'dead'
          and ($1::uuid[] is null or id = any($1))
          and ($2::uuid is null or swarm_id = $2)
          and ($3::text is null or agent = $3)
          and ($4::text is null or strpos(error, $4) > 0)
        returning id
        "#,
        filter.task_ids.as_deref(),
        filter.swarm_id,
        filter.agent,
        filter.error_contains,
    )
    .fetch_all(executor)
    .await
}

/// Announces that `worker` has new commands (cancels, drain, stop); delivered at commit.
pub async fn notify_worker(executor: impl PgExecutor<'_>, worker: Uuid) -> sqlx::Result<()> {
    sqlx::query!("select pg_notify('hive_worker_commands', $1::uuid::text)", worker).execute(executor).await?;
    Ok(())
}

/// The status of one task, if it exists.
pub async fn status_of(executor: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<TaskStatus>> {
    sqlx::query_scalar!(r#"select status as "status!: TaskStatus" from tasks where id = $1"#, id)
        .fetch_optional(executor)
        .await
}
