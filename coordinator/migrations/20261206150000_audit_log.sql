-- The audit log: one row per state-changing admin call (written in the
-- transaction that makes the change) and per refused call of such an RPC.
-- Append-only (the triggers below refuse UPDATE, DELETE and TRUNCATE) and
-- tamper-evident: `hash` is SHA-256 over `prev_hash` (the hash of the row
-- before it) and this row's fields in the canonical encoding of
-- coordinator/src/audit/chain.rs, which the coordinator computes; VerifyAudit
-- recomputes the chain. Appends are serialised by an advisory lock, so the
-- chain follows `seq`; `seq` may have gaps (a rolled-back call's value).
create table audit_log (
    seq bigint generated always as identity primary key,
    -- Set by the coordinator (microseconds), not now(), so verification recomputes it exactly.
    at timestamptz not null,
    -- The token's name; `anonymous` when auth is off, `unauthenticated` for a refused call with no good token.
    actor text not null,
    -- The token's role; null when the caller did not authenticate.
    role text,
    -- The RPC's method name (`CancelTasks`).
    action text not null,
    -- What it acted on: ids, or the filter used.
    target jsonb not null check (jsonb_typeof(target) = 'object'),
    -- How many things it changed.
    affected bigint not null check (affected >= 0),
    outcome text not null check (outcome in ('ok', 'refused')),
    -- Why a call was refused.
    reason text check ((outcome = 'refused') = (reason is not null)),
    -- The caller's address.
    peer text,
    prev_hash bytea check (length(prev_hash) = 32),
    hash bytea not null check (length(hash) = 32)
);

-- `hivectl audit --since`.
create index audit_log_at on audit_log (at);

create function audit_log_append_only() returns trigger
language plpgsql as $$
begin
    raise exception 'audit_log is append-only: % is not allowed', tg_op
        using errcode = 'insufficient_privilege';
end
$$;

create trigger audit_log_no_update_or_delete
    before update or delete on audit_log
    for each row execute function audit_log_append_only();

create trigger audit_log_no_truncate
    before truncate on audit_log
    for each statement execute function audit_log_append_only();
