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
    /// First retry delays.
    pub backoff_initial_ms: Vec<Option<i64>>,
    /// Largest retry delays.
    pub backoff_max_ms: Vec<Option<i64>>,
    /// Retry delay growth.
    pub backoff_multipliers: Vec<Option<f64>>,
    /// Earliest start (delayed tasks); `None` for now.
    pub run_after: Vec<Option<DateTime<Utc>>>,
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
        insert into tasks (id, swarm_id, key, agent, prompt, input, priority, status, max_attempts, timeout_ms,
                           backoff_initial_ms, backoff_max_ms, backoff_multiplier, run_after)
        select t.id, $1, t.key, t.agent, t.prompt, t.input, t.priority, 'ready', t.max_attempts, t.timeout_ms,
               t.backoff_initial_ms, t.backoff_max_ms, t.backoff_multiplier, coalesce(t.run_after, now())
        from unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::int4[], $8::int4[], $9::int8[],
                    $10::int8[], $11::int8[], $12::float8[], $13::timestamptz[])
            as t(id, key, agent, prompt, input, priority, max_attempts, timeout_ms,
                 backoff_initial_ms, backoff_max_ms, backoff_multiplier, run_after)
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

/// Lease and deadline settings for a claim.
#[derive(Debug, Clone, Copy)]
pub struct ClaimTiming {
    /// Lease length, seconds.
    pub lease_seconds: f64,
    /// Runtime allowed to tasks without their own timeout, seconds.
    pub max_runtime_seconds: f64,
    /// Slack past the timeout before the coordinator steps in, seconds.
    pub deadline_grace_seconds: f64,
}

/// Claims up to `limit` ready tasks for `worker` in one statement: highest
/// priority first, then oldest; rows locked by another claimer are skipped, so
/// no task is handed out twice. Each claimed task gets a new attempt, a lease,
/// and a deadline after which the coordinator fails the attempt itself.
pub async fn claim(
    executor: impl PgExecutor<'_>,
    worker: Uuid,
    limit: i64,
    timing: ClaimTiming,
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
                attempt_deadline = now() + make_interval(secs => coalesce(t.timeout_ms::float8 / 1000.0, $4) + $5),
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
        timing.lease_seconds,
        timing.max_runtime_seconds,
        timing.deadline_grace_seconds,
    )
    .fetch_all(executor)
    .await
}

/// Records successful attempts that still hold their task (running, or being
/// cancelled but finished first); returns the attempts recorded. Attempts not
/// returned were not current (or already done).
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
                lease_expires_at = null, attempt_deadline = null, updated_at = now()
            from reported r
            where t.id = r.task_id and t.current_attempt = r.attempt_id and t.status in ('running', 'cancelling')
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

/// A leased task whose attempt stopped (or must stop), locked for the decision.
#[derive(Debug)]
pub struct StoppedAttempt {
    /// Task id.
    pub id: Uuid,
    /// The attempt.
    pub attempt_id: Uuid,
    /// Running or cancelling.
    pub status: TaskStatus,
    /// Counted failures so far.
    pub failures: i32,
    /// Attempts allowed.
    pub max_attempts: i32,
    /// Task backoff overrides.
    pub backoff_initial_ms: Option<i64>,
    /// Task backoff overrides.
    pub backoff_max_ms: Option<i64>,
    /// Task backoff overrides.
    pub backoff_multiplier: Option<f64>,
    /// Whether the lease ran out (as opposed to the deadline), for the reaper.
    pub lease_expired: bool,
}

/// Locks the leased tasks whose current attempt is among the reported ones.
pub async fn lock_reported(
    conn: &mut PgConnection,
    task_ids: &[Uuid],
    attempt_ids: &[Uuid],
) -> sqlx::Result<Vec<StoppedAttempt>> {
    sqlx::query_as!(
        StoppedAttempt,
        r#"
        select t.id, t.current_attempt as "attempt_id!", t.status as "status: TaskStatus", t.failures,
               t.max_attempts, t.backoff_initial_ms, t.backoff_max_ms, t.backoff_multiplier,
               false as "lease_expired!"
        from tasks t
        join unnest($1::uuid[], $2::uuid[]) as r(task_id, attempt_id)
          on t.id = r.task_id and t.current_attempt = r.attempt_id
        where t.status in ('running', 'cancelling')
        order by t.id
        for update of t
        "#,
        task_ids,
        attempt_ids,
    )
    .fetch_all(conn)
    .await
}

/// Locks up to `limit` leased tasks whose lease or deadline has passed,
/// skipping rows another reaper holds (so reapers never double-reap).
pub async fn lock_expired(conn: &mut PgConnection, limit: i64) -> sqlx::Result<Vec<StoppedAttempt>> {
    sqlx::query_as!(
        StoppedAttempt,
        r#"
        select id, current_attempt as "attempt_id!", status as "status: TaskStatus", failures, max_attempts,
               backoff_initial_ms, backoff_max_ms, backoff_multiplier,
               lease_expires_at < now() as "lease_expired!"
        from tasks
        where lease_expires_at is not null and (lease_expires_at < now() or attempt_deadline < now())
        order by least(lease_expires_at, attempt_deadline)
        limit $1
        for update skip locked
        "#,
        limit,
    )
    .fetch_all(conn)
    .await
}

/// What becomes of stopped attempts, column by column.
#[derive(Debug, Default)]
pub struct Fates {
    /// Task ids.
    pub task_ids: Vec<Uuid>,
    /// Attempt ids.
    pub attempt_ids: Vec<Uuid>,
    /// Next task status.
    pub statuses: Vec<TaskStatus>,
    /// Whether the attempt counts as a failure.
    pub counted: Vec<bool>,
    /// Delay before a retry, seconds.
    pub delays: Vec<f64>,
    /// Error text.
    pub errors: Vec<String>,
    /// Exit codes.
    pub exit_codes: Vec<Option<i32>>,
    /// Signals.
    pub signals: Vec<Option<i32>>,
    /// The attempt's outcome.
    pub outcomes: Vec<AttemptOutcome>,
}

/// Applies decided fates to tasks and their attempts in one statement.
pub async fn apply_fates(conn: &mut PgConnection, fates: &Fates) -> sqlx::Result<u64> {
    let result = sqlx::query!(
        r#"
        with decided as (
            select * from unnest($1::uuid[], $2::uuid[], $3::task_status[], $4::bool[], $5::float8[], $6::text[],
                                 $7::int4[], $8::int4[], $9::attempt_outcome[])
                as d(task_id, attempt_id, status, counted, delay, error, exit_code, signal, outcome)
        ), attempts_done as (
            update attempts a
            set outcome = d.outcome, finished_at = now(), error = d.error, exit_code = d.exit_code, signal = d.signal
            from decided d where a.id = d.attempt_id
        )
        update tasks t
        set status = d.status,
            failures = t.failures + case when d.counted then 1 else 0 end,
            error = d.error,
            lease_expires_at = null,
            attempt_deadline = null,
            worker_id = null,
            run_after = case when d.status = 'ready' then now() + make_interval(secs => d.delay) else t.run_after end,
            finished_at = case when d.status in ('dead', 'cancelled') then now() else null end,
            updated_at = now()
        from decided d
        where t.id = d.task_id
        "#,
        &fates.task_ids,
        &fates.attempt_ids,
        &fates.statuses as &[TaskStatus],
        &fates.counted,
        &fates.delays,
        &fates.errors,
        &fates.exit_codes as &[Option<i32>],
        &fates.signals as &[Option<i32>],
        &fates.outcomes as &[AttemptOutcome],
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// An attempt whose lease a heartbeat extended, with its task's status.
#[derive(Debug)]
pub struct Extended {
    /// The attempt.
    pub attempt_id: Uuid,
    /// Running or cancelling.
    pub status: TaskStatus,
}

/// What a heartbeat's lease extension found.
#[derive(Debug)]
pub struct Extension {
    /// Attempts extended.
    pub extended: Vec<Extended>,
    /// The new lease end.
    pub lease_expires_at: DateTime<Utc>,
    /// Tasks leased to the worker in all, listed or not.
    pub leased: i64,
}

/// Extends the leases of the worker's attempts that are still current; also
/// counts every task leased to the worker, so the caller can tell whether it
/// holds leases the worker does not know about.
pub async fn extend_leases(
    executor: impl PgExecutor<'_>,
    worker: Uuid,
    attempt_ids: &[Uuid],
    lease_seconds: f64,
) -> sqlx::Result<Extension> {
    let row = sqlx::query!(
        r#"
        with extended as (
            update tasks
            set lease_expires_at = now() + make_interval(secs => $3)
            where current_attempt = any($2) and lease_expires_at is not null and worker_id = $1
            returning current_attempt, status
        )
        select array(select current_attempt from extended) as "attempts!: Vec<Uuid>",
               array(select status from extended) as "statuses!: Vec<TaskStatus>",
               now() + make_interval(secs => $3) as "lease_expires_at!",
               (select count(*) from tasks where worker_id = $1 and lease_expires_at is not null) as "leased!"
        "#,
        worker,
        attempt_ids,
        lease_seconds,
    )
    .fetch_one(executor)
    .await?;
    let extended = row
        .attempts
        .into_iter()
        .zip(row.statuses)
        .map(|(attempt_id, status)| Extended { attempt_id, status })
        .collect();
    Ok(Extension { extended, lease_expires_at: row.lease_expires_at, leased: row.leased })
}

/// Locks tasks leased to `worker` whose attempt it does not list and that were
/// claimed more than `min_age_seconds` ago: claims whose reply never reached
/// the worker (the call was cut or abandoned after the claim committed).
pub async fn lock_unheld(
    conn: &mut PgConnection,
    worker: Uuid,
    held: &[Uuid],
    min_age_seconds: f64,
) -> sqlx::Result<Vec<StoppedAttempt>> {
    sqlx::query_as!(
        StoppedAttempt,
        r#"
        select t.id, t.current_attempt as "attempt_id!", t.status as "status: TaskStatus", t.failures,
               t.max_attempts, t.backoff_initial_ms, t.backoff_max_ms, t.backoff_multiplier,
               false as "lease_expired!"
        from tasks t join attempts a on a.id = t.current_attempt
        where t.worker_id = $1 and t.lease_expires_at is not null and t.current_attempt <> all($2)
          and a.started_at < now() - make_interval(secs => $3)
        for update of t skip locked
        "#,
        worker,
        held,
        min_age_seconds,
    )
    .fetch_all(conn)
    .await
}

/// Attempts of `worker` whose task is being cancelled.
pub async fn cancelling_attempts(executor: impl PgExecutor<'_>, worker: Uuid) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"select current_attempt as "attempt!" from tasks where worker_id = $1 and status = 'cancelling'"#,
        worker
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
               t.status as "status: TaskStatus", t.attempts, t.max_attempts, t.failures, t.current_attempt, t.worker_id,
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
               t.status as "status: TaskStatus", t.attempts, t.max_attempts, t.failures, t.current_attempt, t.worker_id,
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
pub async fn cancel_matching(
    executor: impl PgExecutor<'_>,
    filter: &TaskFilter,
    reason: &str,
) -> sqlx::Result<Vec<Cancelled>> {
    sqlx::query_as!(
        Cancelled,
        r#"
        update tasks
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
    .fetch_all(executor)
    .await
}

/// Puts dead tasks matching `filter` back in the queue with a fresh failure budget.
pub async fn retry_dead(executor: impl PgExecutor<'_>, filter: &TaskFilter) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"
        update tasks
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
    sqlx::query_scalar!(r#"select status as "status: TaskStatus" from tasks where id = $1"#, id)
        .fetch_optional(executor)
        .await
}
