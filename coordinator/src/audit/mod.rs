//! The audit log: who changed what, when, from where. Every use-case behind
//! a state-changing admin RPC builds an [`Entry`] from the [`Caller`] and
//! [`record`]s it as the last step of the transaction that makes the
//! change, so the change and its row commit together or not at all; a
//! call that fails changes nothing and leaves no row. Calls the auth layer
//! refuses are recorded by [`refusals`]. Rows are append-only and chained
//! by hash ([`chain`]); [`verify`] walks the chain.

pub(crate) mod chain;
pub(crate) mod refusals;

use chrono::{DateTime, Utc};
use serde_json::{Value as Json, json};
use sqlx::{PgConnection, PgPool};

use crate::auth::Caller;
use crate::db;
use crate::db::audit::{AuditFields, AuditFilter, AuditRow};
use crate::db::events::Batch;
use crate::error::Result;

/// The state-changing admin calls; each is named as its RPC method.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Action {
    /// `SubmitTasks`.
    SubmitTasks,
    /// `CancelTask`.
    CancelTask,
    /// `CancelTasks`.
    CancelTasks,
    /// `RetryTasks`.
    RetryTasks,
    /// `StopWorkers`.
    StopWorkers,
    /// `SetSwarmBudget`.
    SetSwarmBudget,
    /// `CreateToken`.
    CreateToken,
    /// `RevokeToken`.
    RevokeToken,
    /// `Pause`.
    Pause,
    /// `Resume`.
    Resume,
    /// `ClearCooldown`.
    ClearCooldown,
    ResendWebhookDelivery,
}

impl Action {
    /// The RPC method name, as stored.
    pub(crate) fn as_str(self) -> &'static str {
        match self {
            Action::SubmitTasks => "SubmitTasks",
            Action::CancelTask => "CancelTask",
            Action::CancelTasks => "CancelTasks",
            Action::RetryTasks => "RetryTasks",
            Action::StopWorkers => "StopWorkers",
            Action::SetSwarmBudget => "SetSwarmBudget",
            Action::CreateToken => "CreateToken",
            Action::RevokeToken => "RevokeToken",
            Action::Pause => "Pause",
            Action::Resume => "Resume",
            Action::ClearCooldown => "ClearCooldown",
            Action::ResendWebhookDelivery => "ResendWebhookDelivery",
        }
    }
    /// Its kind in the event log.
    pub(crate) fn event_kind(self) -> &'static str {
        match self {
            Action::SubmitTasks => "admin.submit_tasks",
            Action::CancelTask => "admin.cancel_task",
            Action::CancelTasks => "admin.cancel_tasks",
            Action::RetryTasks => "admin.retry_tasks",
            Action::StopWorkers => "admin.stop_workers",
            Action::SetSwarmBudget => "admin.set_swarm_budget",
            Action::CreateToken => "admin.create_token",
            Action::RevokeToken => "admin.revoke_token",
            Action::Pause => "admin.pause",
            Action::Resume => "admin.resume",
            Action::ClearCooldown => "admin.clear_cooldown",
            Action::ResendWebhookDelivery => "admin.resend_webhook_delivery",
        }
    }
}

/// Name of the actor of a refused call that presented no good token.
pub(crate) const UNAUTHENTICATED: &str = "unauthenticated";

/// One row to append.
#[derive(Debug, Clone)]
pub(crate) struct Entry {
    actor: String,
    role: Option<String>,
    action: String,
    target: Json,
    affected: i64,
    refused: Option<String>,
    peer: Option<String>,
    /// The event a change appends beside its row (none for a refusal).
    event: Option<&'static str>,
}

impl Entry {
    /// `caller` did `action` to `target` (a JSON object: ids, or the filter), changing `affected` things.
    pub(crate) fn done(caller: &Caller, action: Action, target: Json, affected: usize) -> Self {
        debug_assert!(target.is_object(), "an audit target is a JSON object");
        Self {
            actor: caller.name.clone(),
            role: Some(caller.role.as_str().to_owned()),
            action: action.as_str().to_owned(),
            target,
            affected: i64::try_from(affected).unwrap_or(i64::MAX),
            refused: None,
            peer: caller.peer.map(|peer| peer.to_string()),
            event: Some(action.event_kind()),
        }
    }

    /// A call of `method` refused for `reason`; `caller` when it authenticated.
    pub(crate) fn refused(
        method: &str,
        caller: Option<&Caller>,
        peer: Option<std::net::SocketAddr>,
        reason: &str,
        target: Json,
    ) -> Self {
        Self {
            actor: caller.map_or_else(|| UNAUTHENTICATED.to_owned(), |caller| caller.name.clone()),
            role: caller.map(|caller| caller.role.as_str().to_owned()),
            action: method.to_owned(),
            target,
            affected: 0,
            refused: Some(storable_reason(reason)),
            peer: peer.map(|peer| peer.to_string()),
            event: None,
        }
    }
}

/// Longest refusal reason stored, in bytes.
const MAX_REASON: usize = 1024;

/// `reason` cut to [`MAX_REASON`] bytes, NUL characters (which text columns
/// cannot hold) replaced.
fn storable_reason(reason: &str) -> String {
    let end = reason.floor_char_boundary(MAX_REASON);
    reason[..end].replace('\0', "\u{FFFD}")
}

/// Appends `entry` to the log in the transaction `conn` is in, with its
/// event (`admin.…`) for watchers; returns its seq.
/// Call it last, just before the commit: from here to the commit the
/// transaction holds the lock every audited change waits for.
///
/// # Errors
/// Database failures.
pub(crate) async fn record(conn: &mut PgConnection, entry: &Entry) -> Result<i64> {
    let prev_hash = db::audit::lock_chain(conn).await?;
    // Taken under the lock, so times follow the chain on one clock;
    // microseconds, as the column stores them.
    let now = Utc::now();
    let at = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let fields = AuditFields {
        at,
        actor: &entry.actor,
        role: entry.role.as_deref(),
        action: &entry.action,
        target: &entry.target,
        affected: entry.affected,
        outcome: if entry.refused.is_some() { "refused" } else { "ok" },
        reason: entry.refused.as_deref(),
        peer: entry.peer.as_deref(),
    };
    let hash = chain::hash(prev_hash.as_deref(), &fields);
    let seq = db::audit::insert(&mut *conn, &fields, prev_hash.as_deref(), &hash).await?;
    if let Some(kind) = entry.event {
        let detail = json!({
            "actor": entry.actor, "role": entry.role, "target": entry.target, "affected": entry.affected,
            "audit_seq": seq,
        });
        db::events::append(conn, kind, &Batch { details: vec![detail], ..Batch::default() }).await?;
    }
    Ok(seq)
}

/// Appends `entry` in a transaction of its own.
///
/// # Errors
/// Database failures.
pub(crate) async fn record_alone(pool: &PgPool, entry: &Entry) -> Result<i64> {
    let mut tx = pool.begin().await?;
    let seq = record(&mut tx, entry).await?;
    tx.commit().await?;
    Ok(seq)
}

/// Largest page `ListAudit` returns.
pub(crate) const MAX_PAGE: u32 = 1000;

/// Where a page of the log starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageStart {
    /// Newest first, below this seq (`None`: from the newest row).
    Before(Option<i64>),
    /// Oldest first, above this seq.
    After(i64),
}

/// The rows a page holds when `limit` are asked for: 0 means a hundred; at most [`MAX_PAGE`].
pub(crate) fn page_size(limit: u32) -> usize {
    if limit == 0 { 100 } else { limit.min(MAX_PAGE) as usize }
}

/// Up to [`page_size`]`(limit)` rows matching `filter` from `from`.
///
/// # Errors
/// Database failures.
pub(crate) async fn list(pool: &PgPool, filter: &AuditFilter, from: PageStart, limit: u32) -> Result<Vec<AuditRow>> {
    let limit = i64::try_from(page_size(limit)).unwrap_or(i64::MAX);
    Ok(match from {
        PageStart::Before(before) => db::audit::newest(pool, filter, before, limit).await?,
        PageStart::After(after) => db::audit::after(pool, filter, after, limit).await?,
    })
}

/// Rows read per page while verifying.
const VERIFY_PAGE: i64 = 1000;

/// What [`verify`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Verified {
    /// Rows that checked out.
    pub checked: u64,
    /// The first row that did not, if any.
    pub broken: Option<chain::Break>,
}

/// Walks the whole chain from its first row, page by page, recomputing each
/// hash and checking each link. Rows appended while it walks are checked too.
///
/// # Errors
/// Database failures.
pub(crate) async fn verify(pool: &PgPool) -> Result<Verified> {
    let mut walk = chain::Walk::default();
    let mut after = 0;
    loop {
        let rows = db::audit::after(pool, &AuditFilter::default(), after, VERIFY_PAGE).await?;
        if let Err(broken) = walk.check(&rows) {
            return Ok(Verified { checked: walk.checked, broken: Some(broken) });
        }
        match rows.last() {
            Some(last) if rows.len() as i64 == VERIFY_PAGE => after = last.seq,
            _ => return Ok(Verified { checked: walk.checked, broken: None }),
        }
    }
}
