-- Rate limits protect the whole fleet: when an agent's provider refuses it
-- (a rate limit, an overload), its provider account cools down and no
-- worker claims tasks for agents of that account until `until`. Then one
-- claim takes a probe task (probe_attempt); the probe's success ends the
-- cool-down, another refusal starts the next, longer step.

-- Each worker's agents' accounts ("provider/account"), as it registered them.
alter table workers add column accounts jsonb not null default '{}';

-- Attempts of a task its provider refused: not its failures, up to
-- `tasks.max_refusals`.
alter table task_states add column refusals integer not null default 0 check (refusals >= 0);

create table provider_cooldowns (
    account text primary key check (account <> ''),
    until timestamptz not null,
    step integer not null check (step >= 1),
    reason text not null,
    started_at timestamptz not null default now(),
    -- The task and attempt probing the account (while that attempt is current).
    probe_task uuid,
    probe_attempt uuid,
    -- A probe being claimed: no other claim probes before this passes.
    probe_claiming_until timestamptz
);

-- Accounts a claim may probe: the wait has passed, and no probe is being
-- claimed or running.
create view probe_due as
select c.account, c.until from provider_cooldowns c
where c.until <= now()
  and (c.probe_claiming_until is null or c.probe_claiming_until <= now())
  and not exists(select 1 from task_states s where s.task_id = c.probe_task and s.attempt_id = c.probe_attempt);
