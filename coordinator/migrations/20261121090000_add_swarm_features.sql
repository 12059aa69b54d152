-- Swarms: dependencies between tasks, validator stages, label routing, locks
-- between agents, session resume, usage and budgets, idempotent submission.

create table task_deps (
    task_id uuid not null references tasks (id) on delete cascade,
    depends_on uuid not null references tasks (id) on delete cascade,
    primary key (task_id, depends_on),
    check (task_id <> depends_on)
);
create index task_deps_upstream_idx on task_deps (depends_on);

alter table tasks
    -- dependencies not yet succeeded; a blocked task becomes ready when it reaches 0
    add column waiting_on integer not null default 0 check (waiting_on >= 0),
    -- cancelled because a task it depends on died or was cancelled (undone by retrying that task)
    add column cancelled_upstream boolean not null default false,
    add column required_labels jsonb not null default '{}',
    add column locks text[] not null default '{}',
    add column validate_agent text check (validate_agent <> ''),
    add column validate_prompt text,
    add column max_rounds integer not null default 1 check (max_rounds >= 1),
    add column round integer not null default 1 check (round >= 1),
    add column stage text not null default 'build' check (stage in ('build', 'validate')),
    add column build_result jsonb,
    add column feedback jsonb,
    add column resume_sessions boolean not null default false,
    add column input_tokens bigint not null default 0,
    add column output_tokens bigint not null default 0,
    add column cost double precision not null default 0;

alter table attempts
    add column stage text not null default 'build' check (stage in ('build', 'validate')),
    add column result jsonb,
    add column session_id text,
    add column input_tokens bigint,
    add column output_tokens bigint,
    add column cost double precision;

alter table swarms
    add column idempotency_key text unique,
    add column budget double precision check (budget > 0),
    add column spent double precision not null default 0;

alter table workers
    add column labels jsonb not null default '{}',
    add column attempt_rss jsonb not null default '{}';

-- Locks between agents: a key held by a running attempt, released when the
-- attempt ends (completion, failure, cancel, or its lease running out).
create table task_locks (
    key text primary key,
    task_id uuid not null references tasks (id) on delete cascade,
    attempt_id uuid not null,
    acquired_at timestamptz not null default now()
);
create index task_locks_task_idx on task_locks (task_id);

-- Claims of tasks that take locks look only at those (few) tasks.
create index tasks_ready_locked_idx on tasks (priority desc, id) where status = 'ready' and cardinality(locks) > 0;
create index tasks_ready_locks_gin_idx on tasks using gin (locks) where status = 'ready';
