//! Claim statements: tasks without locks, a batch at a time in one statement;
//! tasks that take locks, one at a time with their locks in one transaction.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::{PgConnection, PgExecutor};
use uuid::Uuid;

/// A task handed to a worker by [`claim`].
#[derive(Debug)]
pub struct ClaimedTask {
    /// Task id.
    pub id: Uuid,
    /// The new attempt's id.
    pub attempt_id: Uuid,
    /// The new attempt's number.
    pub attempt: i32,
    /// Agent to run (the validator's, in the validate stage).
    pub agent: String,
    /// Prompt (the validator's, in the validate stage).
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
    /// "build" or "validate".
    pub stage: String,
    /// Builder round.
    pub round: i32,
    /// The builder's result, for a validator.
    pub build_result: Option<Json>,
    /// The validator's last verdict, for a builder re-run.
    pub feedback: Option<Json>,
    /// Results of the tasks it depends on, by key.
    pub inputs: Option<Json>,
    /// Session to resume, under the resume policy.
    pub resume_session: Option<String>,
    /// Whether a ready task that takes locks was due when this task was
    /// claimed (the same for every task of one [`claim`]; false from
    /// [`claim_locked`]): a claim that fell short looks for lock candidates
    /// only then, without another round trip first.
    pub lock_tasks_due: bool,
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

/// Who claims and what for.
#[derive(Debug, Clone, Copy)]
pub struct ClaimScope<'a> {
    /// The claiming worker.
    pub worker: Uuid,
    /// Only these agents (a subset of those the worker offers); empty means all.
    pub agents: &'a [String],
    /// Most bytes of prompts and JSON (input, build result, feedback) one
    /// claim hands out, so its reply fits in one gRPC message; the first task
    /// is always taken.
    pub max_bytes: i64,
}

/// The bytes [`ClaimScope::max_bytes`] counts for one claimed task.
pub fn payload_bytes(task: &ClaimedTask) -> i64 {
    let json = |value: &Option<Json>| value.as_ref().map_or(0, |value| value.to_string().len());
    let bytes = task.prompt.len() + json(&task.input) + json(&task.build_result) + json(&task.feedback);
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// Claims up to `limit` ready tasks that take no locks (and no more than
/// fit in `scope.max_bytes`), in one statement: highest priority first, then
/// oldest, from both places a ready task can be — the narrow queue (tasks
/// queued at submission, walking `queue_claim_idx`) and the task rows
/// (retried, unblocked, validator stages, walking `tasks_claim_idx`); rows
/// locked by another claimer are skipped, so no task is handed out twice.
/// Honours the worker's agents and labels and the swarm's budget. Each
/// claimed task gets a new attempt, a lease, and a deadline, on its queue
/// row or its task row; if it does not succeed, it is written out to
/// `past_attempts` when it ends (see `outcomes`).
pub async fn claim(
    executor: impl PgExecutor<'_>,
    scope: ClaimScope<'_>,
    limit: i64,
    timing: ClaimTiming,
) -> sqlx::Result<Vec<ClaimedTask>> {
    sqlx::query_as!(
        ClaimedTask,
        r#"
        with offered as (
            select agents, labels from workers where id = $1
        ), over_budget as (
            select array(select s.id from swarms s where s.spent >= s.budget) as ids
        ), picked_queue as (
            -- Queued tasks (the narrow rows), walking `queue_claim_idx`.
            select q.task_id as id, q.priority, q.bytes, true as queued
            from queue q
            where q.worker_id is null
              and q.run_after <= now()
              and q.run_agent = any((select agents from offered)::text[])
              and (cardinality($6::text[]) = 0 or q.run_agent = any($6))
              and (not q.has_labels or exists(
                  select 1 from task_rows l
                  where l.id = q.task_id and l.required_labels <@ coalesce((select labels from offered), '{}'::jsonb)))
              -- Not over budget. coalesce(…, true) only hides the test from the
              -- planner's statistics: with one swarm they say every task is in
              -- it, so any test on swarm_id looked like it removed every row,
              -- and the planner sorted the whole queue (39 ms for 100 of 20k
              -- tasks) instead of walking the claim index (7 ms).
              and coalesce(q.swarm_id <> all((select ids from over_budget)::uuid[]), true)
            order by q.priority desc, q.task_id
            limit $2
            for update of q skip locked
        ), picked_rows as (
            -- Ready tasks on their rows (retried, unblocked, validator
            -- stages), walking `tasks_claim_idx`.
            select t.id, t.priority,
                   octet_length(case when t.stage = 'validate' then coalesce(t.validate_prompt, '') else t.prompt end)
                   + coalesce(octet_length(t.input::text), 0) + coalesce(octet_length(t.build_result::text), 0)
                   + coalesce(octet_length(t.feedback::text), 0) as bytes,
                   false as queued
            from task_rows t
            where t.status = 'ready'
              and not t.has_locks
              and t.run_after <= now()
              and t.run_agent = any((select agents from offered)::text[])
              and (cardinality($6::text[]) = 0 or t.run_agent = any($6))
              and (not t.has_labels or t.required_labels <@ coalesce((select labels from offered), '{}'::jsonb))
              and coalesce(t.swarm_id <> all((select ids from over_budget)::uuid[]), true)
            order by t.priority desc, t.id
            limit $2
            for update of t skip locked
        ), fitting as (
            -- Both in claim order, as many as asked and as fit in $7 bytes,
            -- and always the first: the rest stay ready (locked only until
            -- this statement commits).
            select id, queued from (
                select id, queued, bytes, sum(bytes) over w as running, row_number() over w as n
                from (select * from picked_queue union all select * from picked_rows) p
                window w as (order by priority desc, id)
            ) p
            where n <= $2 and (running <= $7 or n = 1)
        ), claimed_queue as (
            update queue q
            set attempts = q.attempts + 1,
                attempt_id = gen_random_uuid(),
                worker_id = $1,
                lease_expires_at = now() + make_interval(secs => $3),
                attempt_deadline = now() + make_interval(secs => coalesce(q.timeout_ms::float8 / 1000.0, $4) + $5),
                started_at = coalesce(q.started_at, now()),
                attempt_started_at = now()
            -- By id, so even a generic plan (which guesses a tenth of the
            -- queue for the limit) looks the picked rows up in the primary key.
            where q.task_id = any(array(select id from fitting where queued))
            returning q.task_id as id, q.attempt_id, q.attempts, q.lease_expires_at
        ), claimed_rows as (
            update task_rows t
            set status = 'running',
                attempts = t.attempts + 1,
                current_attempt = gen_random_uuid(),
                worker_id = $1,
                lease_expires_at = now() + make_interval(secs => $3),
                attempt_deadline = now() + make_interval(secs => coalesce(t.timeout_ms::float8 / 1000.0, $4) + $5),
                started_at = coalesce(t.started_at, now()),
                attempt_started_at = now(),
                updated_at = now()
            where t.id = any(array(select id from fitting where not queued))
            returning t.id, t.current_attempt as attempt_id, t.attempts, t.lease_expires_at
        ), claimed as (
            select * from claimed_queue union all select * from claimed_rows
        )
        select c.id as "id!", c.attempt_id as "attempt_id!", c.attempts as "attempt!",
               (case when t.stage = 'validate' then t.validate_agent else t.agent end) as "agent!",
               (case when t.stage = 'validate' then coalesce(t.validate_prompt, '') else t.prompt end) as "prompt!",
               t.input, t.timeout_ms, c.lease_expires_at as "lease_expires_at!", t.swarm_id as "swarm_id!",
               t.priority as "priority!", t.stage as "stage!", t.round as "round!", t.build_result, t.feedback,
               -- A queued upstream's result is in `results` (read here, not
               -- through the view `tasks`: planning the view's 51 columns made
               -- the claim three times dearer to plan).
               (select jsonb_object_agg(coalesce(u.key, u.id::text), coalesce(r.result, u.result, 'null'::jsonb))
                from task_deps d join task_rows u on u.id = d.depends_on left join results r on r.task_id = u.id
                where d.task_id = c.id) as inputs,
               -- A ready task's earlier attempts all ended without success: written out.
               (case when t.resume_sessions then
                   (select a.session_id from past_attempts a
                    where a.task_id = c.id and a.session_id is not null order by a.number desc limit 1)
                end) as resume_session,
               -- Uncorrelated: evaluated once per statement.
               (select exists(select 1 from task_rows l where l.status = 'ready' and l.has_locks and l.run_after <= now()))
                   as "lock_tasks_due!"
        from claimed c join task_rows t on t.id = c.id
        order by t.priority desc, c.id
        "#,
        scope.worker,
        limit,
        timing.lease_seconds,
        timing.max_runtime_seconds,
        timing.deadline_grace_seconds,
        scope.agents,
        scope.max_bytes,
    )
    .fetch_all(executor)
    .await
}

/// Claims one task whose locks `attempt` just took (locked by
/// [`next_lock_candidate`] in the same transaction), as [`claim`] does.
pub async fn claim_locked(
    conn: &mut PgConnection,
    worker: Uuid,
    task: Uuid,
    attempt: Uuid,
    timing: ClaimTiming,
) -> sqlx::Result<Option<ClaimedTask>> {
    sqlx::query_as!(
        ClaimedTask,
        r#"
        with claimed as (
            update task_rows t
            set status = 'running',
                attempts = t.attempts + 1,
                current_attempt = $3,
                worker_id = $1,
                lease_expires_at = now() + make_interval(secs => $4),
                attempt_deadline = now() + make_interval(secs => coalesce(t.timeout_ms::float8 / 1000.0, $5) + $6),
                started_at = coalesce(t.started_at, now()),
                attempt_started_at = now(),
                updated_at = now()
            where t.id = $2 and t.status = 'ready'
            returning t.id, t.current_attempt, t.attempts, t.agent, t.prompt, t.input, t.timeout_ms, t.lease_expires_at,
                      t.swarm_id, t.priority, t.stage, t.round, t.build_result, t.feedback, t.validate_agent,
                      t.validate_prompt, t.resume_sessions
        )
        select c.id as "id!", c.current_attempt as "attempt_id!", c.attempts as "attempt!",
               (case when c.stage = 'validate' then c.validate_agent else c.agent end) as "agent!",
               (case when c.stage = 'validate' then coalesce(c.validate_prompt, '') else c.prompt end) as "prompt!",
               c.input, c.timeout_ms, c.lease_expires_at as "lease_expires_at!", c.swarm_id as "swarm_id!",
               c.priority as "priority!", c.stage as "stage!", c.round as "round!", c.build_result, c.feedback,
               -- Inputs and session as in `claim`.
               (select jsonb_object_agg(coalesce(u.key, u.id::text), coalesce(r.result, u.result, 'null'::jsonb))
                from task_deps d join task_rows u on u.id = d.depends_on left join results r on r.task_id = u.id
                where d.task_id = c.id) as inputs,
               (case when c.resume_sessions then
                   (select a.session_id from past_attempts a
                    where a.task_id = c.id and a.session_id is not null order by a.number desc limit 1)
                end) as resume_session,
               false as "lock_tasks_due!"
        from claimed c
        "#,
        worker,
        task,
        attempt,
        timing.lease_seconds,
        timing.max_runtime_seconds,
        timing.deadline_grace_seconds,
    )
    .fetch_optional(conn)
    .await
}

/// A ready task that takes locks, all of them free right now.
#[derive(Debug)]
pub struct LockCandidate {
    /// Task id.
    pub id: Uuid,
    /// Its locks.
    pub locks: Vec<String>,
}

/// Locks the next ready task that takes locks and can run on this worker now:
/// its locks are free, and no ready task ahead of it in claim order wants any
/// of them (so a task waiting for a lock is not starved by later ones).
pub async fn next_lock_candidate(
    conn: &mut PgConnection,
    scope: ClaimScope<'_>,
) -> sqlx::Result<Option<LockCandidate>> {
    sqlx::query_as!(
        LockCandidate,
        r#"
        with offered as (
            select agents, labels from workers where id = $1
        )
        select t.id, t.locks
        from task_rows t
        where t.status = 'ready'
          and t.has_locks
          and t.run_after <= now()
          and t.run_agent = any((select agents from offered)::text[])
          and (cardinality($2::text[]) = 0 or t.run_agent = any($2))
          and (not t.has_labels or t.required_labels <@ coalesce((select labels from offered), '{}'::jsonb))
          and coalesce(t.swarm_id <> all(array(select s.id from swarms s where s.spent >= s.budget)), true)
          and not exists (select 1 from task_locks l where l.key = any(t.locks))
          and not exists (
              select 1 from task_rows o
              where o.status = 'ready' and o.run_after <= now() and o.locks && t.locks
                and (o.priority > t.priority or (o.priority = t.priority and o.id < t.id)))
        order by t.priority desc, t.id
        limit 1
        for update of t skip locked
        "#,
        scope.worker,
        scope.agents,
    )
    .fetch_optional(conn)
    .await
}

/// Takes `keys` for `task`'s attempt; returns how many were taken (fewer than
/// asked means another claimer won one, and the caller rolls back).
pub async fn take_locks(conn: &mut PgConnection, keys: &[String], task: Uuid, attempt: Uuid) -> sqlx::Result<u64> {
    let result = sqlx::query!(
        r#"
        insert into task_locks (key, task_id, attempt_id)
        select key, $2, $3 from unnest($1::text[]) as key
        on conflict (key) do nothing
        "#,
        keys,
        task,
        attempt,
    )
    .execute(conn)
    .await?;
    Ok(result.rows_affected())
}

/// Whether any ready task is due (its `run_after` has passed): one walk of
/// each claim index, stopping at the first due row.
pub async fn any_due(executor: impl PgExecutor<'_>) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"
        select exists(select 1 from queue where worker_id is null and run_after <= now())
            or exists(select 1 from task_rows where status = 'ready' and not has_locks and run_after <= now())
            or exists(select 1 from task_rows where status = 'ready' and has_locks and run_after <= now()) as "due!"
        "#
    )
    .fetch_one(executor)
    .await
}

/// Whether any ready task that takes locks is due (a walk of
/// `tasks_claim_locked_idx` that stops at the first entry): a claim that got
/// nothing looks for lock candidates only then (one that got tasks has the
/// answer in [`ClaimedTask::lock_tasks_due`]).
pub async fn any_lock_candidates(executor: impl PgExecutor<'_>) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"select exists(select 1 from task_rows where status = 'ready' and has_locks and run_after <= now()) as "any!""#
    )
    .fetch_one(executor)
    .await
}
