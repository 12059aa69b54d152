//! The coordinator's error type. Variants name what happened; `grpc::status`
//! is the one place that turns them into gRPC codes.

use hive_shared::ids::{AttemptId, TaskId, WorkerId};

use crate::status::TaskStatus;

/// Everything a coordinator use-case can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The request is malformed; each entry names the field and what is wrong with it.
    #[error("{}", problems.join("; "))]
    InvalidArgument {
        /// One line per problem, each starting with the field path.
        problems: Vec<String>,
    },
    /// No task has this id.
    #[error("task {0} not found")]
    TaskNotFound(TaskId),
    /// No task has any of these ids (a bulk call naming tasks that do not exist).
    #[error("{}", tasks_not_found(.0))]
    TasksNotFound(Vec<TaskId>),
    /// No swarm has this id.
    #[error("swarm {0} not found")]
    SwarmNotFound(uuid::Uuid),
    /// The worker never registered (or its record was pruned).
    #[error("worker {0} is not registered; call Register first")]
    WorkerNotRegistered(WorkerId),
    /// The task's status forbids the operation.
    #[error("task {task} is {status}: {action} is only possible for {allowed}")]
    WrongStatus {
        /// The task.
        task: TaskId,
        /// Its status now.
        status: TaskStatus,
        /// What was asked.
        action: &'static str,
        /// Which statuses allow it.
        allowed: &'static str,
    },
    /// The attempt is no longer the task's current one: its holder lost the lease.
    #[error("attempt {attempt} is not the current attempt of task {task}; its lease was lost")]
    LeaseLost {
        /// The task.
        task: TaskId,
        /// The stale attempt.
        attempt: AttemptId,
    },
    /// The call carries no usable token; says which (missing, malformed,
    /// unknown, expired, revoked), never which tokens exist.
    #[error("{0}")]
    Unauthenticated(String),
    /// The caller's role or ownership does not allow the call.
    #[error("{0}")]
    PermissionDenied(String),
    /// No token has this name.
    #[error("no token is named `{0}`")]
    TokenNotFound(String),
    /// No webhook delivery has this id.
    #[error("webhook delivery {0} not found (deliveries are kept for webhook_delivery.retention)")]
    DeliveryNotFound(uuid::Uuid),
    /// A token (perhaps revoked) already has this name.
    #[error("a token named `{0}` exists already (names are never reused, even after a revoke)")]
    TokenNameTaken(String),
    /// A watch asked to resume from an event older than the oldest kept (or newer than the newest).
    #[error("{0}")]
    EventsOutOfRange(String),
    /// The coordinator is too busy for this call now; retry shortly.
    #[error("{0}; retry shortly")]
    Busy(&'static str),
    /// The coordinator is shutting down and takes no new long-polls.
    #[error("the coordinator is shutting down")]
    ShuttingDown,
    /// The heartbeat batch holding this beat could not be written (logged once, by the writer).
    #[error("the heartbeat could not be recorded; reconnect and beat again")]
    BeatsNotRecorded,
    /// The database failed or could not be reached.
    #[error("database error")]
    Database(#[from] sqlx::Error),
}

impl Error {
    /// A single invalid field.
    pub fn invalid(field: impl std::fmt::Display, reason: impl std::fmt::Display) -> Self {
        Self::InvalidArgument { problems: vec![format!("{field}: {reason}")] }
    }
}

/// `task X not found` or `tasks X, Y not found`.
fn tasks_not_found(tasks: &[TaskId]) -> String {
    let ids: Vec<String> = tasks.iter().map(ToString::to_string).collect();
    match ids.as_slice() {
        [one] => format!("task {one} not found"),
        _ => format!("tasks {} not found", ids.join(", ")),
    }
}

/// Result alias for the coordinator.
pub(crate) type Result<T, E = Error> = std::result::Result<T, E>;
