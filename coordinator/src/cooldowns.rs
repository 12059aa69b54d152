//! Provider accounts cooling down after a rate limit, so one agent's 429
//! protects the whole fleet: a refusal starts (or lengthens) its account's
//! cool-down in the transaction that records it, claims on every
//! coordinator skip the account's agents while it lasts, then one claim
//! takes a probe task; the probe's answer ends the cool-down, another
//! refusal starts the next step, twice as long (or as long as the provider
//! said), with jitter. Operators list and clear them.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgConnection, PgPool};

use crate::audit::{self, Action, Entry};
use crate::auth::Caller;
use crate::config::RateLimitConfig;
use crate::db;
use crate::db::cooldowns::Current;
use crate::error::{Error, Result};

/// One refusal as a worker reported it.
#[derive(Debug, Clone)]
pub(crate) struct Refusal {
    /// "provider/account".
    pub account: String,
    /// When the provider said to try again, if it did.
    pub retry_after: Option<Duration>,
    /// What the agent reported.
    pub reason: String,
}

/// The cool-down a refusal leads to: how long from now, and its step;
/// `None` to leave the account as it is: a call already in flight when the
/// cool-down began, refused while it runs or while its probe runs, only
/// lengthens it to a later reset time the provider gave.
pub(crate) fn next(
    current: Option<Current>,
    now: DateTime<Utc>,
    retry_after: Option<Duration>,
    config: &RateLimitConfig,
    unit_random: f64,
) -> Option<(Duration, i32)> {
    let retry_after = retry_after.map(|asked| asked.min(config.max));
    let step = match current {
        None => 1,
        Some(current) if current.until > now || current.probe_running => {
            let asked = retry_after?;
            let left = (current.until - now).to_std().unwrap_or_default();
            return (asked > left).then_some((asked, current.step));
        }
        // The probe (or the first call after the wait) was refused.
        Some(current) => current.step.saturating_add(1),
    };
    if let Some(asked) = retry_after {
        return Some((asked, step));
    }
    let exponent = step.saturating_sub(1).min(30);
    let base = config.base.as_secs_f64() * 2f64.powi(exponent);
    let spread = 1.0 + config.jitter * (2.0 * unit_random.clamp(0.0, 1.0) - 1.0);
    Some((Duration::from_secs_f64(base.min(config.max.as_secs_f64()) * spread), step))
}

/// Applies refusals in the transaction that records their attempts (in
/// account order, so two such transactions never wait on each other).
///
/// # Errors
/// Database failures.
pub(crate) async fn refused(
    conn: &mut PgConnection,
    mut refusals: Vec<Refusal>,
    config: &RateLimitConfig,
) -> sqlx::Result<()> {
    refusals.sort_by(|a, b| a.account.cmp(&b.account));
    for refusal in &refusals {
        let current = db::cooldowns::lock(&mut *conn, &refusal.account).await?;
        let decided = next(current, Utc::now(), refusal.retry_after, config, rand::random::<f64>());
        if let Some((wait, step)) = decided {
            tracing::warn!(account = %refusal.account, step, ?wait, "provider account cooling down");
            db::cooldowns::set(&mut *conn, &refusal.account, wait.as_secs_f64(), step, &refusal.reason).await?;
        }
    }
    Ok(())
}

/// Every account cooling down.
///
/// # Errors
/// Database failures.
pub(crate) async fn list(pool: &PgPool) -> Result<Vec<db::cooldowns::CooldownRow>> {
    Ok(db::cooldowns::list(pool).await?)
}

/// Ends `account`'s cool-down early and wakes waiting claims; whether it had
/// one. Audited as `ClearCooldown`.
///
/// # Errors
/// [`Error::InvalidArgument`] for an empty account; database failures.
pub(crate) async fn clear(pool: &PgPool, caller: &Caller, account: &str) -> Result<bool> {
    if account.is_empty() || account.len() > 256 {
        return Err(Error::invalid("account", "must have 1 to 256 characters (provider/account)"));
    }
    let mut tx = pool.begin().await?;
    let cleared = db::cooldowns::clear(&mut *tx, account).await?;
    db::notifications::notify_ready(&mut *tx).await?;
    let target = json!({ "account": account });
    audit::record(&mut tx, &Entry::done(caller, Action::ClearCooldown, target, usize::from(cleared))).await?;
    tx.commit().await?;
    Ok(cleared)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> RateLimitConfig {
        RateLimitConfig { base: Duration::from_secs(10), max: Duration::from_secs(600), jitter: 0.0 }
    }

    fn at(step: i32, until: DateTime<Utc>, probe_running: bool) -> Option<Current> {
        Some(Current { step, until, probe_running })
    }

    #[test]
    fn each_step_doubles_up_to_the_cap_and_a_reset_time_wins_up_to_the_cap() {
        let now = Utc::now();
        let ago = now - chrono::Duration::seconds(1);
        assert_eq!(next(None, now, None, &config(), 0.5), Some((Duration::from_secs(10), 1)));
        assert_eq!(next(at(1, ago, false), now, None, &config(), 0.5), Some((Duration::from_secs(20), 2)));
        assert_eq!(next(at(4, ago, false), now, None, &config(), 0.5), Some((Duration::from_secs(160), 5)));
        assert_eq!(next(at(20, ago, false), now, None, &config(), 0.5), Some((Duration::from_secs(600), 21)));
        let asked = Duration::from_secs(42);
        assert_eq!(next(at(3, ago, false), now, Some(asked), &config(), 0.5), Some((asked, 4)));
        let huge = Duration::from_secs(10_000_000);
        assert_eq!(next(None, now, Some(huge), &config(), 0.5), Some((Duration::from_secs(600), 1)));
    }

    #[test]
    fn a_refusal_during_a_cool_down_or_its_probe_only_lengthens_it_to_a_later_reset() {
        let now = Utc::now();
        let later = now + chrono::Duration::seconds(30);
        let ago = now - chrono::Duration::seconds(1);
        assert_eq!(next(at(2, later, false), now, None, &config(), 0.5), None, "an in-flight call does not escalate");
        assert_eq!(next(at(2, ago, true), now, None, &config(), 0.5), None, "nor does one refused while a probe runs");
        assert_eq!(next(at(2, later, false), now, Some(Duration::from_secs(5)), &config(), 0.5), None);
        let longer = Duration::from_secs(90);
        assert_eq!(next(at(2, later, false), now, Some(longer), &config(), 0.5), Some((longer, 2)));
        let huge = Duration::from_secs(10_000_000);
        assert_eq!(next(at(2, later, false), now, Some(huge), &config(), 0.5), Some((Duration::from_secs(600), 2)));
    }

    #[test]
    fn jitter_spreads_the_wait() {
        let jittery = RateLimitConfig { jitter: 0.2, ..config() };
        let (low, _) = next(None, Utc::now(), None, &jittery, 0.0).unwrap();
        let (high, _) = next(None, Utc::now(), None, &jittery, 1.0).unwrap();
        assert_eq!((low, high), (Duration::from_secs(8), Duration::from_secs(12)));
    }
}
