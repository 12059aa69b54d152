//! The real binaries as child processes: coordinator, workers, hivectl.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};

use crate::wait::eventually;

/// Path of a workspace binary built by `cargo build --bins` (same profile as the tests).
///
/// # Panics
/// When it has not been built, saying how to build it.
pub fn binary(name: &str) -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../target"));
    let profile = if cfg!(debug_assertions) { "debug" } else { "release" };
    let path = target.join(profile).join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`cargo build --bins`; scripts/test does it)",
        path.display()
    );
    path
}

/// grpcurl from $GRPCURL, the project's .venv (scripts/setup), or PATH.
///
/// # Panics
/// When there is none, saying how to install it.
pub fn grpcurl() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let candidates = std::env::var_os("GRPCURL")
        .map(PathBuf::from)
        .into_iter()
        .chain([Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/grpcurl")])
        .chain(std::env::split_paths(&path).map(|dir| dir.join("grpcurl")));
    for candidate in candidates {
        if candidate.is_file() {
            return candidate;
        }
    }
    panic!("grpcurl not found: run scripts/setup (it installs grpcurl into .venv/bin) or set GRPCURL");
}

/// A child process whose output goes to a log file. Dropped while running, it
/// gets SIGTERM then SIGINT (two distinct signals, both delivered): a worker
/// treats the pair as "stop now", so it stops its agents instead of orphaning them.
#[derive(Debug)]
pub struct Proc {
    /// The process.
    pub child: Child,
    /// Its combined stdout and stderr.
    pub log: PathBuf,
}

impl Proc {
    /// Starts `command`, logging to `log`.
    ///
    /// # Panics
    /// When it cannot be started.
    pub fn spawn(mut command: Command, log: PathBuf) -> Self {
        let file = std::fs::File::create(&log).expect("create a process log");
        command.stdin(Stdio::null()).stdout(file.try_clone().expect("clone log handle")).stderr(file).process_group(0);
        let child = command.spawn().expect("start a process");
        Self { child, log }
    }

    /// Process id.
    ///
    /// # Panics
    /// When the process has already been waited for.
    pub fn pid(&self) -> Pid {
        Pid::from_raw(i32::try_from(self.child.id().expect("running process")).expect("pid fits i32"))
    }

    /// Sends a signal.
    pub fn signal(&self, signal: Signal) {
        let _ = kill(self.pid(), signal);
    }

    /// Sends SIGTERM and waits for the exit status.
    ///
    /// # Panics
    /// When it does not exit within 60 s.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        self.signal(Signal::SIGTERM);
        tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("process exits after SIGTERM")
            .expect("wait for process")
    }

    /// Kills the process at once (SIGKILL), as a crash would.
    pub fn kill_hard(&self) {
        self.signal(Signal::SIGKILL);
    }

    /// The log so far.
    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

/// Starts a coordinator process on a free port against `database_url`; waits until it serves.
///
/// # Panics
/// When it does not come up (its log is shown).
pub async fn start_coordinator(database_url: &str, dir: &Path, env: &[(&str, &str)]) -> (Proc, String) {
    let port = hivectl::local_pg::free_port().expect("free port");
    start_coordinator_on(port, database_url, dir, env).await
}

/// Starts a coordinator process on `port` (again, after a crash, say); waits until it serves.
///
/// # Panics
/// When it does not come up.
pub async fn start_coordinator_on(port: u16, database_url: &str, dir: &Path, env: &[(&str, &str)]) -> (Proc, String) {
    let mut command = Command::new(binary("hive-coordinator"));
    command
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", database_url)
        .env("HIVE_COORDINATOR__AUTH__ADMIN_TOKEN_FILE", crate::auth::admin_token_file())
        .env("RUST_LOG", "info,sqlx=warn");
    command.envs(env.iter().copied());
    let started = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    let proc = Proc::spawn(command, dir.join(format!("coordinator-{port}-{}.log", started.as_nanos())));
    let url = format!("http://127.0.0.1:{port}");
    let probe = url.clone();
    eventually("the coordinator process to serve", Duration::from_secs(30), || {
        let probe = probe.clone();
        async move { hivectl_output(&probe, &["workers"]).await.status.success() }
    })
    .await;
    crate::auth::seed_worker_token(database_url).await;
    (proc, url)
}

/// How many processes on this host run `sleep MARKER`: agents in tests
/// sleep for a distinctive number of seconds, so each test counts its own.
///
/// # Panics
/// When `/proc` cannot be read.
#[must_use]
pub fn sleeping(marker: &str) -> usize {
    let prefix = format!("sleep {marker}");
    #[allow(clippy::unwrap_used)] // test support: no /proc is the test failing
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| std::fs::read(entry.path().join("cmdline")).ok())
        .filter(|cmdline| String::from_utf8_lossy(cmdline).replace('\0', " ").starts_with(&prefix))
        .count()
}

/// Starts a worker process.
pub fn start_worker(coordinator_url: &str, config: &Path, name: &str, dir: &Path) -> Proc {
    start_worker_with_env(coordinator_url, config, name, dir, &[])
}

/// [`start_worker`] with more environment variables (`OTEL_*`, say).
///
/// # Panics
/// When the binary cannot be started.
pub fn start_worker_with_env(
    coordinator_url: &str,
    config: &Path,
    name: &str,
    dir: &Path,
    env: &[(&str, &str)],
) -> Proc {
    let mut command = Command::new(binary("hive-worker"));
    command
        .arg("--config")
        .arg(config)
        .args(["--coordinator", coordinator_url, "--name", name])
        .env("HIVE_TOKEN", crate::auth::worker_token())
        .env("RUST_LOG", "info")
        .envs(env.iter().copied());
    Proc::spawn(command, dir.join(format!("{name}.log")))
}

/// What a hivectl run printed.
#[derive(Debug)]
pub struct CliOutput {
    /// Exit status.
    pub status: std::process::ExitStatus,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

/// Runs `hivectl --coordinator URL ARGS...` with the admin token to completion.
///
/// # Panics
/// When hivectl cannot be started.
pub async fn hivectl_output(coordinator_url: &str, args: &[&str]) -> CliOutput {
    hivectl_as(crate::auth::admin_token(), coordinator_url, args).await
}

/// Runs `hivectl --coordinator URL ARGS...` with `token` (empty: none) to completion.
///
/// # Panics
/// When hivectl cannot be started.
pub async fn hivectl_as(token: &str, coordinator_url: &str, args: &[&str]) -> CliOutput {
    let mut command = Command::new(binary("hivectl"));
    if token.is_empty() {
        command.env_remove("HIVE_TOKEN");
    } else {
        command.env("HIVE_TOKEN", token);
    }
    let output = command
        .env_remove("HIVE_TOKEN_FILE")
        .args(["--coordinator", coordinator_url])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("run hivectl");
    CliOutput {
        status: output.status,
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// Runs hivectl and parses its `--json` output.
///
/// # Panics
/// When hivectl fails or prints no JSON.
pub async fn hivectl_json(coordinator_url: &str, args: &[&str]) -> serde_json::Value {
    let mut full = vec!["--json"];
    full.extend_from_slice(args);
    let output = hivectl_output(coordinator_url, &full).await;
    assert!(output.status.success(), "hivectl {args:?} failed: {}", output.stderr);
    serde_json::from_str(&output.stdout)
        .unwrap_or_else(|err| panic!("hivectl {args:?} printed no JSON ({err}): {}", output.stdout))
}

/// How much of a process's log a failing test shows.
const LOG_TAIL_LINES: usize = 80;

impl Drop for Proc {
    fn drop(&mut self) {
        // A test failing with the process still held shows what it said last.
        if std::thread::panicking() {
            let log = self.log_text();
            let lines: Vec<&str> = log.lines().collect();
            let tail = &lines[lines.len().saturating_sub(LOG_TAIL_LINES)..];
            eprintln!("--- the last {} lines of {} ---\n{}", tail.len(), self.log.display(), tail.join("\n"));
        }
        if matches!(self.child.try_wait(), Ok(None)) {
            self.signal(Signal::SIGTERM);
            self.signal(Signal::SIGINT);
        }
    }
}
