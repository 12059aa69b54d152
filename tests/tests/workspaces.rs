//! A git worktree per attempt, through real workers and real git: each task
//! works on its own branch, its change is committed and becomes its result
//! (`hivectl tasks diff` prints it), a dependent task starts from its
//! dependencies' branches merged, a conflict between them fails it naming
//! the files, a slot's worktree is reused clean (and never once its `.git`
//! was replaced), a URL's repository is mirrored, fetched on its interval
//! and pushed back to, and no worktree is left behind once workers exit.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hive_shared::pb;
use hive_tests::coordinator::{TestCoordinator, test_config};
use hive_tests::postgres::{TestDb, fresh_database, wait_all_finished};
use hive_tests::procs::{Proc, hivectl_output, start_worker};
use hive_tests::worker_setup::{Agent, WorkerSetup, WorkspaceSetup};
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
    commit_file(&repo, "README.md", "hello\n");
    repo
}

/// Commits `file` holding `text` in `repo`; the commit's id.
fn commit_file(repo: &Path, file: &str, text: &str) -> String {
    std::fs::write(repo.join(file), text).unwrap();
    git(repo, &["add", file]);
    git(repo, &["-c", "user.name=t", "-c", "user.email=t@t", "commit", "--quiet", "-m", file]);
    git(repo, &["rev-parse", "HEAD"]).trim().to_owned()
}

/// A coordinator and a worker of `slots` (its files in `dir`) whose agent
/// `coder` runs each prompt as a shell command in a worktree, as `workspace` says.
async fn start(dir: &Path, slots: u32, workspace: WorkspaceSetup) -> (TestDb, TestCoordinator, Proc) {
    let db = fresh_database().await;
    let coordinator = TestCoordinator::start(test_config(&db)).await;
    let coder = Agent::shell("sh -c \"$(cat)\"").workspace_setup(workspace);
    let config = WorkerSetup::new().slots(slots).agent("coder", coder).write(dir, "worker");
    let worker = start_worker(&coordinator.url, &config, "worker", dir);
    (db, coordinator, worker)
}

/// The folders of `repo`'s worktrees other than its main checkout.
fn linked_worktrees(repo: &Path) -> Vec<String> {
    let listed = git(repo, &["worktree", "list", "--porcelain"]);
    listed.lines().filter_map(|line| line.strip_prefix("worktree ")).skip(1).map(str::to_owned).collect()
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
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let (db, coordinator, worker) = start(dir.path(), 4, WorkspaceSetup::new(&repo.display().to_string())).await;
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

    assert_eq!(git(&repo, &["status", "--porcelain"]), "", "the main checkout is untouched");

    let id: uuid::Uuid = sqlx::query_scalar("select id from tasks where key = 'a'").fetch_one(&db.pool).await.unwrap();
    let diff = hivectl_output(&coordinator.url, &["tasks", "diff", &id.to_string()]).await;
    assert!(diff.status.success(), "{}", diff.stderr);
    assert!(diff.stdout.contains("+alpha") && diff.stdout.contains("a.txt"), "{}", diff.stdout);

    worker.terminate().await;
    let worktrees = git(&repo, &["worktree", "list"]);
    assert_eq!(worktrees.lines().count(), 1, "only the main checkout is left once the worker exits: {worktrees}");
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
    let doomed_worktrees = linked_worktrees(&repo);
    assert_eq!(doomed_worktrees.len(), 1, "its worktree exists while it runs");

    doomed.kill_hard();
    let next = start_worker(&coordinator.url, &config, "next", dir.path());
    wait_all_finished(&db.pool, Duration::from_secs(30)).await;
    let status: String = sqlx::query_scalar("select status::text from task_states").fetch_one(&db.pool).await.unwrap();
    assert_eq!(status, "succeeded");
    let worktrees = linked_worktrees(&repo);
    assert!(!worktrees.contains(&doomed_worktrees[0]), "the dead worker's worktree is pruned: {worktrees:?}");
    assert!(!Path::new(&doomed_worktrees[0]).exists(), "and its folder removed");
    next.terminate().await;
    assert_eq!(linked_worktrees(&repo), Vec::<String>::new(), "none is left once the worker exits");
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
    for worker in workers {
        worker.terminate().await;
    }
    let listed = git(&repo, &["worktree", "list", "--porcelain"]);
    assert_eq!(
        listed.matches("worktree ").count(),
        1,
        "only the main checkout is left once the workers exit: {listed}"
    );
    coordinator.stop().await.unwrap();
}

/// Submits one task and waits until every task has finished.
async fn run_one(coordinator: &TestCoordinator, db: &TestDb, spec: pb::TaskSpec) {
    let mut admin = coordinator.admin_client().await;
    let request = pb::SubmitTasksRequest { swarm: "ws".into(), tasks: vec![spec], ..Default::default() };
    admin.submit_tasks(request).await.unwrap();
    wait_all_finished(&db.pool, Duration::from_secs(30)).await;
}

/// A task's status, error and result, by key.
async fn ended(db: &TestDb, key: &str) -> (String, Option<String>, Option<Value>) {
    sqlx::query_as(
        "select s.status::text, s.error, a.result from task_states s join tasks t on t.id = s.task_id
         left join attempts a on a.task_id = s.task_id and a.number = s.result_attempt where t.key = $1",
    )
    .bind(key)
    .fetch_one(&db.pool)
    .await
    .unwrap()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn consecutive_tasks_on_one_slot_reuse_its_worktree_and_the_second_sees_nothing_of_the_first() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let base = commit_file(&repo, ".gitignore", "*.log\nbuild/\n");
    let (db, coordinator, worker) = start(dir.path(), 1, WorkspaceSetup::new(&repo.display().to_string())).await;
    let out = dir.path();

    // Left by the first: a file (committed on its branch) and ignored files and folders.
    let first = format!(
        "pwd > {out}/first-dir; echo one > one.txt; echo junk > debug.log; mkdir build; echo o > build/out.o",
        out = out.display()
    );
    run_one(&coordinator, &db, task("first", &first, &[])).await;
    let (status, error, result) = ended(&db, "first").await;
    assert_eq!(status, "succeeded", "{error:?}");
    let first_branch = result.unwrap()["workspace"]["branch"].as_str().unwrap().to_owned();
    assert_eq!(git(&repo, &["show", &format!("{first_branch}:one.txt")]), "one\n");

    let second = format!(
        "pwd > {out}/second-dir; ls -A > {out}/second-files; git rev-parse HEAD > {out}/second-head",
        out = out.display()
    );
    run_one(&coordinator, &db, task("second", &second, &[])).await;
    assert_eq!(ended(&db, "second").await.0, "succeeded");

    let first_dir = read(&out.join("first-dir"));
    assert_eq!(read(&out.join("second-dir")), first_dir, "the slot's worktree is reused");
    let work = std::fs::canonicalize(dir.path().join("worker-work")).unwrap();
    assert!(Path::new(first_dir.trim()).starts_with(&work), "beside the scratch folders: {first_dir}");
    assert_eq!(read(&out.join("second-files")), ".git\n.gitignore\nREADME.md\n", "nothing of the first task is left");
    assert_eq!(read(&out.join("second-head")).trim(), base, "the second starts from base");
    worker.terminate().await;
    assert_eq!(linked_worktrees(&repo), Vec::<String>::new(), "none is left once the worker exits");
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worktree_whose_git_link_was_replaced_is_not_reused() {
    let dir = tempfile::tempdir().unwrap();
    let repo = repository(dir.path());
    let (db, coordinator, worker) = start(dir.path(), 1, WorkspaceSetup::new(&repo.display().to_string())).await;
    let out = dir.path();

    let vandal = format!("pwd > {}/vandal-dir; rm -rf .git && git init --quiet && echo x > v.txt", out.display());
    run_one(&coordinator, &db, task("vandal", &vandal, &[])).await;
    let (status, error, _) = ended(&db, "vandal").await;
    assert_eq!(status, "dead");
    assert!(error.unwrap_or_default().contains("replaced"), "a worktree whose .git was replaced is not recorded");
    run_one(&coordinator, &db, task("next", &format!("pwd > {}/next-dir", out.display()), &[])).await;
    assert_eq!(ended(&db, "next").await.0, "succeeded");

    let vandal_dir = read(&out.join("vandal-dir")).trim().to_owned();
    assert_ne!(read(&out.join("next-dir")).trim(), vandal_dir, "the next task gets another worktree");
    assert!(!Path::new(&vandal_dir).exists(), "the replaced one is removed");
    assert!(!linked_worktrees(&repo).contains(&vandal_dir), "and unregistered");
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

/// A bare repository `upstream.git` with `main` holding one commit, made
/// through a clone `seed` that pushes to it.
fn upstream(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let seed = repository(dir);
    let upstream = dir.join("upstream.git");
    git(dir, &["clone", "--quiet", "--bare", &seed.display().to_string(), &upstream.display().to_string()]);
    git(&seed, &["remote", "add", "origin", &upstream.display().to_string()]);
    (seed, upstream)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_urls_mirror_serves_worktrees_takes_upstream_commits_after_its_interval_and_is_pushed_back() {
    let dir = tempfile::tempdir().unwrap();
    let (seed, upstream) = upstream(dir.path());
    let url = format!("file://{}", upstream.display());
    let interval = Duration::from_secs(1);
    let setup = WorkspaceSetup::new(&url).push("origin").fetch_interval("1s");
    let (db, coordinator, worker) = start(dir.path(), 1, setup).await;
    let out = dir.path();

    let first_base = git(&seed, &["rev-parse", "HEAD"]).trim().to_owned();
    let first = format!("git rev-parse HEAD > {}/first-head; echo one > one.txt", out.display());
    run_one(&coordinator, &db, task("first", &first, &[])).await;
    let first_done = std::time::Instant::now();
    let (status, error, result) = ended(&db, "first").await;
    assert_eq!(status, "succeeded", "{error:?}");
    assert_eq!(read(&out.join("first-head")).trim(), first_base, "made from the upstream's default branch");
    let change = &result.unwrap()["workspace"];
    let branch = change["branch"].as_str().unwrap();
    assert_eq!(git(&upstream, &["rev-parse", branch]).trim(), change["commit"].as_str().unwrap(), "pushed to the URL");
    assert_eq!(git(&upstream, &["show", &format!("{branch}:one.txt")]), "one\n");
    let mirrors: Vec<_> = std::fs::read_dir(dir.path().join("worker-work/mirrors")).unwrap().collect();
    assert_eq!(mirrors.len(), 1, "one mirror of the URL on the host");

    let second_base = commit_file(&seed, "upstream.txt", "later\n");
    git(&seed, &["push", "--quiet", "origin", "main"]);
    hive_tests::wait::eventually("the fetch interval to pass", Duration::from_secs(10), || async {
        first_done.elapsed() > interval
    })
    .await;
    let second = format!("git rev-parse HEAD > {}/second-head; test -e upstream.txt", out.display());
    run_one(&coordinator, &db, task("second", &second, &[])).await;
    assert_eq!(ended(&db, "second").await.0, "succeeded");
    assert_eq!(read(&out.join("second-head")).trim(), second_base, "the upstream's new commit is the base");
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_url_that_cannot_be_fetched_hands_the_task_back_naming_it_and_leaves_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", dir.path().join("missing.git").display());
    let (db, coordinator, worker) = start(dir.path(), 1, WorkspaceSetup::new(&url)).await;
    let mut admin = coordinator.admin_client().await;
    let request =
        pb::SubmitTasksRequest { swarm: "ws".into(), tasks: vec![task("k", "true", &[])], ..Default::default() };
    admin.submit_tasks(request).await.unwrap();

    let released = || async {
        let errors: Vec<Option<String>> = sqlx::query_scalar("select error from attempts where outcome = 'released'")
            .fetch_all(&db.pool)
            .await
            .unwrap();
        errors.into_iter().next().flatten()
    };
    hive_tests::wait::eventually("the task to be handed back", Duration::from_secs(30), || async {
        released().await.is_some()
    })
    .await;
    let error = released().await.unwrap();
    assert!(error.contains(&format!("cannot fetch {url}")), "{error}");
    let status: String = sqlx::query_scalar("select status::text from task_states").fetch_one(&db.pool).await.unwrap();
    assert_eq!(status, "ready", "handed back uncharged");
    let mirrors = dir.path().join("worker-work/mirrors");
    assert_eq!(std::fs::read_dir(&mirrors).unwrap().count(), 0, "no mirror is left half made");
    assert!(!dir.path().join("missing.git").exists(), "nothing is made at the URL");
    worker.terminate().await;
    coordinator.stop().await.unwrap();
}
