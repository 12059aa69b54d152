-- Each swarm's first start, last finish and token totals, kept up to date,
-- so its progress (`hivectl status`, the dashboard's swarm page) reads no
-- task and no attempt.
--
-- Tokens are added to the swarm's row by the statements that append
-- attempts, where they add the attempt's cost to `spent`.
--
-- Times come with the task-count changes: the statement triggers append,
-- with each change, the earliest start and the latest finish among the rows
-- it wrote; the fold (`db::metrics::fold_task_counts`) keeps the earliest
-- and the latest per swarm in `swarm_times`, and the view `swarm_spans`
-- adds the changes not folded yet, as `swarm_totals` does for counts.

-- The triggers are made again first: dropping them locks task_states until
-- this migration commits, so no writer's start or finish falls between the
-- times taken below and the changes appended after it.
drop trigger task_states_count_inserts on task_states;
drop trigger task_states_count_updates on task_states;
drop trigger task_states_count_deletes on task_states;

alter table task_count_changes
    add column first_started_at timestamptz,
    add column last_finished_at timestamptz;

create or replace function count_task_changes() returns trigger
language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into task_count_changes (swarm_id, agent, status, change, first_started_at, last_finished_at)
        select swarm_id, run_agent, status, count(*), min(started_at), max(finished_at)
        from new_rows group by swarm_id, run_agent, status;
    elsif tg_op = 'UPDATE' then
        -- A start or a finish always comes with a change of status, so the
        -- rows whose counts net to nothing (a heartbeat's) carry none.
        insert into task_count_changes (swarm_id, agent, status, change, first_started_at, last_finished_at)
        select c.swarm_id, c.agent, c.status, sum(c.change), min(c.started_at), max(c.finished_at)
        from (select swarm_id, run_agent, status, 1, started_at, finished_at from new_rows
              union all
              select swarm_id, run_agent, status, -1, null, null from old_rows)
            as c (swarm_id, agent, status, change, started_at, finished_at)
        group by c.swarm_id, c.agent, c.status
        having sum(c.change) <> 0;
    else
        insert into task_count_changes (swarm_id, agent, status, change)
        select swarm_id, run_agent, status, -count(*) from old_rows group by swarm_id, run_agent, status;
    end if;
    return null;
end
$$;

create trigger task_states_count_inserts after insert on task_states
    referencing new table as new_rows
    for each statement execute function count_task_changes();
create trigger task_states_count_updates after update on task_states
    referencing old table as old_rows new table as new_rows
    for each statement execute function count_task_changes();
create trigger task_states_count_deletes after delete on task_states
    referencing old table as old_rows
    for each statement execute function count_task_changes();

-- The earliest start and the latest finish among a swarm's tasks, ever:
-- a finish a retry undid still counts.
create table swarm_times (
    swarm_id uuid primary key references swarms (id),
    first_started_at timestamptz,
    last_finished_at timestamptz
);

insert into swarm_times (swarm_id, first_started_at, last_finished_at)
select swarm_id, min(started_at), max(finished_at) from task_states
group by swarm_id
having min(started_at) is not null or max(finished_at) is not null;

create view swarm_spans as
select c.swarm_id, min(c.first_started_at) as first_started_at, max(c.last_finished_at) as last_finished_at
from (select swarm_id, first_started_at, last_finished_at from swarm_times
      union all
      select swarm_id, first_started_at, last_finished_at from task_count_changes) as c
group by c.swarm_id;

-- A total plus more tokens, held at the largest bigint: agents report up to
-- that many per attempt, and a swarm's total must not overflow (and fail
-- the completion that adds to it). Inlined where it is called.
create function add_tokens(total bigint, more numeric) returns bigint
language sql immutable parallel safe
return least(total::numeric + more, 9223372036854775807)::bigint;

-- Attempts are appended under this lock's hold-off too (no insert until
-- this migration commits), so the totals below miss none.
lock table attempts in share mode;

alter table swarms
    add column input_tokens bigint not null default 0,
    add column output_tokens bigint not null default 0;

update swarms w set input_tokens = add_tokens(0, u.input_tokens), output_tokens = add_tokens(0, u.output_tokens)
from (select t.swarm_id, coalesce(sum(a.input_tokens), 0) as input_tokens,
             coalesce(sum(a.output_tokens), 0) as output_tokens
      from attempts a join tasks t on t.id = a.task_id
      group by t.swarm_id) u
where w.id = u.swarm_id;
