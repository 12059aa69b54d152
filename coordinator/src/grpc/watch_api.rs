//! `AdminService.Watch`: decode the request, start a watcher
//! (`crate::events::watch`), and send its pages down the stream until the
//! caller hangs up, the coordinator stops taking calls, or the caller's
//! token stops being good (revoked or expired: checked again before each
//! page, as heartbeat and output streams are).

use std::pin::Pin;

use hive_shared::ids::{SwarmId, TaskId, WorkerId};
use hive_shared::pb;
use tokio::sync::mpsc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::convert::optional_id;
use crate::app::App;
use crate::auth::Caller;
use crate::error::{Error, Result};
use crate::events::watch::{Filter, Watcher};

/// The stream `Watch` answers with.
pub(crate) type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

/// Pages waiting to be sent on one stream; a watcher that does not read
/// holds up only its own stream.
const BUFFER: usize = 4;
/// How often a watch whose filter matched nothing is sent its position.
const QUIET_POSITION: std::time::Duration = std::time::Duration::from_secs(5);

/// Starts a watch.
///
/// # Errors
/// [`Error::InvalidArgument`] naming a bad id or kind; [`Error::EventsOutOfRange`]
/// for an `after` the log does not hold; database failures.
pub(crate) async fn watch(app: &App, caller: Caller, request: pb::WatchRequest) -> Result<WatchStream> {
    let after = request
        .after
        .map(|after| i64::try_from(after).map_err(|_| Error::invalid("after", "is too large")))
        .transpose()?;
    let filter = Filter {
        swarm: optional_id("swarm_id", &request.swarm_id, SwarmId::parse)?.map(|id| id.0),
        task: optional_id("task_id", &request.task_id, TaskId::parse)?.map(|id| id.0),
        worker: optional_id("worker_id", &request.worker_id, WorkerId::parse)?.map(|id| id.0),
        kinds: request.kinds,
    };
    let watcher = Watcher::start(&app.pool, &app.events, after, filter).await?;
    let (pages, outbound) = mpsc::channel(BUFFER);
    let start = pb::WatchResponse { position: position(&watcher), ..pb::WatchResponse::default() };
    // The channel is new and holds BUFFER: this cannot fail.
    let _ = pages.try_send(Ok(start));
    hive_shared::tracked::spawn(&app.tracker, "watch stream", follow(app.clone(), caller, watcher, pages));
    Ok(Box::pin(ReceiverStream::new(outbound)))
}

/// Sends `watcher`'s pages until the caller hangs up, the coordinator stops
/// taking calls, or a page fails (the caller resumes from the last position
/// it got). When the filter leaves pages empty, the position is still sent,
/// at most every [`QUIET_POSITION`], so a narrow watch resumes near where it
/// was, not from its last match.
async fn follow(
    app: App,
    caller: Caller,
    mut watcher: Watcher,
    pages: mpsc::Sender<Result<pb::WatchResponse, Status>>,
) {
    let mut last_sent = tokio::time::Instant::now();
    loop {
        let page = tokio::select! {
            page = watcher.next(&app.pool, &app.events) => page,
            () = pages.closed() => return,
            () = app.rpc_shutdown.cancelled() => return,
        };
        let still_good = match &app.tokens {
            Some(book) => book.recheck(&caller).await,
            None => Ok(()),
        };
        let reply = match (page, still_good) {
            (_, Err(err)) => Err(Status::from(err)),
            (Ok(page), _) if page.len() == 0 && last_sent.elapsed() < QUIET_POSITION => continue,
            (Ok(page), _) => Ok(pb::WatchResponse {
                encoded: page.into_records(),
                position: position(&watcher),
                ..pb::WatchResponse::default()
            }),
            (Err(err), _) => Err(Status::from(err)),
        };
        let failed = reply.is_err();
        // A caller that stops reading holds only its own stream, and not past shutdown.
        let permit = tokio::select! {
            permit = pages.reserve() => permit,
            () = app.rpc_shutdown.cancelled() => return,
        };
        let Ok(permit) = permit else { return };
        permit.send(reply);
        last_sent = tokio::time::Instant::now();
        if failed {
            return;
        }
    }
}

fn position(watcher: &Watcher) -> u64 {
    u64::try_from(watcher.position()).unwrap_or(0)
}
