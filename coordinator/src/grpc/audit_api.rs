//! The audit log's two AdminService calls, `ListAudit` and `VerifyAudit`:
//! decode the request, call `crate::audit`, encode its rows.

use hive_shared::convert::{from_timestamp, json_to_struct, timestamp};
use hive_shared::pb;
use serde_json::Value as Json;
use sqlx::PgPool;

use crate::audit::{self, PageStart};
use crate::db::audit::{AuditFilter, AuditRow};
use crate::error::{Error, Result};
use crate::tasks::validate::text_problem;

/// A page of the audit log.
///
/// # Errors
/// [`Error::InvalidArgument`] naming a bad field; database failures.
pub(crate) async fn list(pool: &PgPool, request: pb::ListAuditRequest) -> Result<pb::ListAuditResponse> {
    let since = match &request.since {
        Some(stamp) => Some(from_timestamp(stamp).ok_or_else(|| Error::invalid("since", "is not a valid time"))?),
        None => None,
    };
    let text = |field: &str, value: String| match text_problem(&value) {
        Some(problem) => Err(Error::invalid(field, problem)),
        None => Ok((!value.is_empty()).then_some(value)),
    };
    let filter = AuditFilter { since, actor: text("actor", request.actor)?, action: text("action", request.action)? };
    let seq = |field: &str, value: u64| i64::try_from(value).map_err(|_| Error::invalid(field, "is too large"));
    let start = match (request.before_seq, request.after_seq) {
        (before, 0) => PageStart::Before((before != 0).then(|| seq("before_seq", before)).transpose()?),
        (0, after) => PageStart::After(seq("after_seq", after)?),
        _ => return Err(Error::invalid("after_seq", "set before_seq or after_seq, not both")),
    };
    let rows = audit::list(pool, &filter, start, request.limit).await?;
    let full = rows.len() == audit::page_size(request.limit);
    let next_before_seq = match (start, rows.last()) {
        (PageStart::Before(_), Some(last)) if full => u64::try_from(last.seq).unwrap_or(0),
        _ => 0,
    };
    Ok(pb::ListAuditResponse { entries: rows.into_iter().map(entry).collect(), next_before_seq })
}

/// The result of walking the whole chain.
///
/// # Errors
/// Database failures.
pub(crate) async fn verify(pool: &PgPool) -> Result<pb::VerifyAuditResponse> {
    let verified = audit::verify(pool).await?;
    let ok = verified.broken.is_none();
    let (first_bad_seq, problem) =
        verified.broken.map_or((0, String::new()), |broken| (u64::try_from(broken.seq).unwrap_or(0), broken.problem));
    Ok(pb::VerifyAuditResponse { ok, rows_checked: verified.checked, first_bad_seq, problem })
}

fn entry(row: AuditRow) -> pb::AuditEntry {
    let target = match row.target {
        Json::Object(object) => Some(json_to_struct(object)),
        _ => None,
    };
    pb::AuditEntry {
        seq: u64::try_from(row.seq).unwrap_or(0),
        at: Some(timestamp(row.at)),
        actor: row.actor,
        role: row.role.unwrap_or_default(),
        action: row.action,
        target,
        affected: u64::try_from(row.affected).unwrap_or(0),
        outcome: row.outcome,
        reason: row.reason.unwrap_or_default(),
        peer: row.peer.unwrap_or_default(),
        hash: row.hash,
        prev_hash: row.prev_hash.unwrap_or_default(),
    }
}
