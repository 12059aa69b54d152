//! Wake-ups for waiting claims. One tokio-postgres connection per coordinator
//! LISTENs on the ready channel; each notification wakes every waiting claim
//! in this process. After a reconnect every waiter is woken too, since
//! notifications sent while the connection was down are lost.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::Notify;
use tokio::sync::futures::Notified;
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::db::READY_CHANNEL;

/// In-memory fan-out of "tasks may be ready" to waiting claims.
#[derive(Debug, Default)]
pub struct Wakeups {
    notify: Notify,
}

impl Wakeups {
    /// A future that completes at the next wake-up; register it before checking for work.
    pub fn notified(&self) -> Notified<'_> {
        self.notify.notified()
    }

    /// Wakes every waiting claim.
    pub fn wake_all(&self) {
        self.notify.notify_waiters();
    }
}

/// Why a LISTEN connection ended.
enum Ended {
    /// The coordinator is shutting down.
    Cancelled,
    /// The server closed the connection.
    Closed,
}

/// Keeps a LISTEN connection open until `cancel`, reconnecting with backoff.
pub async fn listen(url: String, wakeups: std::sync::Arc<Wakeups>, cancel: CancellationToken) {
    let mut delay = Duration::from_millis(100);
    loop {
        match listen_once(&url, &wakeups, &cancel).await {
            Ok(Ended::Cancelled) => return,
            Ok(Ended::Closed) => warn!(retry_in = ?delay, "listen connection closed by the server"),
            Err(err) => warn!(error = %err, retry_in = ?delay, "listen connection lost"),
        }
        wakeups.wake_all();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn listen_once(url: &str, wakeups: &Wakeups, cancel: &CancellationToken) -> Result<Ended, tokio_postgres::Error> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("listen {READY_CHANNEL}");
    let subscribe = client.batch_execute(&statement);
    tokio::pin!(subscribe);
    let mut subscribed = false;
    loop {
        tokio::select! {
            result = &mut subscribe, if !subscribed => {
                result?;
                subscribed = true;
                info!(channel = READY_CHANNEL, "listening for ready tasks");
                wakeups.wake_all();
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(_))) => wakeups.wake_all(),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err),
                None => return Ok(Ended::Closed),
            },
            () = cancel.cancelled() => return Ok(Ended::Cancelled),
        }
    }
}
