//! `hive-worker`: parse flags, load config, run until a signal.

use std::path::PathBuf;

use clap::Parser;
use hive_worker::config::{Config, Flags, TlsConfig};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// A Hive worker: claims tasks from a coordinator and runs their agents.
#[derive(Debug, Parser)]
#[command(version = hive_shared::VERSION)]
struct Cli {
    /// TOML config file naming the agents (see examples/worker.toml).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Coordinator URL, e.g. http://127.0.0.1:50051.
    #[arg(long, env = "HIVE_COORDINATOR")]
    coordinator: Option<String>,
    /// File holding the worker's token (default: $HIVE_TOKEN).
    #[arg(long, env = "HIVE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA bundle the coordinator's certificate must chain to (https:// URLs).
    #[arg(long, env = "HIVE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Client certificate, for coordinators that require one.
    #[arg(long, env = "HIVE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long, env = "HIVE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Agents run at once.
    #[arg(long)]
    slots: Option<u32>,
    /// Name shown to operators (default: the host name).
    #[arg(long)]
    name: Option<String>,
    /// Run as the guardian of the agents of the worker that started this
    /// process (internal: each worker starts one beside itself).
    #[arg(long, hide = true, requires = "guard_owner")]
    guard_work_dir: Option<PathBuf>,
    /// With --guard-work-dir: the id of the worker whose agents it guards.
    #[arg(long, hide = true, requires = "guard_work_dir")]
    guard_owner: Option<String>,
    /// With --guard-work-dir: the worker runs attempts in cgroups.
    #[arg(long, hide = true)]
    guard_cgroups: bool,
    /// Check the configuration, print it and exit.
    #[arg(long)]
    check_config: bool,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let (Some(work_dir), Some(owner)) = (&cli.guard_work_dir, &cli.guard_owner) {
        hive_shared::telemetry::init("info", hive_shared::telemetry::LogFormat::Text);
        hive_worker::guard(work_dir, owner, cli.guard_cgroups).await;
        return Ok(());
    }
    // Agents run as this user: without this, any of them could read the
    // worker's token from /proc/<worker pid>/environ or attach a debugger.
    let undumpable = nix::sys::prctl::set_dumpable(false);
    let tls = TlsConfig { ca: cli.tls_ca, cert: cli.tls_cert, key: cli.tls_key };
    let flags =
        Flags { coordinator: cli.coordinator, name: cli.name, slots: cli.slots, token_file: cli.token_file, tls };
    let config = Config::load(cli.config.as_deref(), std::env::vars(), flags)?;
    hive_shared::telemetry::init("info", config.log_format);
    tracing::info!(config = ?config, "effective configuration");
    if let Err(err) = undumpable {
        tracing::warn!(error = %err, "could not hide this process from its agents (prctl PR_SET_DUMPABLE)");
    }
    if cli.check_config {
        let unusable = config.unusable_agents();
        if unusable.is_empty() {
            return Ok(());
        }
        let lines: Vec<String> = unusable.iter().map(|(name, problem)| format!("agents.{name}: {problem}")).collect();
        anyhow::bail!("agents that cannot run on this host:\n{}", lines.join("\n"));
    }
    let graceful = CancellationToken::new();
    let immediate = CancellationToken::new();
    let signals = TaskTracker::new();
    hive_shared::signal::spawn_watch(&signals, graceful.clone(), immediate.clone());
    hive_worker::run(config, graceful, immediate).await
}
