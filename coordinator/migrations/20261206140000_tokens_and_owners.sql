-- Named API tokens. Only the SHA-256 of each token is stored; the text is
-- shown once, when it is made. Revoked tokens stay listed.
create table api_tokens (
    name text primary key check (name ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$'),
    role text not null check (role in ('admin', 'submitter', 'viewer', 'worker', 'metrics')),
    hash bytea not null unique check (length(hash) = 32),
    created_at timestamptz not null default now(),
    created_by text not null,
    expires_at timestamptz,
    revoked_at timestamptz
);

-- The key every coordinator signs attempt tokens with (one row).
create table auth_keys (
    id smallint primary key check (id = 1),
    key bytea not null check (length(key) = 32),
    created_at timestamptz not null default now()
);

-- Who registered a worker (its token's name) and who submitted a swarm:
-- later calls about them must come from the same token. Null when the
-- coordinator ran without auth.
alter table workers add column registered_by text;
alter table swarms add column submitted_by text;
