//! Workspaces against real git: worktrees parked and reused clean, branches
//! continued and never taken from a live worktree, replaced `.git` links,
//! and the mirrors of `file://` URLs (made, fetched on their interval or
//! when a commit is missing, pushed to, and never left half made).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

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

    /// A bare upstream cloned from the repository, which pushes to it; its `file://` URL.
    fn upstream(&self) -> (PathBuf, String) {
        let upstream = self.dir.path().join("upstream.git");
        run_git(
            self.dir.path(),
            &["clone", "--quiet", "--bare", &self.repo.to_string_lossy(), &upstream.to_string_lossy()],
        );
        run_git(&self.repo, &["remote", "add", "origin", &upstream.to_string_lossy()]);
        let url = format!("file://{}", upstream.display());
        (upstream, url)
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

/// Adds a commit on the upstream's `main` through `seed`; its id.
fn push_commit(seed: &Path, file: &str) -> String {
    let commit = commit_file(seed, file, file);
    run_git(seed, &["push", "--quiet", "origin", "main"]);
    commit
}

/// Makes the mirror's last fetch look `age` old.
fn age_last_fetch(mirror_root: &Path, age: Duration) {
    let mirror = std::fs::read_dir(mirror_root).unwrap().next().unwrap().unwrap().path();
    let marker = std::fs::File::options().write(true).open(mirror.join("hive-fetched")).unwrap();
    marker.set_modified(SystemTime::now() - age).unwrap();
}

#[tokio::test]
async fn a_urls_mirror_is_made_refetched_after_its_interval_and_pushed_to() {
    let setup = Setup::new();
    let (upstream, url) = setup.upstream();
    let first_base = run_git(&setup.repo, &["rev-parse", "HEAD"]);
    let config = config(&url, json!({ "push": "origin", "fetch_interval": "1h" }));
    let mirror_root = setup.worktrees.mirror_root(&config);

    let first = setup.prepare(&config, "one").await.unwrap();
    assert!(first.repo.starts_with(std::fs::canonicalize(&mirror_root).unwrap()), "{}", first.repo.display());
    assert_eq!(run_git(&first.dir, &["rev-parse", "HEAD"]), first_base);
    std::fs::write(first.dir.join("one.txt"), "one").unwrap();
    let change = first.record(&config, "one", 1).await.unwrap();
    assert_eq!(run_git(&upstream, &["rev-parse", "hive/one"]), change["commit"].as_str().unwrap(), "pushed");
    first.release(&setup.worktrees).await;

    let second_base = push_commit(&setup.repo, "upstream.txt");
    let within = setup.prepare(&config, "two").await.unwrap();
    assert_eq!(run_git(&within.dir, &["rev-parse", "HEAD"]), first_base, "not fetched within the interval");
    within.release(&setup.worktrees).await;

    age_last_fetch(&mirror_root, Duration::from_secs(2 * 3600));
    let after = setup.prepare(&config, "three").await.unwrap();
    assert_eq!(run_git(&after.dir, &["rev-parse", "HEAD"]), second_base, "fetched once the interval passed");
    assert!(
        run_git(&after.repo, &["for-each-ref", "--format=%(refname)", "refs/heads"])
            .lines()
            .all(|branch| branch.starts_with("refs/heads/hive/")),
        "the upstream's branches are origin/…, never local"
    );
}

#[tokio::test]
async fn a_base_missing_from_the_mirror_is_fetched_for() {
    let setup = Setup::new();
    let (_, url) = setup.upstream();
    let seed = &setup.repo;
    let config_main = config(&url, json!({ "fetch_interval": "1h" }));
    setup.prepare(&config_main, "one").await.unwrap().release(&setup.worktrees).await;

    run_git(seed, &["checkout", "--quiet", "-b", "feature"]);
    let feature = commit_file(seed, "feature.txt", "f");
    run_git(seed, &["push", "--quiet", "origin", "feature"]);
    let config_feature = config(&url, json!({ "fetch_interval": "1h", "base": "feature" }));
    let workspace = setup.prepare(&config_feature, "two").await.unwrap();
    assert_eq!(run_git(&workspace.dir, &["rev-parse", "HEAD"]), feature);
}

#[tokio::test]
async fn an_unreachable_url_is_the_workers_fault_names_the_url_and_leaves_nothing() {
    let setup = Setup::new();
    for url in ["file:///nonexistent/hive-upstream.git", "https://user:s3cret@127.0.0.1:1/app.git"] {
        let config = config(url, json!({}));
        let Err(Unprepared::Worker(problem)) = setup.prepare(&config, "t").await else {
            panic!("{url}: prepared from nothing")
        };
        assert!(problem.contains(&format!("cannot fetch {}", remote::redact(url))), "{problem}");
        assert!(!problem.contains("s3cret") && !problem.contains("user@"), "{problem}");
        let mirror_root = setup.worktrees.mirror_root(&config);
        assert_eq!(std::fs::read_dir(&mirror_root).unwrap().count(), 0, "no mirror is left half made");
    }
}
