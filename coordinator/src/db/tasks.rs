//! Statements on tasks as a whole: submission (a task's spec in `tasks` and
//! its first state in `task_states`, in one statement), and reading a task
//! with its attempts, or a page of tasks.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

use crate::status::{AttemptOutcome, TaskStatus};

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
    /// Fallback agents, as JSON arrays.
    pub fallback_agents: Vec<Json>,
    /// Concurrency keys, as JSON arrays (their limits are in `concurrency_slots`).
    pub concurrency_keys: Vec<Json>,
    /// Each task's place among the swarm's tasks of its priority, from 1.
    pub places: Vec<i64>,
}

/// Inserts the tasks of one swarm in one statement: each task's spec, and
/// its state row as it starts — ready, blocked, or cancelled because a task
/// it depends on had already ended without success. Each task's place in
/// the claim order among tasks of its priority (`fair_seq`) is its place in
/// the swarm (`places`) counted from the head of the ready queue at that
/// priority, so swarms interleave.
pub async fn insert_tasks(conn: &mut PgConnection, swarm_id: Uuid, tasks: &NewTasks) -> sqlx::Result<u64> {
    let inserted = sqlx::query_scalar!(
        r#"
        with spec as (
            insert into tasks (id, swarm_id, key, agent, prompt, input, priority, max_attempts, timeout_ms,
                               backoff_initial_ms, backoff_max_ms, backoff_multiplier, required_labels, locks,
                               validate_agent, validate_prompt, max_rounds, resume_sessions, fallback_agents,
                               concurrency_keys)
            select t.id, $1, t.key, t.agent, t.prompt, t.input, t.priority, t.max_attempts, t.timeout_ms,
                   t.backoff_initial_ms, t.backoff_max_ms, t.backoff_multiplier, t.labels,
                   -- Most tasks name no locks or fallbacks: no subquery for them.
                   case when t.locks = '[]' then '{}' else array(select jsonb_array_elements_text(t.locks)) end,
                   t.validate_agent, t.validate_prompt, t.max_rounds, t.resume,
                   case when t.fallbacks = '[]' then '{}' else array(select jsonb_array_elements_text(t.fallbacks)) end,
                   case when t.keys = '[]' then '{}' else array(select jsonb_array_elements_text(t.keys)) end
            from unnest($2::uuid[], $3::text[], $4::text[], $5::text[], $6::jsonb[], $7::int4[], $8::int4[],
                        $9::int8[], $10::int8[], $11::int8[], $12::float8[], $13::jsonb[], $14::jsonb[], $15::text[],
                        $16::text[], $17::int4[], $18::bool[], $22::jsonb[], $23::jsonb[])
                as t(id, key, agent, prompt, input, priority, max_attempts, timeout_ms, backoff_initial_ms,
                     backoff_max_ms, backoff_multiplier, labels, locks, validate_agent, validate_prompt, max_rounds,
                     resume, fallbacks, keys)
            returning id, swarm_id, priority, timeout_ms, agent, required_labels <> '{}'::jsonb as has_labels,
                      cardinality(locks) > 0 as has_locks, cardinality(concurrency_keys) > 0 as has_keys,
                      validate_agent is not null as validated,
                      octet_length(prompt) + coalesce(octet_length(input::text), 0) as bytes
        ), held as (
            select array(select w.id from swarms w where w.spent >= w.budget)
                   || array(select p.target::uuid from paused p where p.scope = 'swarm') as ids
        ), heads as materialized (
            -- The head of the ready queue at each priority the swarm uses
            -- (a walk of the claim index from its start at that priority),
            -- where its tasks start: the first due task that nothing but
            -- its turn holds back (not of a held swarm, not waiting for a
            -- concurrency key). Materialized, so it is looked up once per
            -- priority before any row is inserted: looked up per row, each
            -- walk would step over the rows this statement inserted so far.
            select q.priority,
                   coalesce((select h.fair_seq from task_states h
                             where h.status = 'ready' and not h.has_locks and h.priority = q.priority
                               and h.run_after <= now() and not h.has_keys
                               and coalesce(h.swarm_id <> all((select ids from held)::uuid[]), true)
                             order by h.priority desc, h.fair_seq, h.task_id
                             limit 1), 0) as fair_seq
            from (select distinct priority from unnest($7::int4[]) as priority) q
        ), states as (
            insert into task_states (task_id, swarm_id, priority, has_labels, has_locks, has_keys, validated,
                                     timeout_ms, status, run_agent, bytes, run_after, waiting_on, finished_at, error,
                                     cancelled_upstream, fair_seq)
            select p.id, p.swarm_id, p.priority, p.has_labels, p.has_locks, p.has_keys, p.validated, p.timeout_ms,
                   f.status, p.agent, p.bytes, coalesce(f.run_after, now()),
                   case when f.status = 'blocked' then f.waiting_on else 0 end,
                   case when f.status = 'cancelled' then now() end,
                   case when f.status = 'cancelled' then 'cancelled: a task it depends on had already died or been cancelled' end,
                   f.status = 'cancelled',
                   h.fair_seq + f.place
            from spec p
            join unnest($2::uuid[], $19::timestamptz[], $20::task_status[], $21::int4[], $24::int8[])
                as f(id, run_after, status, waiting_on, place) on f.id = p.id
            join heads h on h.priority = p.priority
            returning task_id, swarm_id, status
        ), logged as (
            -- `task.submitted` for every task, then `task.cancelled` for those a
            -- dead or cancelled dependency ended at once (one insert, in that order).
            insert into events (kind, task_ids, swarm_ids, details)
            select 'task.submitted', array_agg(task_id), array_agg(swarm_id), null
            from states
            where task_events_on()
            having count(*) > 0
            union all
            select 'task.cancelled', array_agg(task_id), array_agg(swarm_id),
                   array_agg(jsonb_build_object('upstream', true))
            from states
            where status = 'cancelled' and task_events_on()
            having count(*) > 0
        )
        select count(*) as "inserted!" from states
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
        &tasks.labels,
        &tasks.locks,
        &tasks.validate_agents as &[Option<String>],
        &tasks.validate_prompts as &[Option<String>],
        &tasks.max_rounds,
        &tasks.resume_sessions,
        &tasks.run_after as &[Option<DateTime<Utc>>],
        &tasks.statuses as &[TaskStatus],
        &tasks.waiting_on,
        &tasks.fallback_agents,
        &tasks.concurrency_keys,
        &tasks.places,
    )
    .fetch_one(conn)
    .await?;
    Ok(u64::try_from(inserted).unwrap_or(0))
}

/// The status of each given existing task (missing ones are left out).
pub async fn statuses(executor: impl PgExecutor<'_>, ids: &[Uuid]) -> sqlx::Result<Vec<(Uuid, TaskStatus)>> {
    let rows =
        sqlx::query!(r#"select task_id, status as "status: TaskStatus" from task_states where task_id = any($1)"#, ids)
            .fetch_all(executor)
            .await?;
    Ok(rows.into_iter().map(|row| (row.task_id, row.status)).collect())
}

/// The status of one task, if it exists.
pub async fn status_of(executor: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<TaskStatus>> {
    sqlx::query_scalar!(r#"select status as "status: TaskStatus" from task_states where task_id = $1"#, id)
        .fetch_optional(executor)
        .await
}

/// A task: its spec, its state, and what its attempts add up to.
#[derive(Debug)]
pub struct TaskRow {
    /// Task id.
    pub id: Uuid,
    /// Swarm id.
    pub swarm_id: Uuid,
    /// Swarm name.
    pub swarm: String,
    /// Key from the task file, unique within the swarm.
    pub key: Option<String>,
    /// The builder's agent.
    pub agent: String,
    /// The builder's prompt (cut, in a summary).
    pub prompt: String,
    /// Input (a JSON object).
    pub input: Option<Json>,
    /// Higher runs first.
    pub priority: i32,
    /// Where it is in its lifecycle.
    pub status: TaskStatus,
    /// Attempts started.
    pub attempts: i32,
    /// Failed attempts allowed.
    pub max_attempts: i32,
    /// Counted failures since it was submitted or last retried.
    pub failures: i32,
    /// The running attempt, else the last one.
    pub current_attempt: Option<Uuid>,
    /// The worker of the running attempt, else of the last one.
    pub worker_id: Option<Uuid>,
    /// Earliest next claim.
    pub run_after: DateTime<Utc>,
    /// Per-attempt time limit.
    pub timeout_ms: Option<i64>,
    /// Result, once succeeded.
    pub result: Option<Json>,
    /// Why it ended (dead or cancelled), else the last attempt's error.
    pub error: Option<String>,
    /// Whether its output hit the per-task cap.
    pub log_truncated: bool,
    /// Tasks it depends on.
    pub depends_on: Vec<Uuid>,
    /// Dependencies not yet succeeded (while blocked).
    pub waiting_on: i32,
    /// Labels a worker must carry.
    pub required_labels: Json,
    /// Locks it takes when claimed.
    pub locks: Vec<String>,
    /// The validator's agent, for a task with a validator stage.
    pub validate_agent: Option<String>,
    /// The validator's prompt.
    pub validate_prompt: Option<String>,
    /// Builder runs allowed.
    pub max_rounds: i32,
    /// Builder round, from 1.
    pub round: i32,
    /// "build" or "validate".
    pub stage: String,
    /// Whether a retry resumes the last attempt's session.
    pub resume_sessions: bool,
    /// Agents it falls back on, in order.
    pub fallback_agents: Vec<String>,
    /// Its concurrency keys with their limits (a JSON object), when it has any.
    pub concurrency: Option<Json>,
    /// Tokens in, over every ended attempt.
    pub input_tokens: i64,
    /// Tokens out, over every ended attempt.
    pub output_tokens: i64,
    /// Cost, over every ended attempt.
    pub cost: f64,
    /// First retry delay, when the task sets one.
    pub backoff_initial_ms: Option<i64>,
    /// Largest retry delay, when the task sets one.
    pub backoff_max_ms: Option<i64>,
    /// Retry delay growth, when the task sets one.
    pub backoff_multiplier: Option<f64>,
    /// Submitted.
    pub created_at: DateTime<Utc>,
    /// First claimed.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished (succeeded, dead or cancelled).
    pub finished_at: Option<DateTime<Utc>>,
    /// Whether this is a summary ([`ListFilter::summary`]).
    pub summary: bool,
}

/// Filters for [`list`]; `None` means "any".
#[derive(Debug, Default)]
pub struct ListFilter {
    /// This task only.
    pub id: Option<Uuid>,
    /// Status.
    pub status: Option<TaskStatus>,
    /// Swarm.
    pub swarm_id: Option<Uuid>,
    /// Agent (the builder's).
    pub agent: Option<String>,
    /// The worker running its current attempt.
    pub worker_id: Option<Uuid>,
    /// Its error contains this text (dead and cancelled tasks have one; an
    /// unfinished task's errors are its attempts'). A condition on the state
    /// row alone, checked as the walk passes each task.
    pub error_contains: Option<String>,
    /// Only tasks older than this id (the page cursor).
    pub before: Option<Uuid>,
    /// Summaries, for listings: prompts cut to their first [`SUMMARY_PROMPT`]
    /// characters, input and result left out.
    pub summary: bool,
}

/// Characters of a prompt a summary keeps.
pub const SUMMARY_PROMPT: i32 = 200;

/// One task by id.
pub async fn get(executor: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<TaskRow>> {
    let filter = ListFilter { id: Some(id), ..ListFilter::default() };
    Ok(list(executor, &filter, 1).await?.pop())
}

/// A page of tasks, newest first. Blocked, dead and cancelled tasks are
/// found through their partial indexes, a swarm's through `tasks_swarm_idx`;
/// the others walk the primary key newest first and stop at the page's end,
/// which is quick while tasks of that status are a fair share of the table
/// (`tests/tests/db_plans.rs` prints the plans at a million tasks).
pub async fn list(executor: impl PgExecutor<'_>, filter: &ListFilter, limit: i64) -> sqlx::Result<Vec<TaskRow>> {
    sqlx::query_as!(
        TaskRow,
        r#"
        select t.id as "id!", t.swarm_id as "swarm_id!", w.name as "swarm!", t.key, t.agent as "agent!",
               case when $7 then left(t.prompt, $8) else t.prompt end as "prompt!",
               case when $7 then null else t.input end as input, t.priority as "priority!", s.status as "status!: TaskStatus",
               s.attempts as "attempts!", t.max_attempts as "max_attempts!", s.failures as "failures!",
               coalesce(s.attempt_id, last.id) as current_attempt, coalesce(s.worker_id, last.worker_id) as worker_id,
               s.run_after as "run_after!", t.timeout_ms,
               case when $7 then null
                    else (select a.result from attempts a where a.task_id = t.id and a.number = s.result_attempt)
               end as result,
               coalesce(s.error, last.error) as error,
               coalesce((select o.truncated from task_output o where o.task_id = t.id), false) as "log_truncated!",
               array(select d.depends_on from task_deps d where d.task_id = t.id order by d.depends_on) as "depends_on!: Vec<Uuid>",
               s.waiting_on as "waiting_on!", t.required_labels as "required_labels!", t.locks as "locks!",
               t.validate_agent, case when $7 then left(t.validate_prompt, $8) else t.validate_prompt end as validate_prompt,
               t.max_rounds as "max_rounds!", s.round as "round!",
               s.stage as "stage!", t.resume_sessions as "resume_sessions!", t.fallback_agents as "fallback_agents!",
               case when cardinality(t.concurrency_keys) > 0 then
                   (select jsonb_object_agg(c.key, c.max_running) from concurrency_slots c where c.key = any(t.concurrency_keys))
               end as concurrency,
               coalesce(usage.input_tokens, 0)::int8 as "input_tokens!",
               coalesce(usage.output_tokens, 0)::int8 as "output_tokens!",
               coalesce(usage.cost, 0)::float8 as "cost!",
               t.backoff_initial_ms, t.backoff_max_ms, t.backoff_multiplier, t.created_at as "created_at!",
               s.started_at, s.finished_at, $7 as "summary!"
        from task_states s
        join tasks t on t.id = s.task_id
        join swarms w on w.id = t.swarm_id
        left join lateral (
            select a.id, a.worker_id, a.error from attempts a where a.task_id = t.id order by a.number desc limit 1
        ) last on true
        cross join lateral (
            select sum(a.input_tokens) as input_tokens, sum(a.output_tokens) as output_tokens, sum(a.cost) as cost
            from attempts a where a.task_id = t.id
        ) usage
        where ($1::uuid is null or s.task_id = $1)
          and ($2::task_status is null or s.status = $2)
          and ($3::uuid is null or t.swarm_id = $3)
          and ($4::text is null or t.agent = $4)
          and ($5::uuid is null or s.task_id < $5)
          and ($9::uuid is null or s.worker_id = $9)
          and ($10::text is null or strpos(s.error, $10) > 0)
        order by s.task_id desc
        limit $6
        "#,
        filter.id,
        filter.status as Option<TaskStatus>,
        filter.swarm_id,
        filter.agent,
        filter.before,
        limit,
        filter.summary,
        SUMMARY_PROMPT,
        filter.worker_id,
        filter.error_contains,
    )
    .fetch_all(executor)
    .await
}

/// One attempt, ended or running.
#[derive(Debug)]
pub struct AttemptRow {
    /// Attempt id.
    pub id: Uuid,
    /// Number, from 1.
    pub number: i32,
    /// The worker that ran it.
    pub worker_id: Uuid,
    /// Claimed.
    pub started_at: DateTime<Utc>,
    /// Ended; `None` while it runs.
    pub finished_at: Option<DateTime<Utc>>,
    /// How it ended, or running.
    pub outcome: AttemptOutcome,
    /// The agent's exit code.
    pub exit_code: Option<i32>,
    /// The signal that ended the agent.
    pub signal: Option<i32>,
    /// What went wrong.
    pub error: Option<String>,
    /// "build" or "validate".
    pub stage: String,
    /// The agent that ran it (unknown for attempts from before agents were recorded).
    pub agent: Option<String>,
    /// The attempt's own result: the task's result, a builder's output or a validator's verdict.
    pub result: Option<Json>,
    /// The agent's session.
    pub session_id: Option<String>,
    /// Tokens in, as the agent reported.
    pub input_tokens: Option<i64>,
    /// Tokens out, as the agent reported.
    pub output_tokens: Option<i64>,
    /// Cost, as the agent reported.
    pub cost: Option<f64>,
    /// The running attempt: since when its agent is stalled.
    pub stalled_since: Option<DateTime<Utc>>,
    /// The running attempt: what its agent last reported doing.
    pub progress: Option<String>,
    /// The running attempt: when its agent last reported progress.
    pub progress_at: Option<DateTime<Utc>>,
}

/// A task's attempts, oldest first: those that ended, then the running one.
pub async fn attempts_of(executor: impl PgExecutor<'_>, task: Uuid) -> sqlx::Result<Vec<AttemptRow>> {
    sqlx::query_as!(
        AttemptRow,
        r#"
        select id as "id!", number as "number!", worker_id as "worker_id!", started_at as "started_at!",
               finished_at, outcome as "outcome!: AttemptOutcome", exit_code, signal, error, stage as "stage!",
               agent, result, session_id, input_tokens, output_tokens, cost,
               null::timestamptz as stalled_since, null as progress, null::timestamptz as progress_at
        from attempts where task_id = $1
        union all
        select attempt_id, attempts, worker_id, attempt_started_at, null, 'running', null, null, null, stage,
               run_agent, null, null, null, null, null, stalled_since, progress, progress_at
        from task_states where task_id = $1 and attempt_id is not null
        order by 2
        "#,
        task
    )
    .fetch_all(executor)
    .await
}

/// Makes the concurrency keys that are new, with their limits; changes the
/// limit of existing ones when `change` holds. Returns the existing keys
/// whose limit differs from the one asked for, with that limit. Rows are
/// made in key order.
pub async fn set_key_limits(
    conn: &mut PgConnection,
    keys: &[String],
    limits: &[i32],
    change: bool,
) -> sqlx::Result<Vec<(String, i32)>> {
    let rows = sqlx::query!(
        r#"
        with wanted as (
            select key, max_running from unnest($1::text[], $2::int4[]) as k(key, max_running)
        ), made as (
            insert into concurrency_slots (key, max_running)
            select key, max_running from wanted order by key
            on conflict (key) do nothing
        ), changed as (
            update concurrency_slots c set max_running = w.max_running
            from wanted w
            where c.key = w.key and c.max_running <> w.max_running and $3
        )
        select c.key, c.max_running
        from concurrency_slots c join wanted w on w.key = c.key
        where c.max_running <> w.max_running
        order by c.key
        "#,
        keys,
        limits,
        change,
    )
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|row| (row.key, row.max_running)).collect())
}
