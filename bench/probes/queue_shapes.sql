-- Probe for "What comes next" in BENCHMARKS.md: six shapes of the queue,
-- each drained of 20,000 no-op tasks by one backend, 500 at a time (a claim
-- statement, then a completion statement, each its own durable commit),
-- after a CHECKPOINT, as the drain workload does.
--
--   a: today's: the claim and the completion each update the task row
--      (52 columns, fillfactor 50) and write index entries.
--   b: a's task row without status or lease in any index (generated
--      `ready`/`dead` flags in the partial indexes, swarm_id alone), the
--      lease in a narrow table of its own: the completion's update of the
--      task row is HOT, the claim inserts a lease row, the completion deletes it.
--   c: graphile-worker's shape plus a record: a narrow queue row that the
--      claim updates and the completion deletes, and the task row, whose
--      indexes never see a change after submission, so writing its outcome
--      is a HOT update.
--   d: c, with the outcome inserted into a narrow table of results instead
--      of written onto the task row, which is never updated after submission.
--   e: d without the record: the completion only deletes the queue row
--      (graphile-worker's completion), for scale.
--   n: the task's changing columns split into a narrow state row, one per
--      task, that the claim and the completion both update (the write-once
--      specification in a table of its own, never written).
--
--   for s in a b c d e n a b c d e n; do
--     psql "$DATABASE_URL" -v shape=$s -f bench/probes/queue_shapes.sql 2>&1 | awk -v s=$s \
--       '/^Time/ {t[(n++)%3]+=$2} /^ *[0-9]+ \|/ {r=$0} END {printf "%s claim %.0f ms, complete %.0f ms, %s\n", s, t[0], t[1], r}'
--   done
--
-- Needs a database the coordinator has migrated (the tables copy `tasks`).
-- Prints the time of each statement, then: total ms, WAL bytes per job,
-- successes recorded, HOT updates and updates of the task table.
\set ON_ERROR_STOP on
\set QUIET on
\pset footer off
drop table if exists qa, qb, qc, qd, qe, qn, sn, queue_c, results_d, leases_b, batch;
create table qa (like tasks including defaults including generated including constraints including indexes) with (fillfactor = 50);
create table qb (like tasks including defaults including generated) with (fillfactor = 50);
alter table qb add primary key (id);
alter table qb add column ready bool generated always as (status = 'ready') stored;
alter table qb add column dead bool generated always as (status = 'dead') stored;
create index on qb (priority desc, id) where ready and not has_locks;
create index on qb (priority desc, id) where ready and has_locks;
create index on qb using gin (locks) where ready;
create index on qb (id) where dead;
create unique index on qb (swarm_id, key) where key is not null;
create index on qb (swarm_id);
create table leases_b (task_id uuid primary key, worker_id uuid not null, attempt_id uuid not null,
                       expires_at timestamptz not null, deadline timestamptz not null);
create index on leases_b (worker_id, least(expires_at, deadline));
create table qc (like tasks including defaults including generated) with (fillfactor = 50);
alter table qc add primary key (id);
alter table qc add column dead bool generated always as (status = 'dead') stored;
create index on qc (id) where dead;
create unique index on qc (swarm_id, key) where key is not null;
create index on qc (swarm_id);
create table queue_c (task_id uuid primary key, priority int not null default 0, run_after timestamptz not null default now(),
    has_locks bool not null default false, run_agent text not null, swarm_id uuid not null, worker_id uuid, attempt_id uuid,
    attempts int not null default 0, expires_at timestamptz, deadline timestamptz, started_at timestamptz);
create index on queue_c (priority desc, task_id) where worker_id is null and not has_locks;
create index on queue_c (worker_id, least(expires_at, deadline)) where worker_id is not null;
create table qd (like qc including all);
create table qe (like qc including all);
create table results_d (task_id uuid primary key, attempt_id uuid not null, attempts int not null, worker_id uuid not null,
    started_at timestamptz not null, finished_at timestamptz not null, result jsonb);
create table batch (id uuid primary key);
create table qn (like qc including all);
create table sn (
    id uuid primary key, swarm_id uuid not null, status task_status not null, priority int not null default 0,
    run_after timestamptz not null default now(), run_agent text not null, has_locks bool not null default false,
    has_labels bool not null default false, waiting_on int not null default 0, attempts int not null default 0, failures int not null default 0,
    current_attempt uuid, worker_id uuid, lease_expires_at timestamptz, attempt_deadline timestamptz,
    started_at timestamptz, attempt_started_at timestamptz, finished_at timestamptz,
    result jsonb, error text, input_tokens bigint not null default 0, output_tokens bigint not null default 0, cost float8 not null default 0,
    attempt_session_id text, attempt_input_tokens bigint, attempt_output_tokens bigint, attempt_cost float8,
    updated_at timestamptz not null default now()
) with (fillfactor = 50);
create index on sn (priority desc, id) where status = 'ready' and not has_locks;
create index on sn (swarm_id, status);
create index on sn (worker_id, least(lease_expires_at, attempt_deadline)) where lease_expires_at is not null;
insert into q:shape (id, swarm_id, agent, prompt, status, max_attempts)
select (lpad(to_hex(i), 8, '0') || '-0000-7000-8000-00000000abcd')::uuid,
       '00000000-0000-0000-0000-000000000001', 'noop', i::text, 'ready', 3
from generate_series(1, 20000) i;
insert into queue_c (task_id, run_agent, swarm_id) select id, 'noop', swarm_id from q:shape where :'shape' in ('c', 'd', 'e');
vacuum analyze q:shape;
insert into sn (id, swarm_id, status, run_agent) select id, swarm_id, 'ready', 'noop' from q:shape where :'shape' = 'n';
vacuum analyze sn;
vacuum analyze queue_c;
vacuum analyze leases_b;
checkpoint;
select pg_current_wal_lsn() as lsn0, clock_timestamp() as t0 \gset
select case when :'shape' = 'a' then $a$
  with picked as (select id from qa where status = 'ready' and not has_locks order by priority desc, id limit 500 for update skip locked),
  c as (update qa t set status = 'running', attempts = t.attempts + 1, current_attempt = gen_random_uuid(),
     worker_id = '00000000-0000-0000-0000-00000000abce', lease_expires_at = now() + interval '30 s',
     attempt_deadline = now() + interval '1 h', started_at = coalesce(t.started_at, now()), attempt_started_at = now(), updated_at = now()
     where t.id = any(array(select id from picked)) returning t.id)
  insert into batch select id from c $a$ when :'shape' = 'n' then $n$
  with picked as (select id from sn where status = 'ready' and not has_locks order by priority desc, id limit 500 for update skip locked),
  c as (update sn t set status = 'running', attempts = t.attempts + 1, current_attempt = gen_random_uuid(),
     worker_id = '00000000-0000-0000-0000-00000000abce', lease_expires_at = now() + interval '30 s',
     attempt_deadline = now() + interval '1 h', started_at = coalesce(t.started_at, now()), attempt_started_at = now(), updated_at = now()
     where t.id = any(array(select id from picked)) returning t.id)
  insert into batch select s.id from c join qn s on s.id = c.id $n$ when :'shape' = 'b' then $b$
  with picked as (select id from qb where ready and not has_locks order by priority desc, id limit 500 for update skip locked),
  c as (update qb t set status = 'running', attempts = t.attempts + 1, current_attempt = gen_random_uuid(),
     worker_id = '00000000-0000-0000-0000-00000000abce', started_at = coalesce(t.started_at, now()), attempt_started_at = now(), updated_at = now()
     where t.id = any(array(select id from picked)) returning t.id, t.current_attempt),
  l as (insert into leases_b select id, '00000000-0000-0000-0000-00000000abce', current_attempt, now() + interval '30 s', now() + interval '1 h' from c)
  insert into batch select id from c $b$ when :'shape' in ('c', 'd', 'e') then replace($c$
  with picked as (select task_id from queue_c where worker_id is null and not has_locks order by priority desc, task_id limit 500 for update skip locked),
  c as (update queue_c q set worker_id = '00000000-0000-0000-0000-00000000abce', attempt_id = gen_random_uuid(), attempts = q.attempts + 1,
     expires_at = now() + interval '30 s', deadline = now() + interval '1 h', started_at = now()
     where q.task_id = any(array(select task_id from picked)) returning q.task_id)
  insert into batch select t.id from c join q_task t on t.id = c.task_id $c$, 'q_task', 'q' || :'shape') end as claim,
  case when :'shape' = 'a' then $a$
  update qa t set status = 'succeeded', result = '{}', finished_at = now(), lease_expires_at = null, attempt_deadline = null, updated_at = now()
  from batch b where t.id = b.id and t.status = 'running' $a$ when :'shape' = 'n' then $n$
  update sn t set status = 'succeeded', result = '{}', finished_at = now(), lease_expires_at = null, attempt_deadline = null, updated_at = now()
  from batch b where t.id = b.id and t.status = 'running' $n$ when :'shape' = 'b' then $b$
  with d as (delete from leases_b l using batch b where l.task_id = b.id returning l.task_id)
  update qb t set status = 'succeeded', result = '{}', finished_at = now(), updated_at = now()
  from d where t.id = d.task_id $b$ when :'shape' = 'c' then $c$
  with d as (delete from queue_c q using batch b where q.task_id = b.id returning q.task_id, q.attempt_id, q.attempts, q.started_at, q.worker_id)
  update qc t set status = 'succeeded', result = '{}', finished_at = now(), updated_at = now(), current_attempt = d.attempt_id,
     attempts = d.attempts, attempt_started_at = d.started_at, started_at = coalesce(t.started_at, d.started_at), worker_id = d.worker_id
  from d where t.id = d.task_id $c$ when :'shape' = 'd' then $d$
  with d as (delete from queue_c q using batch b where q.task_id = b.id returning q.task_id, q.attempt_id, q.attempts, q.started_at, q.worker_id)
  insert into results_d select d.task_id, d.attempt_id, d.attempts, d.worker_id, d.started_at, now(), '{}' from d $d$ else $e$
  delete from queue_c q using batch b where q.task_id = b.id $e$ end as complete \gset
-- As the coordinator's hot path runs them: driven by the batch, row by row.
set enable_seqscan = off;
set enable_mergejoin = off;
set enable_hashjoin = off;
\timing on
select format('%s;', :'claim'), format('%s;', :'complete'), 'truncate batch;' from generate_series(1, 40) \gexec
\timing off
select round(extract(epoch from clock_timestamp() - :'t0') * 1000) as ms,
       (pg_current_wal_lsn() - :'lsn0') / 20000 as wal_per_job \gset
select pg_stat_force_next_flush();
select :ms as ms, round(:wal_per_job) as wal_per_job, (select count(*) from q:shape where status = 'succeeded') + (select count(*) from results_d) + (select count(*) from sn where status = 'succeeded') as recorded,
       (select n_tup_hot_upd from pg_stat_user_tables where relname = 'q' || :'shape') as hot,
       (select n_tup_upd from pg_stat_user_tables where relname = 'q' || :'shape') as upd;
drop table qa, qb, qc, qd, qe, qn, sn, queue_c, results_d, leases_b, batch;
