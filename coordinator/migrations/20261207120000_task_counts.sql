-- Tasks counted by agent and status, kept up to date, so that `/metrics`
-- (and the dashboard) never count the tasks themselves.
--
-- Each statement that inserts, updates or deletes `task_states` rows
-- appends its rows' net change, by agent (`run_agent`) and status, to
-- `task_count_changes`, through the statement triggers below. Appending
-- means concurrent transitions never wait on one another; a statement
-- that changes no status or agent (a heartbeat) appends nothing. The event
-- sequencer's leader folds the changes into `task_counts` every second
-- (`db::metrics::fold_task_counts`), and the view `task_totals` adds the
-- changes not folded yet, so it is exact in every snapshot.

create table task_counts (
    agent text not null,
    status task_status not null,
    tasks bigint not null,
    primary key (agent, status)
);

create table task_count_changes (
    agent text not null,
    status task_status not null,
    change bigint not null
);

create function count_task_changes() returns trigger
language plpgsql as $$
begin
    if tg_op = 'INSERT' then
        insert into task_count_changes (agent, status, change)
        select run_agent, status, count(*) from new_rows group by run_agent, status;
    elsif tg_op = 'UPDATE' then
        insert into task_count_changes (agent, status, change)
        select c.agent, c.status, sum(c.change)
        from (select run_agent, status, 1 from new_rows
              union all
              select run_agent, status, -1 from old_rows) as c (agent, status, change)
        group by c.agent, c.status
        having sum(c.change) <> 0;
    else
        insert into task_count_changes (agent, status, change)
        select run_agent, status, -count(*) from old_rows group by run_agent, status;
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

-- After the triggers: creating them waited for every transaction writing
-- task_states and holds off new ones until this migration commits, so the
-- count below and the changes the triggers append never overlap or miss.
insert into task_counts (agent, status, tasks)
select run_agent, status, count(*) from task_states group by run_agent, status;

create view task_totals as
select c.agent, c.status, sum(c.tasks)::bigint as tasks
from (select agent, status, tasks from task_counts
      union all
      select agent, status, change from task_count_changes) as c
group by c.agent, c.status;

-- The oldest ready task of an agent, for `hive_oldest_ready_task_age_seconds`:
-- one probe per agent. Written when a task becomes ready (submission, a
-- retry), never by claims or completions.
create index task_states_ready_age_idx on task_states (run_agent, run_after) where status = 'ready';
