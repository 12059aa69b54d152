//! `hivectl audit`: the audit log, newest first — who changed what, how
//! many things it affected, from where, and the calls that were refused;
//! `hivectl audit verify`: walk the log's hash chain, exiting non-zero when
//! it is broken.

use chrono::{DateTime, Utc};
use hive_shared::convert::{from_timestamp, struct_to_json, timestamp};
use hive_shared::pb;
use serde::Serialize;
use serde_json::Value as Json;

use super::Ctx;
use crate::output;

/// Arguments of `audit`.
#[derive(Debug, clap::Args)]
pub struct AuditArgs {
    /// What to do; without one, list rows.
    #[command(subcommand)]
    pub command: Option<AuditCommand>,
    /// Only rows this recent: a duration (`1h`, `30m`) or an RFC 3339 time.
    #[arg(long)]
    pub since: Option<String>,
    /// Only rows of this actor (a token name).
    #[arg(long)]
    pub actor: Option<String>,
    /// Only rows of this action (an RPC name, e.g. `CancelTasks`).
    #[arg(long)]
    pub action: Option<String>,
    /// Most rows to show.
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

/// `audit` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum AuditCommand {
    /// Recompute the hash chain from its first row; fails when a row was changed or removed.
    Verify,
}

/// One audit row, for tables and `--json`.
#[derive(Debug, Serialize)]
struct EntryView {
    seq: u64,
    at: Option<DateTime<Utc>>,
    actor: String,
    role: String,
    action: String,
    target: Json,
    affected: u64,
    outcome: String,
    reason: String,
    peer: String,
}

impl From<pb::AuditEntry> for EntryView {
    fn from(entry: pb::AuditEntry) -> Self {
        Self {
            seq: entry.seq,
            at: entry.at.as_ref().and_then(from_timestamp),
            actor: entry.actor,
            role: entry.role,
            action: entry.action,
            target: entry.target.map_or(Json::Null, |target| Json::Object(struct_to_json(target))),
            affected: entry.affected,
            outcome: entry.outcome,
            reason: entry.reason,
            peer: entry.peer,
        }
    }
}

/// What `audit verify` found.
#[derive(Debug, Serialize)]
struct VerifyView {
    ok: bool,
    rows_checked: u64,
    first_bad_seq: Option<u64>,
    problem: Option<String>,
}

/// Runs `audit`.
///
/// # Errors
/// A bad `--since`, a refused call, or (for `verify`) a broken chain.
pub async fn run(ctx: &Ctx, args: AuditArgs) -> anyhow::Result<()> {
    if let Some(AuditCommand::Verify) = args.command {
        return verify(ctx).await;
    }
    let since = args.since.as_deref().map(parse_since).transpose()?;
    let entries = fetch(ctx, &args, since).await?;
    if ctx.json {
        output::json(&entries);
        return Ok(());
    }
    let mut table =
        output::table(&["seq", "at", "actor", "role", "action", "outcome", "affected", "target", "peer", "reason"]);
    for entry in &entries {
        let target = entry.target.to_string();
        table.add_row(vec![
            entry.seq.to_string(),
            entry.at.map_or_else(|| "-".to_owned(), |at| at.format("%Y-%m-%d %H:%M:%S").to_string()),
            output::printable(&entry.actor),
            entry.role.clone(),
            output::printable(&entry.action),
            entry.outcome.clone(),
            entry.affected.to_string(),
            output::printable(&target.chars().take(120).collect::<String>()),
            output::printable(&entry.peer),
            output::printable(&entry.reason),
        ]);
    }
    output::line(table);
    Ok(())
}

/// Largest page asked for.
const MAX_PAGE: usize = 1000;

/// Up to `args.limit` rows, newest first, following pages.
async fn fetch(ctx: &Ctx, args: &AuditArgs, since: Option<DateTime<Utc>>) -> anyhow::Result<Vec<EntryView>> {
    let mut admin = ctx.admin()?;
    let mut entries: Vec<EntryView> = Vec::new();
    let mut before_seq = 0;
    while entries.len() < args.limit {
        let limit = u32::try_from((args.limit - entries.len()).min(MAX_PAGE)).expect("a page of at most 1000 fits u32");
        let request = pb::ListAuditRequest {
            since: since.map(timestamp),
            actor: args.actor.clone().unwrap_or_default(),
            action: args.action.clone().unwrap_or_default(),
            limit,
            before_seq,
            after_seq: 0,
        };
        let page = admin.list_audit(request).await.map_err(|status| ctx.refused("list audit", &status))?.into_inner();
        entries.extend(page.entries.into_iter().map(EntryView::from));
        if page.next_before_seq == 0 {
            break;
        }
        before_seq = page.next_before_seq;
    }
    Ok(entries)
}

async fn verify(ctx: &Ctx) -> anyhow::Result<()> {
    let response = ctx
        .admin()?
        .verify_audit(pb::VerifyAuditRequest {})
        .await
        .map_err(|status| ctx.refused("verify audit", &status))?
        .into_inner();
    let view = VerifyView {
        ok: response.ok,
        rows_checked: response.rows_checked,
        first_bad_seq: (!response.ok).then_some(response.first_bad_seq),
        problem: (!response.ok).then_some(response.problem.clone()),
    };
    if ctx.json {
        output::json(&view);
    } else if response.ok {
        output::line(format!("the audit chain is intact: {} row(s) checked", response.rows_checked));
    }
    if !response.ok {
        anyhow::bail!(
            "the audit chain is broken at seq {}: {} ({} row(s) before it check out)",
            response.first_bad_seq,
            output::printable(&response.problem),
            response.rows_checked
        );
    }
    Ok(())
}

/// `1h` (that long ago) or an RFC 3339 time.
fn parse_since(text: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(at) = DateTime::parse_from_rfc3339(text) {
        return Ok(at.with_timezone(&Utc));
    }
    let ago = humantime::parse_duration(text)
        .map_err(|_| anyhow::anyhow!("--since: `{text}` is neither a duration (1h, 30m) nor an RFC 3339 time"))?;
    let ago = chrono::Duration::from_std(ago).map_err(|_| anyhow::anyhow!("--since: `{text}` is too long ago"))?;
    Utc::now().checked_sub_signed(ago).ok_or_else(|| anyhow::anyhow!("--since: `{text}` is too long ago"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_takes_a_duration_or_a_time() {
        let hour_ago = parse_since("1h").unwrap();
        let expected = Utc::now() - chrono::Duration::hours(1);
        assert!((hour_ago - expected).num_seconds().abs() < 5);
        assert_eq!(parse_since("2026-01-02T03:04:05Z").unwrap().to_rfc3339(), "2026-01-02T03:04:05+00:00");
        assert!(parse_since("yesterday").unwrap_err().to_string().contains("--since"));
    }
}
