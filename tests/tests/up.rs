//! `hivectl up`, the README's run command: the example swarm runs to
//! completion on a PostgreSQL it starts itself, and Ctrl-C mid-run stops
//! everything it started, leaving no process behind.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use hive_tests::procs::binary;
use hive_tests::wait::eventually;
use hive_tests::worker_setup::{Agent, WorkerSetup};
use hive_worker::config::PromptMode;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// A data folder the unprivileged PostgreSQL user can reach when we are root.
fn data_dir() -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("hive-up-").tempdir().unwrap();
    std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o755)).unwrap();
    dir
}

fn up(data: &Path, extra: &[&str]) -> tokio::process::Command {
    let mut command = tokio::process::Command::new(binary("hivectl"));
    command
        .arg("up")
        .arg("--data-dir")
        .arg(data)
        .args(extra)
        .current_dir(workspace())
        .env_remove("DATABASE_URL")
        .env_remove("HIVE_DATA_DIR")
        .stdin(Stdio::null());
    command
}

/// Processes whose command line mentions `needle`.
fn processes_mentioning(needle: &str) -> Vec<String> {
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok().map(|raw| (entry.file_name(), raw)))
        .map(|(pid, raw)| (pid, String::from_utf8_lossy(&raw).replace('\0', " ")))
        .filter(|(_, cmdline)| cmdline.contains(needle))
        .map(|(pid, cmdline)| format!("{}: {cmdline}", pid.to_string_lossy()))
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn up_runs_the_example_swarm_to_completion_and_stops_everything() {
    let data = data_dir();
    let output = tokio::time::timeout(Duration::from_secs(120), up(data.path(), &[]).output()).await.unwrap().unwrap();
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "hivectl up failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("5/5 succeeded"), "{stdout}");
    assert!(stderr.contains("dashboard: http://127.0.0.1:"), "up says where the dashboard is: {stderr}");
    for key in ["greet-en", "greet-fr", "greet-de", "greet-ja", "shout"] {
        assert!(stdout.contains(key), "summary lists {key}: {stdout}");
    }
    assert!(data.path().join("postgres/data/PG_VERSION").exists(), "the database folder is kept for the next run");
    let left = processes_mentioning(&data.path().display().to_string());
    assert!(left.is_empty(), "processes left running: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ctrl_c_during_up_stops_everything_it_started() {
    let data = data_dir();
    let dir = tempfile::tempdir().unwrap();
    let tasks = dir.path().join("slow.yaml");
    std::fs::write(
        &tasks,
        "swarm: slow\ntasks:\n  - agent: sleepy\n    prompt: zz\n  - agent: sleepy\n    prompt: zz\n",
    )
    .unwrap();
    let marker = "1005.2468";
    let config = dir.path().join("worker.toml");
    let sleepy = Agent::command(["sleep", marker]).prompt(PromptMode::Stdin);
    std::fs::write(&config, WorkerSetup::new().agent("sleepy", sleepy).to_toml()).unwrap();

    let mut child = up(
        data.path(),
        &["--file", tasks.to_str().unwrap(), "--worker-config", config.to_str().unwrap(), "--workers", "2"],
    )
    .stdout(Stdio::null())
    .stderr(Stdio::piped())
    .spawn()
    .unwrap();
    eventually("the agents to start", Duration::from_secs(60), || async { processes_mentioning(marker).len() >= 2 })
        .await;
    let pid = Pid::from_raw(i32::try_from(child.id().unwrap()).unwrap());
    kill(pid, Signal::SIGINT).unwrap();
    let status = tokio::time::timeout(Duration::from_secs(90), child.wait()).await.unwrap().unwrap();
    assert!(!status.success(), "an interrupted run reports failure");
    let mut stderr = String::new();
    tokio::io::AsyncReadExt::read_to_string(child.stderr.as_mut().unwrap(), &mut stderr).await.unwrap();
    assert!(stderr.contains("interrupted"), "{stderr}");
    let left: Vec<String> = processes_mentioning(&data.path().display().to_string())
        .into_iter()
        .chain(processes_mentioning(marker))
        .collect();
    assert!(left.is_empty(), "processes left running after Ctrl-C: {left:?}");
}
