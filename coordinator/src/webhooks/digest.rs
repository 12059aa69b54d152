//! The body of a delivery: the events of one window as JSON in the Standard
//! Webhooks shape (`type`, `timestamp`, `data`), with a `text` field that
//! Slack-compatible receivers show as the message.

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::{Map, Value as Json, json};

use crate::db::events::EventRow;

/// Most events listed in one delivery; the rest are counted.
pub(crate) const SHOWN: usize = 100;
/// Most events the `text` lists, one line each.
const LINES: usize = 5;

/// What one delivery covers.
#[derive(Debug)]
pub(crate) struct Window<'a> {
    /// The webhook's name.
    pub webhook: &'a str,
    /// The matching events, oldest first (at most [`SHOWN`]).
    pub events: &'a [EventRow],
    /// How many events match in all, by kind.
    pub counts: &'a [(String, i64)],
    /// The last event number the window covers.
    pub last_seq: i64,
}

impl Window<'_> {
    /// Events in all.
    pub(crate) fn total(&self) -> i64 {
        self.counts.iter().map(|(_, count)| count).sum()
    }
}

/// The JSON posted for `window`, made at `now`.
pub(crate) fn body(window: &Window<'_>, now: DateTime<Utc>) -> String {
    let first_seq = window.events.first().map_or(window.last_seq, |event| event.seq);
    let counts: Map<String, Json> = window.counts.iter().map(|(kind, count)| (kind.clone(), json!(count))).collect();
    let shown: Vec<Json> = window.events.iter().take(SHOWN).map(event).collect();
    let omitted = window.total() - shown.len() as i64;
    json!({
        "type": "hive.events",
        "timestamp": now.to_rfc3339_opts(SecondsFormat::Millis, true),
        "data": {
            "webhook": window.webhook,
            "first_seq": first_seq,
            "last_seq": window.last_seq,
            "events": window.total(),
            "counts": counts,
            "shown": shown,
            "omitted": omitted,
        },
        "text": text(window),
    })
    .to_string()
}

fn event(row: &EventRow) -> Json {
    let mut object = Map::new();
    object.insert("seq".into(), json!(row.seq));
    object.insert("at".into(), json!(row.at.to_rfc3339_opts(SecondsFormat::Millis, true)));
    object.insert("kind".into(), json!(row.kind));
    let ids = [("task_id", row.task_id), ("swarm_id", row.swarm_id), ("worker_id", row.worker_id)];
    for (key, id) in ids {
        if let Some(id) = id {
            object.insert(key.into(), json!(id.to_string()));
        }
    }
    if let Some(attempt) = row.attempt {
        object.insert("attempt".into(), json!(attempt));
    }
    if let Some(detail) = &row.detail {
        object.insert("detail".into(), detail.clone());
    }
    Json::Object(object)
}

/// One line of counts, then a line for each of the first few events.
fn text(window: &Window<'_>) -> String {
    let counts: Vec<String> = window.counts.iter().map(|(kind, count)| format!("{count} {kind}")).collect();
    let mut text = format!("Hive ({}): {}", window.webhook, counts.join(", "));
    for row in window.events.iter().take(LINES) {
        text.push_str(&format!("\n• {}", line(row)));
    }
    let more = window.total() - window.events.len().min(LINES) as i64;
    if more > 0 {
        text.push_str(&format!("\n… and {more} more"));
    }
    text
}

fn line(row: &EventRow) -> String {
    let mut line = row.kind.clone();
    let detail = row.detail.as_ref();
    let said = |key: &str| detail.and_then(|detail| detail.get(key)).and_then(Json::as_str);
    if let Some(name) = said("name") {
        line.push_str(&format!(" {name}"));
    }
    if let Some(task) = row.task_id {
        line.push_str(&format!(" task {task}"));
    } else if let Some(worker) = row.worker_id {
        line.push_str(&format!(" worker {worker}"));
    }
    if let Some(error) = said("error") {
        let short: String = error.chars().take(200).collect();
        line.push_str(&format!(": {short}"));
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dead(seq: i64) -> EventRow {
        EventRow {
            seq,
            at: Utc::now(),
            kind: "task.dead".into(),
            task_id: Some(uuid::Uuid::nil()),
            swarm_id: None,
            worker_id: None,
            attempt: Some(2),
            detail: Some(json!({"error": "it broke"})),
        }
    }

    #[test]
    fn a_digest_lists_the_first_events_counts_the_rest_and_says_it_in_text() {
        let events: Vec<EventRow> = (1..=SHOWN as i64).map(dead).collect();
        let counts = [("task.dead".to_owned(), 1000), ("worker.lost".to_owned(), 2)];
        let window = Window { webhook: "ops", events: &events, counts: &counts, last_seq: 1500 };
        let body: Json = serde_json::from_str(&body(&window, Utc::now())).unwrap();
        assert_eq!(body["type"], "hive.events");
        assert_eq!(body["data"]["events"], 1002);
        assert_eq!(body["data"]["first_seq"], 1);
        assert_eq!(body["data"]["last_seq"], 1500);
        assert_eq!(body["data"]["shown"].as_array().unwrap().len(), SHOWN);
        assert_eq!(body["data"]["omitted"], 1002 - SHOWN as i64);
        assert_eq!(body["data"]["shown"][0]["detail"]["error"], "it broke");
        let text = body["text"].as_str().unwrap();
        assert!(text.starts_with("Hive (ops): 1000 task.dead, 2 worker.lost\n• task.dead task 00000000"), "{text}");
        assert!(text.contains(": it broke") && text.ends_with("… and 997 more"), "{text}");
    }
}
