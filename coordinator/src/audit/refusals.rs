//! Refused calls of state-changing RPCs, recorded in the audit log without
//! holding up the refusal: the auth layer calls [`AuditRefusals`]
//! synchronously, and the append runs on the coordinator's task tracker in
//! a transaction of its own.
//!
//! Bounded: each coordinator writes at most [`PER_SECOND`] refusal rows in
//! any one second (a fixed one-second window), so a flood of bad-token
//! calls grows the table by at most that much a second and never queues
//! more than that many writes a second. Refusals past the bound are not
//! written but counted: the next refusal row written carries the count in
//! its target (`unrecorded_before`), and a WARN line, at most one per
//! [`WARN_EVERY`], says refusals are being left out.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::json;
use sqlx::PgPool;
use tokio_util::task::TaskTracker;

use super::Entry;
use crate::auth::Caller;
use crate::auth::layer::Refusals;

/// Most refusal rows one coordinator writes per second.
pub(crate) const PER_SECOND: u32 = 20;
/// Shortest time between two warnings that refusals are left out.
const WARN_EVERY: Duration = Duration::from_secs(10);

/// Records refusals in the audit log, at most [`PER_SECOND`] a second.
#[derive(Debug)]
pub(crate) struct AuditRefusals {
    pool: PgPool,
    tracker: TaskTracker,
    window: Mutex<Window>,
}

impl AuditRefusals {
    /// Writes refusals with `pool`, on `tracker`.
    pub(crate) fn new(pool: PgPool, tracker: TaskTracker) -> Self {
        Self { pool, tracker, window: Mutex::new(Window::default()) }
    }
}

impl Refusals for AuditRefusals {
    fn refused(&self, path: &str, caller: Option<&Caller>, peer: Option<SocketAddr>, reason: &str) {
        let now = Instant::now();
        let admitted = self.window.lock().unwrap_or_else(std::sync::PoisonError::into_inner).admit(now);
        let unrecorded_before = match admitted {
            Admit::Write { unrecorded_before } => unrecorded_before,
            Admit::Drop { warn } => {
                if warn {
                    tracing::warn!(
                        limit = PER_SECOND,
                        "refused calls are arriving faster than the audit log records them; counting the rest"
                    );
                }
                return;
            }
        };
        let (service, method) = path.trim_start_matches('/').split_once('/').unwrap_or(("", path));
        let mut target = json!({ "service": service });
        if unrecorded_before > 0 {
            target["unrecorded_before"] = json!(unrecorded_before);
        }
        let entry = Entry::refused(method, caller, peer, reason, target);
        let pool = self.pool.clone();
        hive_shared::tracked::spawn(&self.tracker, "audit a refusal", async move {
            if let Err(err) = super::record_alone(&pool, &entry).await {
                tracing::warn!(error = %err, method = %entry.action, "a refused call could not be recorded in the audit log");
            }
        });
    }
}

/// Counts refusals in the current one-second window.
#[derive(Debug, Default)]
struct Window {
    start: Option<Instant>,
    written: u32,
    /// Refusals left out since the last row written.
    unrecorded: u64,
    last_warned: Option<Instant>,
}

/// Whether to write a refusal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Admit {
    /// Write it, noting how many were left out before it.
    Write { unrecorded_before: u64 },
    /// Leave it out (counted); `warn` when a warning is due.
    Drop { warn: bool },
}

impl Window {
    fn admit(&mut self, now: Instant) -> Admit {
        let elapsed = self.start.map(|start| now.saturating_duration_since(start));
        if elapsed.is_none_or(|elapsed| elapsed >= Duration::from_secs(1)) {
            self.start = Some(now);
            self.written = 0;
        }
        if self.written < PER_SECOND {
            self.written += 1;
            return Admit::Write { unrecorded_before: std::mem::take(&mut self.unrecorded) };
        }
        self.unrecorded += 1;
        let warn = self.last_warned.is_none_or(|last| now.saturating_duration_since(last) >= WARN_EVERY);
        if warn {
            self.last_warned = Some(now);
        }
        Admit::Drop { warn }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_limit_per_second_and_the_rest_counted() {
        let mut window = Window::default();
        let start = Instant::now();
        let at = |millis: u64| start + Duration::from_millis(millis);
        for call in 0..PER_SECOND {
            assert_eq!(window.admit(at(u64::from(call))), Admit::Write { unrecorded_before: 0 });
        }
        assert_eq!(window.admit(at(100)), Admit::Drop { warn: true });
        for millis in 101..200 {
            assert_eq!(window.admit(at(millis)), Admit::Drop { warn: false });
        }
        // The next second: the first row written carries the count.
        assert_eq!(window.admit(at(1000)), Admit::Write { unrecorded_before: 100 });
        assert_eq!(window.admit(at(1001)), Admit::Write { unrecorded_before: 0 });
    }

    #[test]
    fn the_warning_repeats_at_most_once_per_interval() {
        let mut window = Window::default();
        let start = Instant::now();
        let mut warnings = 0;
        for millis in 0..30_000 {
            if window.admit(start + Duration::from_millis(millis)) == (Admit::Drop { warn: true }) {
                warnings += 1;
            }
        }
        assert_eq!(warnings, 3, "one per 10 s over 30 s");
    }
}
