//! Token management: make a named token (its text returned once, its hash
//! stored), list them, revoke one; making and revoking are audited.
//! Revocation needs no broadcast: every coordinator looks a token up again
//! once its memory of it is older than `book::FRESH`.

use std::time::Duration;

use chrono::Utc;
use hive_shared::tokens::{self, Role};
use serde_json::json;
use sqlx::PgPool;

use super::Caller;
use super::book::ADMIN_FILE_NAME;
use crate::audit::{self, Action, Entry};
use crate::db;
use crate::db::tokens::{NewToken, TokenRow};
use crate::error::{Error, Result};

/// Longest name a token may have.
const MAX_NAME: usize = 64;
/// Longest life a token may be given (ten years).
const MAX_LIFE: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// What is wrong with `name` as a token name, if anything.
fn name_problem(name: &str) -> Option<String> {
    let mut chars = name.chars();
    let first_ok = chars.next().is_some_and(|c| c.is_ascii_alphanumeric());
    let rest_ok = chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'));
    if name.is_empty() || name.len() > MAX_NAME || !first_ok || !rest_ok {
        return Some(format!(
            "name: `{}` must be 1 to {MAX_NAME} letters, digits, '.', '_' or '-', starting with a letter or digit",
            name.escape_debug()
        ));
    }
    (name == ADMIN_FILE_NAME)
        .then(|| format!("name: `{ADMIN_FILE_NAME}` is the admin token from auth.admin_token_file"))
}

/// Makes a token named `name` with `role`, working for `expires_in` (or until revoked).
///
/// # Errors
/// [`Error::InvalidArgument`] naming every bad field; [`Error::TokenNameTaken`];
/// database failures.
pub(crate) async fn create(
    pool: &PgPool,
    caller: &Caller,
    name: &str,
    role: &str,
    expires_in: Option<Duration>,
) -> Result<(String, TokenRow)> {
    let mut problems: Vec<String> = name_problem(name).into_iter().collect();
    let role = role.parse::<Role>().map_err(|err| problems.push(format!("role: {err}"))).ok();
    if expires_in.is_some_and(|life| life.is_zero() || life > MAX_LIFE) {
        problems.push("expires_in: must be more than zero and at most ten years".to_owned());
    }
    let Some(role) = role.filter(|_| problems.is_empty()) else {
        return Err(Error::InvalidArgument { problems });
    };
    let token = tokens::generate(role);
    let expires_at =
        expires_in.map(|life| Utc::now() + chrono::Duration::from_std(life).unwrap_or(chrono::Duration::MAX));
    let hash = tokens::hash(&token);
    let new = NewToken { name, role: role.as_str(), hash: &hash, created_by: &caller.name, expires_at };
    let mut tx = pool.begin().await?;
    let row = db::tokens::insert(&mut *tx, &new).await?.ok_or_else(|| Error::TokenNameTaken(name.to_owned()))?;
    let target = json!({ "name": name, "role": role.as_str(), "expires_at": expires_at.map(|at| at.to_rfc3339()) });
    audit::record(&mut tx, &Entry::done(caller, Action::CreateToken, target, 1)).await?;
    tx.commit().await?;
    Ok((token, row))
}

/// Every named token.
///
/// # Errors
/// Database failures.
pub(crate) async fn list(pool: &PgPool) -> Result<Vec<TokenRow>> {
    Ok(db::tokens::list(pool).await?)
}

/// Revokes the token named `name` (a second revoke keeps the first time).
///
/// # Errors
/// [`Error::TokenNotFound`]; database failures.
pub(crate) async fn revoke(pool: &PgPool, caller: &Caller, name: &str) -> Result<TokenRow> {
    let mut tx = pool.begin().await?;
    let row = db::tokens::revoke(&mut *tx, name).await?.ok_or_else(|| Error::TokenNotFound(name.to_owned()))?;
    audit::record(&mut tx, &Entry::done(caller, Action::RevokeToken, json!({ "name": name }), 1)).await?;
    tx.commit().await?;
    Ok(row)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn token_names_are_short_plain_words() {
        for good in ["ci", "worker-eu.1", "a_b"] {
            assert_eq!(name_problem(good), None, "{good}");
        }
        for bad in ["", "-x", "has space", "ünïcode", &"x".repeat(65), "admin"] {
            assert!(name_problem(bad).is_some(), "{bad}");
        }
    }
}
