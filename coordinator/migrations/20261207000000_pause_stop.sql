-- A pause may also stop what is running under it: while it is in force,
-- each heartbeat tells the worker holding such an attempt to stop its agent
-- and hand the task back, uncharged (claims skip it until the pause ends).
alter table pauses add column stop_running boolean not null default false;

create or replace view paused as
select scope, target, paused_by, reason, paused_at, until, stop_running
from pauses where until is null or until > now();
