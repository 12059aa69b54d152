//! A PostgreSQL server of Hive's own, for `hivectl up` with no DATABASE_URL
//! and for the test harness: `initdb` into a data folder (kept and reused by
//! later runs), then the server as a child process on a free loopback port.
//! PostgreSQL refuses to run as root, so as root the server runs as an
//! unprivileged user (`postgres` unless told otherwise).

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::{Pid, Uid, User};
use tokio::process::{Child, Command};

/// How much to trade safety for speed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Durability {
    /// fsync on: what a real deployment has (benchmarks, `hivectl up`).
    Durable,
    /// fsync and synchronous commit off: for throwaway test clusters.
    Fast,
}

/// A running server started here.
#[derive(Debug)]
pub struct LocalPostgres {
    child: Option<Child>,
    /// Folder holding the data folder, the socket and the log.
    pub root: PathBuf,
    /// Data folder.
    pub data_dir: PathBuf,
    /// Port on 127.0.0.1.
    pub port: u16,
    /// Process id of the postmaster.
    pub pid: i32,
    durability: Durability,
}

impl LocalPostgres {
    /// Connection URL of the `postgres` database.
    pub fn url(&self) -> String {
        self.url_for("postgres")
    }

    /// Connection URL of another database on this server.
    pub fn url_for(&self, database: &str) -> String {
        format!("postgres://postgres@127.0.0.1:{}/{database}", self.port)
    }

    /// Starts (creating it on first use) the server whose data lives in `root/data`.
    /// A server already running on that folder (left by `--keep`) is reused.
    ///
    /// # Errors
    /// When the PostgreSQL binaries are missing, no unprivileged user exists
    /// (as root), or the server does not come up (its log is quoted).
    pub async fn start(root: &Path, durability: Durability) -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let owner = server_user()?;
        let data_dir = root.join("data");
        std::fs::create_dir_all(root).with_context(|| format!("create {}", root.display()))?;
        if let Some(owner) = &owner {
            nix::unistd::chown(root, Some(owner.uid), Some(owner.gid))
                .with_context(|| format!("give {} to user {}", root.display(), owner.name))?;
        }
        if let Some(running) = running_server(&data_dir) {
            return Ok(running);
        }
        // A crashed server's stale pid file is fine: postgres checks and replaces it.
        if !data_dir.join("PG_VERSION").exists() {
            initdb(&bin, &data_dir, owner.as_ref(), durability).await?;
        }
        let port = free_port()?;
        Self::launch(root, port, durability).await
    }

    /// Starts the server on an existing data folder and port.
    async fn launch(root: &Path, port: u16, durability: Durability) -> anyhow::Result<Self> {
        let bin = bin_dir()?;
        let owner = server_user()?;
        let data_dir = root.join("data");
        let log = root.join("postgres.log");
        let log_file = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&log)
            .with_context(|| format!("open {}", log.display()))?;
        if let Some(owner) = &owner {
            nix::unistd::chown(&log, Some(owner.uid), Some(owner.gid)).context("chown the server log")?;
        }
        let mut command = as_user(Command::new(bin.join("postgres")), owner.as_ref());
        command
            .arg("-D")
            .arg(&data_dir)
            .args(["-p", &port.to_string(), "-c", "listen_addresses=127.0.0.1", "-c"])
            .arg(format!("unix_socket_directories={}", root.display()))
            .args(["-c", "max_connections=200"])
            .args(durability_settings(durability))
            .stdin(Stdio::null())
            .stdout(log_file.try_clone().context("clone the log handle")?)
            .stderr(log_file)
            .process_group(0)
            .kill_on_drop(true);
        let child = command.spawn().with_context(|| format!("start {}", bin.join("postgres").display()))?;
        let pid =
            child.id().and_then(|pid| i32::try_from(pid).ok()).ok_or_else(|| anyhow!("postgres exited at once"))?;
        let mut server = Self { child: Some(child), root: root.to_path_buf(), data_dir, port, pid, durability };
        server.wait_ready(&log).await?;
        Ok(server)
    }

    /// Crashes the server (an immediate shutdown: no checkpoint, recovery on
    /// the next start) and starts it again on the same port, as an outage would.
    ///
    /// # Errors
    /// When it does not come back.
    pub async fn crash_and_restart(&mut self) -> anyhow::Result<()> {
        self.restart_after(Signal::SIGQUIT, Duration::ZERO).await
    }

    /// Crashes the server and starts it again after `down`: an outage of
    /// that length.
    ///
    /// # Errors
    /// When it does not come back.
    pub async fn crash_for(&mut self, down: Duration) -> anyhow::Result<()> {
        self.restart_after(Signal::SIGQUIT, down).await
    }

    /// Stops the server cleanly and starts it again on the same port, to
    /// apply settings that take a restart (`alter system set
    /// shared_preload_libraries`, say).
    ///
    /// # Errors
    /// When it does not come back.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.restart_after(Signal::SIGINT, Duration::ZERO).await
    }

    async fn restart_after(&mut self, signal: Signal, down: Duration) -> anyhow::Result<()> {
        let _ = kill(Pid::from_raw(self.pid), signal);
        match self.child.take() {
            Some(mut child) => {
                let _ = child.wait().await;
            }
            None => wait_gone(self.pid).await,
        }
        tokio::time::sleep(down).await;
        *self = Self::launch(&self.root, self.port, self.durability).await?;
        Ok(())
    }

    async fn wait_ready(&mut self, log: &Path) -> anyhow::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if let Some(child) = self.child.as_mut()
                && let Ok(Some(status)) = child.try_wait()
            {
                bail!("postgres exited with {status} while starting; its log ({}) ends:\n{}", log.display(), tail(log));
            }
            if read_pid_file(&self.data_dir).is_some_and(|pid_file| pid_file.ready) {
                return Ok(());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        bail!("postgres did not become ready within 60 s; its log ({}) ends:\n{}", log.display(), tail(log))
    }

    /// Leaves the server running after this handle is gone (for `hivectl up --keep`).
    pub fn detach(mut self) {
        if let Some(child) = self.child.take() {
            // Dropping a tokio Child without kill_on_drop leaves the process running;
            // this one was spawned with kill_on_drop, so forget it instead.
            std::mem::forget(child);
        }
    }

    /// Stops the server (fast shutdown: open sessions are ended, data is safe).
    pub async fn stop(mut self) {
        let _ = kill(Pid::from_raw(self.pid), Signal::SIGINT);
        let Some(mut child) = self.child.take() else {
            wait_gone(self.pid).await;
            return;
        };
        if tokio::time::timeout(Duration::from_secs(30), child.wait()).await.is_err() {
            let _ = child.kill().await;
        }
    }
}

fn durability_settings(durability: Durability) -> Vec<&'static str> {
    match durability {
        Durability::Durable => vec![],
        Durability::Fast => vec!["-c", "fsync=off", "-c", "synchronous_commit=off", "-c", "full_page_writes=off"],
    }
}

async fn wait_gone(pid: i32) {
    for _ in 0..600 {
        if kill(Pid::from_raw(pid), None).is_err() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// What `postmaster.pid` says.
struct PidFile {
    pid: i32,
    port: u16,
    ready: bool,
}

fn read_pid_file(data_dir: &Path) -> Option<PidFile> {
    let text = std::fs::read_to_string(data_dir.join("postmaster.pid")).ok()?;
    let lines: Vec<&str> = text.lines().collect();
    Some(PidFile {
        pid: lines.first()?.trim().parse().ok()?,
        port: lines.get(3)?.trim().parse().ok()?,
        ready: lines.get(7).is_some_and(|status| status.trim() == "ready"),
    })
}

fn running_server(data_dir: &Path) -> Option<LocalPostgres> {
    let pid_file = read_pid_file(data_dir)?;
    let alive = kill(Pid::from_raw(pid_file.pid), None).is_ok();
    (alive && pid_file.ready).then(|| LocalPostgres {
        child: None,
        root: data_dir.parent().map_or_else(|| data_dir.to_path_buf(), Path::to_path_buf),
        data_dir: data_dir.to_path_buf(),
        port: pid_file.port,
        pid: pid_file.pid,
        durability: Durability::Durable,
    })
}

async fn initdb(bin: &Path, data_dir: &Path, owner: Option<&User>, durability: Durability) -> anyhow::Result<()> {
    let mut command = as_user(Command::new(bin.join("initdb")), owner);
    command
        .arg("-D")
        .arg(data_dir)
        .args(["-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8"])
        .stdin(Stdio::null());
    if durability == Durability::Fast {
        command.arg("--no-sync");
    }
    let output = command.output().await.with_context(|| format!("run {}", bin.join("initdb").display()))?;
    if !output.status.success() {
        bail!("initdb failed ({}):\n{}", output.status, String::from_utf8_lossy(&output.stderr));
    }
    Ok(())
}

fn as_user(mut command: Command, owner: Option<&User>) -> Command {
    if let Some(owner) = owner {
        command.uid(owner.uid.as_raw()).gid(owner.gid.as_raw());
    }
    command
}

/// The unprivileged user the server runs as when we are root; `None` otherwise.
fn server_user() -> anyhow::Result<Option<User>> {
    if !Uid::effective().is_root() {
        return Ok(None);
    }
    let name = std::env::var("HIVE_PG_USER").unwrap_or_else(|_| "postgres".into());
    let user = User::from_name(&name)
        .with_context(|| format!("look up user {name}"))?
        .ok_or_else(|| anyhow!("running as root, PostgreSQL needs an unprivileged user to run as, and user `{name}` does not exist (create it, or set HIVE_PG_USER)"))?;
    Ok(Some(user))
}

/// Where `initdb` and `postgres` are: `$HIVE_PG_BIN`, else the newest `/usr/lib/postgresql/*/bin`, else `$PATH`.
///
/// # Errors
/// When no folder has both programs.
pub fn bin_dir() -> anyhow::Result<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("postgres").is_file();
    if let Ok(dir) = std::env::var("HIVE_PG_BIN") {
        let dir = PathBuf::from(dir);
        return if has_both(&dir) {
            Ok(dir)
        } else {
            bail!("HIVE_PG_BIN={} has no initdb and postgres", dir.display())
        };
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| Some((entry.file_name().to_str()?.parse().ok()?, entry.path().join("bin"))))
        .filter(|(_, dir)| has_both(dir))
        .collect();
    versions.sort();
    if let Some((_, dir)) = versions.pop() {
        return Ok(dir);
    }
    std::env::var_os("PATH")
        .iter()
        .flat_map(std::env::split_paths)
        .find(|dir| has_both(dir))
        .ok_or_else(|| anyhow!("PostgreSQL server binaries (initdb, postgres) not found: install them (scripts/setup does) or set HIVE_PG_BIN, or set DATABASE_URL to use an existing server"))
}

/// A free TCP port on 127.0.0.1.
///
/// # Errors
/// When no port can be bound.
pub fn free_port() -> anyhow::Result<u16> {
    let listener = TcpListener::bind("127.0.0.1:0").context("find a free port")?;
    Ok(listener.local_addr().context("read the free port")?.port())
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(20)..].join("\n")
}
