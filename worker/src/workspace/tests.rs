//! Workspaces against real git: worktrees parked and reused clean, branches
//! continued and never taken from a live worktree, replaced `.git` links.

use std::path::{Path, PathBuf};
use std::process::Command;

use super::*;

/// Runs git in `dir`; its trimmed stdout.
fn run_git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// Commits `name` holding `text` in `repo`; the commit's id.
fn commit_file(repo: &Path, name: &str, text: &str) -> String {
    std::fs::write(repo.join(name), text).unwrap();
    run_git(repo, &["add", name]);
    run_git(repo, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", name]);
    run_git(repo, &["rev-parse", "HEAD"])
}

/// A repository on `main` whose first commit ignores `*.log` and `build/`.
fn repository(dir: &Path) -> PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    run_git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    commit_file(&repo, ".gitignore", "*.log\nbuild/\n");
    repo
}

/// A workspace of `repo` with the settings in `extra`.
fn config(repo: &str, extra: serde_json::Value) -> WorkspaceConfig {
    let mut fields = json!({ "repo": repo });
    fields.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
    serde_json::from_value(fields).unwrap()
}

/// A worker's worktrees and a repository (`repository`) with a workspace config of it.
struct Setup {
    dir: tempfile::TempDir,
    worktrees: Worktrees,
    repo: PathBuf,
    config: WorkspaceConfig,
}

impl Setup {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let worktrees = Worktrees::new(dir.path().join("work"), "w".into());
        let repo = repository(dir.path());
        let config = config(&repo.to_string_lossy(), json!({}));
        Self { dir, worktrees, repo, config }
    }

    async fn prepare(&self, config: &WorkspaceConfig, task: &str) -> Result<Workspace, Unprepared> {
        prepare(config, &self.worktrees, &self.dir.path().join("scratch"), task, None).await
    }

    /// Prepares `task`'s worktree of the repository.
    async fn prepare_local(&self, task: &str) -> Workspace {
        self.prepare(&self.config, task).await.unwrap()
    }
}

/// Whether `repo` lists a worktree at `dir`.
fn listed(repo: &Path, dir: &Path) -> bool {
    run_git(repo, &["worktree", "list", "--porcelain"]).contains(&*dir.to_string_lossy())
}

#[tokio::test]
async fn a_parked_worktree_is_reused_with_nothing_of_the_last_task_and_starts_from_base() {
    let setup = Setup::new();
    let repo = &setup.repo;
    let base = run_git(repo, &["rev-parse", "HEAD"]);
    let first = setup.prepare_local("one").await;
    let dir = first.dir.clone();
    assert!(!dir.starts_with(setup.dir.path().join("scratch")), "outside the scratch folder");
    for (file, text) in [("untracked.txt", "u"), ("debug.log", "ignored"), ("build/out.o", "ignored too")] {
        std::fs::create_dir_all(dir.join(file).parent().unwrap()).unwrap();
        std::fs::write(dir.join(file), text).unwrap();
    }
    commit_file(&dir, "committed.txt", "on the task's branch");
    first.release(&setup.worktrees).await;
    assert!(listed(repo, &dir), "parked, not removed");

    let second = setup.prepare_local("two").await;
    assert_eq!(second.dir, dir, "the parked worktree is reused");
    let mut left: Vec<String> =
        std::fs::read_dir(&dir).unwrap().map(|entry| entry.unwrap().file_name().to_string_lossy().into()).collect();
    left.sort();
    assert_eq!(left, [".git", ".gitignore"], "nothing of the first task is left");
    assert_eq!(run_git(&dir, &["rev-parse", "HEAD"]), base);
    assert_eq!(run_git(&dir, &["symbolic-ref", "--short", "HEAD"]), "hive/two");
    assert_eq!(run_git(repo, &["rev-parse", "hive/one"]).len(), 40, "the first task's branch stays");
}

#[tokio::test]
async fn a_retry_in_a_parked_worktree_continues_its_branch() {
    let setup = Setup::new();
    let first = setup.prepare_local("t").await;
    std::fs::write(first.dir.join("w.txt"), "work").unwrap();
    first.keep_changes("t", 1).await;
    let dir = first.dir.clone();
    first.release(&setup.worktrees).await;

    let retry = setup.prepare_local("t").await;
    assert_eq!(retry.dir, dir);
    assert_eq!(run_git(&dir, &["symbolic-ref", "--short", "HEAD"]), "hive/t");
    assert_eq!(std::fs::read_to_string(dir.join("w.txt")).unwrap(), "work");
}

#[tokio::test]
async fn a_branch_another_live_worktree_holds_is_not_taken_and_the_parked_one_is_removed() {
    let setup = Setup::new();
    let running = setup.prepare_local("t").await;
    std::fs::write(running.dir.join("mine.txt"), "in progress").unwrap();
    let other = setup.prepare_local("other").await;
    let parked = other.dir.clone();
    other.release(&setup.worktrees).await;

    let Err(Unprepared::Worker(problem)) = setup.prepare(&setup.config, "t").await else {
        panic!("a branch held by a live worktree was taken")
    };
    assert!(problem.contains("hive/t"), "{problem}");
    assert!(!parked.exists() && !listed(&setup.repo, &parked), "the worktree a git step failed on is removed");
    assert_eq!(run_git(&running.dir, &["symbolic-ref", "--short", "HEAD"]), "hive/t");
    assert_eq!(std::fs::read_to_string(running.dir.join("mine.txt")).unwrap(), "in progress");
}

#[tokio::test]
async fn a_worktree_whose_git_link_was_replaced_is_removed_not_reused() {
    let setup = Setup::new();
    let vandalized = setup.prepare_local("v").await;
    let dir = vandalized.dir.clone();
    std::fs::remove_file(dir.join(".git")).unwrap();
    run_git(&dir, &["init", "--quiet"]);
    vandalized.release(&setup.worktrees).await;
    assert!(!dir.exists() && !listed(&setup.repo, &dir), "removed");

    let next = setup.prepare_local("n").await;
    assert_ne!(next.dir, dir);
}

#[tokio::test]
async fn parked_worktrees_are_removed_when_the_worker_exits() {
    let setup = Setup::new();
    let workspace = setup.prepare_local("t").await;
    let dir = workspace.dir.clone();
    workspace.release(&setup.worktrees).await;
    setup.worktrees.remove_parked().await;
    assert!(!dir.exists());
    assert_eq!(run_git(&setup.repo, &["worktree", "list", "--porcelain"]).matches("worktree ").count(), 1);
}
