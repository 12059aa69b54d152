//! Posts due deliveries. Each round takes what is due (holding each for
//! the post's timeout and a margin, so a coordinator that dies mid-post
//! leaves it to another) and posts each on a task of its own, at most
//! [`IN_FLIGHT`] at once: a receiver that hangs or keeps failing holds up
//! no other delivery. A post answered 2xx is delivered; any other answer,
//! or none within `webhook_delivery.timeout`, is retried after
//! `retry_initial`, doubling up to `retry_max`, with jitter, until
//! `give_up_after` has passed since it was queued (or resent): then it is
//! `failed`. The webhook-id stays the same on every retry, so a receiver
//! can tell a retry from a new delivery.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, instrument, warn};

use super::Endpoint;
use super::post::{self, Answer};
use crate::config::WebhookDeliveryConfig;
use crate::db;

/// Most posts under way at once, per coordinator.
const IN_FLIGHT: usize = 32;
/// How often due deliveries are looked for without a wake-up (retries coming due).
const INTERVAL: Duration = Duration::from_millis(500);
/// Longest error text kept per delivery.
const MAX_ERROR: usize = 1024;

/// What the sender works with.
#[derive(Debug, Clone)]
pub(crate) struct Sender {
    /// The pool.
    pub pool: PgPool,
    /// The webhooks, by name.
    pub endpoints: Arc<HashMap<String, Endpoint>>,
    /// Timeouts and retries.
    pub settings: WebhookDeliveryConfig,
}

/// Posts due deliveries until `cancel`, looking again every [`INTERVAL`] or when `queued` wakes it.
#[instrument(skip_all, name = "webhook_sender")]
pub(crate) async fn run(sender: Sender, queued: Arc<Notify>, tracker: TaskTracker, cancel: CancellationToken) {
    let names: Vec<String> = sender.endpoints.keys().cloned().collect();
    let slots = Arc::new(Semaphore::new(IN_FLIGHT));
    let hold = sender.settings.timeout.as_secs_f64() + 30.0;
    loop {
        let free = slots.available_permits();
        if free > 0 {
            match db::webhooks::take_due(&sender.pool, &names, free as i64, hold).await {
                Ok(due) => {
                    for delivery in due {
                        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else { break };
                        let sender = sender.clone();
                        hive_shared::tracked::spawn(&tracker, "webhook post", async move {
                            sender.deliver(delivery).await;
                            drop(slot);
                        });
                    }
                }
                Err(err) => warn!(error = %err, "could not take due webhook deliveries"),
            }
        }
        tokio::select! {
            () = tokio::time::sleep(INTERVAL) => {}
            () = queued.notified() => {}
            () = cancel.cancelled() => return,
        }
    }
}

impl Sender {
    async fn deliver(&self, delivery: db::webhooks::Due) {
        let Some(endpoint) = self.endpoints.get(&delivery.webhook) else { return };
        let id = format!("msg_{}", delivery.id.simple());
        let answer = post::post(&endpoint.url, &endpoint.key, &id, &delivery.body, self.settings.timeout).await;
        let recorded = match &answer {
            Answer::Accepted(status) => {
                info!(webhook = %endpoint.name, delivery = %delivery.id, status, attempts = delivery.attempts, "webhook delivered");
                db::webhooks::delivered(&self.pool, delivery.id, i32::from(*status)).await
            }
            Answer::Refused(status, said) => {
                let error = format!("answered {status}: {said}");
                self.failed(endpoint, &delivery, Some(i32::from(*status)), &error).await
            }
            Answer::Failed(error) => self.failed(endpoint, &delivery, None, error).await,
        };
        if let Err(err) = recorded {
            warn!(webhook = %endpoint.name, delivery = %delivery.id, error = %err, "could not record a webhook post; it is posted again once its hold ends");
        }
    }

    async fn failed(
        &self,
        endpoint: &Endpoint,
        delivery: &db::webhooks::Due,
        status: Option<i32>,
        error: &str,
    ) -> sqlx::Result<()> {
        let error: String = error.chars().take(MAX_ERROR).collect();
        let retry = retry_in(&self.settings, delivery.attempts, delivery.pending_seconds, rand::random::<f64>());
        match retry {
            Some(wait) => {
                warn!(webhook = %endpoint.name, delivery = %delivery.id, attempts = delivery.attempts, error = %error, retry_in = ?wait, "webhook post failed; retrying")
            }
            None => {
                warn!(webhook = %endpoint.name, delivery = %delivery.id, attempts = delivery.attempts, error = %error, "webhook post failed; giving up (give_up_after passed)")
            }
        }
        db::webhooks::post_failed(&self.pool, delivery.id, status, &error, retry.map(|wait| wait.as_secs_f64())).await
    }
}

/// The wait before the next post after `attempts` failed ones, spread by
/// ±20 % (`unit_random` in [0, 1)); `None` once it would end past
/// `give_up_after` from when the delivery was queued (`pending_seconds` ago).
fn retry_in(
    settings: &WebhookDeliveryConfig,
    attempts: i32,
    pending_seconds: f64,
    unit_random: f64,
) -> Option<Duration> {
    let doublings = u32::try_from(attempts.saturating_sub(1)).unwrap_or(0).min(30);
    let wait = settings.retry_initial.saturating_mul(2_u32.saturating_pow(doublings)).min(settings.retry_max);
    let wait = wait.mul_f64(0.8 + 0.4 * unit_random);
    (pending_seconds + wait.as_secs_f64() <= settings.give_up_after.as_secs_f64()).then_some(wait)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_double_up_to_the_cap_and_stop_after_give_up_after() {
        let settings = WebhookDeliveryConfig::default();
        let secs = |attempts, pending| retry_in(&settings, attempts, pending, 0.5).map(|wait| wait.as_secs());
        assert_eq!(secs(1, 0.0), Some(5));
        assert_eq!(secs(2, 5.0), Some(10));
        assert_eq!(secs(5, 100.0), Some(80));
        assert_eq!(secs(20, 10_000.0), Some(3600));
        assert_eq!(secs(40, 86_000.0), None, "a day after it was queued, it is given up");
        let spread = |unit| retry_in(&settings, 1, 0.0, unit).unwrap().as_secs_f64();
        assert!((spread(0.0) - 4.0).abs() < 1e-9 && (spread(0.999_999) - 6.0).abs() < 1e-3);
    }
}
