//! Statements that record how attempts end: successes of tasks without a
//! validator (one statement for a batch), and failures and other stops
//! (fates). Every ended attempt is appended to `attempts`; the task's state
//! row moves on in the same statement (succeeded, retried, dead or
//! cancelled), its swarm is charged and the attempt's locks are released.
//! Successes of tasks with a validator move between stages in `stages`;
//! what follows in the graph is in `graph`.

use serde_json::Value as Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::status::{AttemptOutcome, TaskStatus};

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
    /// The reporting worker: only attempts it holds are recorded (`None`
    /// for the statement tests, which report for any holder).
    pub worker_id: Option<Uuid>,
}

/// What a batch of completions did.
#[derive(Debug)]
pub struct Completed {
    /// Attempts recorded.
    pub recorded: Vec<Uuid>,
    /// Dependents that became ready plus locks released plus tasks that
    /// held concurrency keys: when above zero, waiting claims have something
    /// new to look at.
    pub newly_ready: i64,
    /// The agent each recorded attempt ran (in no particular order, paired with `ran_seconds`).
    pub agents: Vec<String>,
    /// How long each recorded attempt ran, seconds.
    pub ran_seconds: Vec<f64>,
}

/// Records successful attempts of tasks without a validator that still hold
/// their task (running, or cancelling but finished first): appends each
/// attempt with its result, marks the task succeeded with that attempt's
/// result, unblocks its dependents, charges its swarm and releases its
/// locks, in one statement.
pub async fn complete(executor: impl PgExecutor<'_>, reports: &Reports) -> sqlx::Result<Completed> {
    let row = sqlx::query!(
        r#"
        with reported as (
            select * from unnest($1::uuid[], $2::uuid[], $3::jsonb[], $4::text[], $5::int8[], $6::int8[], $7::float8[])
                as r(task_id, attempt_id, result, session_id, input_tokens, output_tokens, cost)
            -- Rows are locked in id order, as every multi-row locker of tasks does: no deadlocks.
            order by task_id
        ), before as (
            -- The attempt as the claim left it (the statement's snapshot),
            -- for the attempt's row.
            select s.task_id, s.swarm_id, s.attempts, s.worker_id, s.stage, s.run_agent, s.attempt_started_at,
                   s.has_keys, r.attempt_id, r.result, r.session_id, r.input_tokens, r.output_tokens, r.cost
            from reported r join task_states s on s.task_id = r.task_id and s.attempt_id = r.attempt_id
            where not s.validated and ($8::uuid is null or s.worker_id = $8)
        ), done as (
            -- The attempt id is the fence, checked again in the row's latest
            -- version (READ COMMITTED), so no separate row lock is taken.
            -- Nothing about the lease in the filter: a plan made while few
            -- rows were leased would drive the update from the leased index
            -- and compare every leased row with every report.
            update task_states s
            set status = 'succeeded', finished_at = now(), result_attempt = s.attempts,
                worker_id = null, attempt_id = null, lease_expires_at = null, attempt_deadline = null,
                attempt_started_at = null, stalled_since = null, progress_at = null, progress = null
            from before b
            where s.task_id = b.task_id and s.attempt_id = b.attempt_id
            -- The attempt as it was, from `before`: the attempt's row is
            -- written from what this returns, with no join back to `before`
            -- (a generic plan joins two CTEs by comparing every row of one
            -- with every row of the other).
            returning s.task_id, s.swarm_id, b.attempt_id, b.attempts, b.worker_id, b.stage, b.run_agent,
                      b.attempt_started_at, b.result, b.session_id, b.input_tokens, b.output_tokens, b.cost
        ), recorded as (
            insert into attempts (id, task_id, number, worker_id, stage, agent, started_at, finished_at, outcome,
                                  result, session_id, input_tokens, output_tokens, cost)
            select attempt_id, task_id, attempts, worker_id, stage, run_agent, attempt_started_at, now(), 'succeeded',
                   result, session_id, input_tokens, output_tokens, cost
            from done
        ), unblocked as (
            update task_states s
            set waiting_on = s.waiting_on - n.count,
                status = case when s.waiting_on = n.count then 'ready'::task_status else s.status end
            from (select dep.task_id, count(*)::int as count
                  from task_deps dep join done on dep.depends_on = done.task_id group by dep.task_id) n
            where s.task_id = n.task_id and s.status = 'blocked'
            returning s.status
        ), charged as (
            update swarms w set spent = w.spent + x.cost, input_tokens = add_tokens(w.input_tokens, x.input_tokens),
                                output_tokens = add_tokens(w.output_tokens, x.output_tokens)
            from (select swarm_id, sum(coalesce(cost, 0)) as cost, coalesce(sum(input_tokens), 0) as input_tokens,
                         coalesce(sum(output_tokens), 0) as output_tokens
                  from done group by swarm_id) x
            where w.id = x.swarm_id and (x.cost > 0 or x.input_tokens > 0 or x.output_tokens > 0)
        ), unlocked as (
            -- Every task, declared locks or not: its agent may have taken locks while it ran.
            delete from task_locks l using done where l.task_id = done.task_id returning l.key
        ), logged as (
            insert into events (kind, task_ids, swarm_ids, worker_ids, attempts)
            select 'task.succeeded', array_agg(task_id), array_agg(swarm_id), array_agg(worker_id), array_agg(attempts)
            from done
            where task_events_on()
            having count(*) > 0
        )
        select array(select attempt_id from done) as "recorded!: Vec<Uuid>",
               (select count(*) from unblocked where status = 'ready') + (select count(*) from unlocked)
                   + (select count(*) from before where has_keys) as "newly_ready!",
               m.agents as "agents!: Vec<String>", m.ran_seconds as "ran_seconds!: Vec<f64>"
        from (select coalesce(array_agg(run_agent), '{}') as agents,
                     coalesce(array_agg(extract(epoch from now() - attempt_started_at)::float8), '{}') as ran_seconds
              from done) m
        "#,
        &reports.task_ids,
        &reports.attempt_ids,
        &reports.results,
        &reports.session_ids as &[Option<String>],
        &reports.input_tokens as &[Option<i64>],
        &reports.output_tokens as &[Option<i64>],
        &reports.costs as &[Option<f64>],
        reports.worker_id,
    )
    .fetch_one(executor)
    .await?;
    Ok(Completed {
        recorded: row.recorded,
        newly_ready: row.newly_ready,
        agents: row.agents,
        ran_seconds: row.ran_seconds,
    })
}

/// The recorded outcome of each given attempt (of the task paired with it)
/// that ended.
pub async fn attempt_outcomes(
    executor: impl PgExecutor<'_>,
    task_ids: &[Uuid],
    attempt_ids: &[Uuid],
) -> sqlx::Result<Vec<(Uuid, AttemptOutcome)>> {
    let rows = sqlx::query!(
        r#"
        select a.id, a.outcome as "outcome: AttemptOutcome"
        from unnest($1::uuid[], $2::uuid[]) as r(task_id, attempt_id)
        join attempts a on a.task_id = r.task_id and a.id = r.attempt_id
        "#,
        task_ids,
        attempt_ids,
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
    /// Attempts lost with their worker so far.
    pub losses: i32,
    /// Attempts refused by the agent's provider so far.
    pub refusals: i32,
    /// "build" or "validate".
    pub stage: String,
    /// The agent the attempt ran with.
    pub run_agent: String,
    /// The task's agent, and its fallbacks in order.
    pub agents: Vec<String>,
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
    /// How long the attempt has run, seconds.
    pub ran_seconds: f64,
}

/// Locks the leased tasks whose current attempt is among the reported ones
/// (and held by `worker`, when given).
pub async fn lock_reported(
    conn: &mut PgConnection,
    task_ids: &[Uuid],
    attempt_ids: &[Uuid],
    worker: Option<Uuid>,
) -> sqlx::Result<Vec<StoppedAttempt>> {
    sqlx::query_as!(
        StoppedAttempt,
        r#"
        select s.task_id as "id!", s.attempt_id as "attempt_id!", s.status as "status!: TaskStatus",
               s.failures as "failures!", s.losses as "losses!", s.refusals as "refusals!", s.stage as "stage!",
               s.run_agent as "run_agent!", array_prepend(t.agent, t.fallback_agents) as "agents!", t.max_attempts, t.backoff_initial_ms,
               t.backoff_max_ms, t.backoff_multiplier, false as "lease_expired!",
               extract(epoch from now() - s.attempt_started_at)::float8 as "ran_seconds!"
        from task_states s
        join unnest($1::uuid[], $2::uuid[]) as r(task_id, attempt_id)
          on s.task_id = r.task_id and s.attempt_id = r.attempt_id
        join tasks t on t.id = s.task_id
        where $3::uuid is null or s.worker_id = $3
        order by s.task_id
        for update of s
        "#,
        task_ids,
        attempt_ids,
        worker,
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
    /// Whether the agent's provider refused the attempt (a rate limit).
    pub refused: Vec<bool>,
    /// The agent the next attempt runs with, when it changes (a fallback).
    pub next_agents: Vec<Option<String>>,
}

/// Applies decided fates to tasks and their attempts, charges swarms and
/// releases locks, in one statement; returns how many locks were released
/// plus how many of the tasks held concurrency keys (room for waiting claims).
/// A task retried or handed back is ready again (after its delay); a dead or
/// cancelled one is finished, with the error as the reason.
pub async fn apply_fates(conn: &mut PgConnection, fates: &Fates) -> sqlx::Result<i64> {
    let released = sqlx::query_scalar!(
        r#"
        with decided as (
            select * from unnest($1::uuid[], $2::uuid[], $3::task_status[], $4::bool[], $5::float8[], $6::text[],
                                 $7::int4[], $8::int4[], $9::attempt_outcome[], $10::text[], $11::int8[], $12::int8[],
                                 $13::float8[], $14::bool[], $15::text[])
                as d(task_id, attempt_id, status, counted, delay, error, exit_code, signal, outcome, session_id,
                     input_tokens, output_tokens, cost, refused, next_agent)
        ), ended as (
            -- Reads the state rows as they were before `moved` (one snapshot for the statement).
            insert into attempts (id, task_id, number, worker_id, stage, agent, started_at, finished_at, outcome,
                                  error, exit_code, signal, session_id, input_tokens, output_tokens, cost)
            select d.attempt_id, s.task_id, s.attempts, s.worker_id, s.stage, s.run_agent, s.attempt_started_at,
                   now(), d.outcome, d.error, d.exit_code, d.signal, d.session_id, d.input_tokens, d.output_tokens, d.cost
            from decided d join task_states s on s.task_id = d.task_id and s.attempt_id = d.attempt_id
        ), charged as (
            update swarms w set spent = w.spent + x.cost, input_tokens = add_tokens(w.input_tokens, x.input_tokens),
                                output_tokens = add_tokens(w.output_tokens, x.output_tokens)
            from (select s.swarm_id, sum(coalesce(d.cost, 0)) as cost, coalesce(sum(d.input_tokens), 0) as input_tokens,
                         coalesce(sum(d.output_tokens), 0) as output_tokens
                  from decided d join task_states s on s.task_id = d.task_id and s.attempt_id = d.attempt_id
                  group by s.swarm_id) x
            where w.id = x.swarm_id and (x.cost > 0 or x.input_tokens > 0 or x.output_tokens > 0)
        ), unlocked as (
            delete from task_locks l using decided d where l.task_id = d.task_id returning l.key
        ), moved as (
            update task_states s
            set status = d.status,
                failures = s.failures + case when d.counted then 1 else 0 end,
                losses = s.losses + case when d.outcome = 'lost' then 1 else 0 end,
                refusals = s.refusals + case when d.refused then 1 else 0 end,
                run_agent = coalesce(d.next_agent, s.run_agent),
                worker_id = null, attempt_id = null, lease_expires_at = null, attempt_deadline = null,
                attempt_started_at = null, stalled_since = null, progress_at = null, progress = null,
                run_after = case when d.status = 'ready' then now() + make_interval(secs => d.delay) else s.run_after end,
                finished_at = case when d.status in ('dead', 'cancelled') then now() end,
                error = case when d.status in ('dead', 'cancelled') then d.error end
            from decided d
            where s.task_id = d.task_id
            returning s.has_keys
        ), logged as (
            -- One row per kind: ready again (a retry, or a hand-back that
            -- counts nothing), dead, cancelled.
            insert into events (kind, task_ids, swarm_ids, worker_ids, attempts, details)
            select case d.status when 'ready' then 'task.retry_scheduled' when 'dead' then 'task.dead'
                                 else 'task.cancelled' end,
                   array_agg(s.task_id), array_agg(s.swarm_id), array_agg(s.worker_id), array_agg(s.attempts),
                   array_agg(jsonb_strip_nulls(jsonb_build_object(
                       'outcome', d.outcome, 'error', d.error, 'counted', d.counted,
                       'retry_in_s', case when d.status = 'ready' then round(d.delay::numeric, 3) end,
                       'next_agent', d.next_agent)))
            from decided d join task_states s on s.task_id = d.task_id and s.attempt_id = d.attempt_id
            where task_events_on()
            group by d.status
        )
        select (select count(*) from unlocked) + (select count(*) from moved where has_keys) as "released!"
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
        &fates.refused,
        &fates.next_agents as &[Option<String>],
    )
    .fetch_one(conn)
    .await?;
    Ok(released)
}
