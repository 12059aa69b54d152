//! Running one agent as a supervised subprocess: its scratch folder
//! ([`workdir`]), agents a dead worker left behind ([`orphans`]), how it is
//! started ([`spawn`]), how its output is read and streamed ([`output`]), and
//! how it is waited on, watched for stalls ([`stall`]) and stopped ([`supervise`]). Nothing it starts outlives
//! its attempt: the agent's process group is killed, then the processes that
//! left the group are found by their `HIVE_ATTEMPT_ID` ([`sweep`]) and, where
//! the worker may make one, by the attempt's cgroup ([`cgroup`]).
//! A guardian process kills what a worker that died left running
//! ([`guardian`]). File work runs off the async threads ([`blocking_io`]).

pub(crate) mod cgroup;
pub(crate) mod guardian;
pub(crate) mod orphans;
pub(crate) mod output;
pub(crate) mod spawn;
pub(crate) mod stall;
pub(crate) mod supervise;
pub(crate) mod sweep;
pub(crate) mod workdir;

#[cfg(test)]
mod tests;

/// Waits until `check` holds, looking every 10 ms; panics naming `what`
/// once `timeout` has passed.
#[cfg(test)]
pub(crate) async fn eventually(what: &str, timeout: std::time::Duration, mut check: impl FnMut() -> bool) {
    let deadline = std::time::Instant::now() + timeout;
    let mut ticks = tokio::time::interval(std::time::Duration::from_millis(10));
    while !check() {
        assert!(std::time::Instant::now() < deadline, "timed out after {timeout:?} waiting for {what}");
        ticks.tick().await;
    }
}

/// Runs blocking file work on tokio's blocking pool; a job that panicked or
/// was cancelled is reported as an I/O error like any other.
pub(crate) async fn blocking_io<T: Send + 'static>(
    work: impl FnOnce() -> std::io::Result<T> + Send + 'static,
) -> std::io::Result<T> {
    tokio::task::spawn_blocking(work).await.map_err(std::io::Error::other)?
}
