-- Tasks counted by swarm and status too, so the dashboard shows each
-- swarm's progress without counting its tasks. The statement triggers
-- append each change with its swarm; the fold (`db::metrics::fold_task_counts`)
-- adds the changes to both `task_counts` (by agent and status, what
-- `/metrics` reads) and `swarm_counts` (by swarm and status). The view
-- `swarm_totals` adds the changes not folded yet, as `task_totals` does.
-- The newest swarms come from `swarms_created_idx`.

-- The triggers are made again (as they were) first: dropping them locks
-- task_states until this migration commits, so no writer's changes fall
-- between the count below and the changes appended after it.
drop trigger task_states_count_inserts on task_states;
drop trigger task_states_count_updates on task_states;
drop trigger task_states_count_deletes on task_states;
create trigger task_states_count_inserts after insert on task_states
    referencing new table as new_rows
    for each statement execute function count_task_changes();
create trigger task_states_count_updates after update on task_states
    referencing old table as old_rows new table as new_rows
    for each statement execute function count_task_changes();
create trigger task_states_count_deletes after delete on task_states
    referencing old table as old_rows
    for each statement execute function count_task_changes();

-- What is pending goes into the agent counts first, so they stay exact.
insert into task_counts as c (agent, status, tasks)
select agent, status, sum(change)::bigint from task_count_changes group by agent, status
on conflict (agent, status) do update set tasks = c.tasks + excluded.tasks;
delete from task_count_changes;
alter table task_count_changes add column swarm_id uuid not null;

create table swarm_counts (
    swarm_id uuid not null,
    status task_status not null,
    tasks bigint not null,
    primary key (swarm_id, status)
);

insert into swarm_counts (swarm_id, status, tasks)
select swarm_id, status, count(*) from task_states group by swarm_id, status;

create or replace function count_task_changes() returns trigger
language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into task_count_changes (swarm_id, agent, status, change)
        select swarm_id, run_agent, status, count(*) from new_rows group by swarm_id, run_agent, status;
    elsif tg_op = 'UPDATE' then
        insert into task_count_changes (swarm_id, agent, status, change)
        select c.swarm_id, c.agent, c.status, sum(c.change)
        from (select swarm_id, run_agent, status, 1 from new_rows
              union all
              select swarm_id, run_agent, status, -1 from old_rows) as c (swarm_id, agent, status, change)
        group by c.swarm_id, c.agent, c.status
        having sum(c.change) <> 0;
    else
        insert into task_count_changes (swarm_id, agent, status, change)
        select swarm_id, run_agent, status, -count(*) from old_rows group by swarm_id, run_agent, status;
    end if;
    return null;
end
$$;

create view swarm_totals as
select c.swarm_id, c.status, sum(c.tasks)::bigint as tasks
from (select swarm_id, status, tasks from swarm_counts
      union all
      select swarm_id, status, change from task_count_changes) as c
group by c.swarm_id, c.status;

create index swarms_created_idx on swarms (created_at desc, id);
