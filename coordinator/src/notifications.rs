//! PostgreSQL notifications, fanned out in memory. One tokio-postgres
//! connection per coordinator LISTENs on two channels:
//!
//! - `hive_task_ready`: tasks became ready; wakes the longest-waiting claim,
//!   which passes the wake-up on while due tasks remain (a relay: see
//!   [`Notifications::wake_claims`]).
//! - `hive_worker_commands` (payload: a worker id): a worker has new commands
//!   (a cancel, drain, stop); the session holding that worker's heartbeat
//!   stream pushes them at once, whichever coordinator wrote them.
//! - `hive_events` (payload: the newest event number): the sequencer numbered
//!   events; this coordinator's event tail reads them.
//!
//! After a reconnect every waiter is woken, since notifications sent while
//! the connection was down are lost (heartbeat replies carry the same
//! commands, so none is lost for good).

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::futures::Notified;
use tokio::sync::{Notify, broadcast};
use tokio_postgres::{AsyncMessage, NoTls};
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};
use uuid::Uuid;

use crate::db::notifications::{COMMANDS_CHANNEL, EVENTS_CHANNEL, READY_CHANNEL};

/// How many command notices a slow session may fall behind before it re-checks everything.
const NOTICE_BUFFER: usize = 1024;

/// In-memory fan-out of notifications.
#[derive(Debug)]
pub(crate) struct Notifications {
    ready: Notify,
    /// Counts wake-ups started by [`Notifications::wake_claims`]: a claim
    /// woken twice in one round has seen the relay go all the way round.
    round: AtomicU64,
    /// Claims waiting now.
    waiting: AtomicUsize,
    commands: broadcast::Sender<Notice>,
    events: Notify,
}

/// A command notice for the sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Notice {
    /// This worker has new commands.
    Worker(Uuid),
    /// Notices may have been lost: every session should re-check.
    Everyone,
}

impl Default for Notifications {
    fn default() -> Self {
        Self {
            ready: Notify::new(),
            round: AtomicU64::new(0),
            waiting: AtomicUsize::new(0),
            commands: broadcast::channel(NOTICE_BUFFER).0,
            events: Notify::new(),
        }
    }
}

impl Notifications {
    /// A future that completes at the next "tasks ready"; register it before checking for work.
    pub(crate) fn ready(&self) -> Notified<'_> {
        self.ready.notified()
    }

    /// Counts a claim as waiting until the guard drops.
    pub(crate) fn waiting(&self) -> Waiting<'_> {
        self.waiting.fetch_add(1, Ordering::AcqRel);
        Waiting(&self.waiting)
    }

    /// How many claims wait now.
    pub(crate) fn claims_waiting(&self) -> usize {
        self.waiting.load(Ordering::Acquire)
    }

    /// The current round of wake-ups.
    pub(crate) fn round(&self) -> u64 {
        self.round.load(Ordering::Acquire)
    }

    /// Tasks became ready: starts a round by waking the longest-waiting
    /// claim (or the next to wait, when none does). The woken claim claims,
    /// then passes the wake-up on ([`Self::pass`]) if due tasks remain, so a
    /// single ready task costs one claim statement instead of one per
    /// waiting worker, and a burst still reaches as many claims as it needs.
    pub(crate) fn wake_claims(&self) {
        self.round.fetch_add(1, Ordering::AcqRel);
        self.ready.notify_one();
    }

    /// Passes a wake-up on to the next waiting claim.
    pub(crate) fn pass(&self) {
        self.ready.notify_one();
    }

    /// A future that completes at the next "events numbered"; register it before reading.
    pub(crate) fn events(&self) -> Notified<'_> {
        self.events.notified()
    }

    /// Subscribes to command notices.
    pub(crate) fn notices(&self) -> broadcast::Receiver<Notice> {
        self.commands.subscribe()
    }

    fn notice(&self, notice: Notice) {
        // No session listening is fine.
        let _ = self.commands.send(notice);
    }

    fn wake_everyone(&self) {
        self.round.fetch_add(1, Ordering::AcqRel);
        self.ready.notify_waiters();
        self.events.notify_waiters();
        self.notice(Notice::Everyone);
    }
}

/// A waiting claim, counted until dropped.
#[derive(Debug)]
pub(crate) struct Waiting<'a>(&'a AtomicUsize);

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
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
pub(crate) async fn listen(url: String, notifications: std::sync::Arc<Notifications>, cancel: CancellationToken) {
    let mut delay = Duration::from_millis(100);
    loop {
        match listen_once(&url, &notifications, &cancel).await {
            Ok(Ended::Cancelled) => return,
            Ok(Ended::Closed) => warn!(retry_in = ?delay, "notification connection closed by the server"),
            Err(err) => warn!(error = %err, retry_in = ?delay, "notification connection lost"),
        }
        notifications.wake_everyone();
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            () = cancel.cancelled() => return,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn listen_once(
    url: &str,
    notifications: &Notifications,
    cancel: &CancellationToken,
) -> Result<Ended, tokio_postgres::Error> {
    let (client, mut connection) = tokio_postgres::connect(url, NoTls).await?;
    let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
    let statement = format!("listen {READY_CHANNEL}; listen {COMMANDS_CHANNEL}; listen {EVENTS_CHANNEL}");
    let subscribe = client.batch_execute(&statement);
    tokio::pin!(subscribe);
    let mut subscribed = false;
    loop {
        tokio::select! {
            result = &mut subscribe, if !subscribed => {
                result?;
                subscribed = true;
                info!("listening for ready tasks, worker commands and events");
                notifications.wake_everyone();
            }
            message = messages.next() => match message {
                Some(Ok(AsyncMessage::Notification(note))) => dispatch(notifications, note.channel(), note.payload()),
                Some(Ok(_)) => {}
                Some(Err(err)) => return Err(err),
                None => return Ok(Ended::Closed),
            },
            () = cancel.cancelled() => return Ok(Ended::Cancelled),
        }
    }
}

fn dispatch(notifications: &Notifications, channel: &str, payload: &str) {
    if channel == READY_CHANNEL {
        notifications.wake_claims();
    } else if channel == EVENTS_CHANNEL {
        notifications.events.notify_waiters();
    } else if let Ok(worker) = Uuid::parse_str(payload) {
        notifications.notice(Notice::Worker(worker));
    } else {
        warn!(channel, payload, "unexpected notification");
    }
}
