-- Tasks counted by swarm, agent and status, so the ready tasks no live
-- worker can run (`db::progress::unserved`: `hivectl status` and a swarm's
-- page) come from the counts: of the tasks, only those that require labels
-- are read, through `task_states_ready_labelled_idx`. The fold
-- (`db::metrics::fold_task_counts`) adds the changes, which already carry
-- the agent, by swarm, agent and status; the view `swarm_agent_totals` adds
-- the changes not folded yet, as `swarm_totals` does.
--
-- A coordinator of an older version still running during a rolling upgrade
-- folds by swarm and status: its fold fails from now on (no constraint
-- matches its `on conflict`), deleting nothing, and the changes wait for a
-- coordinator of this version.

-- Writers of task_states and the fold wait until this commits: the counts
-- below are the tasks as of now less the changes not folded yet, which is
-- what the counts hold between folds.
lock table task_states, task_count_changes, swarm_counts in exclusive mode;

alter table swarm_counts add column agent text, drop constraint swarm_counts_pkey;
delete from swarm_counts;
insert into swarm_counts (swarm_id, agent, status, tasks)
select c.swarm_id, c.agent, c.status, sum(c.tasks)::bigint
from (select swarm_id, run_agent, status, count(*) from task_states group by swarm_id, run_agent, status
      union all
      select swarm_id, agent, status, -change from task_count_changes) as c (swarm_id, agent, status, tasks)
group by c.swarm_id, c.agent, c.status
having sum(c.tasks) <> 0;
alter table swarm_counts alter column agent set not null, add primary key (swarm_id, agent, status);

create view swarm_agent_totals as
select c.swarm_id, c.agent, c.status, sum(c.tasks)::bigint as tasks
from (select swarm_id, agent, status, tasks from swarm_counts
      union all
      select swarm_id, agent, status, change from task_count_changes) as c
group by c.swarm_id, c.agent, c.status;

-- Only ready tasks that require labels: none in a queue without labels.
create index task_states_ready_labelled_idx on task_states (swarm_id) where status = 'ready' and has_labels;
