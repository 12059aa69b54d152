-- Attempts of the task lost with their worker since it was last queued
-- afresh (submitted, or retried from the dead-letter queue): counted against
-- tasks.max_lost_attempts, as `failures` is against max_attempts.
alter table task_states add column losses integer not null default 0 check (losses >= 0);
update task_states s set losses = lost.n
from (select task_id, count(*)::int as n from attempts where outcome = 'lost' group by task_id) lost
where s.task_id = lost.task_id and s.status not in ('succeeded', 'dead', 'cancelled');
