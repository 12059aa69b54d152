//! Checks presented tokens: the admin token from `auth.admin_token_file`,
//! named tokens in `api_tokens`, and attempt tokens (MAC-signed attempt
//! ids). Named tokens are looked up by the SHA-256 of their text and trusted
//! for [`FRESH`], so a revocation on any coordinator is seen by every
//! coordinator within a second without a restart.
//!
//! While the database cannot be reached (a lookup fails to connect or takes
//! longer than [`LOOKUP_TIMEOUT`]), a token looked up successfully within
//! [`MAX_STALE`] is trusted as it was last seen: an outage must not refuse
//! the workers whose heartbeats keep their leases. A token never seen gets
//! UNAVAILABLE then, and its caller retries. Lookups of tokens this
//! coordinator has not seen run at most [`MAX_NEW_LOOKUPS`] at once (more
//! get UNAVAILABLE at once), so a flood of made-up tokens costs the
//! database little and cannot starve the lookups that refresh known ones.
//!
//! Lookups are by hash: the time a lookup takes depends on the hash of the
//! presented text, never on a stored secret's bytes, and the one secret
//! held in memory (the admin token's hash) is compared in constant time.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::Utc;
use hive_shared::tokens::{self, Presented, Role};
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use sqlx::PgPool;
use uuid::Uuid;

use super::Caller;
use crate::db;
use crate::db::tokens::TokenRow;
use crate::error::{Error, Result};

/// Longest a looked-up token is trusted before it is looked up again.
pub(crate) const FRESH: Duration = Duration::from_millis(500);
/// Longest a lookup may take before the last answer is used instead.
pub(crate) const LOOKUP_TIMEOUT: Duration = Duration::from_secs(1);
/// Longest a token is trusted on its last answer while lookups fail.
pub(crate) const MAX_STALE: Duration = Duration::from_secs(300);
/// Most lookups of never-seen tokens at once.
pub(crate) const MAX_NEW_LOOKUPS: usize = 4;
/// Most tokens remembered; past it the memory is cleared.
const MAX_REMEMBERED: usize = 10_000;
/// The name callers with the admin token from the file have.
pub(crate) const ADMIN_FILE_NAME: &str = "admin";

type AttemptMac = Hmac<Sha256>;

/// The coordinator's view of which tokens are good.
pub(crate) struct TokenBook {
    pool: PgPool,
    /// SHA-256 of the admin token from the file.
    admin: [u8; 32],
    /// Key attempt tokens are signed with (shared by every coordinator).
    attempt_key: Vec<u8>,
    remembered: Mutex<HashMap<[u8; 32], Remembered>>,
    new_lookups: tokio::sync::Semaphore,
}

impl std::fmt::Debug for TokenBook {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TokenBook").field("admin", &"***").field("attempt_key", &"***").finish_non_exhaustive()
    }
}

#[derive(Debug, Clone)]
struct Remembered {
    row: TokenRow,
    at: Instant,
}

impl TokenBook {
    /// A book trusting `admin_token` (from the file) and the tokens in the database.
    ///
    /// # Errors
    /// The attempt-token key cannot be read or stored.
    pub(crate) async fn open(pool: PgPool, admin_token: &str) -> Result<Self> {
        let attempt_key = attempt_key(&pool).await?;
        Ok(Self {
            pool,
            admin: tokens::hash(admin_token),
            attempt_key,
            remembered: Mutex::default(),
            new_lookups: tokio::sync::Semaphore::new(MAX_NEW_LOOKUPS),
        })
    }

    /// The caller `token` names.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] saying whether the token is malformed,
    /// unknown, expired or revoked; database failures.
    pub(crate) async fn authenticate(&self, token: &str) -> Result<Caller> {
        let presented = tokens::parse(token).map_err(|err| Error::Unauthenticated(err.to_string()))?;
        let role = match presented {
            Presented::Attempt { attempt_hex, mac_hex } => return self.attempt_caller(attempt_hex, mac_hex),
            Presented::Named(role) => role,
        };
        let hash = tokens::hash(token);
        if role == Role::Admin && constant_time_eq(&hash, &self.admin) {
            return Ok(Caller::named(ADMIN_FILE_NAME, Role::Admin));
        }
        let row = self.look_up(hash).await?.ok_or_else(|| Error::Unauthenticated("unknown token".into()))?;
        if row.revoked_at.is_some() {
            return Err(Error::Unauthenticated(format!("token `{}` was revoked", row.name)));
        }
        if let Some(expired) = row.expires_at.filter(|at| *at <= Utc::now()) {
            return Err(Error::Unauthenticated(format!("token `{}` expired at {expired}", row.name)));
        }
        if row.role != role.as_str() {
            return Err(Error::Unauthenticated("unknown token".into()));
        }
        Ok(Caller::named(&row.name, role))
    }

    /// The token the agent of `attempt` gets.
    pub(crate) fn attempt_token(&self, attempt: Uuid) -> String {
        tokens::attempt_token(&attempt.simple().to_string(), &self.attempt_mac(attempt).finalize().into_bytes())
    }

    fn attempt_mac(&self, attempt: Uuid) -> AttemptMac {
        let mut mac = AttemptMac::new_from_slice(&self.attempt_key).expect("HMAC takes a key of any length");
        mac.update(attempt.as_bytes());
        mac
    }

    fn attempt_caller(&self, attempt_hex: &str, mac_hex: &str) -> Result<Caller> {
        let malformed = || Error::Unauthenticated("unknown token".into());
        let attempt = Uuid::try_parse(attempt_hex).map_err(|_| malformed())?;
        let mac = tokens::unhex(mac_hex).ok_or_else(malformed)?;
        self.attempt_mac(attempt).verify_slice(&mac).map_err(|_| malformed())?;
        Ok(Caller::agent(attempt))
    }

    /// Checks again that the token `caller` presented is good (for streams,
    /// which carry one token for their whole life).
    ///
    /// # Errors
    /// As [`TokenBook::authenticate`].
    pub(crate) async fn recheck(&self, caller: &Caller) -> Result<()> {
        match &caller.credential {
            Some(token) => self.authenticate(token.expose()).await.map(|_| ()),
            None => Ok(()),
        }
    }

    async fn look_up(&self, hash: [u8; 32]) -> Result<Option<TokenRow>> {
        let remembered = self.remembered(&hash);
        if let Some(entry) = &remembered
            && entry.at.elapsed() < FRESH
        {
            return Ok(Some(entry.row.clone()));
        }
        // A never-seen token waits for no one: at most a few such lookups run at once.
        let _permit = match remembered {
            Some(_) => None,
            None => Some(self.new_lookups.try_acquire().map_err(|_| Error::Busy("too many token lookups at once"))?),
        };
        let looked_up = match tokio::time::timeout(LOOKUP_TIMEOUT, db::tokens::by_hash(&self.pool, &hash)).await {
            Ok(result) => result,
            Err(_) => Err(sqlx::Error::PoolTimedOut),
        };
        let row = match (looked_up, remembered) {
            (Ok(row), _) => row,
            (Err(err), Some(entry)) if db::unreachable(&err) && entry.at.elapsed() < MAX_STALE => {
                tracing::debug!(error = %err, "token lookup failed; trusting the last answer");
                return Ok(Some(entry.row));
            }
            (Err(err), _) => return Err(err.into()),
        };
        if let Some(row) = &row {
            let mut remembered = self.remembered.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if remembered.len() >= MAX_REMEMBERED {
                remembered.clear();
            }
            remembered.insert(hash, Remembered { row: row.clone(), at: Instant::now() });
        }
        Ok(row)
    }

    fn remembered(&self, hash: &[u8; 32]) -> Option<Remembered> {
        self.remembered.lock().unwrap_or_else(std::sync::PoisonError::into_inner).get(hash).cloned()
    }
}

/// Reads the admin token from `path`: one admin token (`hive_a_…`), surrounding whitespace ignored.
///
/// # Errors
/// An unreadable file, or one that does not hold an admin token (the error
/// says what is wrong, never the file's text).
pub(crate) async fn read_admin_token(path: &std::path::Path) -> anyhow::Result<String> {
    use anyhow::Context as _;
    let text = tokio::fs::read_to_string(path)
        .await
        .with_context(|| format!("read auth.admin_token_file {}", path.display()))?;
    let token = text.trim().to_owned();
    match tokens::parse(&token) {
        Ok(Presented::Named(Role::Admin)) => Ok(token),
        Ok(_) => anyhow::bail!(
            "auth.admin_token_file {} holds a token of another role; it needs an admin token (hive_a_…, made by `hivectl tokens mint`)",
            path.display()
        ),
        Err(err) => {
            anyhow::bail!("auth.admin_token_file {}: {err} (make one with `hivectl tokens mint`)", path.display())
        }
    }
}

/// Reads the shared attempt-token key, storing a fresh random one if none exists yet.
async fn attempt_key(pool: &PgPool) -> Result<Vec<u8>> {
    let candidate: [u8; 32] = rand::random();
    // A second try sees the key a coordinator starting at the same moment stored.
    for _ in 0..3 {
        if let Some(key) = db::tokens::attempt_key(pool, &candidate).await? {
            return Ok(key);
        }
    }
    Err(Error::Database(sqlx::Error::RowNotFound))
}

fn constant_time_eq(left: &[u8; 32], right: &[u8; 32]) -> bool {
    left.iter().zip(right).fold(0u8, |diff, (a, b)| diff | (a ^ b)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn equal_hashes_compare_equal_and_any_differing_byte_does_not() {
        let hash = [7u8; 32];
        assert!(constant_time_eq(&hash, &hash));
        for at in 0..32 {
            let mut other = hash;
            other[at] ^= 1;
            assert!(!constant_time_eq(&hash, &other));
        }
    }
}
