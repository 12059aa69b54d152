-- Concurrency keys: a task may name keys (a repository, a customer), each
-- with a limit; a claim takes a task only while every one of its keys has
-- fewer running holders than its limit, atomically across coordinators.
-- A key's holders are the running (or cancelling) tasks that took it, kept
-- on the key's row: claims lock the rows they take from in key order (so
-- they never deadlock) and read the latest holders under that lock.
alter table tasks add column concurrency_keys text[] not null default '{}';
alter table task_states add column has_keys boolean not null default false;

create table concurrency_slots (
    key text primary key,
    -- The limit the key's latest submitted task gave.
    max_running integer not null check (max_running >= 1),
    holders uuid[] not null default '{}'
);

-- The keys with no room left, which claims skip without looking at their tasks.
create index concurrency_slots_full_idx on concurrency_slots (key) where cardinality(holders) >= max_running;

-- A task that stops running gives back its keys, however it stopped (a
-- report, a reaped lease, a validator stage): one rule for every statement
-- that ends an attempt. Tasks without keys never call it.
create function release_concurrency_slots() returns trigger language plpgsql as $$
begin
    perform 1 from concurrency_slots c
    where c.key = any((select t.concurrency_keys from tasks t where t.id = old.task_id)::text[])
    order by c.key
    for update;
    update concurrency_slots c
    set holders = array_remove(c.holders, old.task_id)
    where c.key = any((select t.concurrency_keys from tasks t where t.id = old.task_id)::text[]);
    return null;
end
$$;

create trigger task_states_release_slots
    after update of status on task_states
    for each row
    when (old.has_keys and old.status in ('running', 'cancelling') and new.status not in ('running', 'cancelling'))
    execute function release_concurrency_slots();

-- Fairness between swarms: a task's place in its swarm, counted from the
-- head of the ready queue at its priority when the swarm was submitted.
-- Claims order by priority, then this, so a small swarm submitted behind a
-- huge one interleaves with it instead of waiting for all of it. Tasks
-- queued before this migration keep their order (all 0, then by id).
alter table task_states add column fair_seq bigint not null default 0;
drop index task_states_claim_idx;
create index task_states_claim_idx on task_states (priority desc, fair_seq, task_id)
    where status = 'ready' and not has_locks;
