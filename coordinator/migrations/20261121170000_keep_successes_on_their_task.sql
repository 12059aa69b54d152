-- A task's successful attempt stays on its task row, where it ran: the row
-- already holds its id (current_attempt), number (attempts), worker, stage,
-- start (attempt_started_at) and end (finished_at), and now its session and
-- usage. Writing it out to a row of its own at the completion cost a heap
-- insert and an index entry per task (a seventh of the completion's time,
-- a third of its WAL: 227 of 661 bytes per task in `EXPLAIN (ANALYZE, WAL)`
-- of 500 completions). Attempts that end otherwise — failed, lost, handed
-- back, cancelled, a builder stage passed — are still written out when they
-- end, to `past_attempts`; a succeeded task never runs again, so its row's
-- attempt is never overwritten.
--
-- `attempts` is now a view of every attempt: the past ones, the running ones
-- and the successes, both read from their task rows.
alter table attempts rename to past_attempts;
alter index attempts_pkey rename to past_attempts_pkey;

alter table tasks
    add column attempt_session_id text,
    add column attempt_input_tokens bigint,
    add column attempt_output_tokens bigint,
    add column attempt_cost double precision;

-- Successes already written out move back onto their task rows.
update tasks t
set current_attempt = a.id, worker_id = a.worker_id, attempt_started_at = a.started_at,
    attempt_session_id = a.session_id, attempt_input_tokens = a.input_tokens,
    attempt_output_tokens = a.output_tokens, attempt_cost = a.cost
from past_attempts a
where a.task_id = t.id and a.number = t.attempts and a.outcome = 'succeeded'
  and t.status = 'succeeded' and t.validate_agent is null;

delete from past_attempts a
using tasks t
where a.task_id = t.id and a.number = t.attempts and a.outcome = 'succeeded'
  and t.status = 'succeeded' and t.validate_agent is null;

create view attempts as
select id, task_id, number, worker_id, stage, started_at, finished_at, outcome, exit_code, signal, error, result,
       session_id, input_tokens, output_tokens, cost
from past_attempts
union all
select current_attempt, id, attempts, worker_id, stage, attempt_started_at,
       case when status = 'succeeded' then finished_at end,
       (case when status = 'succeeded' then 'succeeded' else 'running' end)::attempt_outcome,
       null::integer, null::integer, null::text, null::jsonb,
       attempt_session_id, attempt_input_tokens, attempt_output_tokens, attempt_cost
from tasks
where status in ('running', 'cancelling') or (status = 'succeeded' and validate_agent is null);
