-- The event log: what happened, in order, for `Watch` and everything built
-- on it. A statement that changes state appends one row per kind of event
-- it causes, holding the whole batch (a claim of 500 tasks appends one
-- `task.started` row with 500 events): one element per event in each of its
-- arrays that the kind uses. Rows are numbered after they commit, by the
-- sequencer (one coordinator at a time), so a reader that saw event N sees
-- every later event numbered above N, and never one below it.
create table events (
    -- Order of insertion (not of commit), for the sequencer.
    id bigint generated always as identity primary key,
    -- The number of the row's first event, set by the sequencer; its
    -- events are numbered seq to last_seq, and the next row's follow on.
    seq bigint,
    -- How many events the row holds: the length of its arrays.
    n integer generated always as
        (greatest(cardinality(task_ids), cardinality(worker_ids), cardinality(details), 1)) stored,
    last_seq bigint generated always as
        (seq + greatest(cardinality(task_ids), cardinality(worker_ids), cardinality(details), 1) - 1) stored,
    -- When the writing transaction began.
    at timestamptz not null default now(),
    -- A dotted name: `task.started`, `worker.lost`, `swarm.finished`.
    kind text not null,
    task_ids uuid[],
    swarm_ids uuid[],
    worker_ids uuid[],
    attempts integer[],
    -- A small JSON object per event saying what else it knows (an error, a
    -- delay, who acted), or null.
    details jsonb[],
    constraint events_something check (task_ids is not null or worker_ids is not null or details is not null),
    constraint events_arrays_agree check (
        (task_ids is null or cardinality(task_ids) = n) and (swarm_ids is null or cardinality(swarm_ids) = n)
        and (worker_ids is null or cardinality(worker_ids) = n) and (attempts is null or cardinality(attempts) = n)
        and (details is null or cardinality(details) = n))
);

-- Task ids are random: stored out of line without trying to compress
-- them. The other arrays repeat (a batch's tasks mostly share a swarm, a
-- claim's or a completion's share a worker) and compress to little.
alter table events alter column task_ids set storage external;

-- Readers walk numbered rows by their last event; the sequencer finds the
-- rows not numbered yet.
create unique index events_last_seq_idx on events (last_seq) where seq is not null;
create index events_unnumbered_idx on events (id) where seq is null;

-- One row: the newest event numbered, and the oldest still kept (rows
-- before it were removed by `events.retention`).
create table event_head (
    one boolean primary key default true check (one),
    last_seq bigint not null default 0,
    first_seq bigint not null default 1
);
insert into event_head default values;

-- Whether this session writes task events: on unless the coordinator set
-- `hive.task_events` to `off` on its connections (`events.tasks = false`).
create function task_events_on() returns boolean
language sql stable as $$ select current_setting('hive.task_events', true) is distinct from 'off' $$;

-- Kept by the sequencer from the task events it numbers, and written by
-- nothing else but a budget change (one row), so it never waits on a
-- completion: per swarm, how many of its tasks are unfinished
-- (`swarm.finished` when an ending brings it to 0), and whether
-- `swarm.budget_exhausted` was announced (again only after a raise).
create table swarm_progress (
    swarm_id uuid primary key references swarms (id),
    unfinished bigint not null default 0,
    budget_exhausted boolean not null default false
);
insert into swarm_progress (swarm_id, unfinished, budget_exhausted)
select w.id, (select count(*) from task_states s where s.swarm_id = w.id and s.finished_at is null),
       coalesce(w.spent >= w.budget, false)
from swarms w;

-- When a worker was last found gone (drained and stopped beating) or lost
-- (not seen for a lease); cleared when it registers or beats again.
alter table workers add column gone_at timestamptz;
update workers set gone_at = now() where last_seen_at < now() - interval '5 minutes';
