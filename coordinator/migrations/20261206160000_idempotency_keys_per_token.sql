-- An idempotency key belongs to the token that used it: two tokens may use
-- the same key without seeing (or blocking) each other's swarm. Swarms
-- submitted with auth off have no owner and share one space of keys.
alter table swarms drop constraint swarms_idempotency_key_key;
create unique index swarms_idempotency_key_per_token on swarms (submitted_by, idempotency_key) nulls not distinct
    where idempotency_key is not null;
