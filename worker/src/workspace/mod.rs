//! A git worktree per attempt, for agents with a `[agents.NAME.workspace]`:
//! agents on one host never edit the same checkout, and the change they
//! leave is the task's result.
//!
//! - **Which repository**: the one `repo` names on this host, or, for a URL,
//!   the host's mirror of it ([`mirror`], [`remote`]), fetched when its last
//!   fetch is older than `fetch_interval` or a commit a task starts from is
//!   missing; there `base` is the upstream's (`origin/<base>`).
//! - **Where**: a worktree of this worker's ([`worktrees`]), beside its
//!   scratch folders, reused: an attempt takes one the worker parked for
//!   the repository (cleaned with `git clean -ffdx` when parked, ignored
//!   files included), else makes one, and moves it to the task's branch or
//!   `base` with a forced checkout, so nothing of an earlier task is left.
//!   The branch is
//!   `<branch_prefix><task id>`: a retry continues it where the last attempt
//!   left it, a first attempt starts it from `base`; a branch another live
//!   worktree holds is never taken from under it. With `keep`, the worktree
//!   is made in the attempt's scratch folder (`<scratch>/workspace`) and stays.
//! - **Dependencies**: a task whose dependencies' results name commits (their
//!   own workspaces) starts from `base` with each merged in, in key order,
//!   and gets its branch only once they all merged; a conflict fails the
//!   attempt permanently, naming the files.
//! - **Git runs guarded** ([`git`]); a worktree whose `.git` the agent
//!   replaced is not recorded, nor reused. (Agents run as the worker's user:
//!   this keeps the worker's own git calls from running what an agent left
//!   behind, it is not a sandbox.)
//! - **The result**: what the agent left uncommitted is committed; the
//!   result gets `workspace` with the branch, the commit, its base, a
//!   diffstat and the patch against the base (capped), and the branch is
//!   pushed when `push` names a remote.
//! - **After the attempt**: the worktree is detached from the task's branch
//!   (a retry anywhere can take it), cleaned and parked for the next attempt
//!   of the repository; one on which a git step failed, or whose `.git` was
//!   replaced, is removed instead.

mod git;
mod mirror;
pub(crate) mod remote;
mod repository;
mod worktrees;

#[cfg(test)]
mod tests;

use std::path::{Path, PathBuf};

use hive_shared::convert::JsonObject;
use serde_json::{Value, json};

use self::git::{AUTHOR, git, git_capped};
use self::repository::{Dependency, Repository};
use self::worktrees::Start;
pub(crate) use self::worktrees::Worktrees;
use crate::config::WorkspaceConfig;

/// Largest diffstat kept.
const MAX_DIFFSTAT: usize = 64 * 1024;
/// Removes every file git does not track, ignored ones and nested repositories included.
const CLEAN: [&str; 3] = ["clean", "-ffdx", "--quiet"];

/// An attempt's worktree.
#[derive(Debug)]
pub(crate) struct Workspace {
    /// The repository it belongs to (a URL's mirror).
    repo: PathBuf,
    /// The worktree: the agent's working folder.
    pub dir: PathBuf,
    /// The task's branch.
    pub branch: String,
    /// The commit `base` named when the attempt began.
    base: String,
    /// Parked for the next attempt when this one ends (not kept).
    pooled: bool,
}

/// Why a workspace could not be made, and whose fault it is.
#[derive(Debug)]
pub(crate) enum Unprepared {
    /// The task's: its dependencies' changes conflict.
    Task(String),
    /// The worker's (git failed, the repository or its URL is unreachable,
    /// a commit is missing): the task goes back uncharged.
    Worker(String),
}

/// Puts the attempt's worktree on the task's branch (made once its
/// dependencies' commits are merged in, when it is new): a parked one of
/// the repository, else a new one; with `keep`, a new one in `scratch_dir`.
pub(crate) async fn prepare(
    config: &WorkspaceConfig,
    worktrees: &Worktrees,
    scratch_dir: &Path,
    task_id: &str,
    inputs: Option<&JsonObject>,
) -> Result<Workspace, Unprepared> {
    let repository = Repository::open(config, &worktrees.mirror_root(config)).await?;
    let base = repository.base(config.base.as_deref()).await?;
    let dependencies = repository::dependencies(inputs)?;
    repository.check_dependencies(&dependencies).await?;
    let branch = format!("{}{task_id}", config.branch_prefix);
    let continuing =
        git(&repository.dir, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")]).await.is_ok();
    let parked = if config.keep { None } else { worktrees.take(&repository.dir) };
    let reused = parked.is_some();
    let dir = match parked {
        Some(dir) => dir,
        None if config.keep => scratch_dir.join("workspace"),
        None => worktrees.new_folder(),
    };
    let workspace = Workspace { repo: repository.dir, dir, branch, base, pooled: !config.keep };
    let start = match (continuing, dependencies.is_empty()) {
        (true, _) => Start::Branch(&workspace.branch),
        (false, true) => Start::NewBranch { branch: &workspace.branch, base: &workspace.base },
        (false, false) => Start::Detached(&workspace.base),
    };
    let made = match workspace.check_out(reused, start).await.map_err(Unprepared::Worker) {
        Ok(()) if matches!(start, Start::Detached(_)) => workspace.start_branch(&dependencies).await,
        made => made,
    };
    if let Err(problem) = made {
        worktrees::remove(&workspace.repo, &workspace.dir).await;
        return Err(problem);
    }
    Ok(workspace)
}

impl Workspace {
    /// Puts a new worktree (`reused` false) or a parked one at `start`. A
    /// parked one was cleaned when parked, and its forced checkout removes
    /// the files of the commit it was left at: nothing of an earlier task
    /// is left.
    async fn check_out(&self, reused: bool, start: Start<'_>) -> Result<(), String> {
        if !reused {
            return worktrees::add(&self.repo, &self.dir, start).await;
        }
        self.untouched_git_link().await?;
        match start {
            Start::Branch(branch) => worktrees::check_out_branch(&self.repo, &self.dir, branch).await,
            Start::NewBranch { branch, base } => {
                git(&self.dir, &["checkout", "--quiet", "--force", "-b", branch, base]).await.map(drop)
            }
            Start::Detached(commit) => {
                git(&self.dir, &["checkout", "--quiet", "--force", "--detach", commit]).await.map(drop)
            }
        }
    }

    /// Merges the dependencies' commits into the detached `base`, then
    /// makes the task's branch there.
    async fn start_branch(&self, dependencies: &[Dependency]) -> Result<(), Unprepared> {
        for Dependency { key, commit } in dependencies {
            let message = format!("hive: merge dependency {key}");
            let mut args = AUTHOR.to_vec();
            args.extend(["merge", "--no-edit", "--quiet", "-m", &message, commit]);
            if git(&self.dir, &args).await.is_err() {
                let conflicted = git(&self.dir, &["diff", "--name-only", "--diff-filter=U"]).await.unwrap_or_default();
                let _ = git(&self.dir, &["merge", "--abort"]).await;
                let files: Vec<&str> = conflicted.lines().collect();
                return Err(Unprepared::Task(format!(
                    "the changes of dependency `{key}` conflict with those merged before it in: {}",
                    if files.is_empty() { "(git named no file)".to_owned() } else { files.join(", ") }
                )));
            }
        }
        git(&self.dir, &["checkout", "--quiet", "-b", &self.branch]).await.map(drop).map_err(Unprepared::Worker)
    }

    /// Ends the attempt's use of the worktree: a kept one stays as it is;
    /// otherwise it is detached from the task's branch, cleaned and parked
    /// for the next attempt, or removed if its `.git` was replaced or a git
    /// step fails.
    pub(crate) async fn release(self, worktrees: &Worktrees) {
        if !self.pooled {
            return;
        }
        match self.detach_and_clean().await {
            Ok(()) => worktrees.park(self.repo, self.dir),
            Err(problem) => {
                tracing::warn!(dir = %self.dir.display(), problem = %problem, "removing the worktree instead of reusing it");
                worktrees::remove(&self.repo, &self.dir).await;
            }
        }
    }

    /// Points `HEAD` at its commit, off the branch (no checkout: the next
    /// attempt's forced checkout sets the files), and cleans the folder.
    async fn detach_and_clean(&self) -> Result<(), String> {
        self.untouched_git_link().await?;
        git(&self.dir, &["update-ref", "--no-deref", "-m", "hive: parked", "HEAD", "HEAD"]).await?;
        git(&self.dir, &CLEAN).await.map(drop)
    }

    /// Commits everything in the worktree, untracked files included, with
    /// `message`; whether there was anything to commit.
    async fn commit_all(&self, message: &str) -> Result<bool, String> {
        git(&self.dir, &["add", "--all"]).await?;
        // The index against HEAD: no second walk of the folder.
        if git(&self.dir, &["diff", "--cached", "--name-only", "-z"]).await?.is_empty() {
            return Ok(false);
        }
        let mut args = AUTHOR.to_vec();
        args.extend(["commit", "--quiet", "--no-verify", "-m", message]);
        git(&self.dir, &args).await.map(|_| true)
    }

    /// Commits what the agent left, pushes the branch when configured, and
    /// returns what the result records: `workspace` with the branch, commit,
    /// base, diffstat and patch (at most `max_patch` bytes).
    pub(crate) async fn record(&self, config: &WorkspaceConfig, task_id: &str, attempt: u32) -> Result<Value, String> {
        self.untouched_git_link().await?;
        self.commit_all(&format!("hive: task {task_id}, attempt {attempt}")).await?;
        let commit = git(&self.dir, &["rev-parse", "HEAD"]).await?.trim().to_owned();
        let fork = git(&self.dir, &["merge-base", &self.base, "HEAD"]).await?.trim().to_owned();
        let diff = ["diff", "--no-ext-diff", "--no-textconv", "--no-color"];
        let (diffstat, _) =
            git_capped(&self.dir, &[&diff[..], &["--stat", &fork, "HEAD"]].concat(), MAX_DIFFSTAT).await?;
        let limit = usize::try_from(config.max_patch.as_u64()).unwrap_or(usize::MAX);
        let (patch, truncated) =
            git_capped(&self.dir, &[&diff[..], &["--binary", &fork, "HEAD"]].concat(), limit).await?;
        if let Some(remote) = &config.push {
            let refspec = format!("{0}:refs/heads/{0}", self.branch);
            git(&self.dir, &["push", "--force", "--no-verify", "--quiet", remote, &refspec]).await?;
        }
        Ok(json!({
            "branch": self.branch,
            "commit": commit,
            "base": fork,
            "diffstat": diffstat.trim_end(),
            "patch": patch,
            "patch_truncated": truncated,
            "pushed_to": config.push.as_deref().map(remote::redact),
        }))
    }

    /// The worktree's `.git` is still the file git made, pointing into the
    /// repository: an agent that replaced it would have the worker's git
    /// work on a repository of its choosing.
    async fn untouched_git_link(&self) -> Result<(), String> {
        let link = self.dir.join(".git");
        let replaced = || format!("the agent replaced {}; its change is not recorded", link.display());
        let metadata = tokio::fs::symlink_metadata(&link).await.map_err(|_| replaced())?;
        let text = if metadata.is_file() { tokio::fs::read_to_string(&link).await.ok() } else { None };
        let points_home = text.as_deref().and_then(|text| text.trim().strip_prefix("gitdir: ")).is_some_and(|dir| {
            Path::new(dir).starts_with(self.repo.join(".git")) || Path::new(dir).starts_with(&self.repo)
        });
        if points_home { Ok(()) } else { Err(replaced()) }
    }

    /// Commits what the agent left (so a retry continues from it), without
    /// recording a result.
    pub(crate) async fn keep_changes(&self, task_id: &str, attempt: u32) {
        if self.untouched_git_link().await.is_err() {
            tracing::warn!(dir = %self.dir.display(), "the agent replaced the worktree's .git; leaving it uncommitted");
            return;
        }
        let message = format!("hive: task {task_id}, attempt {attempt} (unfinished)");
        if let Err(err) = self.commit_all(&message).await {
            tracing::warn!(error = %err, "could not commit what the agent left");
        }
    }
}

/// Forgets the worktrees of `config`'s repository (or its URL's mirror,
/// if made) whose folders are gone: those of dead workers, whose folders a
/// starting worker removes.
pub(crate) async fn prune(config: &WorkspaceConfig, worktrees: &Worktrees) {
    let repo = match remote::parse(&config.repo) {
        Ok(remote::Source::Path(repo)) => Some(repo),
        Ok(remote::Source::Url(url)) => mirror::Mirror::existing(&worktrees.mirror_root(config), &url),
        Err(_) => None,
    };
    if let Some(repo) = repo {
        worktrees::prune(&repo).await;
    }
}
