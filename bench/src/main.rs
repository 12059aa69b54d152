//! `hive-bench`: parse flags, start the database, run the chosen workloads.

use std::path::PathBuf;
use std::time::Duration;

use clap::Parser;
use hive_bench::stack::{Binaries, Database, StatementLog};
use hive_bench::workloads;

/// Benchmarks Hive on this machine: real processes, durable PostgreSQL, the peers' workloads.
#[derive(Debug, Parser)]
struct Cli {
    /// Workloads to run, comma-separated (`claude`, which needs the Claude Code CLI, only when named).
    #[arg(long, default_value = "drain,latency,spawn,logs,backlog,fleet,dashboard", value_delimiter = ',')]
    workloads: Vec<String>,
    /// Tasks in the drain workload.
    #[arg(long, env = "N", default_value_t = 20_000)]
    n: usize,
    /// Concurrency keys the drain's tasks name (0: none), each with a limit no claim reaches.
    #[arg(long, default_value_t = 0)]
    drain_keys: usize,
    /// Watch streams following the event log during the drain (0: none).
    #[arg(long, default_value_t = 0)]
    drain_watchers: usize,
    /// Worker processes.
    #[arg(long, env = "PROCS", default_value_t = 2)]
    procs: usize,
    /// Slots per worker.
    #[arg(long, env = "CONCURRENCY", default_value_t = 16)]
    concurrency: usize,
    /// Latency workload: tasks per second.
    #[arg(long, env = "RATE", default_value_t = 200)]
    rate: u32,
    /// Latency workload: how long.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "10s")]
    duration: Duration,
    /// Tasks in the spawn workload.
    #[arg(long, default_value_t = 5_000)]
    spawn_n: usize,
    /// Tasks in the logs workload (4 MiB of output each).
    #[arg(long, default_value_t = 64)]
    logs_tasks: usize,
    /// Backlog workload: queue sizes.
    #[arg(long, default_value = "1000,1000000", value_delimiter = ',')]
    backlog_sizes: Vec<usize>,
    /// Backlog workload: claims timed per size (the p99 of 2,000 is the 20th
    /// worst; fewer claims leave the p99 to a handful of samples, too few to be stable).
    #[arg(long, default_value_t = 2_000)]
    backlog_claims: usize,
    /// Dashboard workload: tasks in the database.
    #[arg(long, default_value_t = 1_000_000)]
    dashboard_tasks: usize,
    /// Fleet workload: simulated workers.
    #[arg(long, default_value_t = 1000)]
    fleet_workers: usize,
    /// Fleet workload: how long to measure.
    #[arg(long, value_parser = humantime::parse_duration, default_value = "30s")]
    fleet_measure: Duration,
    /// Spawn workload: the prefetch of each variant (0: claim free slots only).
    #[arg(long, default_value = "0,16", value_delimiter = ',')]
    spawn_prefetch: Vec<u32>,
    /// Drain workload: the prefetch of each variant (0: claim free slots only).
    #[arg(long, default_value = "0,500", value_delimiter = ',')]
    drain_prefetch: Vec<u32>,
    /// For profiling: log every statement's duration (`durations`) or the
    /// plans of those over 3 ms, with actual times (`plans`) in the database folder's log.
    #[arg(long, value_enum, default_value_t = StatementLog::Off)]
    log_statements: StatementLog,
    /// The claude workload (opt-in: `--workloads claude`).
    #[command(flatten)]
    claude: workloads::claude::Settings,
    /// Folder for the database and the logs (default: a new temporary one).
    #[arg(long)]
    dir: Option<PathBuf>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    hive_shared::telemetry::init("warn", hive_shared::telemetry::LogFormat::Text);
    let binaries = Binaries::locate()?;
    let dir = match &cli.dir {
        Some(dir) => dir.clone(),
        None => std::env::temp_dir().join(format!("hive-bench-{}", std::process::id())),
    };
    let db = Database::start(&dir, cli.log_statements).await?;
    let result = run(&cli, &db, &binaries).await;
    db.stop().await;
    if cli.dir.is_none() {
        let _ = std::fs::remove_dir_all(&dir);
    }
    if let Some(tls) = hive_bench::tls::files() {
        let _ = std::fs::remove_dir_all(&tls.dir);
    }
    result
}

impl Cli {
    fn shape(&self, n: usize, prefetch: u32) -> workloads::Shape {
        workloads::Shape { n, procs: self.procs, concurrency: self.concurrency, prefetch }
    }
}

async fn run(cli: &Cli, db: &Database, binaries: &Binaries) -> anyhow::Result<()> {
    for workload in &cli.workloads {
        match workload.as_str() {
            "drain" => {
                for &prefetch in &cli.drain_prefetch {
                    workloads::drain::run(db, binaries, cli.shape(cli.n, prefetch), cli.drain_keys, cli.drain_watchers)
                        .await?;
                }
            }
            "latency" => {
                workloads::latency::run(db, binaries, cli.rate, cli.duration, cli.procs, cli.concurrency).await?
            }
            "spawn" => {
                for &prefetch in &cli.spawn_prefetch {
                    workloads::spawn::run(db, binaries, cli.shape(cli.spawn_n, prefetch)).await?;
                }
            }
            "logs" => workloads::logs::run(db, binaries, cli.logs_tasks, cli.procs, 4).await?,
            "backlog" => workloads::backlog::run(db, binaries, &cli.backlog_sizes, cli.backlog_claims).await?,
            "fleet" => {
                workloads::fleet::run(db, binaries, cli.fleet_workers, Duration::from_secs(5), cli.fleet_measure)
                    .await?;
            }
            "claude" => workloads::claude::run(db, binaries, &cli.claude).await?,
            "dashboard" => workloads::dashboard::run(db, binaries, cli.dashboard_tasks).await?,
            other => {
                anyhow::bail!(
                    "unknown workload `{other}` (drain, latency, spawn, logs, backlog, fleet, claude, dashboard)"
                )
            }
        }
    }
    Ok(())
}
