-- The task queue: swarms, tasks, attempts, workers and task output.
-- Forward-only; never edit after merge.

create type task_status as enum ('blocked', 'ready', 'running', 'succeeded', 'dead', 'cancelled');
create type attempt_outcome as enum ('running', 'succeeded', 'failed', 'lost', 'cancelled');

create table swarms (
    id uuid primary key,
    name text not null check (name <> ''),
    created_at timestamptz not null default now()
);

create table workers (
    id uuid primary key,
    name text not null,
    hostname text not null,
    agents text[] not null,
    slots integer not null check (slots >= 0),
    free_slots integer not null default 0,
    running integer not null default 0,
    cpu_percent double precision,
    memory_used_bytes bigint,
    memory_total_bytes bigint,
    version text not null default '',
    registered_at timestamptz not null default now(),
    last_seen_at timestamptz not null default now()
);

create table tasks (
    id uuid primary key,
    swarm_id uuid not null references swarms (id),
    key text,
    agent text not null check (agent <> ''),
    prompt text not null,
    input jsonb,
    priority integer not null default 0,
    status task_status not null,
    max_attempts integer not null check (max_attempts >= 1),
    attempts integer not null default 0 check (attempts >= 0),
    current_attempt uuid,
    worker_id uuid,
    lease_expires_at timestamptz,
    run_after timestamptz not null default now(),
    timeout_ms bigint check (timeout_ms > 0),
    result jsonb,
    error text,
    log_bytes bigint not null default 0,
    log_truncated boolean not null default false,
    created_at timestamptz not null default now(),
    started_at timestamptz,
    finished_at timestamptz,
    updated_at timestamptz not null default now(),
    unique (swarm_id, key),
    check ((status = 'running') = (lease_expires_at is not null))
);

-- The claim reads only ready rows, in claim order, so its cost does not grow with history.
create index tasks_ready_idx on tasks (priority desc, id) where status = 'ready';
-- The lease reaper and heartbeats touch only running rows.
create index tasks_running_lease_idx on tasks (lease_expires_at) where status = 'running';
create index tasks_running_attempt_idx on tasks (current_attempt) where status = 'running';
create index tasks_swarm_status_idx on tasks (swarm_id, status);

create table attempts (
    id uuid primary key,
    task_id uuid not null references tasks (id) on delete cascade,
    number integer not null check (number >= 1),
    worker_id uuid not null,
    started_at timestamptz not null default now(),
    finished_at timestamptz,
    outcome attempt_outcome not null default 'running',
    exit_code integer,
    signal integer,
    error text,
    unique (task_id, number)
);

create table task_logs (
    id bigint generated always as identity primary key,
    task_id uuid not null references tasks (id) on delete cascade,
    attempt_id uuid not null,
    seq bigint not null check (seq >= 0),
    stream smallint not null check (stream in (1, 2, 3)),
    data bytea not null,
    created_at timestamptz not null default now(),
    unique (attempt_id, seq, stream)
);

create index task_logs_task_idx on task_logs (task_id, id);
