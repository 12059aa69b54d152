-- Reliability: failures counted apart from attempt numbers (hand-backs and
-- cancels do not spend a task's budget), per-task backoff, a coordinator-side
-- deadline per attempt, leases for cancelling tasks, and pending commands for
-- workers (drain, stop).

alter table tasks
    add column failures integer not null default 0 check (failures >= 0),
    add column backoff_initial_ms bigint check (backoff_initial_ms >= 0),
    add column backoff_max_ms bigint check (backoff_max_ms >= 0),
    add column backoff_multiplier double precision check (backoff_multiplier >= 1),
    add column attempt_deadline timestamptz;

update tasks set failures = greatest(attempts - 1, 0) where status = 'dead';

-- A lease is held exactly while the task is running or being cancelled.
alter table tasks drop constraint tasks_check;
alter table tasks add constraint tasks_lease_held
    check ((status in ('running', 'cancelling')) = (lease_expires_at is not null));

drop index tasks_running_lease_idx;
drop index tasks_running_attempt_idx;
create index tasks_leased_idx on tasks (lease_expires_at) where lease_expires_at is not null;
create index tasks_deadline_idx on tasks (attempt_deadline) where lease_expires_at is not null;
create index tasks_leased_attempt_idx on tasks (current_attempt) where lease_expires_at is not null;
create index tasks_leased_worker_idx on tasks (worker_id) where lease_expires_at is not null;
create index tasks_dead_idx on tasks (id) where status = 'dead';

alter table workers
    add column draining boolean not null default false,
    add column command text check (command in ('drain', 'stop'));
