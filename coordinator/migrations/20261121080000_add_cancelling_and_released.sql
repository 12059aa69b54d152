-- New enum values get their own migration: PostgreSQL cannot use a value
-- added to an enum in the same transaction that added it.

alter type task_status add value 'cancelling' after 'running';
alter type attempt_outcome add value 'released';
