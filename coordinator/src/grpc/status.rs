//! The one mapping from coordinator errors to gRPC status codes. Internal
//! failures are logged here, with their full chain, and reach the caller as a
//! generic message. During a database outage every call fails the same way,
//! so each kind of failure is logged at ERROR at most once per
//! [`LOG_EVERY`]; the next line says how many were left out, and those are
//! logged at DEBUG.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use tonic::{Code, Status};
use tracing::{debug, error};

use crate::db;
use crate::error::Error;

/// Shortest time between two ERROR lines of one kind.
const LOG_EVERY: Duration = Duration::from_secs(10);

/// Failures that reached callers as UNAVAILABLE.
static UNAVAILABLE: LogLimit = LogLimit::new(LOG_EVERY);
/// Failures that reached callers as INTERNAL.
static INTERNAL: LogLimit = LogLimit::new(LOG_EVERY);

/// Lets one line through per interval and counts the ones it holds back.
#[derive(Debug)]
struct LogLimit {
    interval: Duration,
    state: Mutex<LogState>,
}

#[derive(Debug)]
struct LogState {
    last_logged: Option<Instant>,
    suppressed: u64,
}

impl LogLimit {
    const fn new(interval: Duration) -> Self {
        Self { interval, state: Mutex::new(LogState { last_logged: None, suppressed: 0 }) }
    }

    /// Whether a line may be logged at `now`: `Some(n)` with the `n` lines
    /// held back since the last one, or `None` (counted) within the interval.
    fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if state.last_logged.is_some_and(|last| now.saturating_duration_since(last) < self.interval) {
            state.suppressed += 1;
            return None;
        }
        state.last_logged = Some(now);
        Some(std::mem::take(&mut state.suppressed))
    }
}

impl From<Error> for Status {
    fn from(err: Error) -> Self {
        let code = match &err {
            Error::InvalidArgument { .. } => Code::InvalidArgument,
            Error::TaskNotFound(_)
            | Error::TasksNotFound(_)
            | Error::SwarmNotFound(_)
            | Error::TokenNotFound(_)
            | Error::DeliveryNotFound(_) => Code::NotFound,
            Error::TokenNameTaken(_) => Code::AlreadyExists,
            Error::Unauthenticated(_) => Code::Unauthenticated,
            Error::PermissionDenied(_) => Code::PermissionDenied,
            Error::WorkerNotRegistered(_) | Error::WrongStatus { .. } => Code::FailedPrecondition,
            Error::LeaseLost { .. } => Code::Aborted,
            Error::EventsOutOfRange(_) => Code::OutOfRange,
            Error::ShuttingDown | Error::BeatsNotRecorded | Error::Busy(_) => Code::Unavailable,
            Error::Database(inner) if db::transient(inner) => {
                match UNAVAILABLE.admit(Instant::now()) {
                    Some(suppressed) => error!(error = ?err, suppressed, "database unavailable"),
                    None => debug!(error = ?err, "database unavailable"),
                }
                return Status::unavailable("the database is unavailable; retry shortly");
            }
            Error::Database(inner) => {
                match INTERNAL.admit(Instant::now()) {
                    Some(suppressed) => error!(error = %inner, suppressed, "internal error"),
                    None => debug!(error = %inner, "internal error"),
                }
                return Status::internal("internal error (logged by the coordinator)");
            }
        };
        Status::new(code, bounded(err.to_string()))
    }
}

/// Longest message a status carries, in bytes. Messages travel in an HTTP/2
/// header, whose size clients limit (16 KiB by default); one naming a
/// megabyte-long key from an agent's result must not break the reply.
const MAX_MESSAGE: usize = 4096;

/// `message`, cut at a character boundary to [`MAX_MESSAGE`] bytes with a note of how much was left out.
fn bounded(mut message: String) -> String {
    if message.len() <= MAX_MESSAGE {
        return message;
    }
    let end = message.floor_char_boundary(MAX_MESSAGE - 64);
    let left_out = message.len() - end;
    message.truncate(end);
    message.push_str(&format!("… ({left_out} more bytes)"));
    message
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::status::TaskStatus;
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
    fn the_log_limit_lets_one_line_through_per_interval_and_counts_the_rest() {
        let limit = LogLimit::new(Duration::from_secs(10));
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        assert_eq!(limit.admit(at(0)), Some(0), "the first line goes through");
        assert_eq!(limit.admit(at(1)), None);
        assert_eq!(limit.admit(at(9)), None);
        assert_eq!(limit.admit(at(10)), Some(2), "the next line reports the two held back");
        assert_eq!(limit.admit(at(11)), None);
        assert_eq!(limit.admit(at(30)), Some(1));
        assert_eq!(limit.admit(at(45)), Some(0), "a quiet interval holds nothing back");
    }

    #[test]
    fn long_messages_are_cut_to_fit_a_header() {
        let key = "\u{1F41D}".repeat(10_000);
        let status = Status::from(Error::invalid(format!("result.{key}"), "contains a NUL character"));
        assert!(status.message().len() <= MAX_MESSAGE, "{}", status.message().len());
        assert!(status.message().starts_with("result.") && status.message().ends_with("more bytes)"));
    }

    #[test]
    fn internal_errors_do_not_leak_details() {
        let status = Status::from(Error::Database(sqlx::Error::Protocol("select secret from t".into())));
        assert!(!status.message().contains("secret"));
    }
}
