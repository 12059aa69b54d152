-- Stalls: a running attempt's worker says when its agent shows no progress
-- (`stalled_since`), and the agent may say what it is doing (`progress`,
-- `progress_at`). All three belong to the current attempt and are cleared
-- with the lease when it ends.
alter table task_states
    add column stalled_since timestamptz,
    add column progress_at timestamptz,
    add column progress text,
    add constraint task_states_attempt_progress
        check (lease_expires_at is not null or (stalled_since is null and progress_at is null and progress is null)),
    add constraint task_states_progress_size check (octet_length(progress) <= 256);

-- `hivectl status` lists stalled attempts; few rows are ever in it.
create index task_states_stalled_idx on task_states (stalled_since) where stalled_since is not null;
