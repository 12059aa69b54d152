-- Operators pause a swarm (by id), an agent (by name, on every worker) or a
-- worker (by name, so the pause outlives the worker's restarts): claims
-- skip what is paused while the pause is in force, on every coordinator at
-- once; running tasks finish. A pause with `until` ends by itself.
create type pause_scope as enum ('swarm', 'agent', 'worker');

create table pauses (
    scope pause_scope not null,
    target text not null check (target <> ''),
    paused_by text not null,
    reason text not null,
    paused_at timestamptz not null default now(),
    until timestamptz,
    primary key (scope, target),
    -- The claims cast a swarm's target to uuid: only the canonical form is stored.
    check (scope <> 'swarm' or target ~ '^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$')
);

-- The pauses in force, which claims read.
create view paused as
select scope, target, paused_by, reason, paused_at, until from pauses where until is null or until > now();
