//! Statements on `api_tokens` (named tokens, stored as hashes) and
//! `auth_keys` (the key attempt tokens are signed with).

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;

/// A named token, without its secret.
#[derive(Debug, Clone)]
pub struct TokenRow {
    /// Unique name.
    pub name: String,
    /// Role name (`admin`, `submitter`, ...).
    pub role: String,
    /// When it was made.
    pub created_at: DateTime<Utc>,
    /// Name of the token that made it.
    pub created_by: String,
    /// When it stops working, if ever.
    pub expires_at: Option<DateTime<Utc>>,
    /// When it was revoked, if it was.
    pub revoked_at: Option<DateTime<Utc>>,
}

/// A new token to store.
#[derive(Debug)]
pub struct NewToken<'a> {
    /// Unique name.
    pub name: &'a str,
    /// Role name.
    pub role: &'a str,
    /// SHA-256 of the token text.
    pub hash: &'a [u8],
    /// Name of the caller making it.
    pub created_by: &'a str,
    /// Expiry, if any.
    pub expires_at: Option<DateTime<Utc>>,
}

/// Stores a token; `None` when the name is taken (even by a revoked token).
pub async fn insert(executor: impl PgExecutor<'_>, token: &NewToken<'_>) -> sqlx::Result<Option<TokenRow>> {
    sqlx::query_as!(
        TokenRow,
        r#"
        insert into api_tokens (name, role, hash, created_by, expires_at) values ($1, $2, $3, $4, $5)
        on conflict (name) do nothing
        returning name, role, created_at, created_by, expires_at, revoked_at
        "#,
        token.name,
        token.role,
        token.hash,
        token.created_by,
        token.expires_at,
    )
    .fetch_optional(executor)
    .await
}

/// The token whose text hashes to `hash`.
pub async fn by_hash(executor: impl PgExecutor<'_>, hash: &[u8]) -> sqlx::Result<Option<TokenRow>> {
    sqlx::query_as!(
        TokenRow,
        "select name, role, created_at, created_by, expires_at, revoked_at from api_tokens where hash = $1",
        hash
    )
    .fetch_optional(executor)
    .await
}

/// Every token, by name.
pub async fn list(executor: impl PgExecutor<'_>) -> sqlx::Result<Vec<TokenRow>> {
    sqlx::query_as!(
        TokenRow,
        "select name, role, created_at, created_by, expires_at, revoked_at from api_tokens order by name"
    )
    .fetch_all(executor)
    .await
}

/// Revokes the token named `name` (a second revoke keeps the first time); `None` when none has that name.
pub async fn revoke(executor: impl PgExecutor<'_>, name: &str) -> sqlx::Result<Option<TokenRow>> {
    sqlx::query_as!(
        TokenRow,
        r#"
        update api_tokens set revoked_at = coalesce(revoked_at, now()) where name = $1
        returning name, role, created_at, created_by, expires_at, revoked_at
        "#,
        name
    )
    .fetch_optional(executor)
    .await
}

/// The attempt-token key, made from `candidate` by whichever coordinator
/// stores one first; `None` when another coordinator stored one after this
/// statement's snapshot began (ask again).
pub async fn attempt_key(executor: impl PgExecutor<'_>, candidate: &[u8]) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query_scalar!(
        r#"
        with made as (
            insert into auth_keys (id, key) values (1, $1) on conflict (id) do nothing returning key
        )
        select coalesce((select key from made), (select key from auth_keys where id = 1)) as key
        "#,
        candidate
    )
    .fetch_one(executor)
    .await
}
