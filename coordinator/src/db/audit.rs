//! Statements on `audit_log`: append a row (under the chain's advisory
//! lock, after reading the last row's hash), and read rows back for
//! `ListAudit` and `VerifyAudit`. The table refuses UPDATE, DELETE and
//! TRUNCATE (triggers), so there are no such statements here.

use chrono::{DateTime, Utc};
use serde_json::Value as Json;
use sqlx::{PgConnection, PgExecutor};

/// The advisory lock key that serialises appends to the chain ("hiveaudt").
const CHAIN_LOCK: i64 = 0x6869_7665_6175_6474;

/// One stored audit row.
#[derive(Debug, Clone)]
pub struct AuditRow {
    /// Position in the log (gaps are possible).
    pub seq: i64,
    /// When, to the microsecond.
    pub at: DateTime<Utc>,
    /// Token name, `anonymous` or `unauthenticated`.
    pub actor: String,
    /// Token role; `None` when the caller did not authenticate.
    pub role: Option<String>,
    /// RPC method name.
    pub action: String,
    /// Ids or filter, as a JSON object.
    pub target: Json,
    /// How many things changed.
    pub affected: i64,
    /// `ok` or `refused`.
    pub outcome: String,
    /// Why it was refused.
    pub reason: Option<String>,
    /// The caller's address.
    pub peer: Option<String>,
    /// Hash of the row before it; `None` for the first row.
    pub prev_hash: Option<Vec<u8>>,
    /// SHA-256 of `prev_hash` and the fields.
    pub hash: Vec<u8>,
}

/// The fields of a row that its hash covers (all but `seq` and the hashes).
#[derive(Debug, Clone, Copy)]
pub struct AuditFields<'a> {
    /// When, to the microsecond.
    pub at: DateTime<Utc>,
    /// Token name.
    pub actor: &'a str,
    /// Token role.
    pub role: Option<&'a str>,
    /// RPC method name.
    pub action: &'a str,
    /// Ids or filter.
    pub target: &'a Json,
    /// How many things changed.
    pub affected: i64,
    /// `ok` or `refused`.
    pub outcome: &'a str,
    /// Why it was refused.
    pub reason: Option<&'a str>,
    /// The caller's address.
    pub peer: Option<&'a str>,
}

impl AuditRow {
    /// The fields its hash covers.
    pub fn fields(&self) -> AuditFields<'_> {
        AuditFields {
            at: self.at,
            actor: &self.actor,
            role: self.role.as_deref(),
            action: &self.action,
            target: &self.target,
            affected: self.affected,
            outcome: &self.outcome,
            reason: self.reason.as_deref(),
            peer: self.peer.as_deref(),
        }
    }
}

/// Takes the chain's lock until the transaction ends and returns the last
/// row's hash (`None` while the log is empty). Call it as the transaction's
/// last step before the insert: the lock serialises every audited change
/// of every coordinator from here to its commit.
pub async fn lock_chain(conn: &mut PgConnection) -> sqlx::Result<Option<Vec<u8>>> {
    sqlx::query!("select pg_advisory_xact_lock($1)", CHAIN_LOCK).execute(&mut *conn).await?;
    // Read committed: this statement's snapshot starts after the lock was
    // granted, so it sees the row its last holder committed.
    sqlx::query_scalar!("select hash from audit_log order by seq desc limit 1").fetch_optional(&mut *conn).await
}

/// Appends a row of `fields` chained to `prev_hash` by `hash`; returns its seq.
pub async fn insert(
    conn: &mut PgConnection,
    row: &AuditFields<'_>,
    prev_hash: Option<&[u8]>,
    hash: &[u8],
) -> sqlx::Result<i64> {
    sqlx::query_scalar!(
        r#"
        insert into audit_log (at, actor, role, action, target, affected, outcome, reason, peer, prev_hash, hash)
        values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)
        returning seq
        "#,
        row.at,
        row.actor,
        row.role,
        row.action,
        row.target,
        row.affected,
        row.outcome,
        row.reason,
        row.peer,
        prev_hash,
        hash,
    )
    .fetch_one(conn)
    .await
}

/// Which rows `ListAudit` returns; `None` fields match everything.
#[derive(Debug, Default, Clone)]
pub struct AuditFilter {
    /// At or after this time.
    pub since: Option<DateTime<Utc>>,
    /// This actor.
    pub actor: Option<String>,
    /// This action.
    pub action: Option<String>,
}

/// Up to `limit` rows matching `filter` with seq below `before` (`None`: from the newest), newest first.
pub async fn newest(
    executor: impl PgExecutor<'_>,
    filter: &AuditFilter,
    before: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<AuditRow>> {
    sqlx::query_as!(
        AuditRow,
        r#"
        select seq, at, actor, role, action, target, affected, outcome, reason, peer, prev_hash, hash
        from audit_log
        where ($1::bigint is null or seq < $1)
          and ($2::timestamptz is null or at >= $2)
          and ($3::text is null or actor = $3)
          and ($4::text is null or action = $4)
        order by seq desc
        limit $5
        "#,
        before,
        filter.since,
        filter.actor,
        filter.action,
        limit,
    )
    .fetch_all(executor)
    .await
}

/// Up to `limit` rows matching `filter` with seq above `after`, oldest first.
/// A statement apart from [`newest`] so that each walks the primary key in
/// its own order (an order chosen by a parameter would sort every match).
pub async fn after(
    executor: impl PgExecutor<'_>,
    filter: &AuditFilter,
    after: i64,
    limit: i64,
) -> sqlx::Result<Vec<AuditRow>> {
    sqlx::query_as!(
        AuditRow,
        r#"
        select seq, at, actor, role, action, target, affected, outcome, reason, peer, prev_hash, hash
        from audit_log
        where seq > $1
          and ($2::timestamptz is null or at >= $2)
          and ($3::text is null or actor = $3)
          and ($4::text is null or action = $4)
        order by seq
        limit $5
        "#,
        after,
        filter.since,
        filter.actor,
        filter.action,
        limit,
    )
    .fetch_all(executor)
    .await
}
