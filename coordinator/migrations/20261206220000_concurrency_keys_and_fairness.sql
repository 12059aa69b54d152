-- Concurrency keys: a task may name keys (a repository, a customer), each
-- with a limit; a claim takes a task only while every one of its keys has
-- fewer running holders than its limit, atomically across coordinators.
-- A key's row lists the attempts claimed under it (`holders`, with their
-- tasks in `holder_tasks`); those that have not ended hold it. Only claims
-- write the row: they lock the rows they take from in key order, drop the
-- holders whose attempt has ended (it is in `attempts`; one that ended
-- after the claim's snapshot still counts, which only ever admits fewer)
-- and add the attempts they start. Ending an attempt writes nothing here,
-- so it never waits on a key, and claims lock nothing but key rows and
-- the tasks they take.
alter table tasks add column concurrency_keys text[] not null default '{}';
alter table task_states add column has_keys boolean not null default false;

create table concurrency_slots (
    key text primary key,
    -- The limit the key's first submitted task gave (an admin may change it).
    max_running integer not null check (max_running >= 1),
    -- Attempts claimed under the key, as of its last claim, and their tasks.
    holders uuid[] not null default '{}',
    holder_tasks uuid[] not null default '{}',
    constraint concurrency_slots_holders check (cardinality(holders) = cardinality(holder_tasks))
);

-- A key's holders but those whose attempt has ended (is in `attempts`, as
-- of the calling statement's snapshot).
create function unended_holders(attempt_ids uuid[], task_ids uuid[], out holders uuid[], out holder_tasks uuid[])
language sql stable as $$
    select coalesce(array_agg(h.attempt), '{}'), coalesce(array_agg(h.task), '{}')
    from unnest(attempt_ids, task_ids) as h(attempt, task)
    where not exists(select 1 from attempts a where a.task_id = h.task and a.id = h.attempt)
$$;

-- The keys whose holders fill them (some may have ended), which claims
-- check first.
create index concurrency_slots_full_idx on concurrency_slots (key) where cardinality(holders) >= max_running;

-- Fairness between swarms: a task's place in its swarm, counted from the
-- head of the ready queue at its priority when the swarm was submitted.
-- Claims order by priority, then this, so a small swarm submitted behind a
-- huge one interleaves with it instead of waiting for all of it. Tasks
-- queued before this migration keep their order (all 0, then by id).
alter table task_states add column fair_seq bigint not null default 0;
drop index task_states_claim_idx;
create index task_states_claim_idx on task_states (priority desc, fair_seq, task_id)
    where status = 'ready' and not has_locks;
