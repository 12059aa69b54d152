//! Statements on `swarms`, `tasks` and `attempts`: submit, claim, complete,
//! fail, lease extension and expiry, cancel, and reads.

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
}

/// Records a swarm.
pub async fn insert_swarm(conn: &mut PgConnection, id: Uuid, name: &str) -> sqlx::Result<()> {
    sqlx::query!("insert into swarms (id, name) values ($1, $2)", id, name).execute(conn).await?;
    Ok(())
}

/// Queues the tasks of one swarm as ready, in one statement.
pub async fn insert_ready_tasks(conn: &mut PgConnection, swarm_id: Uuid, tasks: &NewTasks) -> sqlx::Result<u64> {
    let result = sqlx::query!(
        r#"
        insert into tasks (id, swarm_id, key, agent, prompt, input, priority, status, max_attempts, timeout_ms)
        select t.id, $1, t.key, t.agent, t.prompt, t.input, t.priority, 'ready', t.max_attempts, t.timeout_ms
        from unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::int4[], $8::int4[], $9::int8[])
            as t(id, key, agent, prompt, input, priority, max_attempts, timeout_ms)
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
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// Announces on [`super::READY_CHANNEL`] that tasks became ready; delivered at commit.
pub async fn notify_ready(executor: impl PgExecutor<'_>) -> sqlx::Result<()> {
    sqlx::query!("select pg_notify('hive_task_ready', '')").execute(executor).await?;
    Ok(())
}

/// A task handed to a worker by [`claim`].
#[derive(Debug)]
pub struct ClaimedTask {
    /// Task id.
    pub id: Uuid,
    /// The new attempt's id.
    pub attempt_id: Uuid,
    /// The new attempt's number.
    pub attempt: i32,
    /// Agent name.
    pub agent: String,
    /// Prompt.
    pub prompt: String,
    /// Input.
    pub input: Option<Json>,
    /// Time limit.
    pub timeout_ms: Option<i64>,
    /// Lease end.
    pub lease_expires_at: DateTime<Utc>,
    /// Swarm.
    pub swarm_id: Uuid,
    /// Priority (for ordering the batch).
    pub priority: i32,
}

/// Claims up to `limit` ready tasks for `worker` in one statement: highest
/// priority first, then oldest; rows locked by another claimer are skipped, so
/// no task is handed out twice. Each claimed task gets a new attempt.
pub async fn claim(
    executor: impl PgExecutor<'_>,
    worker: Uuid,
    limit: i64,
    lease_seconds: f64,
) -> sqlx::Result<Vec<ClaimedTask>> {
    sqlx::query_as!(
        ClaimedTask,
        r#"
        with offered as (
            select agents from workers where id = $1
        ), picked as (
            select t.id
            from tasks t
            where t.status = 'ready'
              and t.run_after <= now()
              and t.agent = any((select agents from offered)::text[])
            order by t.priority desc, t.id
            limit $2
            for update of t skip locked
        ), claimed as (
            update tasks t
            set status = 'running',
                attempts = t.attempts + 1,
                current_attempt = gen_random_uuid(),
                worker_id = $1,
                lease_expires_at = now() + make_interval(secs => $3),
                started_at = coalesce(t.started_at, now()),
                updated_at = now()
            from picked
            where t.id = picked.id
            returning t.id, t.current_attempt, t.attempts, t.agent, t.prompt, t.input, t.timeout_ms,
                      t.lease_expires_at, t.swarm_id, t.priority
        ), recorded as (
            insert into attempts (id, task_id, number, worker_id)
            select current_attempt, id, attempts, $1 from claimed
        )
        select id as "id!", current_attempt as "attempt_id!", attempts as "attempt!", agent as "agent!",
               prompt as "prompt!", input, timeout_ms, lease_expires_at as "lease_expires_at!",
               swarm_id as "swarm_id!", priority as "priority!"
        from claimed
        order by priority desc, id
        "#,
        worker,
        limit,
        lease_seconds,
    )
    .fetch_all(executor)
    .await
}

/// Records successful attempts that still hold their task; returns the
/// attempts recorded. Attempts not returned were not current (or already done).
pub async fn complete(
    executor: impl PgExecutor<'_>,
    task_ids: &[Uuid],
    attempt_ids: &[Uuid],
    results: &[Json],
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"
        with reported as (
            select * from unnest($1::uuid[], $2::uuid[], $3::jsonb[]) as r(task_id, attempt_id, result)
        ), done as (
            update tasks t
            set status = 'succeeded', result = r.result, error = null, finished_at = now(),
                lease_expires_at = null, updated_at = now()
            from reported r
            where t.id = r.task_id and t.current_attempt = r.attempt_id and t.status = 'running'
            returning r.attempt_id
        ), finished as (
            update attempts a set outcome = 'succeeded', finished_at = now()
            from done where a.id = done.attempt_id
        )
        select attempt_id as "attempt_id!" from done
        "#,
        task_ids,
        attempt_ids,
        results,
    )
    .fetch_all(executor)
    .await
}

/// The recorded outcome of each given attempt that exists.
pub async fn attempt_outcomes(
    executor: impl PgExecutor<'_>,
    attempt_ids: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, AttemptOutcome)>> {
    let rows = sqlx::query!(
        r#"select id, outcome as "outcome: AttemptOutcome" from attempts where id = any($1)"#,
        attempt_ids
    )
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(|row| (row.id, row.outcome)).collect())
}

/// A running task whose current attempt reported a failure, locked for the decision.
#[derive(Debug)]
pub struct FailingTask {
    /// Task id.
    pub id: Uuid,
    /// The failing attempt.
    pub attempt_id: Uuid,
    /// Attempts started so far.
    pub attempts: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
}

/// Locks the running tasks whose current attempt is among the reported ones.
pub async fn lock_failing(
    conn: &mut PgConnection,
    task_ids: &[Uuid],
    attempt_ids: &[Uuid],
) -> sqlx::Result<Vec<FailingTask>> {
    sqlx::query_as!(
        FailingTask,
        r#"
        select t.id, t.current_attempt as "attempt_id!", t.attempts, t.max_attempts
        from tasks t
        join unnest($1::uuid[], $2::uuid[]) as r(task_id, attempt_id)
          on t.id = r.task_id and t.current_attempt = r.attempt_id
        where t.status = 'running'
        order by t.id
        for update of t
        "#,
        task_ids,
        attempt_ids,
    )
    .fetch_all(conn)
    .await
}

/// What becomes of failed attempts, column by column.
#[derive(Debug, Default)]
pub struct FailureUpdates {
    /// Task ids.
    pub task_ids: Vec<Uuid>,
    /// Attempt ids.
    pub attempt_ids: Vec<Uuid>,
    /// New task status: ready (retry) or dead.
    pub statuses: Vec<TaskStatus>,
    /// Delay before a retry, in seconds (ignored for dead tasks).
    pub retry_after_seconds: Vec<f64>,
    /// Error text.
    pub errors: Vec<String>,
    /// Exit codes.
    pub exit_codes: Vec<Option<i32>>,
    /// Signals.
    pub signals: Vec<Option<i32>>,
    /// The attempt's outcome.
    pub outcomes: Vec<AttemptOutcome>,
}

/// Applies failure decisions to tasks and their attempts in one statement.
pub async fn apply_failures(conn: &mut PgConnection, updates: &FailureUpdates) -> sqlx::Result<u64> {
    let result = sqlx::query!(
        r#"
        with decided as (
            select * from unnest($1::uuid[], $2::uuid[], $3::task_status[], $4::float8[], $5::text[],
                                 $6::int4[], $7::int4[], $8::attempt_outcome[])
                as d(task_id, attempt_id, status, delay, error, exit_code, signal, outcome)
        ), attempts_done as (
            update attempts a
            set outcome = d.outcome, finished_at = now(), error = d.error, exit_code = d.exit_code, signal = d.signal
            from decided d where a.id = d.attempt_id
        )
        update tasks t
        set status = d.status,
            error = d.error,
            lease_expires_at = null,
            worker_id = null,
            run_after = case when d.status = 'ready' then now() + make_interval(secs => d.delay) else t.run_after end,
            finished_at = case when d.status = 'dead' then now() else null end,
            updated_at = now()
        from decided d
        where t.id = d.task_id
        "#,
        &updates.task_ids,
        &updates.attempt_ids,
        &updates.statuses as &[TaskStatus],
        &updates.retry_after_seconds,
        &updates.errors,
        &updates.exit_codes as &[Option<i32>],
        &updates.signals as &[Option<i32>],
        &updates.outcomes as &[AttemptOutcome],
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// Extends the leases of the worker's attempts that are still current;
/// returns those extended, with the new lease end.
pub async fn extend_leases(
    executor: impl PgExecutor<'_>,
    worker: Uuid,
    attempt_ids: &[Uuid],
    lease_seconds: f64,
) -> sqlx::Result<(Vec<Uuid>, DateTime<Utc>)> {
    let row = sqlx::query!(
        r#"
        with extended as (
            update tasks
            set lease_expires_at = now() + make_interval(secs => $3)
            where current_attempt = any($2) and status = 'running' and worker_id = $1
            returning current_attempt
        )
        select array(select current_attempt from extended) as "extended!: Vec<Uuid>",
               now() + make_interval(secs => $3) as "lease_expires_at!"
        "#,
        worker,
        attempt_ids,
        lease_seconds,
    )
    .fetch_one(executor)
    .await?;
    Ok((row.extended, row.lease_expires_at))
}

/// A running task whose lease ran out, as the reaper moved it.
#[derive(Debug)]
pub struct ReapedTask {
    /// Task id.
    pub id: Uuid,
    /// The attempt that lost its lease.
    pub attempt_id: Uuid,
    /// Status it moved to (ready, or dead when out of attempts).
    pub status: TaskStatus,
}

/// Returns up to `limit` tasks whose lease expired to the queue (or to the
/// dead-letter queue when their attempts are spent), marking the attempt lost.
/// Rows another reaper holds are skipped, so reapers on several coordinators never double-reap.
pub async fn reap_expired_leases(executor: impl PgExecutor<'_>, limit: i64) -> sqlx::Result<Vec<ReapedTask>> {
    sqlx::query_as!(
        ReapedTask,
        r#"
        with expired as (
            select id, current_attempt from tasks
            where status = 'running' and lease_expires_at < now()
            order by lease_expires_at
            limit $1
            for update skip locked
        ), moved as (
            update tasks t
            set status = case when t.attempts >= t.max_attempts then 'dead'::task_status else 'ready'::task_status end,
                error = 'lease expired: the worker stopped heart-beating',
                lease_expires_at = null,
                worker_id = null,
                finished_at = case when t.attempts >= t.max_attempts then now() else null end,
                updated_at = now()
            from expired e
            where t.id = e.id
            returning t.id, e.current_attempt, t.status
        ), lost as (
            update attempts a
            set outcome = 'lost', finished_at = now(), error = 'lease expired: the worker stopped heart-beating'
            from moved where a.id = moved.current_attempt
        )
        select id as "id!", current_attempt as "attempt_id!", status as "status!: TaskStatus" from moved
        "#,
        limit,
    )
    .fetch_all(executor)
    .await
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
        select t.id, t.swarm_id, s.name as swarm, t.key, t.agent, t.prompt, t.input, t.priority,
               t.status as "status: TaskStatus", t.attempts, t.max_attempts, t.current_attempt, t.worker_id,
               t.run_after, t.timeout_ms, t.result, t.error, t.log_truncated, t.created_at, t.started_at,
               t.finished_at
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
        select t.id, t.swarm_id, s.name as swarm, t.key, t.agent, t.prompt, t.input, t.priority,
               t.status as "status: TaskStatus", t.attempts, t.max_attempts, t.current_attempt, t.worker_id,
               t.run_after, t.timeout_ms, t.result, t.error, t.log_truncated, t.created_at, t.started_at,
               t.finished_at
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
}

/// A task's attempts, oldest first.
pub async fn attempts_of(executor: impl PgExecutor<'_>, task: Uuid) -> sqlx::Result<Vec<AttemptRow>> {
    sqlx::query_as!(
        AttemptRow,
        r#"
        select id, number, worker_id, started_at, finished_at, outcome as "outcome: AttemptOutcome",
               exit_code, signal, error
        from attempts where task_id = $1 order by number
        "#,
        task
    )
    .fetch_all(executor)
    .await
}

/// Cancels a task that has not started; `false` when it is not (or no longer) cancellable.
pub async fn cancel_unstarted(executor: impl PgExecutor<'_>, id: Uuid, reason: &str) -> sqlx::Result<bool> {
    let result = sqlx::query!(
        r#"
        update tasks set status = 'cancelled', error = $2, finished_at = now(), updated_at = now()
        where id = $1 and status in ('ready', 'blocked')
        "#,
        id,
        reason
    )
    .execute(executor)
    .await?;
    Ok(result.rows_affected() == 1)
}

/// The status of one task, if it exists.
pub async fn status_of(executor: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<TaskStatus>> {
    sqlx::query_scalar!(r#"select status as "status: TaskStatus" from tasks where id = $1"#, id)
        .fetch_optional(executor)
        .await
}
