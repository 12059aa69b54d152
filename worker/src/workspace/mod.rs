//! A git worktree per attempt, for agents with a `[agents.NAME.workspace]`:
//! agents on one host never edit the same checkout, and the change they
//! leave is the task's result.
//!
//! - **Where**: `<scratch>/workspace`, a worktree of the host's repository,
//!   on the branch `<branch_prefix><task id>`: a retry continues the branch
//!   where the last attempt left it, a first attempt starts it from `base`.
//! - **Dependencies**: a task whose dependencies' results name commits (their
//!   own workspaces) starts from `base` with each merged in, in key order,
//!   and gets its branch only once they all merged; a conflict fails the
//!   attempt permanently, naming the files.
//! - **Git runs guarded** ([`git`]); a worktree whose `.git` the agent
//!   replaced is not recorded. (Agents run as the worker's user: this keeps
//!   the worker's own git calls from running what an agent left behind, it
//!   is not a sandbox.)
//! - **The result**: what the agent left uncommitted is committed; the
//!   result gets `workspace` with the branch, the commit, its base, a
//!   diffstat and the patch against the base (capped), and the branch is
//!   pushed when `push` names a remote.
//! - **Cleanup**: the worktree is removed when the attempt ends (kept with
//!   `keep`); its git records are pruned then and when a worker starts, so a
//!   dead worker's worktrees (their folders removed with its scratch folders)
//!   leave nothing behind.

mod git;

use std::path::{Path, PathBuf};

use hive_shared::convert::JsonObject;
use serde_json::{Value, json};

use self::git::{AUTHOR, git, git_capped, worktree_lock};
use crate::config::WorkspaceConfig;

/// An attempt's worktree.
#[derive(Debug)]
pub(crate) struct Workspace {
    /// The repository it belongs to.
    repo: PathBuf,
    /// The worktree: the agent's working folder.
    pub dir: PathBuf,
    /// The task's branch.
    pub branch: String,
    /// The commit `base` named when the attempt began.
    base: String,
}

/// Why a workspace could not be made, and whose fault it is.
#[derive(Debug)]
pub(crate) enum Unprepared {
    /// The task's: its dependencies' changes conflict, or one is missing.
    Task(String),
    /// The worker's (git failed, the repository is unreachable): the task
    /// goes back uncharged.
    Worker(String),
}

/// Makes the attempt's worktree in `scratch_dir`, on the task's branch
/// (made once its dependencies' commits are merged in, when it is new).
pub(crate) async fn prepare(
    config: &WorkspaceConfig,
    scratch_dir: &Path,
    task_id: &str,
    inputs: Option<&JsonObject>,
) -> Result<Workspace, Unprepared> {
    let repo = PathBuf::from(&config.repo);
    let branch = format!("{}{task_id}", config.branch_prefix);
    // As a commit: inside the worktree `HEAD` would name the task's own.
    let base_ref = format!("{}^{{commit}}", config.base.as_deref().unwrap_or("HEAD"));
    let base = git(&repo, &["rev-parse", "--verify", "--quiet", &base_ref])
        .await
        .map_err(|_| Unprepared::Worker(format!("workspace.base `{base_ref}` names no commit in {}", repo.display())))?
        .trim()
        .to_owned();
    let dir = scratch_dir.join("workspace");
    let dir_text = dir.to_string_lossy().into_owned();
    let continuing = {
        let _lock = worktree_lock(&repo).await.map_err(Unprepared::Worker)?;
        // A worktree left registered at this path (a scratch folder is
        // reused) is forgotten first.
        git(&repo, &["worktree", "prune"]).await.map_err(Unprepared::Worker)?;
        let continuing =
            git(&repo, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")]).await.is_ok();
        // Without --force: a branch another live worktree holds (an attempt
        // fenced out but still running here) is not taken from under it.
        let added = if continuing {
            git(&repo, &["worktree", "add", "--quiet", &dir_text, &branch]).await
        } else {
            git(&repo, &["worktree", "add", "--quiet", "--detach", &dir_text, &base]).await
        };
        added.map_err(Unprepared::Worker)?;
        continuing
    };
    let workspace = Workspace { repo, dir, branch, base };
    if !continuing {
        let made = match merge_dependencies(&workspace, inputs).await {
            Ok(()) => {
                git(&workspace.dir, &["checkout", "--quiet", "-b", &workspace.branch]).await.map_err(Unprepared::Worker)
            }
            Err(problem) => Err(problem),
        };
        if let Err(problem) = made {
            workspace.remove(false).await;
            return Err(problem);
        }
    }
    Ok(workspace)
}

/// Merges the commits the dependencies' results name, in key order.
async fn merge_dependencies(workspace: &Workspace, inputs: Option<&JsonObject>) -> Result<(), Unprepared> {
    let mut commits: Vec<(&String, &str)> = inputs
        .into_iter()
        .flatten()
        .filter_map(|(key, result)| Some((key, result.get("workspace")?.get("commit")?.as_str()?)))
        .collect();
    commits.sort();
    for (key, commit) in commits {
        let valid = commit.len() == 40 && commit.chars().all(|c| c.is_ascii_hexdigit());
        let known = valid && git(&workspace.dir, &["cat-file", "-e", &format!("{commit}^{{commit}}")]).await.is_ok();
        if !known {
            // Not the task's fault: a worker on the host where it ran can take it.
            return Err(Unprepared::Worker(format!(
                "dependency `{key}` names commit `{commit}`, which is not in this host's repository \
                 (run dependent tasks on the host of their dependencies, or share the repository)"
            )));
        }
        let message = format!("hive: merge dependency {key}");
        let mut args = AUTHOR.to_vec();
        args.extend(["merge", "--no-edit", "--quiet", "-m", &message, commit]);
        if git(&workspace.dir, &args).await.is_err() {
            let conflicted = git(&workspace.dir, &["diff", "--name-only", "--diff-filter=U"]).await.unwrap_or_default();
            let _ = git(&workspace.dir, &["merge", "--abort"]).await;
            let files: Vec<&str> = conflicted.lines().collect();
            return Err(Unprepared::Task(format!(
                "the changes of dependency `{key}` conflict with those merged before it in: {}",
                if files.is_empty() { "(git named no file)".to_owned() } else { files.join(", ") }
            )));
        }
    }
    Ok(())
}

impl Workspace {
    /// Commits what the agent left, pushes the branch when configured, and
    /// returns what the result records: `workspace` with the branch, commit,
    /// base, diffstat and patch (at most `max_patch` bytes).
    pub(crate) async fn record(&self, config: &WorkspaceConfig, task_id: &str, attempt: u32) -> Result<Value, String> {
        self.untouched_git_link().await?;
        git(&self.dir, &["add", "--all"]).await?;
        let changed = !git(&self.dir, &["status", "--porcelain"]).await?.trim().is_empty();
        if changed {
            let message = format!("hive: task {task_id}, attempt {attempt}");
            let mut args = AUTHOR.to_vec();
            args.extend(["commit", "--quiet", "--no-verify", "-m", &message]);
            git(&self.dir, &args).await?;
        }
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
            "pushed_to": config.push,
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
        let mut args = AUTHOR.to_vec();
        args.extend(["commit", "--quiet", "--no-verify", "-m", &message]);
        if git(&self.dir, &["add", "--all"]).await.is_ok()
            && git(&self.dir, &["status", "--porcelain"]).await.is_ok_and(|status| !status.trim().is_empty())
            && let Err(err) = git(&self.dir, &args).await
        {
            tracing::warn!(error = %err, "could not commit what the agent left");
        }
    }

    /// Removes the worktree (the branch stays), unless `keep`.
    pub(crate) async fn remove(&self, keep: bool) {
        if keep {
            return;
        }
        let dir = self.dir.to_string_lossy().into_owned();
        let _lock = match worktree_lock(&self.repo).await {
            Ok(lock) => Some(lock),
            Err(err) => {
                tracing::warn!(error = %err, "removing the attempt's worktree without the repository's worktree lock");
                None
            }
        };
        if let Err(err) = git(&self.repo, &["worktree", "remove", "--force", &dir]).await {
            tracing::warn!(error = %err, "could not remove the attempt's worktree; pruning it");
            let _ = tokio::fs::remove_dir_all(&self.dir).await;
            let _ = git(&self.repo, &["worktree", "prune"]).await;
        }
    }
}

/// Forgets worktrees whose folders are gone (those of dead workers, whose
/// scratch folders a starting worker removes).
pub(crate) async fn prune(config: &WorkspaceConfig) {
    let repo = Path::new(&config.repo);
    let _lock = worktree_lock(repo).await;
    if let Err(err) = git(repo, &["worktree", "prune"]).await {
        tracing::warn!(repo = %repo.display(), error = %err, "could not prune worktrees");
    }
}

/// Largest diffstat kept.
const MAX_DIFFSTAT: usize = 64 * 1024;
