//! This coordinator's copy of the newest numbered events. While anyone
//! here watches, one loop reads what the sequencer numbers (woken by its
//! notification, and every second in case one was lost) and keeps the
//! newest [`CAPACITY`] events in memory; every watcher here reads from that
//! copy, so a thousand watchers cost the database one read per numbering.
//! A watcher further behind reads the database itself (`watch`). While no
//! one watches, it reads nothing, and the next watcher's first wait starts
//! it afresh from the newest event.

use std::collections::VecDeque;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tracing::{debug, instrument};

use super::Event;
use super::page::Page;
use crate::db;
use crate::db::events::EventRow;
use crate::notifications::Notifications;

/// Events kept in memory.
const CAPACITY: usize = 65_536;
/// Events read per statement.
const PAGE: i64 = 10_000;
/// How often the loop reads without a notification.
const FALLBACK: Duration = Duration::from_secs(1);

/// The newest events, in order, with no gaps.
#[derive(Debug)]
pub(crate) struct Tail {
    events: RwLock<VecDeque<Arc<Event>>>,
    /// The newest event number read; 0 until the first read of the head.
    head: watch::Sender<i64>,
}

impl Default for Tail {
    fn default() -> Self {
        Self { events: RwLock::default(), head: watch::channel(0).0 }
    }
}

impl Tail {
    /// Follows the newest event number read.
    pub(crate) fn subscribe(&self) -> watch::Receiver<i64> {
        self.head.subscribe()
    }

    /// The newest event number read (0 while no one watches).
    pub(crate) fn newest(&self) -> i64 {
        *self.head.borrow()
    }

    /// The page of those of the next `limit` events after `after` that
    /// `wanted` matches, with the number of the last event looked at, when
    /// this copy holds them all from `after + 1` (an empty page and `after`
    /// when `after` is the newest); `None` when they are older than this copy.
    pub(crate) fn page(&self, after: i64, limit: usize, wanted: impl Fn(&Event) -> bool) -> Option<(Page, i64)> {
        let mut page = Page::default();
        if after >= *self.head.borrow() {
            return Some((page, after));
        }
        let events = self.events.read().unwrap_or_else(std::sync::PoisonError::into_inner);
        let first = events.front()?.seq;
        if after + 1 < first {
            return None;
        }
        let skip = usize::try_from(after + 1 - first).ok()?;
        let mut last = after;
        for event in events.iter().skip(skip).take(limit) {
            last = event.seq;
            if wanted(event) {
                page.push(event);
            }
        }
        Some((page, last))
    }

    /// Forgets what it holds, when no one watches.
    fn stop(&self) {
        self.events.write().unwrap_or_else(std::sync::PoisonError::into_inner).clear();
        self.head.send_replace(0);
    }

    /// Starts this copy at `head`, the newest event number when nothing was read yet.
    fn start_at(&self, head: i64) {
        self.head.send_replace(head);
    }

    /// Appends events read after the newest held (a read that does not
    /// follow on, after retention removed what it missed, starts afresh).
    fn extend(&self, read: Vec<EventRow>) {
        let (Some(oldest), Some(newest)) = (read.first().map(|event| event.seq), read.last().map(|event| event.seq))
        else {
            return;
        };
        {
            let mut events = self.events.write().unwrap_or_else(std::sync::PoisonError::into_inner);
            if oldest != *self.head.borrow() + 1 {
                events.clear();
            }
            events.extend(super::encode(read));
            let excess = events.len().saturating_sub(CAPACITY);
            events.drain(..excess);
        }
        self.head.send_replace(newest);
    }
}

/// Reads newly numbered events into `tail` until `cancel`.
#[instrument(skip_all, name = "event_tail")]
pub(crate) async fn run(pool: PgPool, notifications: Arc<Notifications>, tail: Arc<Tail>, cancel: CancellationToken) {
    let mut started = false;
    loop {
        let numbered = notifications.events();
        tokio::pin!(numbered);
        numbered.as_mut().enable();
        if tail.head.receiver_count() == 0 {
            if started {
                tail.stop();
                started = false;
            }
        } else if let Err(err) = read(&pool, &tail, &mut started).await {
            debug!(error = %err, "could not read events; trying again");
        }
        tokio::select! {
            () = numbered => {}
            () = tokio::time::sleep(FALLBACK) => {}
            () = cancel.cancelled() => return,
        }
    }
}

/// Reads everything numbered since the last read.
async fn read(pool: &PgPool, tail: &Tail, started: &mut bool) -> sqlx::Result<()> {
    if !*started {
        tail.start_at(db::events::head(pool).await?.last_seq);
        *started = true;
    }
    loop {
        let after = *tail.head.borrow();
        let read = db::events::after(pool, after, i64::MAX, PAGE).await?;
        let full = read.len() == usize::try_from(PAGE).unwrap_or(usize::MAX);
        tail.extend(read);
        if !full {
            return Ok(());
        }
    }
}
