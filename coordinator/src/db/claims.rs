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
    /// How long it waited since it could first be claimed (`run_after`), seconds.
    pub queued_seconds: f64,
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
    /// Whether the task resumes sessions (its worker saves them).
    pub resume_sessions: bool,
    /// Whether a ready task that takes locks was due when this task was
    /// claimed (the same for every task of one [`claim`]; false from
    /// [`claim_locked`]): a claim that fell short looks for lock candidates
    /// only then, without another round trip first.
    pub lock_tasks_due: bool,
    /// Whether a cooling provider account was due for a probe when this
    /// task was claimed (the same for every task of one [`claim`]).
    pub probe_due: bool,
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
    /// The cooling provider account this claim probes (its agents are
    /// offered though the account cools down).
    pub probe_account: Option<&'a str>,
}

/// The bytes [`ClaimScope::max_bytes`] counts for one claimed task.
pub fn payload_bytes(task: &ClaimedTask) -> i64 {
    let json = |value: &Option<Json>| value.as_ref().map_or(0, |value| value.to_string().len());
    let bytes = task.prompt.len() + json(&task.input) + json(&task.build_result) + json(&task.feedback);
    i64::try_from(bytes).unwrap_or(i64::MAX)
}

/// Claims up to `limit` ready tasks that take no locks (and no more than
/// fit in `scope.max_bytes`), in one statement: highest priority first, then
/// by place in the fair order (swarms interleave, see `tasks::insert_tasks`),
/// walking `task_states_claim_idx`; rows locked by another claimer are
/// skipped, so no task is handed out twice. Honours the worker's agents and
/// labels, the swarm's budget, pauses of the swarm, the agent and the worker,
/// cool-downs of the agents' provider accounts, and the room left under each
/// concurrency key (taken in the same statement). Each claimed task gets a
/// new attempt, a lease and a deadline on its state row; the attempt is
/// written to `attempts` when it ends (see `outcomes`).
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
            -- The worker's agents but the paused ones and those whose provider
            -- account cools down (unless this claim probes it); nothing for a
            -- paused worker.
            select array(select a from unnest(w.agents) a
                         where not exists(select 1 from paused p where p.scope = 'agent' and p.target = a)
                           and not exists(select 1 from provider_cooldowns c
                                          where c.account = w.accounts ->> a and c.account is distinct from $8)) as agents,
                   w.labels
            from workers w
            where w.id = $1 and not exists(select 1 from paused p where p.scope = 'worker' and p.target = w.name)
        ), held as (
            -- Swarms over budget or paused.
            select array(select s.id from swarms s where s.spent >= s.budget)
                   || array(select p.target::uuid from paused p where p.scope = 'swarm') as ids
        ), full_keys as (
            -- Concurrency keys with no room left as of this statement's
            -- snapshot (`slots` looks again under lock).
            select array(select c.key from concurrency_slots c where cardinality(c.holders) >= c.max_running
                           and cardinality((unended_holders(c.holders, c.holder_tasks)).holders) >= c.max_running) as keys
        ), picked as (
            select s.task_id, s.priority, s.fair_seq, s.bytes, s.has_keys
            from task_states s
            where s.status = 'ready'
              and not s.has_locks
              and s.run_after <= now()
              -- Uncorrelated, so a one-time filter: a worker that offers
              -- nothing now (paused, its accounts cooling) walks no index.
              and coalesce(cardinality((select agents from offered)), 0) > 0
              and s.run_agent = any((select agents from offered)::text[])
              and (cardinality($6::text[]) = 0 or s.run_agent = any($6))
              and (not s.has_labels or exists(
                  select 1 from tasks l
                  where l.id = s.task_id and l.required_labels <@ coalesce((select labels from offered), '{}'::jsonb)))
              -- Not held. coalesce(…, true) only hides the test from the
              -- planner's statistics: with one swarm they say every task is in
              -- it, so any test on swarm_id looks as if it removed every row,
              -- and the planner would sort every ready task instead of walking
              -- the claim index.
              and coalesce(s.swarm_id <> all((select ids from held)::uuid[]), true)
              and (not s.has_keys or not exists(
                  select 1 from tasks k where k.id = s.task_id and k.concurrency_keys && (select keys from full_keys)))
            order by s.priority desc, s.fair_seq, s.task_id
            limit $2
            for update of s skip locked
        ), fitting as (
            -- In claim order, as many as asked and as fit in $7 bytes, and
            -- always the first: the rest stay ready (locked only until this
            -- statement commits).
            select task_id, priority, fair_seq, has_keys from (
                select task_id, priority, fair_seq, has_keys, sum(bytes) over w as running, row_number() over w as n
                from picked
                window w as (order by priority desc, fair_seq, task_id)
            ) p
            where n <= $2 and (running <= $7 or n = 1)
        ), keyed as materialized (
            -- Places under their keys for the keyed tasks taken (see
            -- `take_key_slots`): only a batch with such tasks calls it.
            select k.task_id, k.attempt_id
            from (select array(select f.task_id from fitting f where f.has_keys
                               order by f.priority desc, f.fair_seq, f.task_id) as ids) b
            cross join lateral take_key_slots(b.ids, array(select gen_random_uuid() from unnest(b.ids))) as k
            where cardinality(b.ids) > 0
        ), claimed as (
            update task_states s
            set status = 'running',
                attempts = s.attempts + 1,
                attempt_id = case when s.has_keys
                                  then (select k.attempt_id from keyed k where k.task_id = s.task_id)
                                  else gen_random_uuid() end,
                worker_id = $1,
                lease_expires_at = now() + make_interval(secs => $3),
                attempt_deadline = now() + make_interval(secs => coalesce(s.timeout_ms::float8 / 1000.0, $4) + $5),
                started_at = coalesce(s.started_at, now()),
                attempt_started_at = now()
            -- By id, so even a generic plan (which guesses a tenth of the
            -- table for the limit) looks the picked rows up in the primary key.
            where s.task_id = any(array(select task_id from fitting where not has_keys)
                                 || array(select task_id from keyed))
            returning s.task_id, s.swarm_id, s.attempt_id, s.attempts, s.lease_expires_at, s.run_agent, s.stage, s.round,
                      extract(epoch from now() - s.run_after)::float8 as queued_seconds
        ), logged as (
            insert into events (kind, task_ids, swarm_ids, worker_ids, attempts)
            select 'task.started', array_agg(task_id), array_agg(swarm_id), array_fill($1::uuid, array[count(*)::int]),
                   array_agg(attempts)
            from claimed
            where task_events_on()
            having count(*) > 0
        )
        select c.task_id as "id!", c.attempt_id as "attempt_id!", c.attempts as "attempt!", p.agent as "agent!",
               p.prompt as "prompt!", p.input, p.timeout_ms, c.lease_expires_at as "lease_expires_at!", c.queued_seconds as "queued_seconds!",
               p.swarm_id as "swarm_id!", p.priority as "priority!", p.stage as "stage!", p.round as "round!",
               p.build_result, p.feedback, p.inputs, p.resume_session, p.resume_sessions as "resume_sessions!",
               -- Uncorrelated: evaluated once per statement.
               (select exists(select 1 from task_states l where l.status = 'ready' and l.has_locks and l.run_after <= now()))
                   as "lock_tasks_due!",
               (select exists(select 1 from probe_due)) as "probe_due!"
        from claimed c cross join lateral claim_payload(c.task_id, c.run_agent, c.stage, c.round) p
        order by p.priority desc, c.task_id
        "#,
        scope.worker,
        limit,
        timing.lease_seconds,
        timing.max_runtime_seconds,
        timing.deadline_grace_seconds,
        scope.agents,
        scope.max_bytes,
        scope.probe_account,
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
            update task_states s
            set status = 'running',
                attempts = s.attempts + 1,
                attempt_id = $3,
                worker_id = $1,
                lease_expires_at = now() + make_interval(secs => $4),
                attempt_deadline = now() + make_interval(secs => coalesce(s.timeout_ms::float8 / 1000.0, $5) + $6),
                started_at = coalesce(s.started_at, now()),
                attempt_started_at = now()
            where s.task_id = $2 and s.status = 'ready'
            returning s.task_id, s.swarm_id, s.attempt_id, s.attempts, s.lease_expires_at, s.run_agent, s.stage, s.round,
                      extract(epoch from now() - s.run_after)::float8 as queued_seconds
        ), logged as (
            insert into events (kind, task_ids, swarm_ids, worker_ids, attempts)
            select 'task.started', array[task_id], array[swarm_id], array[$1::uuid], array[attempts]
            from claimed
            where task_events_on()
        )
        select c.task_id as "id!", c.attempt_id as "attempt_id!", c.attempts as "attempt!", p.agent as "agent!",
               p.prompt as "prompt!", p.input, p.timeout_ms, c.lease_expires_at as "lease_expires_at!", c.queued_seconds as "queued_seconds!",
               p.swarm_id as "swarm_id!", p.priority as "priority!", p.stage as "stage!", p.round as "round!",
               p.build_result, p.feedback, p.inputs, p.resume_session, p.resume_sessions as "resume_sessions!", false as "lock_tasks_due!",
               false as "probe_due!"
        from claimed c cross join lateral claim_payload(c.task_id, c.run_agent, c.stage, c.round) p
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
    /// Whether it names concurrency keys (taken with [`take_slots`]).
    pub has_keys: bool,
}

/// Locks the next ready task that takes locks and can run on this worker now:
/// its locks are free, and no ready task ahead of it in claim order that
/// some worker could take now wants any of them (so a task waiting for a
/// lock is not starved by later ones, and one held back by a pause or its
/// swarm's budget holds back no other).
pub async fn next_lock_candidate(
    conn: &mut PgConnection,
    scope: ClaimScope<'_>,
) -> sqlx::Result<Option<LockCandidate>> {
    sqlx::query_as!(
        LockCandidate,
        r#"
        with offered as (
            select array(select a from unnest(w.agents) a
                         where not exists(select 1 from paused p where p.scope = 'agent' and p.target = a)
                           -- Lock-taking tasks are not probed: once the wait has
                           -- passed they run as any probe would.
                           and not exists(select 1 from provider_cooldowns c
                                          where c.account = w.accounts ->> a and c.until > now()))
                       as agents,
                   w.labels
            from workers w
            where w.id = $1 and not exists(select 1 from paused p where p.scope = 'worker' and p.target = w.name)
        ), full_keys as (
            -- As in `claim`.
            select array(select c.key from concurrency_slots c where cardinality(c.holders) >= c.max_running
                           and cardinality((unended_holders(c.holders, c.holder_tasks)).holders) >= c.max_running) as keys
        ), held as (
            -- Swarms over budget or paused, and paused agents: no worker takes their tasks now.
            select array(select b.id from swarms b where b.spent >= b.budget)
                   || array(select p.target::uuid from paused p where p.scope = 'swarm') as swarms,
                   array(select p.target from paused p where p.scope = 'agent') as agents
        )
        select s.task_id as id, t.locks, s.has_keys
        from task_states s join tasks t on t.id = s.task_id
        where s.status = 'ready'
          and s.has_locks
          and s.run_after <= now()
          and s.run_agent = any((select agents from offered)::text[])
          and (cardinality($2::text[]) = 0 or s.run_agent = any($2))
          and (not s.has_labels or t.required_labels <@ coalesce((select labels from offered), '{}'::jsonb))
          and coalesce(s.swarm_id <> all((select swarms from held)::uuid[]), true)
          and not exists (select 1 from task_locks l where l.key = any(t.locks))
          and (not s.has_keys or not t.concurrency_keys && (select keys from full_keys))
          and not exists (
              select 1 from task_states os join tasks o on o.id = os.task_id
              where os.status = 'ready' and os.has_locks and os.run_after <= now() and o.locks && t.locks
                and (not os.has_keys or not o.concurrency_keys && (select keys from full_keys))
                and coalesce(os.swarm_id <> all((select swarms from held)::uuid[]), true)
                and os.run_agent <> all((select agents from held)::text[])
                and (os.priority > s.priority or (os.priority = s.priority and os.task_id < s.task_id)))
        order by s.priority desc, s.task_id
        limit 1
        for update of s skip locked
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

/// Takes a place under each of `task`'s concurrency keys for its new
/// `attempt` (in the lock-taking claim's transaction); `false`, taking none,
/// when one has no room. The same function as [`claim`]'s keyed tasks
/// (`take_key_slots`), so both lock key rows in key order.
pub async fn take_slots(conn: &mut PgConnection, task: Uuid, attempt: Uuid) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"select exists(select 1 from take_key_slots(array[$1::uuid], array[$2::uuid])) as "ok!""#,
        task,
        attempt,
    )
    .fetch_one(conn)
    .await
}

/// Whether any ready task is due (its `run_after` has passed): one walk of
/// each claim index, stopping at the first due row.
pub async fn any_due(executor: impl PgExecutor<'_>) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"
        select exists(select 1 from task_states where status = 'ready' and not has_locks and run_after <= now())
            or exists(select 1 from task_states where status = 'ready' and has_locks and run_after <= now()) as "due!"
        "#
    )
    .fetch_one(executor)
    .await
}

/// What [`look`] found.
#[derive(Debug, Clone, Copy)]
pub struct Look {
    /// Whether any ready task is due.
    pub due: bool,
    /// Whether the worker is registered.
    pub registered: bool,
}

/// Whether any ready task is due (as [`any_due`]) and whether `worker` is
/// registered, in one round trip: what an idle claim asks before it runs
/// the claim statements.
pub async fn look(executor: impl PgExecutor<'_>, worker: Uuid) -> sqlx::Result<Look> {
    let row = sqlx::query!(
        r#"
        select exists(select 1 from task_states where status = 'ready' and not has_locks and run_after <= now())
            or exists(select 1 from task_states where status = 'ready' and has_locks and run_after <= now()) as "due!",
            exists(select 1 from workers where id = $1) as "registered!"
        "#,
        worker
    )
    .fetch_one(executor)
    .await?;
    Ok(Look { due: row.due, registered: row.registered })
}

/// Whether any ready task that takes locks is due (a walk of
/// `task_states_claim_locked_idx` that stops at the first entry): a claim that got
/// nothing looks for lock candidates only then (one that got tasks has the
/// answer in [`ClaimedTask::lock_tasks_due`]).
pub async fn any_lock_candidates(executor: impl PgExecutor<'_>) -> sqlx::Result<bool> {
    sqlx::query_scalar!(
        r#"select exists(select 1 from task_states where status = 'ready' and has_locks and run_after <= now()) as "any!""#
    )
    .fetch_one(executor)
    .await
}
