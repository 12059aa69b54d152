//! Waiting on state with a deadline.

use std::future::Future;
use std::time::{Duration, Instant};

/// Polls `check` every 50 ms until it is true.
///
/// # Panics
/// When `timeout` passes first, naming `what`.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
