//! The worktrees of one worker process, parked between attempts so an
//! attempt reuses one (a checkout of what changed, not of every file).
//!
//! Each lives beside the scratch folders under `work_dir`, named after the
//! worker like them (`<worker id>-worktree-<n>`), never inside a scratch
//! folder, which a later attempt of another agent may get: a starting
//! worker (or a dead one's guardian) removes a dead worker's worktrees with
//! its scratch folders, and the repositories' records of them are pruned
//! when a worker starts. A worktree is parked under its repository (the
//! configured one, or a URL's mirror) once its attempt ended and it was
//! detached from the task's branch and cleaned; parked ones are removed
//! when the worker exits cleanly. Worktrees are made, removed and pruned
//! under the repository's host-wide lock.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::git::{git, worktree_lock};
use crate::config::WorkspaceConfig;

/// Folder under `work_dir` holding the mirrors of repository URLs, unless
/// `workspace.mirror_dir` says otherwise.
const MIRRORS: &str = "mirrors";

/// The parked worktrees of one worker process, by repository.
#[derive(Debug)]
pub(crate) struct Worktrees {
    work_dir: PathBuf,
    owner: String,
    parked: Mutex<HashMap<PathBuf, Vec<PathBuf>>>,
    made: AtomicUsize,
}

impl Worktrees {
    /// The worktrees of worker `owner` under `work_dir`.
    pub(crate) fn new(work_dir: PathBuf, owner: String) -> Self {
        Self { work_dir, owner, parked: Mutex::default(), made: AtomicUsize::new(0) }
    }

    /// Where the mirrors of `config`'s URL live on this host.
    pub(super) fn mirror_root(&self, config: &WorkspaceConfig) -> PathBuf {
        config.mirror_dir.clone().unwrap_or_else(|| self.work_dir.join(MIRRORS))
    }

    /// A parked worktree of `repo`, if there is one; it is the caller's now.
    pub(super) fn take(&self, repo: &Path) -> Option<PathBuf> {
        self.parked.lock().ok()?.get_mut(repo)?.pop()
    }

    /// A folder for a new worktree, never handed out before by this worker.
    pub(super) fn new_folder(&self) -> PathBuf {
        let made = self.made.fetch_add(1, Ordering::Relaxed) + 1;
        self.work_dir.join(format!("{}-worktree-{made}", self.owner))
    }

    /// Parks `dir`, a clean and detached worktree of `repo`, for the next attempt.
    pub(super) fn park(&self, repo: PathBuf, dir: PathBuf) {
        if let Ok(mut parked) = self.parked.lock() {
            parked.entry(repo).or_default().push(dir);
        }
    }

    /// Removes every parked worktree (the worker is exiting).
    pub(crate) async fn remove_parked(&self) {
        let parked = self.parked.lock().map(|mut parked| std::mem::take(&mut *parked)).unwrap_or_default();
        for (repo, dirs) in parked {
            for dir in dirs {
                remove(&repo, &dir).await;
            }
        }
    }
}

/// Where an attempt's worktree starts.
#[derive(Debug, Clone, Copy)]
pub(super) enum Start<'a> {
    /// On the task's branch, which exists (a retry).
    Branch(&'a str),
    /// On the task's branch, made at `base` (a first attempt).
    NewBranch { branch: &'a str, base: &'a str },
    /// At a commit, detached (a first attempt whose dependencies are merged in first).
    Detached(&'a str),
}

/// Makes a worktree of `repo` at `dir`, started at `start`.
pub(super) async fn add(repo: &Path, dir: &Path, start: Start<'_>) -> Result<(), String> {
    let dir = dir.to_string_lossy();
    let args: &[&str] = match start {
        Start::Branch(branch) => &["worktree", "add", "--quiet", &dir, branch],
        Start::NewBranch { branch, base } => &["worktree", "add", "--quiet", "-b", branch, &dir, base],
        Start::Detached(commit) => &["worktree", "add", "--quiet", "--detach", &dir, commit],
    };
    let _lock = worktree_lock(repo).await?;
    // A dead worker's worktree whose folder is gone still holds its branch until pruned.
    git(repo, &["worktree", "prune"]).await?;
    git(repo, args).await.map(drop)
}

/// Puts the worktree at `dir` on `branch` with a forced checkout. Under the
/// lock: two worktrees checking out one branch at once could both find it
/// free. Without `--ignore-other-worktrees`: a branch another live worktree
/// holds (an attempt fenced out but still running here) is not taken from under it.
pub(super) async fn check_out_branch(repo: &Path, dir: &Path, branch: &str) -> Result<(), String> {
    let _lock = worktree_lock(repo).await?;
    git(repo, &["worktree", "prune"]).await?;
    git(dir, &["checkout", "--quiet", "--force", branch]).await.map(drop)
}

/// Removes the worktree at `dir` (its branch stays); where git cannot,
/// deletes its folder and prunes.
pub(super) async fn remove(repo: &Path, dir: &Path) {
    let _lock = match worktree_lock(repo).await {
        Ok(lock) => Some(lock),
        Err(err) => {
            tracing::warn!(error = %err, "removing a worktree without the repository's worktree lock");
            None
        }
    };
    if let Err(err) = git(repo, &["worktree", "remove", "--force", &dir.to_string_lossy()]).await {
        tracing::warn!(error = %err, "could not remove a worktree; deleting its folder and pruning");
        let _ = tokio::fs::remove_dir_all(dir).await;
        let _ = git(repo, &["worktree", "prune"]).await;
    }
}

/// Forgets the worktrees of `repo` whose folders are gone.
pub(super) async fn prune(repo: &Path) {
    let _lock = worktree_lock(repo).await;
    if let Err(err) = git(repo, &["worktree", "prune"]).await {
        tracing::warn!(repo = %repo.display(), error = %err, "could not prune worktrees");
    }
}
