//! `hivectl up`: a whole swarm on this machine with one command. Starts
//! PostgreSQL (its own, unless DATABASE_URL is given), a coordinator and N
//! workers as real processes, submits a task file, shows progress, prints a
//! summary, and stops everything it started (or, with `--keep`, leaves it
//! running and prints the addresses). Ctrl-C stops everything cleanly.
//!
//! Auth is on: the coordinator's admin token lives in `DATA_DIR/admin.token`
//! (made once, mode 0600), and each run makes a worker token for its workers
//! and revokes it when it stops them.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use hive_shared::pb;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use hive_shared::client::{Connect, TOKEN_ENV};
use hive_shared::tokens::{self, Role};

use super::{Ctx, status, submit};
use crate::local_pg::{self, Durability, LocalPostgres};
use crate::output::{self, TaskView};
use crate::taskfile;

/// How long each part may take to come up.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long each part may take to stop before it is killed.
const STOP_TIMEOUT: Duration = Duration::from_secs(45);

/// Arguments of `up`.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    /// Task file to submit.
    #[arg(long, short, default_value = "examples/hello.yaml")]
    pub file: PathBuf,
    /// Worker config naming the agents (paths in it are relative to it).
    #[arg(long, default_value = "examples/worker.toml")]
    pub worker_config: PathBuf,
    /// Workers to start.
    #[arg(long, default_value_t = 3)]
    pub workers: u32,
    /// Slots per worker (default: the worker config's).
    #[arg(long)]
    pub slots: Option<u32>,
    /// Folder for the local database and the logs (default /var/lib/hive as root, else ~/.local/share/hive).
    #[arg(long, env = "HIVE_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
    /// Use this PostgreSQL instead of starting one.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,
    /// Coordinator port on 127.0.0.1 (default: a free one).
    #[arg(long)]
    pub port: Option<u16>,
    /// Leave everything running and print the addresses.
    #[arg(long)]
    pub keep: bool,
}

/// How long a run's worker token works unless revoked first.
const WORKER_TOKEN_LIFE: Duration = Duration::from_secs(7 * 24 * 3600);

/// The admin token's file in the data folder.
const ADMIN_TOKEN_FILE: &str = "admin.token";

/// The processes started here, stopped in reverse order, and the worker
/// token made for this run (revoked when the workers stop).
#[derive(Debug, Default)]
struct Stack {
    postgres: Option<LocalPostgres>,
    coordinator: Option<Child>,
    workers: Vec<Child>,
    worker_token: Option<(Ctx, String)>,
    /// The coordinator's dashboard.
    dashboard: Option<String>,
}

/// How a stop is asked for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    /// The run is over: workers drain (they are idle by now).
    Drain,
    /// A person pressed Ctrl-C: workers stop their agents at once and report them.
    Now,
}

impl Stack {
    async fn stop(&mut self, how: Stop) {
        for worker in &self.workers {
            terminate(worker);
        }
        if how == Stop::Now {
            // A second signal tells a draining worker to stop its agents at once.
            tokio::time::sleep(Duration::from_millis(200)).await;
            for worker in &self.workers {
                signal(worker, Signal::SIGINT);
            }
        }
        for worker in &mut self.workers {
            wait_or_kill(worker).await;
        }
        self.workers.clear();
        if let Some((ctx, name)) = self.worker_token.take()
            && let Ok(mut admin) = ctx.admin()
            && let Err(status) = admin.revoke_token(pb::RevokeTokenRequest { name: name.clone() }).await
        {
            tracing::warn!(token = %name, message = status.message(), "could not revoke this run's worker token");
        }
        if let Some(mut coordinator) = self.coordinator.take() {
            terminate(&coordinator);
            wait_or_kill(&mut coordinator).await;
        }
        if let Some(postgres) = self.postgres.take() {
            postgres.stop().await;
        }
    }

    /// Makes a worker token for this run's workers.
    async fn worker_token(&mut self, ctx: &Ctx) -> anyhow::Result<String> {
        let name = format!("up-workers-{}", uuid::Uuid::new_v4().simple());
        // It is revoked when the workers stop; the expiry covers a run that never gets there.
        let expires_in = Some(hive_shared::convert::duration(WORKER_TOKEN_LIFE));
        let request = pb::CreateTokenRequest { name: name.clone(), role: "worker".into(), expires_in };
        let made =
            ctx.admin()?.create_token(request).await.map_err(|status| ctx.refused("create a worker token", &status))?;
        self.worker_token = Some((ctx.clone(), name));
        Ok(made.into_inner().token)
    }

    fn detach(&mut self) {
        self.worker_token = None;
        for child in self.workers.drain(..).chain(self.coordinator.take()) {
            std::mem::forget(child);
        }
        if let Some(postgres) = self.postgres.take() {
            postgres.detach();
        }
    }
}

fn terminate(child: &Child) {
    signal(child, Signal::SIGTERM);
}

fn signal(child: &Child, signal: Signal) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

async fn wait_or_kill(child: &mut Child) {
    if tokio::time::timeout(STOP_TIMEOUT, child.wait()).await.is_err() {
        tracing::warn!("a process did not stop within {STOP_TIMEOUT:?}; killing it");
        let _ = child.kill().await;
    }
}

/// Runs `up`.
///
/// # Errors
/// Bad input files, missing binaries, a part that does not start, or tasks that did not succeed.
pub async fn run(args: UpArgs, json: bool) -> anyhow::Result<()> {
    let request = taskfile::load(&args.file)?.into_request();
    if !args.worker_config.is_file() {
        bail!("worker config {} does not exist (give --worker-config)", args.worker_config.display());
    }
    let binaries = Binaries::locate()?;
    let data_dir = args.data_dir.clone().unwrap_or_else(default_data_dir);
    let logs = data_dir.join("logs");
    std::fs::create_dir_all(&logs).with_context(|| format!("create {}", logs.display()))?;

    let interrupted = CancellationToken::new();
    let forced = CancellationToken::new();
    let signals = TaskTracker::new();
    hive_shared::signal::spawn_watch(&signals, interrupted.clone(), forced);
    let mut stack = Stack::default();
    let outcome = tokio::select! {
        outcome = bring_up_and_run(&args, &binaries, &data_dir, &logs, request, json, &mut stack) => outcome,
        () = interrupted.cancelled() => Err(anyhow!("interrupted")),
    };
    match (&outcome, args.keep) {
        (Ok(coordinator), true) => {
            print_kept(coordinator, &stack, &logs, &data_dir);
            stack.detach();
        }
        _ => {
            tracing::info!("stopping workers, coordinator and database");
            let how = if interrupted.is_cancelled() { Stop::Now } else { Stop::Drain };
            stack.stop(how).await;
        }
    }
    outcome.map(|_| ())
}

#[allow(clippy::too_many_arguments)]
async fn bring_up_and_run(
    args: &UpArgs,
    binaries: &Binaries,
    data_dir: &Path,
    logs: &Path,
    request: pb::SubmitTasksRequest,
    json: bool,
    stack: &mut Stack,
) -> anyhow::Result<String> {
    let database_url = match &args.database_url {
        Some(url) => url.clone(),
        None => {
            tracing::info!(data_dir = %data_dir.join("postgres").display(), "starting PostgreSQL");
            let postgres = LocalPostgres::start(&data_dir.join("postgres"), Durability::Durable).await?;
            let url = postgres.url();
            stack.postgres = Some(postgres);
            url
        }
    };
    let port = match args.port {
        Some(port) => port,
        None => local_pg::free_port()?,
    };
    let coordinator_url = format!("http://127.0.0.1:{port}");
    let http = format!("127.0.0.1:{}", local_pg::free_port()?);
    let admin_token_file = data_dir.join(ADMIN_TOKEN_FILE);
    let admin_token = admin_token(&admin_token_file)?;
    tracing::info!(url = %coordinator_url, "starting the coordinator");
    let mut coordinator = Command::new(&binaries.coordinator);
    coordinator
        .args(["--listen", &format!("127.0.0.1:{port}")])
        .env("DATABASE_URL", &database_url)
        .env("HIVE_COORDINATOR__AUTH__ADMIN_TOKEN_FILE", &admin_token_file)
        .env("HIVE_COORDINATOR__HTTP__LISTEN", &http);
    stack.coordinator = Some(spawn(coordinator, &logs.join("coordinator.log"))?);
    let dashboard = format!("http://{http}/");
    stack.dashboard = Some(dashboard.clone());
    let ctx = Ctx { connect: Connect::plain(&coordinator_url).with_token(admin_token), json };
    wait_healthy(&ctx.connect, stack, &logs.join("coordinator.log")).await?;
    tracing::info!(
        "admin token: export HIVE_COORDINATOR={coordinator_url} HIVE_TOKEN=$(cat {})",
        admin_token_file.display()
    );
    tracing::info!("dashboard: {dashboard} (sign in with the admin token in {})", admin_token_file.display());
    let worker_token = stack.worker_token(&ctx).await?;

    tracing::info!(count = args.workers, "starting workers");
    for index in 1..=args.workers {
        let mut worker = Command::new(&binaries.worker);
        worker.arg("--config").arg(&args.worker_config).args([
            "--coordinator",
            &coordinator_url,
            "--name",
            &format!("worker-{index}"),
        ]);
        if let Some(slots) = args.slots {
            worker.args(["--slots", &slots.to_string()]);
        }
        worker.env(TOKEN_ENV, &worker_token);
        stack.workers.push(spawn(worker, &logs.join(format!("worker-{index}.log")))?);
    }
    wait_for_workers(&ctx, args.workers, stack, logs).await?;

    let started = Instant::now();
    let submitted = submit::send(&ctx, request).await?;
    tracing::info!(swarm_id = %submitted.swarm_id, tasks = submitted.tasks.len(), "swarm submitted");
    let finished = status::wait(&ctx, std::slice::from_ref(&submitted.swarm_id)).await?;
    print_summary(&ctx, &submitted.swarm_id, started.elapsed()).await?;
    let failed: u64 = finished.iter().map(|swarm| swarm.counts.dead + swarm.counts.cancelled).sum();
    if failed > 0 {
        bail!("{failed} task(s) did not succeed; see `hivectl tasks show ID` and the logs in {}", logs.display());
    }
    Ok(coordinator_url)
}

fn spawn(mut command: Command, log: &Path) -> anyhow::Result<Child> {
    let file = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    command
        .stdin(Stdio::null())
        .stdout(file.try_clone().context("clone a log handle")?)
        .stderr(file)
        .process_group(0)
        .kill_on_drop(true);
    command.spawn().with_context(|| format!("start {:?}", command.as_std().get_program()))
}

async fn wait_healthy(connect: &Connect, stack: &mut Stack, log: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if let Some(coordinator) = stack.coordinator.as_mut()
            && let Ok(Some(status)) = coordinator.try_wait()
        {
            bail!("the coordinator exited ({status}); its log ({}) ends:\n{}", log.display(), tail(log));
        }
        if crate::client::serving(connect).await {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!(
                "the coordinator did not become healthy within {START_TIMEOUT:?}; its log ({}) ends:\n{}",
                log.display(),
                tail(log)
            );
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn wait_for_workers(ctx: &Ctx, expected: u32, stack: &mut Stack, logs: &Path) -> anyhow::Result<()> {
    let deadline = Instant::now() + START_TIMEOUT;
    let mut admin = ctx.admin()?;
    loop {
        for (index, worker) in stack.workers.iter_mut().enumerate() {
            if let Ok(Some(status)) = worker.try_wait() {
                let log = logs.join(format!("worker-{}.log", index + 1));
                bail!("worker-{} exited ({status}); its log ({}) ends:\n{}", index + 1, log.display(), tail(&log));
            }
        }
        let live = admin
            .list_workers(pb::ListWorkersRequest { include_gone: false })
            .await
            .map(|response| response.into_inner().workers)
            .unwrap_or_default();
        let ours = live.iter().filter(|worker| worker.name.starts_with("worker-")).count();
        if ours >= expected as usize {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("only {ours} of {expected} workers registered within {START_TIMEOUT:?}; see {}", logs.display());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

async fn print_summary(ctx: &Ctx, swarm_id: &str, elapsed: Duration) -> anyhow::Result<()> {
    let filter = pb::ListTasksRequest { swarm_id: swarm_id.to_owned(), full: true, ..Default::default() };
    let tasks = crate::client::list_tasks(&mut ctx.admin()?, filter, usize::MAX)
        .await
        .map_err(|status| ctx.refused("list tasks", &status))?;
    let mut tasks: Vec<TaskView> = tasks.into_iter().map(TaskView::from).collect();
    tasks.sort_by(|a, b| a.key.cmp(&b.key));
    if ctx.json {
        output::json(&tasks);
        return Ok(());
    }
    let mut table = output::table(&["key", "status", "tries", "result or error"]);
    for task in &tasks {
        let detail = match &task.result {
            Some(result) => result.to_string(),
            None => task.error.clone(),
        };
        let short = output::printable(&detail.chars().take(80).collect::<String>());
        table.add_row(vec![task.key.clone(), task.status.clone(), task.attempts.to_string(), short]);
    }
    output::line(table);
    let succeeded = tasks.iter().filter(|task| task.status == "succeeded").count();
    output::line(format!("swarm {swarm_id}: {succeeded}/{} succeeded in {:.1}s", tasks.len(), elapsed.as_secs_f64()));
    Ok(())
}

fn print_kept(coordinator: &str, stack: &Stack, logs: &Path, data_dir: &Path) {
    output::line(format!("coordinator  {coordinator}   (hivectl --coordinator {coordinator} status)"));
    output::line(format!("admin token  export HIVE_TOKEN=$(cat {})", data_dir.join(ADMIN_TOKEN_FILE).display()));
    if let Some(dashboard) = &stack.dashboard {
        let file = data_dir.join(ADMIN_TOKEN_FILE);
        output::line(format!("dashboard    {dashboard}   (sign in with the token in {})", file.display()));
    }
    if let Some(postgres) = &stack.postgres {
        output::line(format!("database     {}   (server pid {})", postgres.url(), postgres.pid));
    }
    let pids: Vec<String> =
        stack.workers.iter().chain(&stack.coordinator).filter_map(Child::id).map(|pid| pid.to_string()).collect();
    output::line(format!("logs         {}", logs.display()));
    output::line(format!("stop with    kill {}", pids.join(" ")));
}

/// The coordinator and worker programs, found next to hivectl.
struct Binaries {
    coordinator: PathBuf,
    worker: PathBuf,
}

impl Binaries {
    fn locate() -> anyhow::Result<Self> {
        let here = std::env::current_exe().context("find hivectl's own path")?;
        let dir = here.parent().ok_or_else(|| anyhow!("hivectl has no parent folder"))?;
        let find = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(anyhow!("{name} not found next to hivectl in {} (build it: cargo build --bins)", dir.display()))
            }
        };
        Ok(Self { coordinator: find("hive-coordinator")?, worker: find("hive-worker")? })
    }
}

/// The admin token in `path`, made (mode 0600) when the file does not exist yet.
fn admin_token(path: &Path) -> anyhow::Result<String> {
    if path.exists() {
        let token = std::fs::read_to_string(path).with_context(|| format!("read {}", path.display()))?;
        return Ok(token.trim().to_owned());
    }
    let token = tokens::generate(Role::Admin);
    write_secret(path, &token)?;
    Ok(token)
}

/// Writes `text` to a new file only its owner can read.
pub(crate) fn write_secret(path: &Path, text: &str) -> anyhow::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .with_context(|| format!("create {}", path.display()))?;
    writeln!(file, "{text}").with_context(|| format!("write {}", path.display()))
}

fn default_data_dir() -> PathBuf {
    if nix::unistd::Uid::effective().is_root() {
        return PathBuf::from("/var/lib/hive");
    }
    std::env::var_os("XDG_DATA_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".local/share")))
        .unwrap_or_else(std::env::temp_dir)
        .join("hive")
}

fn tail(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(15)..].join("\n")
}
