//! The attempts this worker holds: running, or finished and waiting for the
//! coordinator to acknowledge their outcome. Heartbeats list them (and which
//! are stalled) and bring back their agents' progress reports; cancel
//! commands find their tokens here.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::SystemTime;

use hive_shared::ids::AttemptId;
use tokio_util::sync::CancellationToken;

/// Why an attempt was cancelled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum CancelReason {
    /// The coordinator says the attempt is not current: drop it silently.
    LeaseLost,
    /// An operator cancelled the task: report the attempt as cancelled.
    TaskCancelled,
    /// The worker is draining or stopping: hand the task back.
    Shutdown,
    /// A pause stops the attempts running under it: hand the task back.
    Paused,
}

#[derive(Debug)]
struct Entry {
    cancel: CancellationToken,
    reason: Option<CancelReason>,
    group: Option<i32>,
    /// When its agent last reported progress, as the coordinator recorded it.
    reported: Option<SystemTime>,
    /// Whether its agent is stalled.
    stalled: bool,
}

/// Shared registry of held attempts.
#[derive(Debug, Clone, Default)]
pub(crate) struct Held {
    entries: Arc<Mutex<HashMap<AttemptId, Entry>>>,
}

impl Held {
    fn lock(&self) -> MutexGuard<'_, HashMap<AttemptId, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts holding an attempt; the token stops its agent.
    pub(crate) fn hold(&self, attempt: AttemptId) -> CancellationToken {
        let cancel = CancellationToken::new();
        let entry = Entry { cancel: cancel.clone(), reason: None, group: None, reported: None, stalled: false };
        self.lock().insert(attempt, entry);
        cancel
    }

    /// Stops holding an attempt (its outcome was acknowledged or dropped).
    pub(crate) fn release(&self, attempt: AttemptId) {
        self.lock().remove(&attempt);
    }

    /// Records the process group of an attempt's agent.
    pub(crate) fn set_group(&self, attempt: AttemptId, group: i32) {
        if let Some(entry) = self.lock().get_mut(&attempt) {
            entry.group = Some(group);
        }
    }

    /// Process groups of the agents running now.
    pub(crate) fn groups(&self) -> Vec<(AttemptId, i32)> {
        self.lock().iter().filter_map(|(attempt, entry)| entry.group.map(|group| (*attempt, group))).collect()
    }

    /// Ids of every held attempt, for heartbeats.
    pub(crate) fn attempt_ids(&self) -> Vec<String> {
        self.lock().keys().map(ToString::to_string).collect()
    }

    /// Records when an attempt's agent last reported progress.
    pub(crate) fn set_reported(&self, attempt: AttemptId, at: SystemTime) {
        if let Some(entry) = self.lock().get_mut(&attempt) {
            entry.reported = Some(at);
        }
    }

    /// When an attempt's agent last reported progress.
    pub(crate) fn reported(&self, attempt: AttemptId) -> Option<SystemTime> {
        self.lock().get(&attempt).and_then(|entry| entry.reported)
    }

    /// Marks an attempt's agent stalled or not.
    pub(crate) fn set_stalled(&self, attempt: AttemptId, stalled: bool) {
        if let Some(entry) = self.lock().get_mut(&attempt) {
            entry.stalled = stalled;
        }
    }

    /// Ids of the held attempts whose agents are stalled, for heartbeats.
    pub(crate) fn stalled_ids(&self) -> Vec<String> {
        self.lock().iter().filter(|(_, entry)| entry.stalled).map(|(attempt, _)| attempt.to_string()).collect()
    }

    /// Cancels one attempt; `false` when it is not held.
    pub(crate) fn cancel(&self, attempt: AttemptId, reason: CancelReason) -> bool {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(&attempt) else {
            return false;
        };
        entry.reason.get_or_insert(reason);
        entry.cancel.cancel();
        true
    }

    /// Cancels every held attempt.
    pub(crate) fn cancel_all(&self, reason: CancelReason) {
        for entry in self.lock().values_mut() {
            entry.reason.get_or_insert(reason);
            entry.cancel.cancel();
        }
    }

    /// Why an attempt was cancelled, if it was.
    pub(crate) fn reason(&self, attempt: AttemptId) -> Option<CancelReason> {
        self.lock().get(&attempt).and_then(|entry| entry.reason)
    }

    /// How many attempts are held.
    pub(crate) fn len(&self) -> usize {
        self.lock().len()
    }

    /// Whether none is held.
    pub(crate) fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_cancel_reason_sticks() {
        let held = Held::default();
        let attempt = AttemptId::new();
        let token = held.hold(attempt);
        assert!(held.cancel(attempt, CancelReason::LeaseLost));
        held.cancel_all(CancelReason::Shutdown);
        assert!(token.is_cancelled());
        assert_eq!(held.reason(attempt), Some(CancelReason::LeaseLost));
        held.release(attempt);
        assert!(held.is_empty());
        assert!(!held.cancel(attempt, CancelReason::Shutdown));
    }
}
