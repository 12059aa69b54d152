-- Fallback agents: when a build attempt fails (or its provider refuses it),
-- the task's next attempt runs with the next of them, cycling back to its
-- agent. Each attempt records which agent ran it.
alter table tasks add column fallback_agents text[] not null default '{}';
alter table attempts add column agent text;
