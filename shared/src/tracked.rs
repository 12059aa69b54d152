//! Spawning onto a [`TaskTracker`] so that a task's failure is seen: the
//! tracker owns the task (shutdown waits for it), and a panic is logged at
//! ERROR with the task's name instead of vanishing with its join handle; a
//! panic of an essential task also stops the process.

use std::any::Any;
use std::future::Future;
use std::panic::AssertUnwindSafe;

use futures_util::FutureExt;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::Instrument;

/// Spawns `future` on `tracker`, in the caller's span; logs it by `task`
/// name if it panics.
pub fn spawn<F>(tracker: &TaskTracker, task: &'static str, future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    watch(tracker, task, None, future);
}

/// Spawns a task the process cannot do without (a lease reaper, a heartbeat
/// writer) like [`spawn`]; if it panics, `failed` is cancelled too, so the
/// process stops and its supervisor starts it afresh, instead of serving on
/// without it.
pub fn spawn_essential<F>(tracker: &TaskTracker, task: &'static str, failed: CancellationToken, future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    watch(tracker, task, Some(failed), future);
}

fn watch<F>(tracker: &TaskTracker, task: &'static str, failed: Option<CancellationToken>, future: F)
where
    F: Future<Output = ()> + Send + 'static,
{
    // Boxed first: an attempt's future is large, and unboxed it is copied
    // whole when spawned, when first polled and when it finishes.
    let future = Box::pin(future);
    let watched = async move {
        if let Err(panic) = AssertUnwindSafe(future).catch_unwind().await {
            tracing::error!(task, panic = panic_message(panic.as_ref()), essential = failed.is_some(), "task panicked");
            if let Some(failed) = failed {
                failed.cancel();
            }
        }
    };
    tracker.spawn(watched.in_current_span());
}

/// The text a panic was raised with, when it was raised with text.
fn panic_message(panic: &(dyn Any + Send)) -> &str {
    panic
        .downcast_ref::<&str>()
        .copied()
        .or_else(|| panic.downcast_ref::<String>().map(String::as_str))
        .unwrap_or("(not a string)")
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicBool, Ordering};

    use super::*;

    #[tokio::test]
    async fn a_panicking_task_is_caught_and_the_others_still_run() {
        let tracker = TaskTracker::new();
        let ran = Arc::new(AtomicBool::new(false));
        spawn(&tracker, "doomed", async { panic!("on purpose") });
        let flag = Arc::clone(&ran);
        spawn(&tracker, "fine", async move { flag.store(true, Ordering::SeqCst) });
        tracker.close();
        tracker.wait().await;
        assert!(ran.load(Ordering::SeqCst));
    }

    #[tokio::test]
    async fn an_essential_task_that_panics_cancels_the_process_token() {
        let tracker = TaskTracker::new();
        let failed = CancellationToken::new();
        spawn_essential(&tracker, "fine", failed.clone(), async {});
        tracker.close();
        tracker.wait().await;
        assert!(!failed.is_cancelled());
        let tracker = TaskTracker::new();
        spawn_essential(&tracker, "doomed", failed.clone(), async { panic!("on purpose") });
        tracker.close();
        tracker.wait().await;
        assert!(failed.is_cancelled());
    }

    #[test]
    fn panic_messages_are_read_from_str_and_string_payloads() {
        let text: Box<dyn Any + Send> = Box::new("static text");
        let owned: Box<dyn Any + Send> = Box::new(String::from("formatted 7"));
        let other: Box<dyn Any + Send> = Box::new(7_u8);
        assert_eq!(panic_message(text.as_ref()), "static text");
        assert_eq!(panic_message(owned.as_ref()), "formatted 7");
        assert_eq!(panic_message(other.as_ref()), "(not a string)");
    }
}
