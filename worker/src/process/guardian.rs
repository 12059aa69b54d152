//! The guardian: a small process each worker starts beside itself (the same
//! binary, `--guard`), in a process group of its own, holding the read end
//! of a pipe whose write end only the worker has. However the worker ends —
//! SIGKILL, a crash, the OOM killer — the kernel closes that write end; the
//! guardian reads end-of-file, waits for the worker's hold on its folders
//! to go (the kernel releases the pipe and the hold's lock in no fixed
//! order as a process dies, and the folders of a worker holding it are not
//! touched), and kills the agents the worker left ([`super::orphans::reap`]:
//! their process groups, whatever still carries their `HIVE_ATTEMPT_ID`,
//! their cgroups), then exits. So an agent never
//! outlives its worker by more than about a second, and never spends on a
//! task the coordinator is handing to another worker. A worker that exits
//! normally has stopped its agents already and dismisses its guardian,
//! which then leaves its folders alone.

use std::io::Read;
use std::path::Path;
use std::process::Stdio;

use tokio::process::{Child, Command};
use tracing::{info, warn};

use super::cgroup::CgroupRoot;

/// A running guardian. Dropping it closes the pipe: the guardian then
/// cleans up and exits; [`Guardian::dismiss`] lets it exit without.
#[derive(Debug)]
pub(crate) struct Guardian {
    child: Child,
}

impl Guardian {
    /// Tells the guardian its worker stopped every agent itself and leaves
    /// its folders as they are (`keep_work_dirs`, kept worktrees): it exits
    /// without cleaning up.
    pub(crate) async fn dismiss(mut self) {
        use tokio::io::AsyncWriteExt;
        if let Some(mut pipe) = self.child.stdin.take()
            && let Err(err) = pipe.write_all(DISMISSED).await
        {
            warn!(error = %err, "cannot dismiss the guardian; it cleans up the worker's folders");
        }
    }
}

/// What a worker writes to its guardian when it exits having stopped its agents.
const DISMISSED: &[u8] = b"dismissed";

/// Starts the guardian of the agents of worker `owner` under `work_dir`.
/// Keep it: dropping it closes the pipe, and the guardian then cleans up
/// and exits.
pub(crate) fn spawn(work_dir: &Path, owner: &str, cgroups: bool) -> Option<Guardian> {
    let program = match std::env::current_exe() {
        Ok(program) => program,
        Err(err) => {
            warn!(error = %err, "cannot find this program to start its guardian; agents may outlive a killed worker");
            return None;
        }
    };
    let mut command = Command::new(program);
    command.arg("--guard-work-dir").arg(work_dir).args(["--guard-owner", owner]);
    if cgroups {
        command.arg("--guard-cgroups");
    }
    // None of the worker's environment (its token above all): agents run as
    // the same user and could read it from /proc.
    command.env_clear();
    if let Some(filter) = std::env::var_os("RUST_LOG") {
        command.env("RUST_LOG", filter);
    }
    // Its own process group: a signal meant for the worker's group (Ctrl-C)
    // must not take the guardian with it.
    command.stdin(Stdio::piped()).kill_on_drop(false).process_group(0);
    match command.spawn() {
        Ok(child) => Some(Guardian { child }),
        Err(err) => {
            warn!(error = %err, "cannot start the guardian; agents may outlive a killed worker");
            None
        }
    }
}

/// Runs as a guardian: waits until the worker's end of the pipe on stdin
/// closes and worker `owner` has let go of its folders, then, unless the
/// worker dismissed it, kills whatever agents of dead workers are left under
/// `work_dir` (the worker's own, once it is dead) and removes their folders.
pub async fn guard(work_dir: &Path, owner: &str, cgroups: bool) {
    let read = tokio::task::spawn_blocking(|| {
        let mut said = Vec::new();
        // Returns once the worker is gone: only a dismissal is ever written.
        let _ = std::io::stdin().take(64).read_to_end(&mut said);
        said
    })
    .await;
    let said = read.unwrap_or_else(|err| {
        warn!(error = %err, "the guardian's wait failed; cleaning up now");
        Vec::new()
    });
    super::orphans::wait_released(work_dir, owner).await;
    if said == DISMISSED {
        return;
    }
    let root = if cgroups { super::blocking_io(CgroupRoot::detect).await.ok() } else { None };
    let killed = super::orphans::reap(work_dir, root.as_ref()).await;
    if killed > 0 {
        info!(killed, work_dir = %work_dir.display(), "the worker is gone; killed the agents it left");
    }
}
