//! Waiting on an agent: it exits, times out, stalls, or is cancelled. On
//! timeout, stall or cancel the whole process group gets SIGTERM, then
//! SIGKILL after the grace period. Once the agent is gone, any process it
//! left in its group is killed too, then those it left outside the group
//! ([`sweep`]) and in its folder's cgroup ([`super::cgroup`]), so nothing it
//! started outlives its attempt.

use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;
use std::sync::Arc;
use std::sync::atomic::AtomicU64;
use std::time::Duration;

use hive_shared::convert::JsonObject;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncWriteExt;
use tokio::process::Child;
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use crate::config::AgentConfig;
use crate::process::cgroup::AgentCgroup;
use crate::process::output::{self, Pumped};
use crate::process::spawn::{self, HiveVars, Launch};
use crate::process::stall::{self, StallWatch};
use crate::process::sweep::{self, Scope, Traces};
use crate::process::workdir::Scratch;
use crate::process::{blocking_io, orphans};
use crate::shipper::LogSink;

/// How long output readers may take after the agent's processes are killed
/// (one that escaped them could hold a pipe open).
const DRAIN_OUTPUT_TIMEOUT: Duration = Duration::from_secs(5);

/// How an agent run ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Exit {
    /// It exited with this code.
    Code(i32),
    /// A signal ended it.
    Signal(i32),
    /// It ran past its time limit and was stopped.
    TimedOut,
    /// It was stopped by a cancel.
    Cancelled,
    /// It showed no progress for this long and was stopped.
    Stalled(Duration),
    /// It could not be started.
    NotStarted {
        /// Why, in words.
        problem: String,
        /// Whether the worker is at fault (a missing program or folder, no
        /// resources), rather than the task (a prompt too long for a command line).
        worker_fault: bool,
    },
    /// It ran, but how it ended is unknown.
    Unknown(String),
}

/// Everything learned from one run.
#[derive(Debug)]
pub(crate) struct Finished {
    /// How it ended.
    pub exit: Exit,
    /// The last JSON object line of stdout.
    pub stdout_json: Option<JsonObject>,
    /// The session id the agent's output showed (stdout first, then stderr).
    pub session: Option<String>,
    /// The end of stderr.
    pub stderr_tail: String,
}

impl Finished {
    /// A run that produced no output.
    pub(crate) fn without_output(exit: Exit) -> Self {
        Self { exit, stdout_json: None, session: None, stderr_tail: String::new() }
    }
}

/// One agent run to supervise.
pub(crate) struct Run<'a> {
    /// The agent's config.
    pub agent: &'a AgentConfig,
    /// The prompt.
    pub prompt: &'a str,
    /// Identity passed to the agent.
    pub vars: &'a HiveVars,
    /// What the agent's kind adds to its command.
    pub launch: &'a Launch,
    /// The attempt's scratch folder.
    pub scratch: &'a Scratch,
    /// Time limit.
    pub timeout: Duration,
    /// Output chunk size.
    pub chunk_size: usize,
    /// Finds the session id in the output.
    pub session_regex: Option<&'a regex::Regex>,
    /// Told the agent's process group as soon as it starts.
    pub on_spawn: &'a (dyn Fn(i32) + Send + Sync),
    /// Stall watching, for agents with a stall timeout.
    pub stall: Option<StallWatch>,
}

/// An agent that has started.
struct Started {
    child: Child,
    /// Its process group (the agent's pid).
    group: Option<Pid>,
}

/// Runs the agent to its end; never panics on anything the agent does.
pub(crate) async fn run(run: Run<'_>, sink: LogSink, cancel: &CancellationToken) -> Finished {
    let Started { mut child, group } = match start(&run).await {
        Ok(started) => started,
        Err(failed) => return failed,
    };
    let stdin_writer = child.stdin.take().map(|mut stdin| {
        let prompt = run.prompt.as_bytes().to_vec();
        tokio::spawn(async move {
            // An agent that exits without reading its stdin is not an error.
            let _ = stdin.write_all(&prompt).await;
            let _ = stdin.shutdown().await;
        })
    });
    let session = run.session_regex.cloned();
    let received = stall::OutputBytes::default();
    let watch_stdout = output::Watch { json: true, session: session.clone(), received: Arc::clone(&received) };
    let watch_stderr = output::Watch { json: false, session, received: Arc::clone(&received) };
    let stdout =
        child.stdout.take().map(|out| tokio::spawn(output::pump(out, sink.stream(1), run.chunk_size, watch_stdout)));
    let stderr =
        child.stderr.take().map(|err| tokio::spawn(output::pump(err, sink.stream(2), run.chunk_size, watch_stderr)));

    let exit = tokio::select! {
        status = child.wait() => exit_of(status),
        () = tokio::time::sleep(run.timeout) => {
            stop_group(&mut child, group, run.agent.kill_grace).await;
            Exit::TimedOut
        }
        () = cancel.cancelled() => {
            stop_group(&mut child, group, run.agent.kill_grace).await;
            Exit::Cancelled
        }
        quiet = stalled(run.stall.as_ref(), &received, group) => {
            stop_group(&mut child, group, run.agent.kill_grace).await;
            Exit::Stalled(quiet)
        }
    };
    stall::clear(run.stall.as_ref());
    sweep_up(&run.vars.attempt_id, group, run.scratch.cgroup.clone()).await;
    if let Some(writer) = stdin_writer {
        writer.abort();
    }
    let stdout = collect(stdout).await;
    let stderr = collect(stderr).await;
    Finished {
        exit,
        stdout_json: stdout.last_json,
        session: stdout.session.or(stderr.session),
        stderr_tail: String::from_utf8_lossy(&stderr.tail).trim().to_owned(),
    }
}

/// Resolves when the agent has stalled and is to be stopped; never without a watch.
async fn stalled(watch: Option<&StallWatch>, received: &AtomicU64, group: Option<Pid>) -> Duration {
    match watch {
        Some(watch) => watch.run(received, group).await,
        None => std::future::pending().await,
    }
}

/// Starts the agent in its own process group and, where there is one, its folder's cgroup.
async fn start(run: &Run<'_>) -> Result<Started, Finished> {
    let inherited = |name: &str| -> Option<OsString> { std::env::var_os(name) };
    let mut command = spawn::command(run.agent, run.prompt, run.vars, run.scratch, run.launch, inherited);
    let child = match command.spawn() {
        Ok(child) => child,
        Err(err) => return Err(Finished::without_output(spawn::not_started(run.agent, &err))),
    };
    let group = child.id().and_then(|pid| i32::try_from(pid).ok()).map(Pid::from_raw);
    if let Some(pid) = child.id() {
        let (cgroup, scratch, attempt) =
            (run.scratch.cgroup.clone(), run.scratch.dir.clone(), run.vars.attempt_id.clone());
        let _ = blocking_io(move || {
            if let Some(cgroup) = cgroup
                && let Err(err) = cgroup.enter(pid)
            {
                debug!(%cgroup, error = %err, "the agent stays in the worker's cgroup");
            }
            orphans::record(&scratch, pid, &attempt);
            Ok(())
        })
        .await;
    }
    if let Some(group) = group {
        (run.on_spawn)(group.as_raw());
    }
    Ok(Started { child, group })
}

/// Kills whatever the agent left running, in its group, out of it and in
/// its cgroup. The agent itself has been waited on.
async fn sweep_up(attempt_id: &str, group: Option<Pid>, cgroup: Option<AgentCgroup>) {
    signal_group(group, Signal::SIGKILL);
    let traces = Traces {
        attempt_ids: vec![attempt_id.to_owned()],
        group,
        cgroups: cgroup.into_iter().collect(),
        scope: Scope::current(),
    };
    let swept = sweep::sweep(traces).await;
    if swept.killed > 0 {
        info!(killed = swept.killed, "killed processes the agent left running");
    }
    if swept.left > 0 {
        warn!(left = swept.left, "processes the agent started are still alive after SIGKILL");
    }
}

fn exit_of(status: std::io::Result<ExitStatus>) -> Exit {
    match status {
        Ok(status) => match (status.code(), status.signal()) {
            (Some(code), _) => Exit::Code(code),
            (None, Some(signal)) => Exit::Signal(signal),
            (None, None) => Exit::Unknown("the agent ended with no exit code or signal".into()),
        },
        Err(err) => Exit::Unknown(format!("waiting for the agent failed: {err}")),
    }
}

/// SIGTERM to the group, then SIGKILL if the leader is still there after `grace`.
async fn stop_group(child: &mut Child, group: Option<Pid>, grace: Duration) {
    signal_group(group, Signal::SIGTERM);
    if tokio::time::timeout(grace, child.wait()).await.is_err() {
        debug!(?grace, "agent ignored SIGTERM; killing its process group");
        signal_group(group, Signal::SIGKILL);
        let _ = child.wait().await;
    }
}

fn signal_group(group: Option<Pid>, signal: Signal) {
    let Some(group) = group else { return };
    match killpg(group, signal) {
        Ok(()) | Err(nix::errno::Errno::ESRCH) => {}
        Err(err) => {
            warn!(pgid = group.as_raw(), ?signal, error = %err, "could not signal the agent's process group")
        }
    }
}

async fn collect(handle: Option<tokio::task::JoinHandle<Pumped>>) -> Pumped {
    let Some(mut handle) = handle else {
        return Pumped::default();
    };
    match tokio::time::timeout(DRAIN_OUTPUT_TIMEOUT, &mut handle).await {
        Ok(Ok(pumped)) => pumped,
        Ok(Err(err)) => {
            warn!(error = %err, "output reader failed");
            Pumped::default()
        }
        Err(_) => {
            warn!(
                "agent output stayed open after its process group was killed (a detached process holds it); dropping the rest"
            );
            handle.abort();
            Pumped::default()
        }
    }
}
