-- Probe for "What comes next" in BENCHMARKS.md: the claim's and the
-- completion's updates on the 52-column task row, against the same updates
-- on an 18-column state row with the same three indexes (the columns those
-- updates change, split from the task's write-once specification).
--
--   psql "$DATABASE_URL" -f bench/probes/narrow_row.sql | grep "Execution Time"
--
-- Needs a database the coordinator has migrated. Prints, ten times: the
-- claim on `tasks`, the completion on `tasks`, the claim on the state
-- table, the completion on it (500 rows each). Adds 100,000 ready tasks in
-- a swarm of its own and a table, committed and vacuumed as a real queue
-- would be (rows inserted by the measuring transaction itself would fire
-- the swarm foreign key's check on every update), and removes both at the end.
\set ON_ERROR_STOP on
insert into swarms (id, name) values ('00000000-0000-0000-0000-00000000abcd', 'narrow-row-probe');
insert into tasks (id, swarm_id, agent, prompt, status, max_attempts)
select (lpad(to_hex(i), 8, '0') || '-0000-7000-8000-00000000abcd')::uuid,
       '00000000-0000-0000-0000-00000000abcd', 'noop', i::text, 'ready', 3
from generate_series(1, 100000) i;
create table probe_state (
    id uuid primary key, swarm_id uuid not null, status task_status not null, priority int not null default 0,
    run_after timestamptz not null default now(), run_agent text not null, has_locks bool not null default false,
    has_labels bool not null default false, attempts int not null default 0, failures int not null default 0,
    current_attempt uuid, worker_id uuid, lease_expires_at timestamptz, attempt_deadline timestamptz,
    started_at timestamptz, attempt_started_at timestamptz, finished_at timestamptz,
    updated_at timestamptz not null default now()
) with (fillfactor = 50);
create index on probe_state (priority desc, id) where status = 'ready' and not has_locks;
create index on probe_state (swarm_id, status);
create index on probe_state (worker_id, least(lease_expires_at, attempt_deadline)) where lease_expires_at is not null;
insert into probe_state (id, swarm_id, status, run_agent)
select id, swarm_id, status, run_agent from tasks where swarm_id = '00000000-0000-0000-0000-00000000abcd';
vacuum analyze tasks;
vacuum analyze probe_state;
begin;

-- The same two statements for each table, as `claim_<table>` and `complete_<table>`.
select format($sql$
    prepare claim_%1$s as
        with picked as (select id from %1$s where status = 'ready' and not has_locks
                        order by priority desc, id limit 500 for update skip locked)
        update %1$s t set status = 'running', attempts = t.attempts + 1, current_attempt = gen_random_uuid(),
            worker_id = '00000000-0000-0000-0000-00000000abce', lease_expires_at = now() + interval '30 s',
            attempt_deadline = now() + interval '1 h', started_at = coalesce(t.started_at, now()),
            attempt_started_at = now(), updated_at = now()
        where t.id = any(array(select id from picked))
    $sql$, name),
    format($sql$
    prepare complete_%1$s as
        update %1$s t set status = 'succeeded', finished_at = now(), lease_expires_at = null,
            attempt_deadline = null, updated_at = now()
        where t.status = 'running' and t.swarm_id = '00000000-0000-0000-0000-00000000abcd'
    $sql$, name)
from unnest(array['tasks', 'probe_state']) as name
\gexec

\set round 'savepoint probe; explain (analyze, timing off, costs off, summary on) execute claim_tasks; explain (analyze, timing off, costs off, summary on) execute complete_tasks; rollback to probe; explain (analyze, timing off, costs off, summary on) execute claim_probe_state; explain (analyze, timing off, costs off, summary on) execute complete_probe_state; rollback to probe;'
:round
:round
:round
:round
:round
:round
:round
:round
:round
:round
rollback;
delete from tasks where swarm_id = '00000000-0000-0000-0000-00000000abcd';
delete from swarms where id = '00000000-0000-0000-0000-00000000abcd';
drop table probe_state;
