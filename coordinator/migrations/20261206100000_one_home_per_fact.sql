-- One home per fact (docs/data-model.md):
--
--   tasks        a task's spec, written once at submission and never updated
--   task_states  one narrow row per task with everything that changes: its
--                status, counters, stage, the running attempt and its lease,
--                and how it ended
--   attempts     every attempt that ended, appended when it ends
--   task_output  the per-task output budget, kept apart so that storing
--                output never contends with claims and completions
--
-- It replaces the queue split: the wide task rows with a `queued` sentinel,
-- the narrow `queue` rows of some tasks, `results` for their successes and
-- the views over all of them. Every task moves to the new shape here, in
-- whatever state it is.

drop view tasks;
drop view attempts;

-- A status type without the sentinel: every value is a status a task can have.
alter type task_status rename to task_status_old;
create type task_status as enum ('blocked', 'ready', 'running', 'cancelling', 'succeeded', 'dead', 'cancelled');

create table task_states (
    task_id uuid primary key,
    -- Copies of the spec that claims filter and order on, so a claim reads
    -- only this row (the composite foreign key keeps swarm_id true; the
    -- others are pinned by a db test).
    swarm_id uuid not null,
    priority integer not null,
    has_labels boolean not null,
    has_locks boolean not null,
    validated boolean not null,
    timeout_ms bigint,
    status task_status not null,
    -- The stage and its agent, and what a claim hands over for it (bytes of
    -- prompt and JSON, for the claim's reply budget).
    stage text not null default 'build' check (stage in ('build', 'validate')),
    round integer not null default 1 check (round >= 1),
    run_agent text not null,
    bytes integer not null check (bytes >= 0),
    run_after timestamptz not null default now(),
    waiting_on integer not null default 0 check (waiting_on >= 0),
    attempts integer not null default 0 check (attempts >= 0),
    failures integer not null default 0 check (failures >= 0),
    started_at timestamptz,
    -- The running attempt, while it holds the task.
    attempt_id uuid,
    worker_id uuid,
    lease_expires_at timestamptz,
    attempt_deadline timestamptz,
    attempt_started_at timestamptz,
    -- How it ended.
    finished_at timestamptz,
    result_attempt integer,
    error text,
    cancelled_upstream boolean not null default false,
    constraint task_states_lease_held check (
        (status in ('running', 'cancelling')) = (lease_expires_at is not null)
        and (lease_expires_at is null) = (attempt_id is null)
        and (lease_expires_at is null) = (worker_id is null)
        and (lease_expires_at is null) = (attempt_deadline is null)
        and (lease_expires_at is null) = (attempt_started_at is null)),
    constraint task_states_blocked_waits check ((status = 'blocked') = (waiting_on > 0)),
    constraint task_states_finished check (
        (status in ('succeeded', 'dead', 'cancelled')) = (finished_at is not null)),
    constraint task_states_result check ((status = 'succeeded') = (result_attempt is not null)),
    constraint task_states_error check (error is null or status in ('dead', 'cancelled')),
    constraint task_states_upstream check (not cancelled_upstream or status = 'cancelled'),
    constraint task_states_started check (attempts = 0 or started_at is not null)
) with (fillfactor = 50);

-- Every task as it stands: tasks on their rows (every status but the sentinel).
insert into task_states (task_id, swarm_id, priority, has_labels, has_locks, validated, timeout_ms, status, stage,
                         round, run_agent, bytes, run_after, waiting_on, attempts, failures, started_at, attempt_id,
                         worker_id, lease_expires_at, attempt_deadline, attempt_started_at, finished_at,
                         result_attempt, error, cancelled_upstream)
select t.id, t.swarm_id, t.priority, t.has_labels, t.has_locks, t.validate_agent is not null, t.timeout_ms,
       t.status::text::task_status, t.stage, t.round, t.run_agent,
       octet_length(case when t.stage = 'validate' then coalesce(t.validate_prompt, '') else t.prompt end)
           + coalesce(octet_length(t.input::text), 0) + coalesce(octet_length(t.build_result::text), 0)
           + coalesce(octet_length(t.feedback::text), 0),
       t.run_after, case when t.status = 'blocked' then greatest(t.waiting_on, 1) else 0 end, t.attempts, t.failures,
       coalesce(t.started_at, case when t.attempts > 0 then t.created_at end),
       leased.attempt_id, leased.worker_id, t.lease_expires_at, leased.deadline, leased.started_at,
       case when t.status in ('succeeded', 'dead', 'cancelled') then coalesce(t.finished_at, t.updated_at) end,
       case when t.status <> 'succeeded' then null
            when t.validate_agent is null then t.attempts
            else coalesce((select max(a.number) from past_attempts a
                           where a.task_id = t.id and a.stage = 'build' and a.outcome = 'succeeded'), t.attempts) end,
       case when t.status in ('dead', 'cancelled') then t.error end,
       t.cancelled_upstream and t.status = 'cancelled'
from task_rows t
cross join lateral (
    select case when t.lease_expires_at is not null then coalesce(t.current_attempt, gen_random_uuid()) end as attempt_id,
           case when t.lease_expires_at is not null then coalesce(t.worker_id, '00000000-0000-0000-0000-000000000000'::uuid) end as worker_id,
           case when t.lease_expires_at is not null then coalesce(t.attempt_deadline, t.lease_expires_at) end as deadline,
           case when t.lease_expires_at is not null then coalesce(t.attempt_started_at, t.updated_at) end as started_at
) leased
where t.status <> 'queued';

-- Queued tasks still in the queue: ready, or running on their queue row.
insert into task_states (task_id, swarm_id, priority, has_labels, has_locks, validated, timeout_ms, status, stage,
                         round, run_agent, bytes, run_after, attempts, started_at, attempt_id, worker_id,
                         lease_expires_at, attempt_deadline, attempt_started_at)
select q.task_id, q.swarm_id, q.priority, q.has_labels, false, false, q.timeout_ms,
       case when q.worker_id is null then 'ready'::task_status else 'running'::task_status end,
       'build', 1, q.run_agent, q.bytes, q.run_after, q.attempts,
       coalesce(q.started_at, case when q.attempts > 0 then t.created_at end),
       q.attempt_id, q.worker_id, q.lease_expires_at, q.attempt_deadline, q.attempt_started_at
from queue q join task_rows t on t.id = q.task_id
where t.status = 'queued';

-- Queued tasks that succeeded: their success was in `results`.
insert into task_states (task_id, swarm_id, priority, has_labels, has_locks, validated, timeout_ms, status, stage,
                         round, run_agent, bytes, run_after, attempts, started_at, finished_at, result_attempt)
select t.id, t.swarm_id, t.priority, t.has_labels, false, false, t.timeout_ms, 'succeeded', 'build', 1, t.run_agent,
       octet_length(t.prompt) + coalesce(octet_length(t.input::text), 0), t.run_after, r.attempt, r.started_at,
       r.finished_at, r.attempt
from results r join task_rows t on t.id = r.task_id
where t.status = 'queued';

-- Every ended attempt in one table: those written out already, and the
-- successes that were kept on their task rows or in `results`.
alter table past_attempts rename to attempts;
alter index past_attempts_pkey rename to attempts_pkey;

insert into attempts (id, task_id, number, worker_id, stage, started_at, finished_at, outcome, result, session_id,
                      input_tokens, output_tokens, cost)
select coalesce(t.current_attempt, gen_random_uuid()), t.id, t.attempts,
       coalesce(t.worker_id, '00000000-0000-0000-0000-000000000000'::uuid), t.stage,
       coalesce(t.attempt_started_at, t.started_at, t.created_at), coalesce(t.finished_at, t.updated_at), 'succeeded',
       t.result, t.attempt_session_id, t.attempt_input_tokens, t.attempt_output_tokens, t.attempt_cost
from task_rows t
where t.status = 'succeeded' and t.validate_agent is null and t.attempts >= 1
on conflict (task_id, number) do nothing;

insert into attempts (id, task_id, number, worker_id, stage, started_at, finished_at, outcome, result, session_id,
                      input_tokens, output_tokens, cost)
select r.attempt_id, r.task_id, r.attempt, r.worker_id, 'build', r.attempt_started_at, r.finished_at, 'succeeded',
       r.result, r.session_id, r.input_tokens, r.output_tokens, r.cost
from results r
on conflict (task_id, number) do nothing;

update attempts set finished_at = started_at where finished_at is null;
alter table attempts alter column finished_at set not null;
alter table attempts add constraint attempts_ended check (outcome <> 'running');

-- The output budget, for the tasks that have output.
create table task_output (
    task_id uuid primary key,
    bytes bigint not null default 0 check (bytes >= 0),
    truncated boolean not null default false
);
insert into task_output (task_id, bytes, truncated)
select id, log_bytes, log_truncated from task_rows where log_bytes > 0 or log_truncated;

-- The task rows keep only the spec.
drop table queue;
drop table results;
alter table task_rows
    drop column run_agent,
    drop column has_locks,
    drop column has_labels;
alter table task_rows
    drop column status,
    drop column attempts,
    drop column current_attempt,
    drop column worker_id,
    drop column lease_expires_at,
    drop column run_after,
    drop column result,
    drop column error,
    drop column log_bytes,
    drop column log_truncated,
    drop column started_at,
    drop column finished_at,
    drop column updated_at,
    drop column failures,
    drop column attempt_deadline,
    drop column waiting_on,
    drop column cancelled_upstream,
    drop column round,
    drop column stage,
    drop column build_result,
    drop column feedback,
    drop column input_tokens,
    drop column output_tokens,
    drop column cost,
    drop column attempt_started_at,
    drop column attempt_session_id,
    drop column attempt_input_tokens,
    drop column attempt_output_tokens,
    drop column attempt_cost;
alter table task_rows rename to tasks;
-- Written once: pages are filled.
alter table tasks set (fillfactor = 100);
drop type task_status_old;

alter table tasks add constraint tasks_id_swarm_key unique (id, swarm_id);
create index tasks_swarm_idx on tasks (swarm_id, id);
-- Lock candidates compare their locks with those of the ready tasks ahead of them.
create index tasks_locks_idx on tasks using gin (locks) where cardinality(locks) > 0;

-- Every task has exactly one state row, and every state row its task; the
-- task's side is checked at commit, since submission writes both.
alter table task_states add constraint task_states_task_fkey
    foreign key (task_id, swarm_id) references tasks (id, swarm_id);
alter table tasks add constraint tasks_state_fkey
    foreign key (id) references task_states (task_id) deferrable initially deferred;
alter table task_output add constraint task_output_task_fkey foreign key (task_id) references tasks (id);

-- Claims walk the ready rows in claim order; tasks with locks have their own
-- index, since they are claimed one at a time with their locks.
create index task_states_claim_idx on task_states (priority desc, task_id) where status = 'ready' and not has_locks;
create index task_states_claim_locked_idx on task_states (priority desc, task_id) where status = 'ready' and has_locks;
-- Leases by worker (heartbeats, claims whose reply was lost, cancels), then
-- by the earlier of lease end and deadline (the reaper).
create index task_states_leased_idx on task_states (worker_id, least(lease_expires_at, attempt_deadline))
    where lease_expires_at is not null;
-- Listing the states that are entered rarely; ready and running tasks are
-- listed through the claim and lease indexes, succeeded ones by id.
create index task_states_blocked_idx on task_states (task_id) where status = 'blocked';
create index task_states_dead_idx on task_states (task_id) where status = 'dead';
create index task_states_cancelled_idx on task_states (task_id) where status = 'cancelled';

-- What a claim hands to its worker for each task it claims: the stage's
-- agent and prompt, the input, the stage's payload (a builder's result for
-- its validator, the last verdict for a builder sent back), the results of
-- the tasks it depends on, and the session to resume. Both claim statements
-- join it by task id, so its subqueries run only for the claimed tasks.
create view claim_payloads as
select s.task_id,
       case when s.stage = 'validate' then t.validate_agent else t.agent end as agent,
       case when s.stage = 'validate' then coalesce(t.validate_prompt, '') else t.prompt end as prompt,
       t.input, t.timeout_ms, t.swarm_id, t.priority, s.stage, s.round,
       case when s.stage = 'validate' then
           (select a.result from attempts a
            where a.task_id = s.task_id and a.stage = 'build' and a.outcome = 'succeeded'
            order by a.number desc limit 1)
       end as build_result,
       case when s.stage = 'build' and s.round > 1 then
           (select a.result from attempts a
            where a.task_id = s.task_id and a.stage = 'validate' and a.outcome = 'succeeded'
            order by a.number desc limit 1)
       end as feedback,
       (select jsonb_object_agg(coalesce(u.key, u.id::text), coalesce(a.result, 'null'::jsonb))
        from task_deps d
        join tasks u on u.id = d.depends_on
        join task_states us on us.task_id = d.depends_on
        left join attempts a on a.task_id = us.task_id and a.number = us.result_attempt
        where d.task_id = s.task_id) as inputs,
       case when t.resume_sessions then
           (select a.session_id from attempts a
            where a.task_id = s.task_id and a.session_id is not null order by a.number desc limit 1)
       end as resume_session
from task_states s join tasks t on t.id = s.task_id;
