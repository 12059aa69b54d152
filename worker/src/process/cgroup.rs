//! A cgroup v2 per scratch folder, where the worker may make one under its
//! own cgroup: each attempt's agent is moved into its folder's cgroup as
//! soon as it is spawned, and everything in it is killed when the attempt
//! ends (`cgroup.kill`, or each member on kernels before 5.14). It holds
//! what process groups and the sweep ([`super::sweep`]) cannot: a process
//! that left the agent's group and cleared its environment.
//!
//! Folders are pooled ([`super::workdir`]), one per slot in use, and their
//! cgroups with them: made with the folder, emptied at each attempt's end,
//! removed when the worker stops, or by the worker or guardian that reaps a
//! dead worker's folders ([`super::orphans`]). Making and removing a cgroup
//! per attempt costs the kernel about as much as moving the agent into it.
//!
//! The agent is moved after it starts, since moving it in between fork and
//! exec would take `unsafe` code: what it forks before the move stays in
//! the worker's cgroup, where the process group and the sweep still find it
//! unless it also clears its environment. Where the worker cannot make a
//! cgroup (an unprivileged process, a read-only `/sys/fs/cgroup` in a
//! container, no cgroup v2), attempts run without one.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

/// The worker's own cgroup, under which each scratch folder gets one.
#[derive(Debug, Clone)]
pub(crate) struct CgroupRoot {
    /// Its folder in the cgroup2 file system.
    dir: PathBuf,
    /// Its path as `/proc/PID/cgroup` names it.
    path: String,
}

impl CgroupRoot {
    /// Finds the worker's cgroup v2 folder and checks a cgroup can be made in it.
    ///
    /// # Errors
    /// When the worker is in no cgroup v2 hierarchy, none is mounted, or the
    /// probe cgroup cannot be made and removed.
    pub(crate) fn detect() -> io::Result<Self> {
        let own = std::fs::read_to_string("/proc/self/cgroup")?;
        let path = own
            .lines()
            .find_map(|line| line.strip_prefix("0::"))
            .ok_or_else(|| io::Error::other("the worker is in no cgroup v2 hierarchy"))?;
        let mounts = std::fs::read_to_string("/proc/self/mountinfo")?;
        let dir = mounts
            .lines()
            .find_map(|line| folder_of(line, path))
            .ok_or_else(|| io::Error::other("no cgroup2 mount shows the worker's cgroup"))?;
        let root = Self { dir, path: path.to_owned() };
        let probe = root.child(&format!("probe-{}", std::process::id()))?;
        probe.create()?;
        probe.remove()?;
        Ok(root)
    }

    /// The cgroup `hive-{name}` under it, made or not: a scratch folder's is
    /// named after the folder (earlier versions named one after each
    /// attempt, `attempt-{id}`).
    ///
    /// # Errors
    /// When `name` holds anything but ASCII letters, digits and `-`.
    pub(crate) fn child(&self, name: &str) -> io::Result<AgentCgroup> {
        if name.is_empty() || !name.bytes().all(|byte| byte.is_ascii_alphanumeric() || byte == b'-') {
            return Err(io::Error::new(io::ErrorKind::InvalidInput, "a name unfit for a cgroup"));
        }
        let name = format!("hive-{name}");
        let path = if self.path == "/" { format!("/{name}") } else { format!("{}/{name}", self.path) };
        Ok(AgentCgroup { dir: self.dir.join(name), path })
    }

    /// Its folder.
    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Where the cgroup at `path` is, if the `/proc/self/mountinfo` line
/// `mount` is a cgroup2 mount that shows it.
fn folder_of(mount: &str, path: &str) -> Option<PathBuf> {
    let (before, after) = mount.split_once(" - ")?;
    if after.split_whitespace().next()? != "cgroup2" {
        return None;
    }
    let mut fields = before.split_whitespace().skip(3);
    let (root, mount_point) = (fields.next()?, fields.next()?);
    // Octal escapes (a space is `\040`) are not worth undoing here.
    if mount_point.contains('\\') {
        return None;
    }
    let below = if root == "/" { path } else { path.strip_prefix(root)? };
    if !(below.is_empty() || below.starts_with('/')) {
        return None;
    }
    Some(PathBuf::from(format!("{mount_point}{below}")))
}

/// The cgroup the agents of one scratch folder run in.
#[derive(Debug, Clone)]
pub(crate) struct AgentCgroup {
    dir: PathBuf,
    path: String,
}

impl AgentCgroup {
    /// Makes it; one already there is used as it is.
    ///
    /// # Errors
    /// When the folder cannot be made.
    pub(crate) fn create(&self) -> io::Result<()> {
        match std::fs::create_dir(&self.dir) {
            Err(err) if err.kind() == io::ErrorKind::AlreadyExists => Ok(()),
            made => made,
        }
    }

    /// Moves process `pid` into it; what the process starts from then on is born in it.
    ///
    /// # Errors
    /// When the kernel refuses the move.
    pub(crate) fn enter(&self, pid: u32) -> io::Result<()> {
        std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
    }

    /// The live processes in it; none once it is empty or gone.
    pub(crate) fn members(&self) -> Vec<i32> {
        let listed = std::fs::read_to_string(self.dir.join("cgroup.procs")).unwrap_or_default();
        listed.lines().filter_map(|pid| pid.trim().parse().ok()).collect()
    }

    /// SIGKILLs everything in it: all at once through `cgroup.kill`, else each of `members`.
    pub(crate) fn kill(&self, members: &[i32]) {
        if std::fs::write(self.dir.join("cgroup.kill"), "1").is_ok() {
            return;
        }
        for &pid in members {
            let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
        }
    }

    /// Whether process `pid` is in it; a dead process not yet reaped still names it.
    pub(crate) fn holds(&self, pid: i32) -> bool {
        let Ok(cgroups) = std::fs::read_to_string(format!("/proc/{pid}/cgroup")) else { return false };
        cgroups.lines().any(|line| line.strip_prefix("0::") == Some(self.path.as_str()))
    }

    /// Removes it; one already gone is fine.
    ///
    /// # Errors
    /// When a process still lives in it.
    pub(crate) fn remove(&self) -> io::Result<()> {
        match std::fs::remove_dir(&self.dir) {
            Err(err) if err.kind() == io::ErrorKind::NotFound => Ok(()),
            removed => removed,
        }
    }

    /// Whether its folder exists.
    #[cfg(test)]
    pub(crate) fn exists(&self) -> bool {
        self.dir.exists()
    }
}

impl fmt::Display for AgentCgroup {
    fn fmt(&self, formatter: &mut fmt::Formatter<'_>) -> fmt::Result {
        formatter.write_str(&self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_mount_shows_the_cgroups_below_its_root() {
        let host = "41 31 0:38 / /sys/fs/cgroup rw,relatime - cgroup2 cgroup2 rw";
        assert_eq!(
            folder_of(host, "/system.slice/hive.service"),
            Some("/sys/fs/cgroup/system.slice/hive.service".into())
        );
        assert_eq!(folder_of(host, "/"), Some("/sys/fs/cgroup/".into()));
        let bound = "50 31 0:38 /system.slice /mnt/cg rw - cgroup2 cgroup2 rw";
        assert_eq!(folder_of(bound, "/system.slice/hive.service"), Some("/mnt/cg/hive.service".into()));
        assert_eq!(folder_of(bound, "/user.slice"), None);
        assert_eq!(folder_of(bound, "/system.slice-other"), None);
        let v1 = "30 25 0:27 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory";
        assert_eq!(folder_of(v1, "/"), None);
    }

    #[test]
    fn agent_cgroups_are_named_after_folders_that_cannot_climb_out() {
        let root = CgroupRoot { dir: "/sys/fs/cgroup/w".into(), path: "/w".into() };
        let cgroup = root.child("0190-abcd-1").unwrap();
        assert_eq!(cgroup.to_string(), "/w/hive-0190-abcd-1");
        assert_eq!(cgroup.dir, Path::new("/sys/fs/cgroup/w/hive-0190-abcd-1"));
        assert!(root.child("../escape").is_err());
        assert!(root.child("").is_err());
    }
}
