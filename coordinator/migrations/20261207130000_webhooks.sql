-- Alert webhooks: the event log is their outbox. Each configured webhook
-- has a cursor, the last event number it has taken; the coordinator that
-- holds a cursor's row lock turns the matching events after it into one
-- delivery (a digest of a window's events) and moves the cursor in the same
-- transaction, so every matching event goes into exactly one delivery,
-- across restarts and coordinators. Deliveries are then posted, retried
-- with backoff, and kept for `hivectl webhooks deliveries`.

create table webhook_cursors (
    webhook text primary key,
    after_seq bigint not null
);

create table webhook_deliveries (
    id uuid primary key,
    webhook text not null,
    first_seq bigint not null,
    last_seq bigint not null,
    events integer not null check (events > 0),
    -- The exact JSON posted (the signature covers these bytes).
    body text not null,
    created_at timestamptz not null default now(),
    -- When `hivectl webhooks resend` queued it again; retries give up
    -- `webhook_delivery.give_up_after` from here (else from created_at).
    resent_at timestamptz,
    status text not null default 'pending' check (status in ('pending', 'delivered', 'failed')),
    attempts integer not null default 0 check (attempts >= 0),
    -- When a pending delivery is next posted; while a post is under way, when
    -- another coordinator may take it over.
    next_attempt_at timestamptz not null default now(),
    last_attempt_at timestamptz,
    last_status integer,
    last_error text,
    delivered_at timestamptz,
    check ((status = 'delivered') = (delivered_at is not null))
);

create index webhook_deliveries_due_idx on webhook_deliveries (next_attempt_at) where status = 'pending';
create index webhook_deliveries_listed_idx on webhook_deliveries (created_at desc, id desc);
