//! Keeps the planner's statistics on the queue tables fresh when rows arrive
//! faster than autovacuum looks (once a minute).
//!
//! Plans sized for a table the planner last saw nearly empty, or with no
//! ready task, are slow once it holds thousands of ready rows, and a prepared
//! statement keeps such a plan until the table is analyzed again. Measured
//! with `hive-bench drain`: a bulk submit into an unanalyzed `tasks` gave 780
//! claims/s, 3,000 after an `analyze`; a Complete whose cached plan scanned
//! all of `attempts` slowed the one-job drain of 60,000 tasks to 2,234 jobs/s.
//!
//! So every second this loop reads PostgreSQL's own row counts (whoever
//! added the rows: submits, claims, any coordinator) and analyzes a table
//! once 1,000 rows were inserted since its last analyze here, then at most
//! every 30 s — sooner when the table has doubled since. Updates alone (a
//! drain moving every task through running to succeeded) are left to
//! autovacuum: analyzing `tasks` on them cost 200 ms a pass, five passes per
//! 20,000 tasks drained.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use sqlx::PgPool;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::{debug, instrument, warn};

use crate::db;
use crate::db::tasks::TableCounts;

/// Rows inserted since the last analyze that make the next one worthwhile.
pub const MIN_INSERTED: i64 = 1_000;

/// Least time between two analyzes of a table, unless it has doubled.
pub const MIN_INTERVAL: Duration = Duration::from_secs(30);

/// How often the counts are read.
const INTERVAL: Duration = Duration::from_secs(1);

/// This coordinator's last analyze of a table.
#[derive(Debug, Clone, Copy)]
pub struct Analyzed {
    /// The table's insert count then.
    pub inserted: i64,
    /// When.
    pub at: Instant,
}

/// Whether `counts` make an analyze worthwhile, given this coordinator's last one.
pub fn due(counts: &TableCounts, last: Option<Analyzed>, now: Instant) -> bool {
    let inserted = counts.inserted - last.map_or(0, |last| last.inserted);
    let doubled = counts.live as f64 >= 2.0 * f64::from(counts.analyzed_rows.max(0.0));
    let rested = last.is_none_or(|last| now.duration_since(last.at) >= MIN_INTERVAL);
    inserted >= MIN_INSERTED && (rested || doubled)
}

/// Checks every second until `cancel`.
#[instrument(skip_all, name = "statistics")]
pub async fn run(pool: PgPool, cancel: CancellationToken) {
    let analyzed: Mutex<HashMap<&'static str, Analyzed>> = Mutex::default();
    let analyzed = &analyzed;
    super::every(INTERVAL, &cancel, || async {
        let counts = match db::tasks::table_counts(&pool).await {
            Ok(counts) => counts,
            Err(err) => return debug!(error = %err, "could not read table statistics"),
        };
        let now = Instant::now();
        let last = |table| analyzed.lock().ok().and_then(|analyzed| analyzed.get(table).copied());
        for counts in counts.iter().filter(|counts| due(counts, last(counts.table), now)) {
            match db::tasks::analyze(&pool, counts.table).await {
                Ok(()) => debug!(table = counts.table, rows = counts.live, "statistics refreshed"),
                Err(err) => warn!(table = counts.table, error = %err, "analyze failed; autovacuum will refresh the statistics later"),
            }
            if let Ok(mut analyzed) = analyzed.lock() {
                analyzed.insert(counts.table, Analyzed { inserted: counts.inserted, at: now });
            }
        }
    })
    .await;
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(inserted: i64, live: i64, analyzed_rows: f32) -> TableCounts {
        TableCounts { table: "tasks", inserted, live, analyzed_rows }
    }

    #[test]
    fn a_thousand_new_rows_are_worth_the_first_analyze_ten_are_not() {
        let now = Instant::now();
        assert!(!due(&counts(10, 10, -1.0), None, now));
        assert!(due(&counts(1_010, 1_010, -1.0), None, now));
    }

    #[test]
    fn updates_alone_are_not_worth_one() {
        let now = Instant::now();
        let last = Analyzed { inserted: 20_000, at: now - Duration::from_secs(600) };
        assert!(!due(&counts(20_000, 20_000, 20_000.0), Some(last), now));
    }

    #[test]
    fn new_rows_wait_out_the_interval_unless_the_table_doubled() {
        let now = Instant::now();
        let recent = Analyzed { inserted: 2_000, at: now - Duration::from_secs(5) };
        assert!(!due(&counts(3_500, 3_500, 2_000.0), Some(recent), now), "1.75x, 5 s after the last");
        assert!(due(&counts(4_000, 4_000, 2_000.0), Some(recent), now), "doubled");
        let rested = Analyzed { inserted: 2_000, at: now - MIN_INTERVAL };
        assert!(due(&counts(3_500, 3_500, 2_000.0), Some(rested), now), "after the interval");
    }
}
