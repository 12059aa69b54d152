-- Claims read ready tasks in (priority, age) order and stop at the first that
-- fits. Stored columns for what they filter on give the planner real
-- statistics, so it walks the index instead of sorting every ready task.

alter table tasks
    add column run_agent text generated always as (case when stage = 'validate' then validate_agent else agent end) stored,
    add column has_locks boolean generated always as (cardinality(locks) > 0) stored,
    add column has_labels boolean generated always as (required_labels <> '{}'::jsonb) stored;

drop index tasks_ready_idx;
drop index tasks_ready_locked_idx;
create index tasks_claim_idx on tasks (priority desc, id) where status = 'ready' and not has_locks;
create index tasks_claim_locked_idx on tasks (priority desc, id) where status = 'ready' and has_locks;
