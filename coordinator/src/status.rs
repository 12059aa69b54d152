//! Task and attempt statuses as stored in PostgreSQL (`task_status`,
//! `attempt_outcome`) and their wire forms.

use std::fmt;

use hive_shared::pb;

/// Where a task is in its lifecycle (see DESIGN.md for the transitions).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, sqlx::Type)]
#[sqlx(type_name = "task_status", rename_all = "lowercase")]
pub enum TaskStatus {
    /// Waiting for dependencies.
    Blocked,
    /// Queued.
    Ready,
    /// Held by an attempt under a lease.
    Running,
    /// Cancelled while running: its worker is stopping the agent.
    Cancelling,
    /// Result recorded.
    Succeeded,
    /// Failed permanently or out of attempts.
    Dead,
    /// Cancelled before it ran.
    Cancelled,
}

impl TaskStatus {
    /// Every status, in lifecycle order.
    pub const ALL: [Self; 7] =
        [Self::Blocked, Self::Ready, Self::Running, Self::Cancelling, Self::Succeeded, Self::Dead, Self::Cancelled];

    /// Whether the task will never change again on its own.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Succeeded | Self::Dead | Self::Cancelled)
    }

    /// The status as the API reports it.
    pub fn to_pb(self) -> pb::TaskStatus {
        match self {
            Self::Blocked => pb::TaskStatus::Blocked,
            Self::Ready => pb::TaskStatus::Ready,
            Self::Running => pb::TaskStatus::Running,
            Self::Cancelling => pb::TaskStatus::Cancelling,
            Self::Succeeded => pb::TaskStatus::Succeeded,
            Self::Dead => pb::TaskStatus::Dead,
            Self::Cancelled => pb::TaskStatus::Cancelled,
        }
    }

    /// The status a filter asks for; `None` for "any".
    pub fn from_pb(status: pb::TaskStatus) -> Option<Self> {
        Self::ALL.into_iter().find(|candidate| candidate.to_pb() == status)
    }
}

impl fmt::Display for TaskStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self {
            Self::Blocked => "blocked",
            Self::Ready => "ready",
            Self::Running => "running",
            Self::Cancelling => "cancelling",
            Self::Succeeded => "succeeded",
            Self::Dead => "dead",
            Self::Cancelled => "cancelled",
        };
        f.write_str(name)
    }
}

/// How one attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::Type)]
#[sqlx(type_name = "attempt_outcome", rename_all = "lowercase")]
pub enum AttemptOutcome {
    /// Still running.
    Running,
    /// Succeeded; the task's result came from it.
    Succeeded,
    /// Failed.
    Failed,
    /// Lease expired before the worker reported.
    Lost,
    /// Stopped by a cancel.
    Cancelled,
    /// Handed back unfinished by a draining or stopping worker; not a failure.
    Released,
}

impl AttemptOutcome {
    /// The outcome as the API reports it.
    pub fn to_pb(self) -> pb::AttemptOutcome {
        match self {
            Self::Running => pb::AttemptOutcome::Running,
            Self::Succeeded => pb::AttemptOutcome::Succeeded,
            Self::Failed => pb::AttemptOutcome::Failed,
            Self::Lost => pb::AttemptOutcome::Lost,
            Self::Cancelled => pb::AttemptOutcome::Cancelled,
            Self::Released => pb::AttemptOutcome::Released,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_succeeded_dead_and_cancelled_are_terminal() {
        let terminal: Vec<_> = TaskStatus::ALL.into_iter().filter(|status| status.is_terminal()).collect();
        assert_eq!(terminal, [TaskStatus::Succeeded, TaskStatus::Dead, TaskStatus::Cancelled]);
    }

    #[test]
    fn every_status_round_trips_through_its_wire_form() {
        for status in TaskStatus::ALL {
            assert_eq!(TaskStatus::from_pb(status.to_pb()), Some(status));
        }
        assert_eq!(TaskStatus::from_pb(pb::TaskStatus::Unspecified), None);
    }
}
