//! `hivectl providers`: provider accounts cooling down after a rate limit
//! (until when, at which step, why), and `providers clear ACCOUNT` to end
//! one early.

use clap::Subcommand;
use hive_shared::pb;
use serde::Serialize;

use super::Ctx;
use crate::output;

/// What `hivectl providers` can do besides listing.
#[derive(Debug, Subcommand)]
pub enum ProvidersCommand {
    /// End an account's cool-down now (its tasks are claimed again at once).
    Clear {
        /// The account, as `provider/account` (e.g. `anthropic/team-a`).
        account: String,
    },
}

/// A cool-down as listed.
#[derive(Debug, Serialize)]
struct CooldownView {
    account: String,
    until: String,
    step: u32,
    probing: bool,
    started_at: String,
    reason: String,
}

impl From<pb::Cooldown> for CooldownView {
    fn from(cooldown: pb::Cooldown) -> Self {
        Self {
            until: output::rfc3339(cooldown.until.as_ref()).unwrap_or_default(),
            started_at: output::rfc3339(cooldown.started_at.as_ref()).unwrap_or_default(),
            account: cooldown.account,
            step: cooldown.step,
            probing: cooldown.probing,
            reason: cooldown.reason,
        }
    }
}

/// Lists cool-downs, or clears one.
///
/// # Errors
/// A refused call.
pub async fn run(ctx: &Ctx, command: Option<ProvidersCommand>) -> anyhow::Result<()> {
    let mut admin = ctx.admin()?;
    if let Some(ProvidersCommand::Clear { account }) = command {
        let request = pb::ClearCooldownRequest { account: account.clone() };
        let cleared = admin.clear_cooldown(request).await.map_err(|status| ctx.refused("clear", &status))?;
        let cleared = cleared.into_inner().cleared;
        if ctx.json {
            output::json(&serde_json::json!({ "cleared": cleared }));
        } else if cleared {
            output::line(format!("{account}: cool-down cleared"));
        } else {
            output::line(format!("{account} was not cooling down"));
        }
        return Ok(());
    }
    let response = admin
        .list_cooldowns(pb::ListCooldownsRequest {})
        .await
        .map_err(|status| ctx.refused("list cool-downs", &status))?;
    let views: Vec<CooldownView> = response.into_inner().cooldowns.into_iter().map(CooldownView::from).collect();
    if ctx.json {
        output::json(&views);
        return Ok(());
    }
    if views.is_empty() {
        output::line("no provider account is cooling down");
        return Ok(());
    }
    let mut table = output::table(&["account", "until", "step", "probing", "since", "why"]);
    for view in views {
        let probing = if view.probing { "yes" } else { "no" };
        let why = output::printable(&view.reason.chars().take(120).collect::<String>());
        table.add_row(vec![view.account, view.until, view.step.to_string(), probing.into(), view.started_at, why]);
    }
    output::line(table);
    Ok(())
}
