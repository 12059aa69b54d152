-- A narrow queue and a results table beside the task rows (docs/queue-split.md).
--
-- A claim and a completion each wrote a new version of the task row (51
-- columns, three and two index entries): 30 µs of PostgreSQL CPU and 1,355
-- bytes of WAL per job in the batched drain. Now a plain task (ready, no
-- locks, no validator) is queued at submission: its row says `queued` and
-- never changes again on the happy path; a claim updates its narrow `queue`
-- row, a success deletes that and inserts a narrow `results` row. Any other
-- end or change (a failure, a hand-back, a lost lease, a cancel) first
-- writes the queue row's state back onto the task row and carries on there
-- as before, so a queue row is only ever ready or running. Measured on a
-- prototype: +18 % jobs/s, −22 % PostgreSQL CPU, −35 % WAL per job
-- (BENCHMARKS.md).
--
-- `tasks` becomes a view with the same columns, so every reader sees what
-- it saw before; the table is `task_rows`. No rows move: existing tasks
-- stay on their rows.

alter table tasks rename to task_rows;

create table queue (
    task_id uuid primary key,
    swarm_id uuid not null,
    priority integer not null,
    run_after timestamptz not null,
    run_agent text not null,
    has_labels boolean not null,
    timeout_ms bigint,
    -- what the claim's byte budget counts for this task (prompt and input)
    bytes integer not null,
    worker_id uuid,
    attempt_id uuid,
    attempts integer not null default 0,
    lease_expires_at timestamptz,
    attempt_deadline timestamptz,
    started_at timestamptz,
    attempt_started_at timestamptz,
    check ((worker_id is null) = (lease_expires_at is null))
) with (fillfactor = 50);
-- Claim order among unleased rows; leases by worker, then by the earlier end.
create index queue_claim_idx on queue (priority desc, task_id) where worker_id is null;
create index queue_leased_idx on queue (worker_id, least(lease_expires_at, attempt_deadline))
    where worker_id is not null;

create table results (
    task_id uuid primary key,
    attempt_id uuid not null,
    attempt integer not null,
    worker_id uuid not null,
    started_at timestamptz not null,
    attempt_started_at timestamptz not null,
    finished_at timestamptz not null,
    result jsonb,
    session_id text,
    input_tokens bigint,
    output_tokens bigint,
    cost double precision
);

-- Every reader's `tasks`: a queued task's live state from its queue row,
-- its success from its result.
create view tasks as
select t.id, t.swarm_id, t.key, t.agent, t.prompt, t.input, t.priority,
       (case when t.status <> 'queued' then t.status
             when r.task_id is not null then 'succeeded'
             when q.worker_id is not null then 'running'
             else 'ready' end)::task_status as status,
       t.max_attempts,
       coalesce(r.attempt, q.attempts, t.attempts) as attempts,
       coalesce(r.attempt_id, q.attempt_id, t.current_attempt) as current_attempt,
       coalesce(r.worker_id, q.worker_id, t.worker_id) as worker_id,
       coalesce(q.lease_expires_at, t.lease_expires_at) as lease_expires_at,
       t.run_after, t.timeout_ms,
       case when r.task_id is not null then r.result else t.result end as result,
       t.error, t.log_bytes, t.log_truncated, t.created_at,
       coalesce(r.started_at, q.started_at, t.started_at) as started_at,
       coalesce(r.finished_at, t.finished_at) as finished_at,
       greatest(t.updated_at, q.attempt_started_at, r.finished_at) as updated_at,
       t.failures, t.backoff_initial_ms, t.backoff_max_ms, t.backoff_multiplier,
       coalesce(q.attempt_deadline, t.attempt_deadline) as attempt_deadline,
       t.waiting_on, t.cancelled_upstream, t.required_labels, t.locks, t.validate_agent, t.validate_prompt,
       t.max_rounds, t.round, t.stage, t.build_result, t.feedback, t.resume_sessions,
       t.input_tokens + coalesce(r.input_tokens, 0) as input_tokens,
       t.output_tokens + coalesce(r.output_tokens, 0) as output_tokens,
       t.cost + coalesce(r.cost, 0) as cost,
       t.run_agent, t.has_locks, t.has_labels,
       coalesce(r.attempt_started_at, q.attempt_started_at, t.attempt_started_at) as attempt_started_at,
       case when r.task_id is not null then r.session_id else t.attempt_session_id end as attempt_session_id,
       case when r.task_id is not null then r.input_tokens else t.attempt_input_tokens end as attempt_input_tokens,
       case when r.task_id is not null then r.output_tokens else t.attempt_output_tokens end as attempt_output_tokens,
       case when r.task_id is not null then r.cost else t.attempt_cost end as attempt_cost
from task_rows t
left join queue q on t.status = 'queued' and q.task_id = t.id
left join results r on t.status = 'queued' and r.task_id = t.id;

-- Every attempt: written out, running or succeeded on a task row, and now
-- running in the queue or succeeded in `results`.
create or replace view attempts as
select id, task_id, number, worker_id, stage, started_at, finished_at, outcome, exit_code, signal, error, result,
       session_id, input_tokens, output_tokens, cost
from past_attempts
union all
select current_attempt, id, attempts, worker_id, stage, attempt_started_at,
       case when status = 'succeeded' then finished_at end,
       (case when status = 'succeeded' then 'succeeded' else 'running' end)::attempt_outcome,
       null::integer, null::integer, null::text, null::jsonb,
       attempt_session_id, attempt_input_tokens, attempt_output_tokens, attempt_cost
from task_rows
where status in ('running', 'cancelling') or (status = 'succeeded' and validate_agent is null)
union all
select q.attempt_id, q.task_id, q.attempts, q.worker_id, 'build', q.attempt_started_at, null, 'running'::attempt_outcome,
       null::integer, null::integer, null::text, null::jsonb, null::text, null::bigint, null::bigint, null::double precision
from queue q
where q.worker_id is not null
union all
select r.attempt_id, r.task_id, r.attempt, r.worker_id, 'build', r.attempt_started_at, r.finished_at,
       'succeeded'::attempt_outcome, null::integer, null::integer, null::text, null::jsonb,
       r.session_id, r.input_tokens, r.output_tokens, r.cost
from results r;
