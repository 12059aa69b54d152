//! Turns each webhook's matching events into deliveries. Every
//! [`INTERVAL`], for each webhook: lock its cursor (another coordinator
//! holding it is doing this work), read the matching events after it up to
//! the newest number, and once the oldest of them has waited the webhook's
//! `window`, queue one delivery of all of them and move the cursor past
//! them, in one transaction. With nothing matching, the cursor just moves.
//! A crash before the commit leaves the cursor where it was; the next round
//! makes the same delivery. Events are read from the log, so a webhook
//! falls behind by at most a window, never loses one while the log keeps it.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use sqlx::PgPool;
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, instrument, warn};
use uuid::Uuid;

use super::Endpoint;
use super::digest::{self, SHOWN, Window};
use crate::db;

/// How often each webhook's events are looked at.
const INTERVAL: Duration = Duration::from_millis(500);

/// Queues deliveries for `endpoints` every [`INTERVAL`] until `cancel`,
/// waking `queued` whenever it queues one.
#[instrument(skip_all, name = "webhook_outbox")]
pub(crate) async fn run(pool: PgPool, endpoints: Vec<Endpoint>, queued: Arc<Notify>, cancel: CancellationToken) {
    let names: Vec<String> = endpoints.iter().map(|endpoint| endpoint.name.clone()).collect();
    // Until the cursors exist, nothing can be queued.
    while let Err(err) = db::webhooks::ensure_cursors(&pool, &names).await {
        debug!(error = %err, "cannot make the webhooks' cursors yet");
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = cancel.cancelled() => return,
        }
    }
    crate::maintenance::every(INTERVAL, &cancel, || async {
        for endpoint in &endpoints {
            match queue_window(&pool, endpoint).await {
                Ok(true) => queued.notify_one(),
                Ok(false) => {}
                Err(err) => {
                    warn!(webhook = %endpoint.name, error = %err, "could not queue webhook events; trying again")
                }
            }
        }
    })
    .await;
}

/// Queues `endpoint`'s next delivery if its window has passed; whether it queued one.
async fn queue_window(pool: &PgPool, endpoint: &Endpoint) -> sqlx::Result<bool> {
    let mut tx = pool.begin().await?;
    let Some((after, head)) = db::webhooks::lock_cursor(&mut tx, &endpoint.name).await? else {
        return Ok(false);
    };
    if head <= after {
        return Ok(false);
    }
    let (events, counts) = db::webhooks::matching(&mut tx, after, head, &endpoint.patterns, SHOWN as i64).await?;
    let Some(first) = events.first() else {
        db::webhooks::advance(&mut tx, &endpoint.name, head).await?;
        tx.commit().await?;
        return Ok(false);
    };
    let waited = (Utc::now() - first.at).to_std().unwrap_or_default();
    if waited < endpoint.window {
        return Ok(false);
    }
    let window = Window { webhook: &endpoint.name, events: &events, counts: &counts, last_seq: head };
    let body = digest::body(&window, Utc::now());
    let delivery = db::webhooks::NewDelivery {
        id: Uuid::now_v7(),
        webhook: &endpoint.name,
        first_seq: first.seq,
        last_seq: head,
        events: window.total(),
        body: &body,
    };
    db::webhooks::queue(&mut tx, &delivery, head).await?;
    tx.commit().await?;
    info!(webhook = %endpoint.name, delivery = %delivery.id, events = delivery.events, "webhook delivery queued");
    Ok(true)
}
