//! `GET /live`: the event log as server-sent events, one stream per open
//! page, read from this coordinator's copy of the log (`events::tail`)
//! through the same watcher `AdminService.Watch` uses. Each event's SSE id is
//! its number, so a browser that reconnects sends `Last-Event-ID` and
//! resumes after the last event it saw; a page first connects with the
//! number it was rendered at (`after`). A stream the log cannot resume (the
//! events were removed by retention) gets a `resync` event and ends. With
//! `counts=1` (the overview's) it also carries `counts` events: the
//! overview's numbers, read once for every page (`counts`). The session's
//! token is checked again before each send: once it is revoked or expired
//! the stream sends `resync` and ends, and the page, reading itself again,
//! lands on the login form.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event as SseEvent, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use hive_shared::ids::{SwarmId, TaskId};
use hive_shared::pb;
use prost::Message;
use serde::Deserialize;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;

use super::html::error_response;
use super::session::Session;
use crate::app::App;
use crate::auth::Caller;
use crate::error::Error;
use crate::events::page::Page;
use crate::events::watch::{Filter, Watcher};

/// Events waiting to be sent on one stream.
const BUFFER: usize = 256;

/// Where a stream starts and what it follows.
#[derive(Debug, Deserialize)]
pub(crate) struct LiveQuery {
    after: Option<i64>,
    #[serde(default)]
    task: String,
    #[serde(default)]
    swarm: String,
    /// Kinds or families, comma-separated (`worker.*`); empty: all.
    #[serde(default)]
    kinds: String,
    /// Whether to send the overview's numbers too.
    #[serde(default)]
    counts: u8,
}

/// Streams the events after `after` (or `Last-Event-ID`) that match.
pub(crate) async fn stream(
    session: Session,
    State(app): State<Arc<App>>,
    Query(query): Query<LiveQuery>,
    headers: HeaderMap,
) -> Response {
    let resumed = headers.get("last-event-id").and_then(|value| value.to_str().ok()?.parse::<i64>().ok());
    let filter = match filter(&query) {
        Ok(filter) => filter,
        Err(err) => return error_response(err),
    };
    let watcher = match Watcher::start(&app.pool, &app.events, resumed.or(query.after), filter).await {
        Ok(watcher) => watcher,
        Err(err) => return error_response(err),
    };
    let (events, outbound) = mpsc::channel(BUFFER);
    let counts = (query.counts == 1).then(|| app.overview.subscribe());
    hive_shared::tracked::spawn(
        &app.tracker,
        "dashboard stream",
        follow(Arc::clone(&app), session.caller, watcher, counts, events),
    );
    Sse::new(ReceiverStream::new(outbound))
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response()
}

fn filter(query: &LiveQuery) -> Result<Filter, Error> {
    let id = |text: &str, field: &str| -> Result<Option<uuid::Uuid>, Error> {
        if text.is_empty() {
            return Ok(None);
        }
        let parsed = match field {
            "task" => TaskId::parse(text).map(|id| id.0).ok(),
            _ => SwarmId::parse(text).map(|id| id.0).ok(),
        };
        parsed.map(Some).ok_or_else(|| Error::invalid(field, format!("`{text}` is not an id")))
    };
    let kinds = query.kinds.split(',').filter(|kind| !kind.is_empty()).map(str::to_owned).collect();
    Ok(Filter { task: id(&query.task, "task")?, swarm: id(&query.swarm, "swarm")?, kinds, ..Filter::default() })
}

/// Sends the watcher's events (and the overview's numbers as they change,
/// when `counts` follows them) until the page goes away or the coordinator stops.
async fn follow(
    app: Arc<App>,
    caller: Caller,
    mut watcher: Watcher,
    mut counts: Option<watch::Receiver<Option<Arc<String>>>>,
    events: mpsc::Sender<Result<SseEvent, Infallible>>,
) {
    loop {
        let changed = async {
            if let Some(counts) = counts.as_mut()
                && counts.changed().await.is_ok()
            {
                return counts.borrow_and_update().clone();
            }
            std::future::pending().await
        };
        let page = tokio::select! {
            page = watcher.next(&app.pool, &app.events) => page,
            numbers = changed => {
                let Some(numbers) = numbers else { continue };
                if !signed_in(&app, &caller, &events).await {
                    return;
                }
                if events.send(Ok(SseEvent::default().event("counts").data(numbers.as_str()))).await.is_err() {
                    return;
                }
                continue;
            }
            () = events.closed() => return,
            () = app.rpc_shutdown.cancelled() => return,
        };
        if !signed_in(&app, &caller, &events).await {
            return;
        }
        let page = match page {
            Ok(page) => page,
            Err(err) => {
                resync(&events, &err.to_string()).await;
                return;
            }
        };
        for event in decoded(page) {
            let data = serde_json::json!({
                "seq": event.seq,
                "at": event.at.as_ref().and_then(hive_shared::convert::from_timestamp).map(|at| at.to_rfc3339()),
                "kind": event.kind,
                "swarm_id": event.swarm_id,
                "task_id": event.task_id,
                "worker_id": event.worker_id,
                "attempt": event.attempt,
                "detail": event.detail,
            });
            let sse = SseEvent::default().id(event.seq.to_string()).data(data.to_string());
            if events.send(Ok(sse)).await.is_err() {
                return;
            }
        }
    }
}

/// Whether the session's token is still good; when it is not, the page is
/// told to read itself again (and so meets the login form).
async fn signed_in(app: &App, caller: &Caller, events: &mpsc::Sender<Result<SseEvent, Infallible>>) -> bool {
    let Some(book) = &app.tokens else { return true };
    match book.recheck(caller).await {
        Ok(()) => true,
        Err(err) => {
            resync(events, &err.to_string()).await;
            false
        }
    }
}

/// Tells the page to read itself again, saying why.
async fn resync(events: &mpsc::Sender<Result<SseEvent, Infallible>>, why: &str) {
    let _ = events.send(Ok(SseEvent::default().event("resync").data(why))).await;
}

/// A page's events, decoded from the records the watchers share.
fn decoded(page: Page) -> Vec<pb::Event> {
    let records: Vec<u8> = page.into_records().concat();
    pb::WatchResponse::decode(records.as_slice()).map(|response| response.events).unwrap_or_default()
}
