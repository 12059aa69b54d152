//! `hivectl watch`: follows the event log live, one line per event (with
//! `--json`, one JSON object per line). A broken stream (a coordinator
//! restart, an outage) is reopened after the last event number the
//! coordinator said it passed, so nothing is missed or printed twice; a
//! number older than the oldest the log keeps ends the watch with the
//! coordinator's message, telling you to resync.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hive_shared::convert::from_timestamp;
use hive_shared::pb;
use serde::Serialize;
use serde_json::Value as Json;
use tonic::Code;

use super::Ctx;

/// Arguments of `watch`.
#[derive(Debug, clap::Args)]
pub struct WatchArgs {
    /// Only events of this swarm (id).
    #[arg(long)]
    pub swarm: Option<String>,
    /// Only events of this task (id).
    #[arg(long)]
    pub task: Option<String>,
    /// Only events of this worker (id).
    #[arg(long)]
    pub worker: Option<String>,
    /// Only these kinds or families, comma-separated (`task.dead,worker.*`).
    #[arg(long, value_delimiter = ',')]
    pub kinds: Vec<String>,
    /// Start after this event number (0: every event kept); without it, only what happens from now on.
    #[arg(long)]
    pub after: Option<u64>,
    /// Stop after printing this many events.
    #[arg(long)]
    pub count: Option<u64>,
}

/// One event, for lines and `--json`.
#[derive(Debug, Serialize)]
struct EventView {
    seq: u64,
    at: Option<DateTime<Utc>>,
    kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    swarm_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    task_id: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    worker_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    attempt: Option<u32>,
    #[serde(skip_serializing_if = "Json::is_null")]
    detail: Json,
}

impl From<pb::Event> for EventView {
    fn from(event: pb::Event) -> Self {
        Self {
            seq: event.seq,
            at: event.at.as_ref().and_then(from_timestamp),
            kind: event.kind,
            swarm_id: event.swarm_id,
            task_id: event.task_id,
            worker_id: event.worker_id,
            attempt: (event.attempt > 0).then_some(event.attempt),
            detail: serde_json::from_str(&event.detail).unwrap_or(Json::Null),
        }
    }
}

/// Longest wait between two tries to reopen a broken stream.
const MOST_BACKOFF: Duration = Duration::from_secs(5);

/// Runs `watch` until interrupted, `--count` events were printed, or the
/// coordinator refuses the watch.
///
/// # Errors
/// A refused watch (a bad filter, a resume point older than the oldest kept, a token
/// without the viewer role); a coordinator that cannot be reached at all.
pub async fn run(ctx: &Ctx, args: WatchArgs) -> anyhow::Result<()> {
    let mut after = args.after;
    let mut printed = 0_u64;
    let mut backoff = Duration::from_millis(200);
    let mut stdout = std::io::stdout().lock();
    loop {
        let request = pb::WatchRequest {
            after,
            swarm_id: args.swarm.clone().unwrap_or_default(),
            task_id: args.task.clone().unwrap_or_default(),
            worker_id: args.worker.clone().unwrap_or_default(),
            kinds: args.kinds.clone(),
        };
        let opened = match ctx.admin()?.watch(request).await {
            Ok(stream) => Ok(stream.into_inner()),
            Err(status) => Err(status),
        };
        let mut stream = match opened {
            Ok(stream) => stream,
            Err(status) if reopen(&status) => {
                tracing::warn!(error = %status.message(), retry_in = ?backoff, "cannot watch yet");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(MOST_BACKOFF);
                continue;
            }
            Err(status) => return Err(ctx.refused("watch", &status)),
        };
        loop {
            match stream.message().await {
                Ok(Some(page)) => {
                    backoff = Duration::from_millis(200);
                    for event in page.events {
                        print(&mut stdout, ctx.json, EventView::from(event))?;
                        printed += 1;
                        if args.count.is_some_and(|count| printed >= count) {
                            return Ok(());
                        }
                    }
                    after = Some(page.position);
                }
                Ok(None) => break,
                // A stream cut mid-way (a reset, a proxy) may also end as INTERNAL.
                Err(status) if reopen(&status) || status.code() == Code::Internal => {
                    tracing::warn!(error = %status.message(), "the watch broke; reopening");
                    break;
                }
                Err(status) => return Err(ctx.refused("watch", &status)),
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(MOST_BACKOFF);
    }
}

/// Whether a watch that failed with `status` is worth reopening (the
/// coordinator or its database is away), rather than refused for good.
fn reopen(status: &tonic::Status) -> bool {
    matches!(status.code(), Code::Unavailable | Code::Unknown | Code::Cancelled | Code::Aborted)
}

fn print(out: &mut impl std::io::Write, json: bool, event: EventView) -> anyhow::Result<()> {
    if json {
        serde_json::to_writer(&mut *out, &event)?;
        writeln!(out)?;
    } else {
        writeln!(out, "{}", line(&event))?;
    }
    out.flush()?;
    Ok(())
}

/// `seq  time  kind  ids  detail`, each id shortened to its first 8 characters.
fn line(event: &EventView) -> String {
    let at = event.at.map(|at| at.format("%H:%M:%S%.3f").to_string()).unwrap_or_default();
    let short = |label: &str, id: &str| (!id.is_empty()).then(|| format!("{label}={}", id.get(..8).unwrap_or(id)));
    let ids: Vec<String> = [
        short("swarm", &event.swarm_id),
        short("task", &event.task_id),
        short("worker", &event.worker_id),
        event.attempt.map(|attempt| format!("attempt={attempt}")),
    ]
    .into_iter()
    .flatten()
    .collect();
    let detail = if event.detail.is_null() { String::new() } else { event.detail.to_string() };
    format!("{:>8}  {at}  {:<24}  {}  {detail}", event.seq, event.kind, ids.join(" ")).trim_end().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_line_names_the_event_its_ids_and_detail() {
        let event = EventView {
            seq: 42,
            at: None,
            kind: "task.dead".into(),
            swarm_id: "0f0e0d0c-aaaa-bbbb-cccc-000000000000".into(),
            task_id: "11112222-aaaa-bbbb-cccc-000000000000".into(),
            worker_id: String::new(),
            attempt: Some(3),
            detail: serde_json::json!({ "error": "exit 1" }),
        };
        assert_eq!(
            line(&event),
            r#"      42    task.dead                 swarm=0f0e0d0c task=11112222 attempt=3  {"error":"exit 1"}"#
        );
    }
}
