//! What `hivectl webhooks deliveries` asks: listing deliveries, and
//! resending one (admins only, audited).

use serde_json::json;
use sqlx::PgPool;
use uuid::Uuid;

use crate::audit::{self, Action, Entry};
use crate::auth::Caller;
use crate::db;
use crate::db::webhooks::DeliveryRow;
use crate::error::{Error, Result};

/// The states a delivery can be listed by.
const STATUSES: [&str; 3] = ["pending", "delivered", "failed"];

/// Deliveries, newest first, of `webhook` and in `status` (each when not
/// empty), at most `limit` (0: 50).
///
/// # Errors
/// [`Error::InvalidArgument`] for an unknown status or a limit over 1000.
pub(crate) async fn list(pool: &PgPool, webhook: &str, status: &str, limit: u32) -> Result<Vec<DeliveryRow>> {
    if !status.is_empty() && !STATUSES.contains(&status) {
        return Err(Error::invalid("status", format!("{status:?} is not one of {}", STATUSES.join(", "))));
    }
    if limit > 1000 {
        return Err(Error::invalid("limit", "at most 1000"));
    }
    let limit = if limit == 0 { 50 } else { i64::from(limit) };
    let some = |text: &str| (!text.is_empty()).then(|| text.to_owned());
    Ok(db::webhooks::list(pool, some(webhook).as_deref(), some(status).as_deref(), limit).await?)
}

/// Queues delivery `id` to be posted again at once.
///
/// # Errors
/// [`Error::InvalidArgument`] for a malformed id, [`Error::DeliveryNotFound`] for an unknown one.
pub(crate) async fn resend(pool: &PgPool, caller: &Caller, id: &str) -> Result<()> {
    let id: Uuid = id.parse().map_err(|_| Error::invalid("id", format!("{id:?} is not a delivery id (a UUID)")))?;
    let mut tx = pool.begin().await?;
    if !db::webhooks::resend(&mut *tx, id).await? {
        return Err(Error::DeliveryNotFound(id));
    }
    audit::record(&mut tx, &Entry::done(caller, Action::ResendWebhookDelivery, json!({ "delivery": id }), 1)).await?;
    tx.commit().await?;
    Ok(())
}
