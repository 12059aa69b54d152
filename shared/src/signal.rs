//! The shutdown signal: the first SIGTERM or SIGINT cancels a token (graceful
//! shutdown); a second one exits the process at once.

use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Exit status used when a second signal forces an immediate exit.
pub const FORCED_EXIT_CODE: i32 = 130;

/// Watches for SIGTERM and SIGINT: cancels `graceful` on the first and `now`
/// on the second. Returns when `now` is cancelled.
///
/// # Errors
/// When the signal handlers cannot be installed.
pub async fn watch(graceful: CancellationToken, now: CancellationToken) -> std::io::Result<()> {
    let mut terminate = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    for token in [&graceful, &now] {
        let name = tokio::select! {
            _ = terminate.recv() => "SIGTERM",
            _ = interrupt.recv() => "SIGINT",
            () = token.cancelled() => continue,
        };
        tracing::info!(
            signal = name,
            stage = if token == &graceful { "graceful" } else { "immediate" },
            "shutdown signal"
        );
        token.cancel();
    }
    Ok(())
}

/// Runs [`watch`] on `tracker`; a failure to install the handlers is logged,
/// and the signals then keep their default action (the process ends).
pub fn spawn_watch(tracker: &TaskTracker, graceful: CancellationToken, now: CancellationToken) {
    crate::tracked::spawn(tracker, "signal watch", async move {
        if let Err(err) = watch(graceful, now).await {
            tracing::error!(error = %err, "cannot watch for shutdown signals; SIGTERM and SIGINT keep their default action");
        }
    });
}
