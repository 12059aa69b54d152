//! Agents left behind by a worker that died without stopping them (SIGKILL,
//! a crash, a power cut on a VM that came back). Each scratch folder records
//! the process group and attempt of the agent it last ran; a worker starting
//! on the same work folder kills the groups whose leader still carries that
//! attempt's `HIVE_ATTEMPT_ID` (so a reused pid is never hit), then sweeps
//! the host for any other process carrying it and empties the attempt's
//! cgroup ([`super::sweep`]), and removes the folders (scratch folders and
//! workspaces' worktrees) — only those of workers that are gone. Several
//! workers may share a `work_dir` (the default is one per host): each holds
//! an exclusive `flock` on `<worker id>.lock` while it lives, and its
//! folders are named after it; what is not named after a worker (the
//! host's mirrors of repository URLs) is left alone.
//! Their tasks were already requeued by the coordinator when the lease ran out.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use nix::fcntl::{Flock, FlockArg};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tracing::{info, warn};

use crate::process::cgroup::CgroupRoot;
use crate::process::sweep::{self, Scope, Traces};

/// Name of the file holding the process group id and attempt id of the folder's last agent.
pub(crate) const PGID_FILE: &str = "agent.pgid";

/// Records an agent's process group and attempt in its scratch folder; a
/// blocking write.
///
/// Folders are reused, and the record with them: it is overwritten in place,
/// at a fixed width (the process group id padded to u32's ten digits, the
/// attempt id, 36 characters, to 64), not truncated and written anew. On
/// ext4 a file truncated to nothing and rewritten is flushed when it is
/// closed (`auto_da_alloc`), and its blocks are freed and allocated again:
/// work per spawn that an overwrite in place avoids.
pub(crate) fn record(scratch: &Path, pgid: u32, attempt: &str) {
    let record = format!("{pgid:>10} {attempt:<64}");
    let written = OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(scratch.join(PGID_FILE))
        .and_then(|file| file.write_all_at(record.as_bytes(), 0));
    if let Err(err) = written {
        warn!(error = %err, "could not record the agent's process group; a crash would leave it running");
    }
}

/// Length of a worker id, which starts the name of each of its folders.
const OWNER_LEN: usize = 36;

/// A live worker's hold on its folders under a `work_dir`; the kernel
/// releases it however the process ends.
#[derive(Debug)]
pub(crate) struct Hold {
    _lock: Flock<File>,
}

/// Takes the hold of worker `owner` on its folders under `work_dir`.
///
/// # Errors
/// When the lock file cannot be made or is held by another process.
pub(crate) fn hold(work_dir: &Path, owner: &str) -> std::io::Result<Hold> {
    std::fs::create_dir_all(work_dir)?;
    let file = OpenOptions::new().create(true).truncate(false).write(true).open(lock_file(work_dir, owner))?;
    let lock = Flock::lock(file, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| std::io::Error::from(errno))?;
    Ok(Hold { _lock: lock })
}

/// Waits until worker `owner` has let go of its folders under `work_dir`:
/// it has exited, or dropped its [`Hold`].
pub(crate) async fn wait_released(work_dir: &Path, owner: &str) {
    let path = lock_file(work_dir, owner);
    let waited = super::blocking_io(move || {
        let file = File::open(path)?;
        Flock::lock(file, FlockArg::LockShared).map(drop).map_err(|(_, errno)| std::io::Error::from(errno))
    })
    .await;
    if let Err(err) = waited {
        warn!(owner, error = %err, "cannot wait for the worker's hold on its folders; cleaning up now");
    }
}

fn lock_file(work_dir: &Path, owner: &str) -> std::path::PathBuf {
    work_dir.join(format!("{owner}.lock"))
}

/// Whether `name` (a folder or lock file) is a worker's: it starts with a
/// worker's id (or, for older folders, an attempt's). Anything else under
/// `work_dir` (the mirrors of repository URLs) is shared and left alone.
fn is_workers(name: &str) -> bool {
    name.get(..OWNER_LEN).is_some_and(|owner| uuid::Uuid::try_parse(owner).is_ok())
}

/// Whether the worker that owns `name` (a folder or lock file) still lives.
fn owner_lives(work_dir: &Path, name: &str) -> bool {
    let Some(owner) = name.get(..OWNER_LEN) else { return false };
    let Ok(file) = File::open(lock_file(work_dir, owner)) else { return false };
    Flock::lock(file, FlockArg::LockSharedNonblock).is_err()
}

/// Kills agents a previous worker left under `work_dir`, and what they
/// started (in their cgroups under `cgroups`, where there are any), and
/// removes their folders; returns how many agents were killed.
pub(crate) async fn reap(work_dir: &Path, cgroups: Option<&CgroupRoot>) -> usize {
    let (work_dir, cgroups) = (work_dir.to_path_buf(), cgroups.cloned());
    tokio::task::spawn_blocking(move || reap_blocking(&work_dir, cgroups.as_ref())).await.unwrap_or(0)
}

fn reap_blocking(work_dir: &Path, cgroups: Option<&CgroupRoot>) -> usize {
    let Ok(entries) = std::fs::read_dir(work_dir) else { return 0 };
    let mut killed = 0;
    let mut stale = Vec::new();
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !is_workers(&name) || owner_lives(work_dir, &name) {
            continue;
        }
        let folder = entry.path();
        if name.ends_with(".lock") {
            let _ = std::fs::remove_file(&folder);
            continue;
        }
        let (pgid, attempt) = read_record(&folder);
        // Folders written before the record named the attempt were named after it.
        let attempt = attempt.unwrap_or_else(|| name.clone());
        if let Some(pgid) = pgid
            && sweep::runs_attempt(pgid, &attempt)
            && killpg(Pid::from_raw(pgid), Signal::SIGKILL).is_ok()
        {
            info!(attempt_id = %attempt, pgid, "killed an agent left running by a previous worker");
            killed += 1;
        }
        if let Err(err) = std::fs::remove_dir_all(&folder) {
            warn!(folder = %folder.display(), error = %err, "could not remove a stale attempt folder");
        }
        stale.push((attempt, name));
    }
    if !stale.is_empty() {
        sweep_stale(stale, cgroups);
    }
    killed
}

/// Kills what the stale attempts' agents started outside their groups, on
/// the whole host (none of it is this worker's child, nor in its subtree),
/// and in their folders' cgroups under `cgroups`, then removes those.
/// `stale` pairs each folder's last attempt with the folder's name.
fn sweep_stale(stale: Vec<(String, String)>, cgroups: Option<&CgroupRoot>) {
    // Earlier versions named a cgroup after each attempt.
    let names = stale.iter().flat_map(|(attempt, folder)| [folder.clone(), format!("attempt-{attempt}")]);
    let cgroups: Vec<_> =
        cgroups.map(|root| names.filter_map(|name| root.child(&name).ok()).collect()).unwrap_or_default();
    let attempt_ids = stale.into_iter().map(|(attempt, _)| attempt).collect();
    let traces = Traces { attempt_ids, group: None, cgroups, scope: Scope::Host };
    let swept = sweep::sweep_blocking(&traces);
    if swept.killed > 0 {
        info!(killed = swept.killed, "killed processes the agents of a previous worker left running");
    }
    if swept.left > 0 {
        warn!(left = swept.left, "processes a previous worker's agents started are still alive after SIGKILL");
    }
    for cgroup in &traces.cgroups {
        if let Err(err) = cgroup.remove() {
            warn!(%cgroup, error = %err, "could not remove a previous worker's cgroup");
        }
    }
}

/// The process group and attempt a folder's record names, where it has them.
fn read_record(folder: &Path) -> (Option<i32>, Option<String>) {
    let record = std::fs::read_to_string(folder.join(PGID_FILE)).unwrap_or_default();
    let mut fields = record.split_whitespace();
    (fields.next().and_then(|pgid| pgid.parse().ok()), fields.next().map(str::to_owned))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn the_guardian_waits_for_its_worker_to_let_go_of_its_folders() {
        let work = tempfile::tempdir().unwrap();
        let owner = hive_shared::ids::WorkerId::new().to_string();
        let held = hold(work.path(), &owner).unwrap();
        let waiting = tokio::spawn({
            let (work, owner) = (work.path().to_path_buf(), owner.clone());
            async move { wait_released(&work, &owner).await }
        });
        // Parked in flock(2) on the hold's lock file while the hold is kept.
        let inode = std::os::unix::fs::MetadataExt::ino(&std::fs::metadata(lock_file(work.path(), &owner)).unwrap());
        crate::process::eventually("the waiter to block on the lock", std::time::Duration::from_secs(10), || {
            waits_on_flock(inode)
        })
        .await;
        assert!(!waiting.is_finished(), "released while the worker holds its folders");
        drop(held);
        tokio::time::timeout(std::time::Duration::from_secs(10), waiting).await.unwrap().unwrap();
    }

    /// Whether `/proc/locks` lists a blocked `flock` on the file with `inode`
    /// (lines such as `1: -> FLOCK  ADVISORY  READ 123 fd:01:4567 0 EOF`).
    fn waits_on_flock(inode: u64) -> bool {
        let locks = std::fs::read_to_string("/proc/locks").unwrap();
        locks.lines().any(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            fields.get(1) == Some(&"->")
                && fields.get(2) == Some(&"FLOCK")
                && fields.get(6).and_then(|device| device.rsplit(':').next()) == Some(inode.to_string().as_str())
        })
    }

    #[tokio::test]
    async fn a_reused_folder_reads_its_latest_record() {
        let folder = tempfile::tempdir().unwrap();
        record(folder.path(), 4_000_000_000, "an-attempt-id-longer-than-any-real-one-0123456789");
        let attempt = hive_shared::ids::AttemptId::new().to_string();
        record(folder.path(), 7, &attempt);
        assert_eq!(read_record(folder.path()), (Some(7), Some(attempt)));
    }

    #[tokio::test]
    async fn an_orphaned_agent_is_killed_and_a_reused_pid_is_not() {
        let work = tempfile::tempdir().unwrap();
        let attempt = hive_shared::ids::AttemptId::new().to_string();
        let mut orphan = std::process::Command::new("sleep");
        orphan.arg("1007.2468").env("HIVE_ATTEMPT_ID", &attempt);
        std::os::unix::process::CommandExt::process_group(&mut orphan, 0);
        let mut orphan = orphan.spawn().unwrap();
        let folder = work.path().join(format!("{}-1", hive_shared::ids::WorkerId::new()));
        std::fs::create_dir_all(&folder).unwrap();
        record(&folder, orphan.id(), &attempt);

        // A folder whose recorded pid now belongs to an unrelated process: left alone.
        let mut bystander = std::process::Command::new("sleep").arg("1007.3579").spawn().unwrap();
        let stale = work.path().join(format!("{}-1", hive_shared::ids::WorkerId::new()));
        std::fs::create_dir_all(&stale).unwrap();
        record(&stale, bystander.id(), &hive_shared::ids::AttemptId::new().to_string());

        // A live worker's folder, its agent running: left alone, however the
        // record reads. A gone worker's lock file: removed.
        let live_owner = hive_shared::ids::WorkerId::new().to_string();
        let _hold = hold(work.path(), &live_owner).unwrap();
        let busy_attempt = hive_shared::ids::AttemptId::new().to_string();
        let mut busy = std::process::Command::new("sleep");
        busy.arg("1007.4680").env("HIVE_ATTEMPT_ID", &busy_attempt);
        std::os::unix::process::CommandExt::process_group(&mut busy, 0);
        let mut busy = busy.spawn().unwrap();
        let busy_folder = work.path().join(format!("{live_owner}-1"));
        std::fs::create_dir_all(&busy_folder).unwrap();
        record(&busy_folder, busy.id(), &busy_attempt);
        let gone_owner = hive_shared::ids::WorkerId::new().to_string();
        drop(hold(work.path(), &gone_owner).unwrap());
        let shared = work.path().join("mirrors");
        std::fs::create_dir_all(&shared).unwrap();

        assert_eq!(reap(work.path(), None).await, 1);
        assert!(busy.try_wait().unwrap().is_none(), "a live worker's agent must survive");
        assert!(busy_folder.exists(), "a live worker's folder stays");
        assert!(!work.path().join(format!("{gone_owner}.lock")).exists(), "a gone worker's lock file goes");
        busy.kill().unwrap();
        busy.wait().unwrap();
        // Killed, and reaped by the sweep if it saw the orphan before it died
        // (it is this test's child, as no real predecessor's agent is).
        match orphan.wait() {
            Ok(status) => assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9)),
            Err(err) => assert_eq!(err.raw_os_error(), Some(nix::errno::Errno::ECHILD as i32)),
        }
        assert!(bystander.try_wait().unwrap().is_none(), "an unrelated process must survive");
        assert!(!folder.exists() && !stale.exists());
        assert!(shared.exists(), "a folder not named after a worker is left alone");
        bystander.kill().unwrap();
        bystander.wait().unwrap();
    }

    #[tokio::test]
    async fn what_a_dead_workers_agent_started_outside_its_group_is_killed() {
        let work = tempfile::tempdir().unwrap();
        let attempt = hive_shared::ids::AttemptId::new().to_string();
        let marker = "1007.5791";
        // The agent is gone; its daemon, in a session of its own, is not.
        let up = work.path().join("up");
        let script = format!("setsid sh -c 'touch {}; exec sleep {marker}' &", up.display());
        let mut agent = std::process::Command::new("sh");
        agent.args(["-c", &script]).env("HIVE_ATTEMPT_ID", &attempt);
        std::os::unix::process::CommandExt::process_group(&mut agent, 0);
        let mut agent = agent.spawn().unwrap();
        agent.wait().unwrap();
        let folder = work.path().join(format!("{}-1", hive_shared::ids::WorkerId::new()));
        std::fs::create_dir_all(&folder).unwrap();
        record(&folder, agent.id(), &attempt);
        crate::process::eventually("the daemon to start", std::time::Duration::from_secs(5), || up.exists()).await;

        assert_eq!(reap(work.path(), None).await, 0, "no agent was left to kill");
        assert!(!folder.exists());
        let what = "the daemon to die with its dead worker's restart";
        crate::process::eventually(what, std::time::Duration::from_secs(5), || !running(marker)).await;
    }

    /// Needs a host where the test process may make cgroups; passes without
    /// checking anything elsewhere.
    #[tokio::test]
    async fn a_dead_workers_cgroups_are_emptied_and_removed() {
        let Ok(root) = CgroupRoot::detect() else { return };
        let work = tempfile::tempdir().unwrap();
        let (name, attempt) = (format!("{}-1", hive_shared::ids::WorkerId::new()), hive_shared::ids::AttemptId::new());
        let folder = work.path().join(&name);
        std::fs::create_dir_all(&folder).unwrap();
        // In a group of its own and without the attempt's id: only the folder's cgroup names it.
        let hidden = |marker: &str| {
            let mut hidden = std::process::Command::new("sleep");
            hidden.arg(marker).env_clear();
            std::os::unix::process::CommandExt::process_group(&mut hidden, 0);
            hidden.spawn().unwrap()
        };
        let (mut in_folders, mut in_attempts) = (hidden("1007.6802"), hidden("1007.6803"));
        let folders_cgroup = root.child(&name).unwrap();
        // The cgroup an earlier version made, named after the attempt.
        let attempts_cgroup = root.child(&format!("attempt-{attempt}")).unwrap();
        for (cgroup, process) in [(&folders_cgroup, &in_folders), (&attempts_cgroup, &in_attempts)] {
            cgroup.create().unwrap();
            cgroup.enter(process.id()).unwrap();
        }
        record(&folder, in_folders.id(), &attempt.to_string());

        assert_eq!(reap(work.path(), Some(&root)).await, 0, "the recorded group runs no attempt");
        for process in [&mut in_folders, &mut in_attempts] {
            // Reaped by the sweep, or here.
            match process.wait() {
                Ok(status) => assert_eq!(std::os::unix::process::ExitStatusExt::signal(&status), Some(9)),
                Err(err) => assert_eq!(err.raw_os_error(), Some(nix::errno::Errno::ECHILD as i32)),
            }
        }
        assert!(!folders_cgroup.exists() && !attempts_cgroup.exists());
        assert!(!folder.exists());
    }

    /// Whether a live process's command line holds `marker`.
    fn running(marker: &str) -> bool {
        std::fs::read_dir("/proc").unwrap().flatten().any(|entry| {
            let cmdline = std::fs::read(entry.path().join("cmdline")).unwrap_or_default();
            String::from_utf8_lossy(&cmdline).replace('\0', " ").contains(marker)
        })
    }
}
