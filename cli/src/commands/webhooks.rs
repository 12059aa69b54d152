//! `hivectl webhooks`: the alert webhooks' deliveries (what was sent, what
//! failed and why) and `webhooks resend ID` to post one again.

use clap::Subcommand;
use hive_shared::pb;
use serde::Serialize;

use super::Ctx;
use crate::output;

/// `webhooks` subcommands.
#[derive(Debug, Subcommand)]
pub enum WebhooksCommand {
    /// List deliveries, newest first.
    Deliveries {
        /// Only this webhook's.
        #[arg(long)]
        webhook: Option<String>,
        /// Only those pending, delivered or failed (given up).
        #[arg(long)]
        status: Option<String>,
        /// Most listed (up to 1000).
        #[arg(long, default_value_t = 50)]
        limit: u32,
    },
    /// Post a delivery again now (admins).
    Resend {
        /// The delivery's id.
        id: String,
    },
}

/// A delivery as listed (`--json` adds the body posted).
#[derive(Debug, Serialize)]
struct DeliveryView {
    id: String,
    webhook: String,
    status: String,
    events: u32,
    first_seq: u64,
    last_seq: u64,
    attempts: u32,
    created_at: String,
    next_attempt_at: Option<String>,
    last_attempt_at: Option<String>,
    delivered_at: Option<String>,
    last_status: Option<u32>,
    last_error: String,
    body: serde_json::Value,
}

impl From<pb::WebhookDelivery> for DeliveryView {
    fn from(delivery: pb::WebhookDelivery) -> Self {
        let pending = delivery.status == "pending";
        Self {
            created_at: output::rfc3339(delivery.created_at.as_ref()).unwrap_or_default(),
            next_attempt_at: output::rfc3339(delivery.next_attempt_at.as_ref()).filter(|_| pending),
            last_attempt_at: output::rfc3339(delivery.last_attempt_at.as_ref()),
            delivered_at: output::rfc3339(delivery.delivered_at.as_ref()),
            last_status: (delivery.last_status != 0).then_some(delivery.last_status),
            body: serde_json::from_str(&delivery.body).unwrap_or(serde_json::Value::String(delivery.body)),
            id: delivery.id,
            webhook: delivery.webhook,
            status: delivery.status,
            events: delivery.events,
            first_seq: delivery.first_seq,
            last_seq: delivery.last_seq,
            attempts: delivery.attempts,
            last_error: delivery.last_error,
        }
    }
}

/// Runs a `webhooks` subcommand.
///
/// # Errors
/// A refused call.
pub async fn run(ctx: &Ctx, command: WebhooksCommand) -> anyhow::Result<()> {
    let mut admin = ctx.admin()?;
    match command {
        WebhooksCommand::Resend { id } => {
            let request = pb::ResendWebhookDeliveryRequest { id: id.clone() };
            admin.resend_webhook_delivery(request).await.map_err(|status| ctx.refused("resend", &status))?;
            if ctx.json {
                output::json(&serde_json::json!({ "resent": id }));
            } else {
                output::line(format!("{id}: queued to be posted again"));
            }
        }
        WebhooksCommand::Deliveries { webhook, status, limit } => {
            let request = pb::ListWebhookDeliveriesRequest {
                webhook: webhook.unwrap_or_default(),
                status: status.unwrap_or_default(),
                limit,
            };
            let listed = admin.list_webhook_deliveries(request).await;
            let listed = listed.map_err(|status| ctx.refused("list deliveries", &status))?.into_inner();
            let views: Vec<DeliveryView> = listed.deliveries.into_iter().map(DeliveryView::from).collect();
            if ctx.json {
                output::json(&views);
                return Ok(());
            }
            if views.is_empty() {
                output::line("no webhook deliveries");
                return Ok(());
            }
            let mut table = output::table(&["id", "webhook", "status", "events", "attempts", "queued", "last error"]);
            for view in views {
                let attempts = match (&view.next_attempt_at, view.last_status) {
                    (Some(next), _) => format!("{} (next {next})", view.attempts),
                    (None, Some(status)) => format!("{} ({status})", view.attempts),
                    (None, None) => view.attempts.to_string(),
                };
                let error = output::printable(&view.last_error.chars().take(120).collect::<String>());
                table.add_row(vec![
                    view.id,
                    output::printable(&view.webhook),
                    view.status,
                    view.events.to_string(),
                    attempts,
                    view.created_at,
                    error,
                ]);
            }
            output::line(table);
        }
    }
    Ok(())
}
