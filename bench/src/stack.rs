//! The processes a workload runs against: one durable PostgreSQL for the
//! whole run; per workload a fresh database, a coordinator and workers.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use hivectl::local_pg::{Durability, LocalPostgres, free_port};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::process::{Child, Command};

/// The coordinator and worker binaries of this build.
#[derive(Debug, Clone)]
pub struct Binaries {
    /// `hive-coordinator`.
    pub coordinator: PathBuf,
    /// `hive-worker`.
    pub worker: PathBuf,
}

impl Binaries {
    /// Finds them next to this program.
    ///
    /// # Errors
    /// When they are missing.
    pub fn locate() -> anyhow::Result<Self> {
        let here = std::env::current_exe()?;
        let dir = here.parent().ok_or_else(|| anyhow!("no parent folder"))?;
        let find = |name: &str| {
            let path = dir.join(name);
            if path.is_file() {
                Ok(path)
            } else {
                Err(anyhow!("{name} not found in {} (cargo build --release --bins)", dir.display()))
            }
        };
        Ok(Self { coordinator: find("hive-coordinator")?, worker: find("hive-worker")? })
    }
}

/// What the database logs of each statement, for profiling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum StatementLog {
    /// Nothing.
    Off,
    /// Every statement with its duration.
    Durations,
    /// The plan of every statement over 3 ms, with actual times and buffers (auto_explain).
    Plans,
    /// Each statement's totals (`pg_stat_statements`: time, calls, rows, WAL),
    /// printed to stderr after each workload variant.
    Totals,
}

impl StatementLog {
    fn settings(self) -> &'static [&'static str] {
        match self {
            Self::Off | Self::Totals => &[],
            Self::Durations => &["log_min_duration_statement = 0"],
            Self::Plans => &[
                "session_preload_libraries = 'auto_explain'",
                "auto_explain.log_min_duration = '3ms'",
                "auto_explain.log_nested_statements = on",
                "auto_explain.log_analyze = on",
                "auto_explain.log_buffers = on",
            ],
        }
    }
}

/// A durable PostgreSQL for the run.
#[derive(Debug)]
pub struct Database {
    server: LocalPostgres,
    log: StatementLog,
    /// Folder for logs and configs.
    pub dir: PathBuf,
}

impl Database {
    /// Starts one with PostgreSQL's durable defaults.
    ///
    /// # Errors
    /// When it does not start.
    pub async fn start(dir: &Path, log: StatementLog) -> anyhow::Result<Self> {
        std::fs::create_dir_all(dir)?;
        // The server may run as an unprivileged user: it must reach its folder.
        std::fs::set_permissions(dir, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
        let mut server = LocalPostgres::start(&dir.join("pg"), Durability::Durable).await?;
        if log == StatementLog::Totals {
            let mut admin = PgConnection::connect(&server.url()).await?;
            sqlx::raw_sql("alter system set shared_preload_libraries = 'pg_stat_statements'")
                .execute(&mut admin)
                .await?;
            server.restart().await?;
            // Known once the library is loaded.
            let mut admin = PgConnection::connect(&server.url()).await?;
            sqlx::raw_sql("alter system set pg_stat_statements.track_planning = on").execute(&mut admin).await?;
            sqlx::raw_sql("select pg_reload_conf()").execute(&mut admin).await?;
        }
        Ok(Self { server, log, dir: dir.to_path_buf() })
    }

    /// With [`StatementLog::Totals`], prints the statements that took the
    /// most time in `pool`'s database since it was made, one line each.
    ///
    /// # Errors
    /// Database failures.
    pub async fn print_totals(&self, pool: &PgPool, label: &str) -> anyhow::Result<()> {
        if self.log != StatementLog::Totals {
            return Ok(());
        }
        let rows: Vec<(f64, i64, i64, i64, f64, i64, String)> = sqlx::query_as(
            "select s.total_exec_time, s.calls, s.rows, s.wal_bytes::int8, s.total_plan_time, s.plans,
                    left(regexp_replace(s.query, '\\s+', ' ', 'g'), 100)
             from pg_stat_statements s join pg_database d on d.oid = s.dbid
             where d.datname = current_database()
             order by s.total_exec_time desc limit 12",
        )
        .fetch_all(pool)
        .await?;
        eprintln!("statements of {label}: total ms, calls, rows, µs per row, WAL bytes, planning ms, plans, text");
        for (ms, calls, rows, wal, plan_ms, plans, text) in rows {
            let per_row = ms * 1000.0 / rows.max(1) as f64;
            eprintln!("{ms:10.1} {calls:7} {rows:8} {per_row:8.1} {wal:11} {plan_ms:8.1} {plans:6} {text}");
        }
        Ok(())
    }

    /// A fresh database, migrated, and its URL.
    ///
    /// # Errors
    /// Database failures.
    pub async fn fresh(&self, name: &str) -> anyhow::Result<(String, PgPool)> {
        let mut admin = PgConnection::connect(&self.server.url()).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("drop database if exists {name}"))).execute(&mut admin).await?;
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}"))).execute(&mut admin).await?;
        for setting in self.log.settings() {
            let statement = format!("alter database {name} set {setting}");
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement)).execute(&mut admin).await?;
        }
        let url = self.server.url_for(name);
        let pool = sqlx::postgres::PgPoolOptions::new().max_connections(4).connect(&url).await?;
        if self.log == StatementLog::Totals {
            sqlx::raw_sql("create extension if not exists pg_stat_statements").execute(&pool).await?;
        }
        // The coordinator applies them on start too; doing it here lets a
        // workload load tasks before the coordinator runs.
        hive_coordinator::MIGRATOR.run(&pool).await?;
        crate::auth::seed(&pool).await?;
        // For measuring what a feature costs at the database: statements
        // run once the schema is migrated (`alter table … disable trigger …`).
        if let Ok(sql) = std::env::var("HIVE_BENCH_SQL") {
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql)).execute(&pool).await.context("HIVE_BENCH_SQL failed")?;
        }
        Ok((url, pool))
    }

    /// Stops it.
    pub async fn stop(self) {
        self.server.stop().await;
    }
}

/// A coordinator and workers on one database.
#[derive(Debug)]
pub struct Hive {
    /// Coordinator URL.
    pub url: String,
    coordinator: Child,
    workers: Vec<Child>,
    binaries: Binaries,
    dir: PathBuf,
}

impl Hive {
    /// Starts a coordinator on `database_url` and waits until it serves.
    ///
    /// # Errors
    /// When it does not come up.
    pub async fn start(
        binaries: &Binaries,
        database_url: &str,
        dir: &Path,
        env: &[(&str, &str)],
    ) -> anyhow::Result<Self> {
        let port = free_port()?;
        let mut command = Command::new(&binaries.coordinator);
        command
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .env("DATABASE_URL", database_url)
            .env("RUST_LOG", "warn")
            .env("HIVE_COORDINATOR__LIMITS__MAX_TASKS_PER_SUBMIT", "100000")
            .env("HIVE_COORDINATOR__LIMITS__MAX_MESSAGE_SIZE", "256MiB")
            .envs(env.iter().copied());
        if let Some(tokens) = crate::auth::tokens() {
            command.env("HIVE_COORDINATOR__AUTH__ADMIN_TOKEN_FILE", &tokens.admin_file);
        }
        crate::tls::serve(&mut command);
        let coordinator = spawn(command, &dir.join("coordinator.log"))?;
        let url = format!("{}://127.0.0.1:{port}", crate::tls::scheme());
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if crate::tls::connect(&url).endpoint()?.connect().await.is_ok() {
                break;
            }
            if Instant::now() > deadline {
                bail!("the coordinator did not come up; see {}", dir.join("coordinator.log").display());
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(Self { url, coordinator, workers: Vec::new(), binaries: binaries.clone(), dir: dir.to_path_buf() })
    }

    /// Starts `count` workers with `slots` each and the agent table `agents`.
    ///
    /// # Errors
    /// When a config cannot be written or a worker started.
    pub fn start_workers(&mut self, count: usize, slots: usize, agents: &str) -> anyhow::Result<()> {
        self.start_workers_logging(count, slots, agents, "warn")
    }

    /// Like [`Hive::start_workers`], the workers logging what `filter`
    /// (`RUST_LOG`) lets through to [`Hive::worker_log`].
    ///
    /// # Errors
    /// When a config cannot be written or a worker started.
    pub fn start_workers_logging(
        &mut self,
        count: usize,
        slots: usize,
        agents: &str,
        filter: &str,
    ) -> anyhow::Result<()> {
        for index in 0..count {
            let config = self.dir.join(format!("worker-{index}.toml"));
            let work = self.dir.join(format!("work-{index}"));
            std::fs::write(&config, format!("slots = {slots}\nwork_dir = \"{}\"\n{agents}", work.display()))?;
            let mut command = Command::new(&self.binaries.worker);
            command.arg("--config").arg(&config).args([
                "--coordinator",
                &self.url,
                "--name",
                &format!("bench-{index}"),
            ]);
            command.env("RUST_LOG", filter);
            if let Some(tokens) = crate::auth::tokens() {
                command.env("HIVE_TOKEN", &tokens.worker);
            }
            crate::tls::trust(&mut command);
            self.workers.push(spawn(command, &self.worker_log(index))?);
        }
        Ok(())
    }

    /// The file the `index`-th worker's stdout and stderr go to.
    pub fn worker_log(&self, index: usize) -> PathBuf {
        self.dir.join(format!("worker-{index}.log"))
    }

    /// Process id of the `index`-th worker.
    pub fn worker_pid(&self, index: usize) -> Option<u32> {
        self.workers.get(index).and_then(Child::id)
    }

    /// Process id of the coordinator.
    pub fn coordinator_pid(&self) -> Option<u32> {
        self.coordinator.id()
    }

    /// Stops workers, then the coordinator.
    pub async fn stop(mut self) {
        for worker in &self.workers {
            signal(worker, Signal::SIGTERM);
            signal(worker, Signal::SIGINT);
        }
        for worker in &mut self.workers {
            let _ = tokio::time::timeout(Duration::from_secs(30), worker.wait()).await;
        }
        signal(&self.coordinator, Signal::SIGTERM);
        let _ = tokio::time::timeout(Duration::from_secs(30), self.coordinator.wait()).await;
    }
}

fn signal(child: &Child, signal: Signal) {
    if let Some(pid) = child.id().and_then(|pid| i32::try_from(pid).ok()) {
        let _ = kill(Pid::from_raw(pid), signal);
    }
}

fn spawn(mut command: Command, log: &Path) -> anyhow::Result<Child> {
    let file = std::fs::File::create(log).with_context(|| format!("create {}", log.display()))?;
    command.stdin(Stdio::null()).stdout(file.try_clone()?).stderr(file).process_group(0).kill_on_drop(true);
    command.spawn().with_context(|| format!("start {:?}", command.as_std().get_program()))
}

/// Waits until no task is left to run — none ready, none leased — or
/// `deadline` passes, then counts the tasks that succeeded.
///
/// The look walks the partial indexes of the queue and of unfinished task
/// rows and stops at the first live entry, so frequent polling costs the
/// database next to nothing; the succeeded tasks are counted once, at the
/// end, because counting them on every poll loads the database being measured.
/// Figures come from the database's own timestamps; the poll decides only
/// when the wait notices the end.
///
/// # Errors
/// Database failures.
pub async fn wait_succeeded(pool: &PgPool, deadline: Duration) -> anyhow::Result<i64> {
    let until = Instant::now() + deadline;
    while unfinished(pool).await? && Instant::now() < until {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(sqlx::query_scalar("select count(*) from task_states where status = 'succeeded'").fetch_one(pool).await?)
}

/// Whether any task is ready or leased, from the partial indexes alone (with
/// statistics from a full queue, the planner would rather scan the table).
async fn unfinished(pool: &PgPool) -> anyhow::Result<bool> {
    let mut tx = pool.begin().await?;
    sqlx::query("set local enable_seqscan = off").execute(&mut *tx).await?;
    let unfinished: bool = sqlx::query_scalar(
        "select exists(select 1 from task_states where status = 'ready' and not has_locks)
             or exists(select 1 from task_states where status = 'ready' and has_locks)
             or exists(select 1 from task_states where lease_expires_at is not null)",
    )
    .fetch_one(&mut *tx)
    .await?;
    tx.commit().await?;
    Ok(unfinished)
}
