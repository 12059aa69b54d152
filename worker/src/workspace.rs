//! A git worktree per attempt, for agents with a `[agents.NAME.workspace]`:
//! agents on one host never edit the same checkout, and the change they
//! leave is the task's result.
//!
//! - **Where**: `<scratch>/workspace`, a worktree of the repository (a local
//!   one, or a per-host mirror of a URL under `work_dir/mirrors`, fetched
//!   before each attempt), on the branch `<branch_prefix><task id>`: a retry
//!   continues the branch where the last attempt left it, a first attempt
//!   starts it from `base`.
//! - **Dependencies**: a task whose dependencies' results name commits (their
//!   own workspaces) starts from `base` with each merged in, in key order; a
//!   conflict fails the attempt permanently, naming the files.
//! - **The result**: what the agent left uncommitted is committed; the
//!   result gets `workspace` with the branch, the commit, its base, a
//!   diffstat and the patch against the base (capped), and the branch is
//!   pushed when `push` names a remote.
//! - **Cleanup**: the worktree is removed when the attempt ends (kept with
//!   `keep`); its git records are pruned then and when a worker starts, so a
//!   dead worker's worktrees (their folders removed with its scratch folders)
//!   leave nothing behind.

use std::path::{Path, PathBuf};
use std::time::Duration;

use hive_shared::convert::JsonObject;
use serde_json::{Value, json};
use tokio::process::Command;

use crate::config::WorkspaceConfig;

/// Longest one git command may take.
const GIT_TIMEOUT: Duration = Duration::from_secs(300);
/// Who commits what an agent left.
const AUTHOR: [&str; 4] = ["-c", "user.name=Hive", "-c", "user.email=hive@localhost"];

/// An attempt's worktree.
#[derive(Debug)]
pub(crate) struct Workspace {
    /// The repository it belongs to (the mirror of a URL).
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

/// The repository worktrees are made from: the configured path, or the
/// host's mirror of the configured URL (made on first use).
async fn repository(config: &WorkspaceConfig, work_dir: &Path) -> Result<PathBuf, String> {
    if !is_url(&config.repo) {
        return Ok(PathBuf::from(&config.repo));
    }
    let name: String = config.repo.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
    let mirror = work_dir.join("mirrors").join(name);
    if mirror.join("HEAD").exists() {
        git(&mirror, &["fetch", "--prune", "--quiet", "origin"]).await?;
    } else {
        tokio::fs::create_dir_all(work_dir.join("mirrors")).await.map_err(|err| err.to_string())?;
        let target = mirror.to_string_lossy().into_owned();
        git(work_dir, &["clone", "--mirror", "--quiet", &config.repo, &target]).await?;
    }
    Ok(mirror)
}

/// Whether `repo` names a URL (to mirror) rather than a local repository.
pub(crate) fn is_url(repo: &str) -> bool {
    repo.contains("://") || repo.starts_with("git@")
}

/// Makes the attempt's worktree in `scratch_dir`, on the task's branch, with
/// its dependencies' commits merged in when the branch is new.
pub(crate) async fn prepare(
    config: &WorkspaceConfig,
    work_dir: &Path,
    scratch_dir: &Path,
    task_id: &str,
    inputs: Option<&JsonObject>,
) -> Result<Workspace, Unprepared> {
    let repo = repository(config, work_dir).await.map_err(Unprepared::Worker)?;
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
    git(&repo, &["worktree", "prune"]).await.map_err(Unprepared::Worker)?;
    let continuing = git(&repo, &["rev-parse", "--verify", "--quiet", &format!("refs/heads/{branch}")]).await.is_ok();
    let start = if continuing { branch.clone() } else { base.clone() };
    git(&repo, &["worktree", "add", "--force", "--quiet", "-B", &branch, &dir_text, &start])
        .await
        .map_err(Unprepared::Worker)?;
    let workspace = Workspace { repo, dir, branch, base };
    if !continuing && let Err(problem) = merge_dependencies(&workspace, inputs).await {
        workspace.remove(false).await;
        return Err(problem);
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
            return Err(Unprepared::Task(format!(
                "dependency `{key}` names commit `{commit}`, which is not in this host's repository \
                 (push its branch with workspace.push, or run dependent tasks where it ran)"
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
        let diffstat = git(&self.dir, &["diff", "--stat", &fork, "HEAD"]).await?;
        let patch = git(&self.dir, &["diff", "--binary", &fork, "HEAD"]).await?;
        let limit = usize::try_from(config.max_patch.as_u64()).unwrap_or(usize::MAX);
        let truncated = patch.len() > limit;
        let mut end = patch.len().min(limit);
        while !patch.is_char_boundary(end) {
            end -= 1;
        }
        if let Some(remote) = &config.push {
            let refspec = format!("{0}:refs/heads/{0}", self.branch);
            git(&self.dir, &["push", "--force", "--quiet", remote, &refspec]).await?;
        }
        Ok(json!({
            "branch": self.branch,
            "commit": commit,
            "base": fork,
            "diffstat": diffstat.trim_end(),
            "patch": &patch[..end],
            "patch_truncated": truncated,
            "pushed_to": config.push,
        }))
    }

    /// Commits what the agent left (so a retry continues from it), without
    /// recording a result.
    pub(crate) async fn keep_changes(&self, task_id: &str, attempt: u32) {
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
        if let Err(err) = git(&self.repo, &["worktree", "remove", "--force", &dir]).await {
            tracing::warn!(error = %err, "could not remove the attempt's worktree; pruning it");
            let _ = tokio::fs::remove_dir_all(&self.dir).await;
            let _ = git(&self.repo, &["worktree", "prune"]).await;
        }
    }
}

/// Forgets worktrees whose folders are gone (those of dead workers, whose
/// scratch folders a starting worker removes).
pub(crate) async fn prune(config: &WorkspaceConfig, work_dir: &Path) {
    let repo = if is_url(&config.repo) {
        let name: String = config.repo.chars().map(|c| if c.is_ascii_alphanumeric() { c } else { '_' }).collect();
        work_dir.join("mirrors").join(name)
    } else {
        PathBuf::from(&config.repo)
    };
    if repo.exists()
        && let Err(err) = git(&repo, &["worktree", "prune"]).await
    {
        tracing::warn!(repo = %repo.display(), error = %err, "could not prune worktrees");
    }
}

/// Runs `git -C dir args…`; its stdout, or an error naming the command and its stderr.
async fn git(dir: &Path, args: &[&str]) -> Result<String, String> {
    let mut command = Command::new("git");
    command.arg("-C").arg(dir).args(args).env("GIT_TERMINAL_PROMPT", "0").kill_on_drop(true);
    let output = match tokio::time::timeout(GIT_TIMEOUT, command.output()).await {
        Ok(Ok(output)) => output,
        Ok(Err(err)) => return Err(format!("cannot run git: {err}")),
        Err(_) => return Err(format!("`git {}` took longer than {GIT_TIMEOUT:?}", args.join(" "))),
    };
    if output.status.success() {
        return Ok(String::from_utf8_lossy(&output.stdout).into_owned());
    }
    let stderr = String::from_utf8_lossy(&output.stderr);
    Err(format!("`git {}` in {} failed: {}", args.join(" "), dir.display(), stderr.trim()))
}
