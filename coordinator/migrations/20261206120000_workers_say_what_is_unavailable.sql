-- What a worker reported it cannot do at its last heartbeat: agent name (or
-- `work_dir`) -> reason. Written by heartbeats, shown by `hivectl workers`.
alter table workers add column unavailable jsonb not null default '{}';
