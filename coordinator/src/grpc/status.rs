//! The one mapping from coordinator errors to gRPC status codes. Internal
//! failures are logged here, with their full chain, and reach the caller as a
//! generic message.

use tonic::{Code, Status};
use tracing::error;

use crate::error::Error;

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let code = match &err {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::TaskNotFound(_) => Code::NotFound,
            Error::WorkerNotRegistered(_) | Error::WrongStatus { .. } => Code::FailedPrecondition,
            Error::LeaseLost { .. } => Code::Aborted,
            Error::ShuttingDown | Error::BeatsNotRecorded => Code::Unavailable,
            Error::Database(sqlx::Error::PoolTimedOut | sqlx::Error::Io(_) | sqlx::Error::PoolClosed) => {
                error!(error = ?err, "database unavailable");
                return Status::unavailable("the database is unavailable; retry shortly");
            }
            Error::Database(inner) => {
                error!(error = %inner, "internal error");
                return Status::internal("internal error (logged by the coordinator)");
            }
        };
        Status::new(code, err.to_string())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::state::TaskStatus;
    use hive_shared::ids::TaskId;

    #[test]
    fn each_error_gets_its_code_and_a_message_naming_the_subject() {
        let task = TaskId::new();
        let cases = [
            (Error::invalid("tasks[0].agent", "must not be empty"), Code::InvalidArgument, "tasks[0].agent"),
            (Error::TaskNotFound(task), Code::NotFound, "not found"),
            (
                Error::WrongStatus { task, status: TaskStatus::Running, action: "cancel", allowed: "ready tasks" },
                Code::FailedPrecondition,
                "is running",
            ),
            (Error::Database(sqlx::Error::PoolTimedOut), Code::Unavailable, "unavailable"),
            (Error::Database(sqlx::Error::RowNotFound), Code::Internal, "internal error"),
        ];
        for (err, code, needle) in cases {
            let status = Status::from(err);
            assert_eq!(status.code(), code);
            assert!(status.message().contains(needle), "{}", status.message());
        }
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let status = Status::from(Error::Database(sqlx::Error::Protocol("select secret from t".into())));
        assert!(!status.message().contains("secret"));
    }
}
