//! Talking to the coordinator: the channel, which failures are worth a
//! retry, and retrying with exponential backoff and jitter. Delays are capped
//! at the heartbeat interval, so a worker is back within about one beat of
//! its coordinator (or the database) coming back, well within the lease.

use std::future::Future;
use std::time::Duration;

use backon::{BackoffBuilder, ExponentialBuilder};
use hive_shared::client::{Connect, ConnectError};
use hive_shared::pb;
use hive_shared::pb::worker_service_client::WorkerServiceClient;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;
use tonic::{Code, Response, Status};
use tracing::warn;

/// The client every worker loop uses (cheap to clone: one shared connection).
pub(crate) type Client = WorkerServiceClient<Channel>;

/// Largest message the worker sends or accepts.
pub const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A lazily connecting client; reconnects on its own after failures.
///
/// # Errors
/// A malformed URL, unreadable TLS files.
pub(crate) fn client(connect: &Connect) -> Result<Client, ConnectError> {
    let channel = connect
        .endpoint()?
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(20))
        .keep_alive_timeout(Duration::from_secs(10))
        .keep_alive_while_idle(true)
        .connect_lazy();
    Ok(WorkerServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE))
}

/// The one place that decides which failed calls are worth repeating.
pub(crate) fn is_retryable(code: Code) -> bool {
    matches!(
        code,
        Code::Unavailable
            | Code::DeadlineExceeded
            | Code::Unknown
            | Code::Internal
            | Code::ResourceExhausted
            | Code::Cancelled
    )
}

/// Longest delay before registering, when the heartbeat interval is not yet known.
pub(crate) const REGISTER_DELAY_MAX: Duration = Duration::from_secs(5);

/// Retry delays: from 100 ms doubling to half of `max`, each with up to as
/// much again of jitter, so never above `max`; forever.
pub(crate) fn backoff(max: Duration) -> impl Iterator<Item = Duration> {
    ExponentialBuilder::default()
        .with_min_delay(Duration::from_millis(100).min(max / 2))
        .with_max_delay(max / 2)
        .with_jitter()
        .without_max_times()
        .build()
        .map(move |delay| delay.min(max))
}

/// Sleeps for `delay` unless `cancel` fires first; `false` when cancelled.
pub(crate) async fn pause(delay: Duration, cancel: &CancellationToken) -> bool {
    tokio::select! {
        () = tokio::time::sleep(delay) => true,
        () = cancel.cancelled() => false,
    }
}

/// How many times a call is made while the coordinator answers INTERNAL or
/// UNKNOWN: answers that may pass (a failover mid-call) but may as well come
/// back every time for the same request, which must then not wedge the caller.
const MAX_TRIES_ON_INTERNAL: u32 = 5;

/// Repeats `call` while it fails with a retryable code, until `abandon`,
/// pausing at most `max_delay` between tries; INTERNAL and UNKNOWN at most
/// [`MAX_TRIES_ON_INTERNAL`] times.
///
/// # Errors
/// The first non-retryable status, the last INTERNAL or UNKNOWN one, or
/// `Cancelled` once abandoned.
pub(crate) async fn retry<T, F, Fut>(
    what: &str,
    max_delay: Duration,
    abandon: &CancellationToken,
    mut call: F,
) -> Result<T, Status>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Result<Response<T>, Status>>,
{
    let mut delays = backoff(max_delay);
    let mut internal = 0;
    loop {
        let status = tokio::select! {
            result = call() => match result {
                Ok(response) => return Ok(response.into_inner()),
                Err(status) if is_retryable(status.code()) => status,
                Err(status) => return Err(status),
            },
            () = abandon.cancelled() => return Err(Status::cancelled(format!("{what} abandoned"))),
        };
        if matches!(status.code(), Code::Internal | Code::Unknown) {
            internal += 1;
            if internal >= MAX_TRIES_ON_INTERNAL {
                return Err(status);
            }
        }
        let delay = delays.next().unwrap_or(max_delay);
        warn!(call = what, code = ?status.code(), message = status.message(), retry_in = ?delay, "coordinator call failed; retrying");
        if !pause(delay, abandon).await {
            return Err(Status::cancelled(format!("{what} abandoned")));
        }
    }
}

/// Registers (again), retrying until it works or `abandon` fires.
///
/// # Errors
/// A non-retryable refusal (e.g. a bad agent name) or abandonment.
pub(crate) async fn register(
    client: &Client,
    request: &pb::RegisterRequest,
    abandon: &CancellationToken,
) -> Result<pb::RegisterResponse, Status> {
    retry("register", REGISTER_DELAY_MAX, abandon, || {
        let mut client = client.clone();
        let request = request.clone();
        async move { client.register(request).await }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transport_and_server_hiccups_are_retried() {
        assert!(is_retryable(Code::Unavailable));
        assert!(is_retryable(Code::Internal));
        for code in [Code::InvalidArgument, Code::NotFound, Code::FailedPrecondition, Code::Aborted] {
            assert!(!is_retryable(code), "{code:?}");
        }
    }

    #[test]
    fn backoff_grows_and_stays_capped() {
        let delays: Vec<Duration> = backoff(Duration::from_secs(5)).take(20).collect();
        assert!(delays[0] < Duration::from_millis(250));
        assert!(delays.iter().all(|delay| *delay <= Duration::from_secs(5)));
        assert!(delays[19] >= Duration::from_millis(2500));
    }

    #[test]
    fn a_short_heartbeat_interval_caps_every_delay() {
        let cap = Duration::from_millis(50);
        assert!(backoff(cap).take(20).all(|delay| delay <= cap));
    }
}
