//! Processes an attempt leaves outside its process group. An agent's process
//! can leave the group (`setsid`, a double fork), but it keeps its environment
//! unless it clears it, and every agent process carries `HIVE_ATTEMPT_ID`.
//! When an attempt ends, the sweep SIGKILLs each process that carries the
//! attempt's id, sits in its cgroup ([`super::cgroup`]) or descends from one
//! that does, and looks again until none is left.
//!
//! The worker is a child subreaper ([`adopt_orphans`]): a process whose
//! parent dies becomes the worker's child, not init's. Once an agent has
//! exited, every process it started is then a child of the worker or below
//! one, so the sweep reads only the worker's children ([`Scope::Descendants`]),
//! which costs one read where nothing is left; it reads all of `/proc`
//! ([`Scope::Host`]) where the worker is no subreaper. It reaps the dead
//! children it can tell are the attempt's (those it killed, members of the
//! agent's group, those the cgroup names) and waits on no other pid: the
//! agents themselves are tokio's to wait on.
//!
//! A process that clears its environment, leaves the group and outlives its
//! parent escapes the sweep; only the attempt's cgroup holds it. Without
//! `/proc` (other systems) the sweep finds nothing.

use std::collections::HashSet;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tracing::{debug, warn};

use crate::process::cgroup::AgentCgroup;

/// Looks at most this many times; the first look usually finds nothing.
const LOOKS: u32 = 8;
/// Pause after a look that found something; doubles each time (0.6 s in all).
const FIRST_PAUSE: Duration = Duration::from_millis(5);
/// How an agent process names its attempt in its environment.
const ATTEMPT_VARIABLE: &[u8] = b"HIVE_ATTEMPT_ID=";

/// Makes the worker a child subreaper, so the processes its agents leave
/// behind become its children, not init's, and the sweep can reap them.
pub(crate) fn adopt_orphans() {
    #[cfg(target_os = "linux")]
    if let Err(err) = nix::sys::prctl::set_child_subreaper(true) {
        warn!(error = %err, "cannot adopt orphaned agent processes; leftovers are looked for across the host");
    }
    #[cfg(not(target_os = "linux"))]
    debug!("no child subreaper on this system; leftovers are looked for by process group only");
}

/// Whether this process adopts its descendants' orphans.
fn is_subreaper() -> bool {
    #[cfg(target_os = "linux")]
    return nix::sys::prctl::get_child_subreaper().unwrap_or(false);
    #[cfg(not(target_os = "linux"))]
    false
}

/// Where the sweep looks for an attempt's processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Scope {
    /// The worker's children and everything below them: all an exited
    /// agent can have left, when the worker is a child subreaper.
    Descendants,
    /// Every process on the host.
    Host,
}

impl Scope {
    /// The worker's descendants where it is a child subreaper, else the host.
    pub(crate) fn current() -> Self {
        if is_subreaper() { Self::Descendants } else { Self::Host }
    }
}

/// What marks the processes to sweep.
#[derive(Debug)]
pub(crate) struct Traces {
    /// The attempts whose `HIVE_ATTEMPT_ID` marks them.
    pub attempt_ids: Vec<String>,
    /// The agent's process group, once its leader has been waited on (the
    /// group id cannot be reused while a member lives or awaits reaping).
    pub group: Option<Pid>,
    /// The cgroups the attempts ran in, emptied (not removed).
    pub cgroups: Vec<AgentCgroup>,
    /// Where to look.
    pub scope: Scope,
}

/// What a sweep did.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Swept {
    /// Processes it sent SIGKILL.
    pub killed: usize,
    /// Processes of the attempts still alive when it stopped looking.
    pub left: usize,
}

/// Sweeps on the blocking pool; see [`sweep_blocking`].
pub(crate) async fn sweep(traces: Traces) -> Swept {
    match tokio::task::spawn_blocking(move || sweep_blocking(&traces)).await {
        Ok(swept) => swept,
        Err(err) => {
            warn!(error = %err, "the sweep for leftover agent processes failed");
            Swept::default()
        }
    }
}

/// Kills every process `traces` marks (emptying its cgroups) and reaps
/// those that are the worker's children. Call it after the agent
/// itself has been waited on: it may reap any child it counts as the attempt's.
pub(crate) fn sweep_blocking(traces: &Traces) -> Swept {
    let mut sweeper = Sweeper {
        traces,
        markers: traces.attempt_ids.iter().map(|id| id.as_bytes()).collect(),
        me: nix::unistd::getpid().as_raw(),
        killed: HashSet::new(),
    };
    let mut look = sweeper.look();
    let mut pause = FIRST_PAUSE;
    for _ in 1..LOOKS {
        if look.alive == 0 && look.reaped == 0 {
            break;
        }
        std::thread::sleep(pause);
        pause *= 2;
        look = sweeper.look();
    }
    Swept { killed: sweeper.killed.len(), left: look.alive }
}

/// What one look found.
#[derive(Debug, Default)]
struct Look {
    /// The attempts' processes still alive (each was just sent SIGKILL).
    alive: usize,
    /// Dead children of the worker it reaped.
    reaped: usize,
}

struct Sweeper<'a> {
    traces: &'a Traces,
    markers: HashSet<&'a [u8]>,
    me: i32,
    /// Every pid sent SIGKILL: the attempts' own, to reap once dead.
    killed: HashSet<i32>,
}

impl Sweeper<'_> {
    fn look(&mut self) -> Look {
        let mut in_cgroups = 0;
        for cgroup in &self.traces.cgroups {
            let members = cgroup.members();
            if !members.is_empty() {
                cgroup.kill(&members);
                in_cgroups += members.len();
                self.killed.extend(members);
            }
        }
        let mut look = Look::default();
        let candidates = match self.traces.scope {
            Scope::Descendants => adopted(self.me).unwrap_or_else(all_processes),
            Scope::Host => all_processes(),
        };
        for pid in candidates {
            if pid != self.me {
                self.visit(pid, &mut look);
            }
        }
        // A member the look did not reach is alive all the same.
        look.alive = look.alive.max(in_cgroups);
        look
    }

    /// Kills `pid` and its descendants if it is the attempts', and reaps it if it is ours and dead.
    fn visit(&mut self, pid: i32, look: &mut Look) {
        let carries = std::fs::read(format!("/proc/{pid}/environ")).is_ok_and(|environ| self.carries(&environ));
        if !carries && !self.attributed(pid) {
            return;
        }
        self.kill_tree(pid);
        match waitpid(Pid::from_raw(pid), Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::StillAlive) => look.alive += 1,
            Ok(_) => look.reaped += 1,
            // Not the worker's child: its parent reaps it once it is dead.
            Err(_) if carries || stat(pid).is_some_and(|stat| !stat.dead) => look.alive += 1,
            Err(_) => {}
        }
    }

    /// Whether an environment names one of the attempts.
    fn carries(&self, environ: &[u8]) -> bool {
        attempts_named(environ).any(|attempt| self.markers.contains(attempt))
    }

    /// Whether a process whose environment does not say is the attempts' all the same.
    fn attributed(&self, pid: i32) -> bool {
        if self.killed.contains(&pid) {
            return true;
        }
        // The leader itself is tokio's to wait on; the group's other members are the attempt's.
        let member = self.traces.group.is_some_and(|group| {
            pid != group.as_raw() && stat(pid).is_some_and(|stat| stat.process_group == group.as_raw())
        });
        member || self.traces.cgroups.iter().any(|cgroup| cgroup.holds(pid))
    }

    /// SIGKILLs `pid` and every process below it: all were started by the attempt.
    fn kill_tree(&mut self, pid: i32) {
        let mut pending = vec![pid];
        while let Some(pid) = pending.pop() {
            if pid == self.me {
                continue;
            }
            if kill(Pid::from_raw(pid), Signal::SIGKILL).is_ok() && self.killed.insert(pid) {
                debug!(pid, "killed a process an attempt left behind");
            }
            pending.extend(children(pid));
        }
    }
}

/// Whether process `pid` runs with `HIVE_ATTEMPT_ID=<attempt>` in its environment.
pub(crate) fn runs_attempt(pid: i32, attempt: &str) -> bool {
    let Ok(environ) = std::fs::read(format!("/proc/{pid}/environ")) else { return false };
    attempts_named(&environ).any(|named| named == attempt.as_bytes())
}

/// The attempt ids an environment names.
fn attempts_named(environ: &[u8]) -> impl Iterator<Item = &[u8]> {
    environ.split(|byte| *byte == 0).filter_map(|entry| entry.strip_prefix(ATTEMPT_VARIABLE))
}

/// What the sweep reads from `/proc/PID/stat`.
struct Stat {
    /// A zombie, or about to be one.
    dead: bool,
    process_group: i32,
}

fn stat(pid: i32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name, in parentheses, may hold spaces and parentheses itself.
    let mut fields = stat.rsplit_once(')')?.1.split_whitespace();
    let state = fields.next()?;
    let process_group = fields.nth(1)?.parse().ok()?;
    Some(Stat { dead: matches!(state, "Z" | "X" | "x"), process_group })
}

/// The worker's own children that are not its agents: the orphans it
/// adopted. The kernel hands them to the first live thread of a subreaper,
/// its main thread for as long as the worker runs; the agents are children
/// of the threads that spawned them. `None` where the kernel does not list
/// children (`CONFIG_PROC_CHILDREN`).
fn adopted(me: i32) -> Option<Vec<i32>> {
    let listed = std::fs::read_to_string(format!("/proc/{me}/task/{me}/children")).ok()?;
    Some(listed.split_whitespace().filter_map(|child| child.parse().ok()).collect())
}

/// The children of process `pid`, from each of its threads.
fn children(pid: i32) -> Vec<i32> {
    let Ok(threads) = std::fs::read_dir(format!("/proc/{pid}/task")) else { return Vec::new() };
    let mut children = Vec::new();
    for thread in threads.flatten() {
        if let Ok(listed) = std::fs::read_to_string(thread.path().join("children")) {
            children.extend(listed.split_whitespace().filter_map(|child| child.parse::<i32>().ok()));
        }
    }
    children
}

/// Every process on the host.
fn all_processes() -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir("/proc") else { return Vec::new() };
    entries.flatten().filter_map(|entry| entry.file_name().to_str()?.parse().ok()).collect()
}
