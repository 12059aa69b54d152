//! Keeps the planner's statistics on the queue tables fresh when rows arrive
//! faster than autovacuum looks (once a minute).
//!
//! Plans sized for a table the planner last saw nearly empty, or with no
//! ready task, are slow once it holds thousands of ready rows, and a
//! prepared statement keeps such a plan until the table is analyzed again:
//! a bulk submission into an unanalyzed table, or a Complete whose cached
//! plan scans all of `attempts`, would slow a drain several times over.
//!
//! A table is analyzed once 1,000 rows were inserted since its last analyze
//! here, then at most every 30 s — sooner when it has doubled since. The
//! inserts are PostgreSQL's own counts (whoever added the rows: attempts
//! written out, other coordinators), read every second; and this
//! coordinator's submissions ring at once, since an idle connection may
//! publish its counts only ten seconds later, when a drain of the new tasks
//! is well under way. Updates alone (a drain moving every task through
//! running to succeeded) are left to autovacuum: analyzing on every pass of
//! them would cost more than the plans gain.
//!
//! A coordinator that starts takes PostgreSQL's own statistics as its last
//! analyze when they are current (see [`first_sight`]): a restart does not
//! analyze a million-row table again while claims wait for the CPU.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};
use std::time::Duration;

use sqlx::PgPool;
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, instrument, warn};

use crate::db;
use crate::db::statistics::TableCounts;

/// Rows inserted since the last analyze that make the next one worthwhile.
pub(crate) const MIN_INSERTED: i64 = 1_000;

/// Least time between two analyzes of a table, unless it has doubled.
pub(crate) const MIN_INTERVAL: Duration = Duration::from_secs(30);

/// How often PostgreSQL's counts are read.
const INTERVAL: Duration = Duration::from_secs(1);

/// Tasks this coordinator submitted that the loop has not seen yet, and the
/// bell that wakes it once they are worth a look.
#[derive(Debug, Default)]
pub(crate) struct Statistics {
    submitted: AtomicI64,
    bell: Notify,
}

impl Statistics {
    /// Records `rows` new tasks (committed); rings once [`MIN_INSERTED`] have come in.
    pub(crate) fn submitted(&self, rows: i64) {
        if self.submitted.fetch_add(rows, Ordering::Relaxed) + rows >= MIN_INSERTED {
            self.bell.notify_one();
        }
    }
}

/// This coordinator's last analyze of a table.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Analyzed {
    /// The table's insert count then (including rows its counts did not show yet).
    pub inserted: i64,
    /// When.
    pub at: Instant,
}

/// Whether an analyze is worthwhile: `counts` as PostgreSQL has published
/// them, `unseen` rows this coordinator inserted that they may not show yet.
pub(crate) fn due(counts: &TableCounts, unseen: i64, last: Option<Analyzed>, now: Instant) -> bool {
    let since = last.map_or(0, |last| last.inserted);
    let inserted = (counts.inserted - since).max(unseen);
    let rows = counts.live.max(unseen);
    let doubled = rows as f64 >= 2.0 * f64::from(counts.analyzed_rows.max(0.0));
    let rested = last.is_none_or(|last| now.duration_since(last.at) >= MIN_INTERVAL);
    inserted >= MIN_INSERTED && (rested || doubled)
}

/// What a coordinator's first look at a table counts as its last analyze:
/// PostgreSQL's statistics, when someone analyzed the table (or vacuumed
/// it) and it has not doubled since; `None` (analyze once rows come in) for a
/// table never analyzed or outgrown. New inserts are counted from here.
pub(crate) fn first_sight(counts: &TableCounts, now: Instant) -> Option<Analyzed> {
    let analyzed_rows = f64::from(counts.analyzed_rows);
    let current = analyzed_rows >= 0.0 && (counts.live as f64) < 2.0 * analyzed_rows.max(1.0);
    current.then(|| Analyzed { inserted: counts.inserted, at: now.checked_sub(MIN_INTERVAL).unwrap_or(now) })
}

/// Analyzes what is due every second, and when submissions ring, until `cancel`.
#[instrument(skip_all, name = "statistics")]
pub(crate) async fn run(pool: PgPool, statistics: Arc<Statistics>, cancel: CancellationToken) {
    let mut analyzed: HashMap<&'static str, Analyzed> = HashMap::new();
    let mut ticker = tokio::time::interval(INTERVAL);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = statistics.bell.notified() => {}
            () = cancel.cancelled() => return,
        }
        let counts = match db::statistics::table_counts(&pool).await {
            Ok(counts) => counts,
            Err(err) => {
                debug!(error = %err, "could not read table statistics");
                continue;
            }
        };
        let submitted = statistics.submitted.load(Ordering::Relaxed);
        let now = Instant::now();
        for counts in counts {
            let unseen = if counts.table == "task_states" { submitted } else { 0 };
            let last = analyzed.get(counts.table).copied().or_else(|| {
                let seen = first_sight(&counts, now)?;
                analyzed.insert(counts.table, seen);
                Some(seen)
            });
            if !due(&counts, unseen, last, now) {
                continue;
            }
            match db::statistics::analyze(&pool, counts.table).await {
                Ok(()) => debug!(table = counts.table, rows = counts.live, "statistics refreshed"),
                Err(err) => {
                    warn!(table = counts.table, error = %err, "analyze failed; autovacuum will refresh the statistics later")
                }
            }
            let inserted = counts.inserted.max(last.map_or(0, |last| last.inserted) + unseen);
            analyzed.insert(counts.table, Analyzed { inserted, at: now });
            if unseen > 0 {
                statistics.submitted.fetch_sub(unseen, Ordering::Relaxed);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(inserted: i64, live: i64, analyzed_rows: f32) -> TableCounts {
        TableCounts { table: "task_states", inserted, live, analyzed_rows }
    }

    #[test]
    fn a_thousand_new_rows_are_worth_the_first_analyze_ten_are_not() {
        let now = Instant::now();
        assert!(!due(&counts(10, 10, -1.0), 0, None, now));
        assert!(due(&counts(1_010, 1_010, -1.0), 0, None, now));
    }

    #[test]
    fn submitted_rows_count_before_postgresql_shows_them() {
        let now = Instant::now();
        assert!(due(&counts(0, 0, -1.0), 20_000, None, now));
        let last = Analyzed { inserted: 20_000, at: now - MIN_INTERVAL };
        assert!(!due(&counts(20_000, 20_000, 20_000.0), 0, Some(last), now), "the same rows, once shown, are not new");
    }

    #[test]
    fn a_restart_trusts_current_statistics_but_not_missing_or_outgrown_ones() {
        let now = Instant::now();
        let restarted = first_sight(&counts(1_000_000, 1_000_000, 1_000_000.0), now);
        assert!(!due(&counts(1_000_000, 1_000_000, 1_000_000.0), 0, restarted, now), "analyzed before the restart");
        assert!(
            due(&counts(1_001_000, 1_001_000, 1_000_000.0), 0, restarted, now),
            "a thousand rows since, as after its own analyze"
        );
        assert_eq!(first_sight(&counts(20_000, 20_000, -1.0), now).map(|seen| seen.inserted), None, "never analyzed");
        assert_eq!(first_sight(&counts(20_000, 20_000, 5_000.0), now).map(|seen| seen.inserted), None, "outgrown");
        assert!(due(&counts(20_000, 20_000, 5_000.0), 0, None, now));
    }

    #[test]
    fn updates_alone_are_not_worth_one() {
        let now = Instant::now();
        let last = Analyzed { inserted: 20_000, at: now - Duration::from_secs(600) };
        assert!(!due(&counts(20_000, 20_000, 20_000.0), 0, Some(last), now));
    }

    #[test]
    fn new_rows_wait_out_the_interval_unless_the_table_doubled() {
        let now = Instant::now();
        let recent = Analyzed { inserted: 2_000, at: now - Duration::from_secs(5) };
        assert!(!due(&counts(3_500, 3_500, 2_000.0), 0, Some(recent), now), "1.75x, 5 s after the last");
        assert!(due(&counts(4_000, 4_000, 2_000.0), 0, Some(recent), now), "doubled");
        let rested = Analyzed { inserted: 2_000, at: now - MIN_INTERVAL };
        assert!(due(&counts(3_500, 3_500, 2_000.0), 0, Some(rested), now), "after the interval");
    }
}
