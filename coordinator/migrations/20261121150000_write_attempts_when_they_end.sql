-- An attempt's row is written once, when the attempt ends, with its outcome:
-- the running attempt lives on its task row (current_attempt, worker_id,
-- attempts as its number, stage, and now attempt_started_at). Inserting the
-- row at the claim and updating it at the end cost a second row version per
-- task and a fifth of PostgreSQL's CPU per task drained (claim and complete
-- of 256 tasks at a time, pgbench, three alternating pairs).
alter table tasks add column attempt_started_at timestamptz;

update tasks t set attempt_started_at = a.started_at
from attempts a
where a.id = t.current_attempt and t.status in ('running', 'cancelling');

delete from attempts a
using tasks t
where a.id = t.current_attempt and t.status in ('running', 'cancelling') and a.outcome = 'running';

-- Rows are only inserted now, complete: pages are filled.
alter table attempts set (fillfactor = 100);
alter table attempts alter column outcome drop default;

-- One index per attempt row: attempts are found by task (history, sessions,
-- acks for repeated reports, which know their task too), never by id alone.
alter table attempts drop constraint attempts_pkey;
alter table attempts drop constraint attempts_task_id_number_key;
alter table attempts add primary key (task_id, number);

-- Room on each page for a task's next versions: a claim and a completion
-- each write a new version of the row, and one that does not fit on its page
-- goes elsewhere after a WAL record locking the old one (1.6 such records per
-- task, with most of the drain's full-page images; WAL per task 1,835 →
-- 1,650 bytes with half of each page left free, pgbench of claim+complete).
alter table tasks set (fillfactor = 50);
