-- One index for leased tasks, by worker (heartbeats, claims whose reply was
-- lost, cancellations) and then by the earlier of lease end and deadline.
-- The reaper reads it whole once a tick — it holds only the tasks running
-- now — instead of walking an index of its own. Each claim and each lease
-- extension wrote an entry into both; the worker index, all duplicates of a
-- few ids, cost 9 % of PostgreSQL's CPU per claimed-and-completed task
-- (pgbench of claim and complete, three alternating pairs).
drop index tasks_leased_worker_idx;
drop index tasks_lease_end_idx;
create index tasks_leased_idx on tasks (worker_id, least(lease_expires_at, attempt_deadline))
    where lease_expires_at is not null;
