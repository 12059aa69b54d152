//! What this worker cannot do right now, and why. A failure that is the
//! worker's fault (an agent that cannot be started, a scratch folder that
//! cannot be made, a disk short of space) hands the task back uncharged and
//! lands here; the claim loop then asks only for what is available, and
//! heartbeats tell the coordinator (`hivectl workers`) what is not.
//!
//! Entries found at run time lapse after a backoff (10 s, doubling with each
//! repeat to 5 minutes), so a host that was fixed is used again; agents that
//! failed the start-up check stay until the worker restarts (they are not
//! offered at all); the disk entry follows the latest measurement.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

/// The entry for the work folder: scratch folders cannot be made there.
pub(crate) const WORK_DIR: &str = "work_dir";
/// The entry for the work folder's disk: free space below `admission.min_free_disk`.
pub(crate) const DISK: &str = "disk";

/// First pause after a failure that is the worker's fault.
const FIRST_PAUSE: Duration = Duration::from_secs(10);
/// Longest pause.
const LONGEST_PAUSE: Duration = Duration::from_secs(300);
/// Longest reason sent to the coordinator, in bytes (it keeps 1 KiB).
const MAX_REASON: usize = 1000;
/// Most entries sent to the coordinator (it keeps 64).
const MAX_ENTRIES: usize = 64;

#[derive(Debug)]
struct Entry {
    reason: String,
    /// When it lapses; `None` while it holds until cleared.
    until: Option<Instant>,
    /// Failures in a row, for the backoff.
    strikes: u32,
}

/// Shared registry of what is unavailable.
#[derive(Debug, Default)]
pub(crate) struct Unavailable {
    entries: Mutex<HashMap<String, Entry>>,
}

impl Unavailable {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a failure of `what` at `now`: unavailable for a backoff that
    /// doubles with each failure since it last worked.
    pub(crate) fn failed(&self, what: &str, reason: String, now: Instant) {
        let mut entries = self.lock();
        let strikes = entries.get(what).map_or(1, |entry| entry.strikes.saturating_add(1));
        let pause = FIRST_PAUSE.saturating_mul(1 << strikes.saturating_sub(1).min(5)).min(LONGEST_PAUSE);
        entries.insert(what.to_owned(), Entry { reason, until: Some(now + pause), strikes });
    }

    /// Marks `what` unavailable until [`Unavailable::clear`].
    pub(crate) fn hold(&self, what: &str, reason: String) {
        self.lock().insert(what.to_owned(), Entry { reason, until: None, strikes: 0 });
    }

    /// `what` works again.
    pub(crate) fn clear(&self, what: &str) {
        self.lock().remove(what);
    }

    /// Whether `what` is unavailable at `now`.
    pub(crate) fn contains(&self, what: &str, now: Instant) -> bool {
        self.reason(what, now).is_some()
    }

    /// Why `what` is unavailable at `now`, if it is.
    pub(crate) fn reason(&self, what: &str, now: Instant) -> Option<String> {
        let entries = self.lock();
        let entry = entries.get(what)?;
        entry.until.is_none_or(|until| now < until).then(|| entry.reason.clone())
    }

    /// Whether anything at all is listed (lapsed or not): the claim loop's fast path.
    pub(crate) fn is_empty(&self) -> bool {
        self.lock().is_empty()
    }

    /// What is unavailable at `now`, as the coordinator keeps it: at most
    /// [`MAX_ENTRIES`] entries, the work folder and disk first, reasons cut.
    pub(crate) fn current(&self, now: Instant) -> BTreeMap<String, String> {
        let entries = self.lock();
        let live = |what: &&String| entries.get(*what).is_some_and(|entry| entry.until.is_none_or(|until| now < until));
        let mut names: Vec<&String> = entries.keys().filter(live).collect();
        names.sort_by_key(|name| (![WORK_DIR, DISK].contains(&name.as_str()), name.as_str()));
        names
            .into_iter()
            .take(MAX_ENTRIES)
            .filter_map(|name| {
                entries.get(name).map(|entry| {
                    (name.clone(), entry.reason[..entry.reason.floor_char_boundary(MAX_REASON)].to_owned())
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_lapses_after_a_backoff_that_doubles_until_it_works_again() {
        let unavailable = Unavailable::default();
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        unavailable.failed("claude", "cannot start".into(), at(0));
        assert!(unavailable.contains("claude", at(9)));
        assert!(!unavailable.contains("claude", at(10)), "the first pause is 10 s");
        unavailable.failed("claude", "cannot start".into(), at(10));
        assert!(unavailable.contains("claude", at(29)), "the second is 20 s");
        assert!(!unavailable.contains("claude", at(30)));
        unavailable.clear("claude");
        unavailable.failed("claude", "cannot start".into(), at(40));
        assert!(!unavailable.contains("claude", at(50)), "a success resets the backoff");
        for _ in 0..20 {
            unavailable.failed("claude", "cannot start".into(), at(100));
        }
        assert!(unavailable.contains("claude", at(399)) && !unavailable.contains("claude", at(400)), "capped at 5 min");
    }

    #[test]
    fn at_most_64_entries_are_sent_and_the_work_folder_and_disk_are_among_them() {
        let unavailable = Unavailable::default();
        for i in 0..100 {
            unavailable.hold(&format!("agent-{i:03}"), "gone".into());
        }
        unavailable.hold(WORK_DIR, "read-only".into());
        unavailable.hold(DISK, "full".into());
        let current = unavailable.current(Instant::now());
        assert_eq!(current.len(), MAX_ENTRIES);
        assert!(current.contains_key(WORK_DIR) && current.contains_key(DISK));
    }

    #[test]
    fn a_hold_stays_until_cleared_and_reasons_are_cut_at_a_character() {
        let unavailable = Unavailable::default();
        let now = Instant::now();
        unavailable.hold(DISK, "é".repeat(800));
        assert!(unavailable.contains(DISK, now + Duration::from_secs(86_400)));
        let reason = &unavailable.current(now)[DISK];
        assert!(reason.len() <= MAX_REASON && reason.chars().all(|c| c == 'é'));
        unavailable.clear(DISK);
        assert!(unavailable.is_empty());
    }
}
