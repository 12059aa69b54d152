//! Background loops every coordinator runs; each is safe to run on all
//! coordinators at once.

pub(crate) mod due_tasks;
pub(crate) mod lease_reaper;
pub(crate) mod retention;
pub(crate) mod statistics;

use std::future::Future;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

/// Runs `pass` every `interval` (the first at once; a slow pass delays the
/// next rather than bunching them) until `cancel`.
pub(crate) async fn every<F, Fut>(interval: Duration, cancel: &CancellationToken, mut pass: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = ()>,
{
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = ticker.tick() => {}
            () = cancel.cancelled() => return,
        }
        pass().await;
    }
}
