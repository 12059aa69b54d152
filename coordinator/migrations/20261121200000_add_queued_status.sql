-- A task whose live state is in `queue`, or whose success is in `results`
-- (see the next migration). Its own migration: PostgreSQL cannot use an enum
-- value in the transaction that added it.

alter type task_status add value 'queued' after 'ready';
