//! `hivectl tokens`: make a named token (printed once), list them (never
//! their secrets), revoke one; `mint` prints a fresh admin token for
//! `auth.admin_token_file` without asking a coordinator.

use std::path::PathBuf;
use std::time::Duration;

use hive_shared::convert::duration;
use hive_shared::pb;
use hive_shared::tokens::{self, Role};
use serde::Serialize;

use super::Ctx;
use crate::output;

/// `tokens` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Make a token; its text is printed once and never shown again.
    Create {
        /// Role: admin, submitter, viewer, worker or metrics.
        #[arg(long)]
        role: Role,
        /// Unique name (shown in the audit log).
        #[arg(long)]
        name: String,
        /// How long it works (e.g. 90d); without it, until revoked.
        #[arg(long, value_parser = humantime::parse_duration)]
        expires: Option<Duration>,
    },
    /// List tokens (names, roles, expiry, revocation; never secrets).
    List,
    /// Revoke a token by name; every coordinator refuses it within a second.
    Revoke {
        /// Its name.
        name: String,
    },
    /// Print a fresh admin token for `auth.admin_token_file` (no coordinator needed).
    Mint {
        /// Write it to this new file (mode 0600) instead of printing it.
        #[arg(long)]
        out: Option<PathBuf>,
    },
}

/// A token as listed.
#[derive(Debug, Serialize)]
struct TokenView {
    name: String,
    role: String,
    created_at: String,
    created_by: String,
    expires_at: Option<String>,
    revoked_at: Option<String>,
}

impl From<pb::TokenInfo> for TokenView {
    fn from(info: pb::TokenInfo) -> Self {
        Self {
            created_at: output::rfc3339(info.created_at.as_ref()).unwrap_or_default(),
            expires_at: output::rfc3339(info.expires_at.as_ref()),
            revoked_at: output::rfc3339(info.revoked_at.as_ref()),
            name: info.name,
            role: info.role,
            created_by: info.created_by,
        }
    }
}

/// Runs a `tokens` subcommand.
///
/// # Errors
/// A refused call, or a file that cannot be written.
pub async fn run(ctx: &Ctx, command: TokensCommand) -> anyhow::Result<()> {
    match command {
        TokensCommand::Create { role, name, expires } => {
            let request = pb::CreateTokenRequest { name, role: role.to_string(), expires_in: expires.map(duration) };
            let made =
                ctx.admin()?.create_token(request).await.map_err(|status| ctx.refused("create token", &status))?;
            let made = made.into_inner();
            if ctx.json {
                output::json(&serde_json::json!({ "token": made.token, "info": made.info.map(TokenView::from) }));
            } else {
                output::line(made.token);
            }
        }
        TokensCommand::List => {
            let listed = ctx.admin()?.list_tokens(pb::ListTokensRequest {}).await;
            let listed = listed.map_err(|status| ctx.refused("list tokens", &status))?.into_inner();
            let views: Vec<TokenView> = listed.tokens.into_iter().map(TokenView::from).collect();
            if ctx.json {
                output::json(&views);
                return Ok(());
            }
            let mut table = output::table(&["name", "role", "created", "by", "expires", "revoked"]);
            for view in views {
                table.add_row(vec![
                    output::printable(&view.name),
                    view.role,
                    view.created_at,
                    output::printable(&view.created_by),
                    view.expires_at.unwrap_or_else(|| "never".into()),
                    view.revoked_at.unwrap_or_default(),
                ]);
            }
            output::line(table);
        }
        TokensCommand::Revoke { name } => {
            let request = pb::RevokeTokenRequest { name };
            let revoked = ctx.admin()?.revoke_token(request).await.map_err(|status| ctx.refused("revoke", &status))?;
            let view = TokenView::from(revoked.into_inner().info.unwrap_or_default());
            output::line(format!("revoked {} ({})", output::printable(&view.name), view.role));
        }
        TokensCommand::Mint { out } => {
            let token = tokens::generate(Role::Admin);
            match out {
                Some(path) => super::up::write_secret(&path, &token)?,
                None => output::line(token),
            }
        }
    }
    Ok(())
}
