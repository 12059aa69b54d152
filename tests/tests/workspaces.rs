//! A git worktree per attempt, through real workers and real git: each task
//! works on its own branch, its change is committed and becomes its result
//! (`hivectl tasks diff` prints it), a dependent task starts from its
//! dependencies' branches merged, a conflict between them fails it naming
//! the files, and no worktree is left behind.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{fresh_database, wait_all_finished};
use hive_tests::procs::{hivectl_output, start_worker};
use hive_tests::worker_setup::{Agent, WorkerSetup};
use serde_json::Value;

/// Runs git in `dir`; its stdout.
fn git(dir: &Path, args: &[&str]) -> String {
    let output = Command::new("git").arg("-C").arg(dir).args(args).output().unwrap();
    assert!(output.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&output.stderr));
    String::from_utf8(output.stdout).unwrap()
}

/// A repository with one commit on `main`.
fn repository(dir: &Path) -> std::path::PathBuf {
    let repo = dir.join("repo");
    std::fs::create_dir_all(&repo).unwrap();
    git(&repo, &["init", "--quiet", "--initial-branch=main"]);
    std::fs::write(repo.join("README.md"), "hello\n").unwrap();
    git(&repo, &["add", "README.md"]);
    git(&repo, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", "first"]);
    repo
}

fn task(key: &str, prompt: &str, deps: &[&str]) -> pb::TaskSpec {
    pb::TaskSpec {
        key: key.into(),
        agent: "coder".into(),
        prompt: prompt.into(),
        depends_on: deps.iter().map(|dep| (*dep).to_owned()).collect(),
        max_attempts: 1,
        ..Default::default()
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_task_commits_on_its_own_branch_and_dependents_start_from_their_merged_branches() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    // The prompt is a shell command run in the worktree.
    let coder = Agent::shell("sh -c \"$(cat)\"").workspace(&repo.display().to_string());
    let config = WorkerSetup::new().slots(4).agent("coder", coder).write(dir.path(), "worker");
    let worker = start_worker(&coordinator.url, &config, "worker", dir.path());
    let tasks = vec![
        task("a", "echo alpha > a.txt", &[]),
        task("b", "echo beta > b.txt", &[]),
        task("both", "test -e a.txt && test -e b.txt && echo gamma > c.txt", &["a", "b"]),
        task("left", "echo left > same.txt", &[]),
        task("right", "echo right > same.txt", &[]),
        task("clash", "true", &["left", "right"]),
        task("vandal", "rm -rf .git && git init --quiet && echo x > v.txt", &[]),
    ];
    let mut admin = coordinator.admin_client().await;
    let request = pb::SubmitTasksRequest { swarm: "ws".into(), tasks, ..Default::default() };
    admin.submit_tasks(request).await.unwrap();
    wait_all_finished(&db.pool, Duration::from_secs(60)).await;

    let ended: Vec<(String, String, Option<Value>, Option<String>)> = sqlx::query_as(
        "select t.key, s.status::text, a.result, s.error from task_states s join tasks t on t.id = s.task_id
         left join attempts a on a.task_id = s.task_id and a.number = s.result_attempt order by t.key",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    let by_key = |key: &str| ended.iter().find(|(k, ..)| k == key).unwrap().clone();
    for key in ["a", "b", "both", "left", "right"] {
        assert_eq!(by_key(key).1, "succeeded", "{key}: {:?}", by_key(key));
    }
    let (_, _, result, _) = by_key("a");
    let workspace = &result.unwrap()["workspace"];
    let branch = workspace["branch"].as_str().unwrap().to_owned();
    assert!(branch.starts_with("hive/"), "{workspace}");
    assert!(workspace["patch"].as_str().unwrap().contains("+alpha"), "{workspace}");
    assert!(workspace["diffstat"].as_str().unwrap().contains("a.txt"), "{workspace}");
    assert_eq!(git(&repo, &["rev-parse", &branch]).trim(), workspace["commit"].as_str().unwrap());
    assert_eq!(git(&repo, &["show", &format!("{branch}:a.txt")]), "alpha\n", "the change is committed on its branch");

    let (_, _, result, _) = by_key("both");
    let both = result.unwrap()["workspace"]["branch"].as_str().unwrap().to_owned();
    let files = git(&repo, &["ls-tree", "--name-only", &both]);
    for file in ["README.md", "a.txt", "b.txt", "c.txt"] {
        assert!(files.lines().any(|line| line == file), "{file} on {both}: {files}");
    }

    let (_, status, _, error) = by_key("vandal");
    assert_eq!(status, "dead");
    assert!(error.unwrap_or_default().contains("replaced"), "a worktree whose .git was replaced is not recorded");

    let (_, status, _, error) = by_key("clash");
    assert_eq!(status, "dead");
    let error = error.unwrap_or_default();
    assert!(error.contains("conflict") && error.contains("same.txt"), "{error}");

    let worktrees = git(&repo, &["worktree", "list"]);
    assert_eq!(worktrees.lines().count(), 1, "only the main checkout is left: {worktrees}");
    assert_eq!(git(&repo, &["status", "--porcelain"]), "", "the main checkout is untouched");

    let id: uuid::Uuid = sqlx::query_scalar("select id from tasks where key = 'a'").fetch_one(&db.pool).await.unwrap();
    let diff = hivectl_output(&coordinator.url, &["tasks", "diff", &id.to_string()]).await;
    assert!(diff.status.success(), "{}", diff.stderr);
    assert!(diff.stdout.contains("+alpha") && diff.stdout.contains("a.txt"), "{}", diff.stdout);

    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_workers_worktrees_are_gone_once_a_worker_starts_on_its_folder() {
    let db = fresh_database().await;
    let mut config = test_config(&db);
    config.leases.ttl = Duration::from_secs(2);
    config.leases.heartbeat_interval = Duration::from_millis(500);
    let coordinator = TestCoordinator::start(config).await;
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let started = dir.path().join("started");
    // The first attempt waits to be killed; the retry finishes.
    let script = format!(
        "echo work > w.txt; if [ ! -e {started} ]; then touch {started}; sleep 300; fi",
        started = started.display()
    );
    let coder = Agent::shell(script).workspace(&repo.display().to_string());
    let config = WorkerSetup::new().slots(1).agent("coder", coder).write(dir.path(), "worker");
    let doomed = start_worker(&coordinator.url, &config, "doomed", dir.path());
    let mut admin = coordinator.admin_client().await;
    let request = pb::SubmitTasksRequest { swarm: "ws".into(), tasks: vec![task("k", "p", &[])], ..Default::default() };
    admin.submit_tasks(request).await.unwrap();
    hive_tests::wait::eventually("the first attempt to start", Duration::from_secs(20), || async { started.exists() })
        .await;
    assert_eq!(git(&repo, &["worktree", "list"]).lines().count(), 2, "its worktree exists while it runs");

    doomed.kill_hard();
    let next = start_worker(&coordinator.url, &config, "next", dir.path());
    wait_all_finished(&db.pool, Duration::from_secs(30)).await;
    let status: String = sqlx::query_scalar("select status::text from task_states").fetch_one(&db.pool).await.unwrap();
    assert_eq!(status, "succeeded");
    let worktrees = git(&repo, &["worktree", "list"]);
    assert_eq!(worktrees.lines().count(), 1, "the dead worker's worktree is pruned: {worktrees}");
    next.terminate().await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_sharing_a_repository_make_and_remove_worktrees_without_tripping_on_each_other() {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let coder = || Agent::shell("sh -c \"$(cat)\"").workspace(&repo.display().to_string());
    // Two workers of four slots on one host, one repository: eight
    // worktrees made and removed at once, again and again.
    let config = WorkerSetup::new().slots(4).agent("coder", coder()).write(dir.path(), "a");
    let other = WorkerSetup::new().slots(4).agent("coder", coder()).write(dir.path(), "b");
    let workers = [
        start_worker(&coordinator.url, &config, "a", dir.path()),
        start_worker(&coordinator.url, &other, "b", dir.path()),
    ];
    let tasks: Vec<pb::TaskSpec> =
        (0..48).map(|i| task(&format!("t{i}"), &format!("echo {i} > f{i}.txt"), &[])).collect();
    let mut admin = coordinator.admin_client().await;
    admin.submit_tasks(pb::SubmitTasksRequest { swarm: "many".into(), tasks, ..Default::default() }).await.unwrap();
    wait_all_finished(&db.pool, Duration::from_secs(120)).await;
    let attempts: Vec<(String, String, Option<String>)> = sqlx::query_as(
        "select t.key, a.outcome::text, a.error from attempts a join tasks t on t.id = a.task_id
         where a.outcome <> 'succeeded' order by t.key",
    )
    .fetch_all(&db.pool)
    .await
    .unwrap();
    assert!(attempts.is_empty(), "every attempt made its worktree and succeeded the first time: {attempts:?}");
    let listed = git(&repo, &["worktree", "list", "--porcelain"]);
    assert_eq!(listed.matches("worktree ").count(), 1, "only the main checkout is left: {listed}");
    for worker in workers {
        worker.terminate().await;
    }
    coordinator.stop().await.unwrap();
}
