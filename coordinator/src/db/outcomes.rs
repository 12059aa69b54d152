//! Statements that record how attempts end: successes (one statement for
//! plain tasks; a few for tasks with a validator stage), failures and other
//! stops (fates), and what follows in the graph — dependents unblocked when
//! their last dependency succeeds, cancelled when one dies, put back when it
//! is retried. A running attempt lives on its queue row (a task queued at
//! submission) or its task row. A queued task's success replaces its queue
//! row with a `results` row; a plain task's success on its task row stays
//! there (its session and usage beside it), since the task never runs
//! again. Every other end first writes a queued task back onto its row
//! (`queue`), and writes the attempt out to `past_attempts`. The view
//! `attempts` shows all of them. Every path records usage, charges the
//! swarm's budget and releases the attempt's locks.

use serde_json::Value as Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::tasks::state::{AttemptOutcome, TaskStatus};

/// What workers reported about finished attempts, column by column.
#[derive(Debug, Default)]
pub struct Reports {
    /// Task ids.
    pub task_ids: Vec<Uuid>,
    /// Attempt ids.
    pub attempt_ids: Vec<Uuid>,
    /// Results (successes) or nulls.
    pub results: Vec<Json>,
    /// Session ids.
    pub session_ids: Vec<Option<String>>,
    /// Input tokens.
    pub input_tokens: Vec<Option<i64>>,
    /// Output tokens.
    pub output_tokens: Vec<Option<i64>>,
    /// Costs.
    pub costs: Vec<Option<f64>>,
}

/// What a batch of completions did.
#[derive(Debug)]
pub struct Completed {
    /// Attempts recorded.
    pub recorded: Vec<Uuid>,
    /// Dependents that became ready plus locks released: when above zero,
    /// waiting claims have something new to look at.
    pub newly_ready: i64,
}

/// Records successful attempts of tasks without a validator that still hold
/// their task (running, or cancelling but finished first) on their task
/// rows, unblocks their dependents, charges their swarms and releases their
/// locks, in one statement.
pub async fn complete(executor: impl PgExecutor<'_>, reports: &Reports) -> sqlx::Result<Completed> {
    let row = sqlx::query!(
        r#"
        with reported as (
            select * from unnest($1::uuid[], $2::uuid[], $3::jsonb[], $4::text[], $5::int8[], $6::int8[], $7::float8[])
                as r(task_id, attempt_id, result, session_id, input_tokens, output_tokens, cost)
            -- Rows are locked in id order, as every multi-row locker of tasks does: no deadlocks.
            order by task_id
        ), done_queued as (
            -- Queued tasks: the queue row goes, a result row comes; the
            -- attempt id in the queue row is the fence (a queue row has one
            -- only while leased). Nothing about the lease in the filter: a
            -- plan made while few rows were leased drove the delete from the
            -- leased index and compared every leased row with every report
            -- (3,410 × 512 in one batch: 280 ms).
            delete from queue q
            using reported r
            where q.task_id = r.task_id and q.attempt_id = r.attempt_id
            returning q.task_id as id, q.swarm_id, q.attempt_id, q.attempts, q.worker_id, q.started_at,
                      q.attempt_started_at, r.result, r.session_id, r.input_tokens, r.output_tokens, r.cost
        ), recorded as (
            insert into results (task_id, attempt_id, attempt, worker_id, started_at, attempt_started_at, finished_at,
                                 result, session_id, input_tokens, output_tokens, cost)
            select id, attempt_id, attempts, worker_id, started_at, attempt_started_at, now(), result, session_id,
                   input_tokens, output_tokens, cost
            from done_queued
        ), done_rows as (
            update task_rows t
            set status = 'succeeded', result = r.result, error = null, finished_at = now(),
                lease_expires_at = null, attempt_deadline = null, updated_at = now(),
                input_tokens = t.input_tokens + coalesce(r.input_tokens, 0),
                output_tokens = t.output_tokens + coalesce(r.output_tokens, 0),
                cost = t.cost + coalesce(r.cost, 0),
                -- The attempt's own; its id, number, worker, stage and start are already here.
                attempt_session_id = r.session_id, attempt_input_tokens = r.input_tokens,
                attempt_output_tokens = r.output_tokens, attempt_cost = r.cost
            from reported r
            -- Driven by the reported ids (a nested loop over the primary key,
            -- rows locked in id order), the fence in the update's own filter:
            -- a row changed meanwhile is re-checked in its latest version
            -- (READ COMMITTED), so no separate row lock is taken (each one
            -- wrote a WAL record).
            where t.id = r.task_id and t.current_attempt = r.attempt_id and t.status in ('running', 'cancelling')
              and t.validate_agent is null
              -- A task is queued or on its row, never both: the queued ones
              -- just recorded skip the probe of the wide task rows (one hash
              -- lookup instead of a primary-key descent and a heap fetch).
              and r.task_id not in (select id from done_queued)
            returning t.id, t.swarm_id, r.attempt_id, r.cost
        ), done as (
            select id, swarm_id, attempt_id, cost from done_queued
            union all
            select id, swarm_id, attempt_id, cost from done_rows
        ), unblocked as (
            update task_rows t
            set waiting_on = t.waiting_on - n.count,
                status = case when t.waiting_on = n.count and t.status = 'blocked' then 'ready'::task_status else t.status end,
                updated_at = now()
            from (select dep.task_id, count(*)::int as count
                  from task_deps dep join done on dep.depends_on = done.id group by dep.task_id) n
            where t.id = n.task_id
            returning t.status
        ), charged as (
            update swarms s set spent = s.spent + x.cost
            from (select swarm_id, sum(coalesce(cost, 0)) as cost from done group by swarm_id) x
            where s.id = x.swarm_id and x.cost > 0
        ), unlocked as (
            delete from task_locks l using done where l.task_id = done.id returning l.key
        )
        select array(select attempt_id from done) as "recorded!: Vec<Uuid>",
               (select count(*) from unblocked where status = 'ready') + (select count(*) from unlocked) as "newly_ready!"
        "#,
        &reports.task_ids,
        &reports.attempt_ids,
        &reports.results,
        &reports.session_ids as &[Option<String>],
        &reports.input_tokens as &[Option<i64>],
        &reports.output_tokens as &[Option<i64>],
        &reports.costs as &[Option<f64>],
    )
    .fetch_one(executor)
    .await?;
    Ok(Completed { recorded: row.recorded, newly_ready: row.newly_ready })
}

/// The recorded outcome of each given attempt (of the task paired with it)
/// that ended: written out, a success kept on its task row, or one in `results`.
pub async fn attempt_outcomes(
    executor: impl PgExecutor<'_>,
    task_ids: &[Uuid],
    attempt_ids: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, AttemptOutcome)>> {
    let rows = sqlx::query!(
        r#"
        with asked as (select * from unnest($1::uuid[], $2::uuid[]) as r(task_id, attempt_id))
        select a.id as "id!", a.outcome as "outcome!: AttemptOutcome"
        from asked r join past_attempts a on a.task_id = r.task_id and a.id = r.attempt_id
        union all
        select t.current_attempt, 'succeeded'::attempt_outcome
        from asked r join task_rows t on t.id = r.task_id and t.current_attempt = r.attempt_id
        where t.status = 'succeeded' and t.validate_agent is null
        union all
        select x.attempt_id, 'succeeded'::attempt_outcome
        from asked r join results x on x.task_id = r.task_id and x.attempt_id = r.attempt_id
        "#,
        task_ids,
        attempt_ids,
    )
    .fetch_all(executor)
    .await?;
    Ok(rows.into_iter().map(|row| (row.id, row.outcome)).collect())
}

/// A task with a validator whose attempt succeeded, locked for the stage decision.
#[derive(Debug)]
pub struct StagedTask {
    /// Task id.
    pub id: Uuid,
    /// The attempt.
    pub attempt_id: Uuid,
    /// Running or cancelling.
    pub status: TaskStatus,
    /// "build" or "validate".
    pub stage: String,
    /// Builder round.
    pub round: i32,
    /// Builder runs allowed.
    pub max_rounds: i32,
    /// The builder's last result.
    pub build_result: Option<Json>,
}

/// Locks the tasks with a validator whose current attempt is among the reported ones.
pub async fn lock_staged(
    conn: &mut PgConnection,
    task_ids: &[Uuid],
    attempt_ids: &[Uuid],
) -> sqlx::Result<Vec<StagedTask>> {
    sqlx::query_as!(
        StagedTask,
        r#"
        select t.id, t.current_attempt as "attempt_id!", t.status as "status: TaskStatus", t.stage, t.round,
               t.max_rounds, t.build_result
        from task_rows t
        join unnest($1::uuid[], $2::uuid[]) as r(task_id, attempt_id)
          on t.id = r.task_id and t.current_attempt = r.attempt_id
        where t.status in ('running', 'cancelling') and t.validate_agent is not null
        order by t.id
        for update of t
        "#,
        task_ids,
        attempt_ids,
    )
    .fetch_all(conn)
    .await
}

/// Records one successful stage attempt (its result is kept on the attempt)
/// with its usage, and charges the task and its swarm.
pub async fn record_stage_attempt(conn: &mut PgConnection, reports: &Reports, index: usize) -> sqlx::Result<()> {
    let (task, attempt) = (reports.task_ids[index], reports.attempt_ids[index]);
    let (input_tokens, output_tokens, cost) =
        (reports.input_tokens[index], reports.output_tokens[index], reports.costs[index]);
    sqlx::query!(
        r#"
        with attempt as (
            insert into past_attempts (id, task_id, number, worker_id, stage, started_at, finished_at, outcome, result,
                                  session_id, input_tokens, output_tokens, cost)
            select current_attempt, id, attempts, worker_id, stage, attempt_started_at, now(),
                   'succeeded', $3, $4, $5, $6, $7
            from task_rows where id = $1 and current_attempt = $2
        ), task as (
            update task_rows
            set input_tokens = input_tokens + coalesce($5, 0), output_tokens = output_tokens + coalesce($6, 0),
                cost = cost + coalesce($7, 0)
            where id = $1
            returning swarm_id
        )
        update swarms s set spent = s.spent + coalesce($7, 0) from task where s.id = task.swarm_id and coalesce($7, 0) > 0
        "#,
        task,
        attempt,
        reports.results[index],
        reports.session_ids[index],
        input_tokens,
        output_tokens,
        cost,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Where a staged task goes next.
#[derive(Debug, Clone, PartialEq)]
pub enum NextStage {
    /// To its validator, with the builder's result.
    Validate(Json),
    /// Back to its builder for another round, with the validator's verdict.
    Rebuild(Json),
    /// Finished: succeeded (with a result), dead or cancelled (with an error).
    Finish {
        /// Succeeded, dead or cancelled.
        status: TaskStatus,
        /// The task's result, for a success.
        result: Option<Json>,
        /// Why, otherwise.
        error: Option<String>,
    },
}

/// Moves a staged task to its next stage (releasing its lease and locks;
/// callers announce ready work after every advance, which covers the locks).
pub async fn advance(conn: &mut PgConnection, task: Uuid, next: &NextStage) -> sqlx::Result<()> {
    let (status, stage_change, build_result, feedback, result, error) = match next {
        NextStage::Validate(build) => (TaskStatus::Ready, "validate", Some(build), None, None, None),
        NextStage::Rebuild(verdict) => (TaskStatus::Ready, "rebuild", None, Some(verdict), None, None),
        NextStage::Finish { status, result, error } => {
            (*status, "finish", None, None, result.as_ref(), error.as_deref())
        }
    };
    sqlx::query!(
        r#"
        with moved as (
            update task_rows
            set status = $2::task_status,
                stage = case $3 when 'validate' then 'validate' when 'rebuild' then 'build' else stage end,
                round = case $3 when 'rebuild' then round + 1 else round end,
                build_result = coalesce($4, build_result),
                feedback = coalesce($5, feedback),
                result = $6,
                error = $7,
                lease_expires_at = null, attempt_deadline = null, worker_id = null,
                run_after = case when $2::task_status = 'ready' then now() else run_after end,
                finished_at = case when $2::task_status in ('succeeded', 'dead', 'cancelled') then now() else null end,
                updated_at = now()
            where id = $1
            returning id
        )
        delete from task_locks l using moved where l.task_id = moved.id
        "#,
        task,
        status as TaskStatus,
        stage_change,
        build_result,
        feedback,
        result,
        error,
    )
    .execute(conn)
    .await?;
    Ok(())
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

/// Locks the leased tasks whose current attempt is among the reported ones
/// (queued ones written back onto their rows first).
pub async fn lock_reported(
    conn: &mut PgConnection,
    task_ids: &[Uuid],
    attempt_ids: &[Uuid],
) -> sqlx::Result<Vec<StoppedAttempt>> {
    super::queue::write_back_reported(&mut *conn, task_ids, attempt_ids).await?;
    sqlx::query_as!(
        StoppedAttempt,
        r#"
        select t.id, t.current_attempt as "attempt_id!", t.status as "status: TaskStatus", t.failures,
               t.max_attempts, t.backoff_initial_ms, t.backoff_max_ms, t.backoff_multiplier,
               false as "lease_expired!"
        from task_rows t
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
    /// Session ids the agents reported.
    pub session_ids: Vec<Option<String>>,
    /// Input tokens.
    pub input_tokens: Vec<Option<i64>>,
    /// Output tokens.
    pub output_tokens: Vec<Option<i64>>,
    /// Costs.
    pub costs: Vec<Option<f64>>,
}

/// Applies decided fates to tasks and their attempts, charges swarms and
/// releases locks, in one statement; returns how many locks were released.
pub async fn apply_fates(conn: &mut PgConnection, fates: &Fates) -> sqlx::Result<i64> {
    let released = sqlx::query_scalar!(
        r#"
        with decided as (
            select * from unnest($1::uuid[], $2::uuid[], $3::task_status[], $4::bool[], $5::float8[], $6::text[],
                                 $7::int4[], $8::int4[], $9::attempt_outcome[], $10::text[], $11::int8[], $12::int8[],
                                 $13::float8[])
                as d(task_id, attempt_id, status, counted, delay, error, exit_code, signal, outcome, session_id,
                     input_tokens, output_tokens, cost)
        ), attempts_done as (
            -- Reads the task rows as they were before `moved` (one snapshot for the statement).
            insert into past_attempts (id, task_id, number, worker_id, stage, started_at, finished_at, outcome, error,
                                  exit_code, signal, session_id, input_tokens, output_tokens, cost)
            select d.attempt_id, t.id, t.attempts, t.worker_id, t.stage, t.attempt_started_at,
                   now(), d.outcome, d.error, d.exit_code, d.signal, d.session_id, d.input_tokens, d.output_tokens, d.cost
            from decided d join task_rows t on t.id = d.task_id and t.current_attempt = d.attempt_id
        ), charged as (
            update swarms s set spent = s.spent + x.cost
            from (select t.swarm_id, sum(coalesce(d.cost, 0)) as cost
                  from decided d join task_rows t on t.id = d.task_id group by t.swarm_id) x
            where s.id = x.swarm_id and x.cost > 0
        ), unlocked as (
            delete from task_locks l using decided d where l.task_id = d.task_id returning l.key
        ), moved as (
            update task_rows t
        set status = d.status,
            failures = t.failures + case when d.counted then 1 else 0 end,
            error = d.error,
            lease_expires_at = null,
            attempt_deadline = null,
            worker_id = null,
            run_after = case when d.status = 'ready' then now() + make_interval(secs => d.delay) else t.run_after end,
            finished_at = case when d.status in ('dead', 'cancelled') then now() else null end,
            input_tokens = t.input_tokens + coalesce(d.input_tokens, 0),
            output_tokens = t.output_tokens + coalesce(d.output_tokens, 0),
            cost = t.cost + coalesce(d.cost, 0),
            updated_at = now()
        from decided d
        where t.id = d.task_id
        )
        select count(*) as "released!" from unlocked
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
        &fates.session_ids as &[Option<String>],
        &fates.input_tokens as &[Option<i64>],
        &fates.output_tokens as &[Option<i64>],
        &fates.costs as &[Option<f64>],
    )
    .fetch_one(conn)
    .await?;
    Ok(released)
}

/// Counts one succeeded dependency off each dependent of `tasks`; returns how many became ready.
pub async fn unblock_dependents(conn: &mut PgConnection, tasks: &[Uuid]) -> sqlx::Result<i64> {
    let ready = sqlx::query_scalar!(
        r#"
        with unblocked as (
            update task_rows t
            set waiting_on = t.waiting_on - n.count,
                status = case when t.waiting_on = n.count and t.status = 'blocked' then 'ready'::task_status else t.status end,
                updated_at = now()
            from (select task_id, count(*)::int as count from task_deps where depends_on = any($1) group by task_id) n
            where t.id = n.task_id
            returning t.status
        )
        select count(*) as "ready!" from unblocked where status = 'ready'
        "#,
        tasks,
    )
    .fetch_one(conn)
    .await?;
    Ok(ready)
}

/// Cancels, transitively, every unfinished task downstream of `tasks` (which
/// died or were cancelled), marking them cancelled by their upstream.
pub async fn cancel_downstream(conn: &mut PgConnection, tasks: &[Uuid], reason: &str) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"
        with recursive downstream(id) as (
            select task_id from task_deps where depends_on = any($1)
            union
            select d.task_id from task_deps d join downstream on d.depends_on = downstream.id
        )
        update task_rows
        set status = 'cancelled', cancelled_upstream = true, error = $2, finished_at = now(), updated_at = now()
        where id in (select id from downstream) and status in ('blocked', 'ready')
        returning id
        "#,
        tasks,
        reason,
    )
    .fetch_all(conn)
    .await
}

/// Puts back the tasks downstream of `tasks` (just retried) that were
/// cancelled by their upstream: blocked again, waiting on every dependency
/// that has not succeeded.
pub async fn restore_downstream(conn: &mut PgConnection, tasks: &[Uuid]) -> sqlx::Result<u64> {
    let result = sqlx::query!(
        r#"
        with recursive downstream(id) as (
            select task_id from task_deps where depends_on = any($1)
            union
            select d.task_id from task_deps d join downstream on d.depends_on = downstream.id
        )
        update task_rows t
        set status = 'blocked', cancelled_upstream = false, error = null, finished_at = null, updated_at = now(),
            waiting_on = (select count(*) from task_deps d join tasks u on u.id = d.depends_on -- the view: a queued upstream's success is in `results`

                          where d.task_id = t.id and u.status <> 'succeeded')
        where t.id in (select id from downstream) and t.status = 'cancelled' and t.cancelled_upstream
        "#,
        tasks,
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}
