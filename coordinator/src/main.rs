//! `hive-coordinator`: parse flags, load config, bind, run until a signal;
//! or, as `hive-coordinator healthcheck`, probe the coordinator that config describes.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, Subcommand};
use hive_coordinator::config::{AuthFlags, Config, DatabaseFlags, Flags};
use hive_coordinator::healthcheck::{self, Probe};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// The Hive coordinator: the task queue (PostgreSQL) behind a gRPC API.
#[derive(Debug, Parser)]
#[command(version = hive_shared::VERSION)]
struct Cli {
    /// TOML config file (keys as in the README; env HIVE_COORDINATOR__SECTION__KEY overrides it).
    #[arg(long, short)]
    config: Option<PathBuf>,
    /// Address to serve gRPC on.
    #[arg(long, env = "HIVE_LISTEN")]
    listen: Option<SocketAddr>,
    /// PostgreSQL URL.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Serve without auth on an address other than loopback. Anyone who can
    /// reach the port can then submit tasks that run on every worker.
    #[arg(long)]
    insecure: bool,
    /// Check the configuration, print it (secrets hidden) and exit.
    #[arg(long)]
    check_config: bool,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Ask the coordinator this config describes, on loopback, whether it
    /// serves: exit 0 if it does, 1 (saying why) if not. For container probes.
    Healthcheck(HealthcheckArgs),
}

#[derive(Debug, clap::Args)]
struct HealthcheckArgs {
    /// CA bundle the coordinator's certificate chains to (needed when it serves TLS).
    #[arg(long, env = "HIVE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Client certificate, when the coordinator requires one.
    #[arg(long, env = "HIVE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long, env = "HIVE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Name the coordinator's certificate carries.
    #[arg(long, default_value = "localhost")]
    tls_server_name: String,
    /// Longest wait for the answer.
    #[arg(long, default_value = "5s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let flags = Flags {
        listen: cli.listen,
        auth: cli.insecure.then_some(AuthFlags { insecure: true }),
        database: cli.database_url.map(|url| DatabaseFlags { url }),
    };
    let config = Config::load(cli.config.as_deref(), std::env::vars(), flags)?;
    if let Some(Command::Healthcheck(args)) = cli.command {
        let probe = Probe {
            tls_ca: args.tls_ca,
            tls_cert: args.tls_cert,
            tls_key: args.tls_key,
            server_name: args.tls_server_name,
            timeout: args.timeout,
        };
        return healthcheck::check(&config, probe).await.map_err(|reason| anyhow::anyhow!("unhealthy: {reason}"));
    }
    hive_shared::telemetry::init("info,sqlx=warn", config.log_format);
    tracing::info!(config = ?config, "effective configuration");
    if cli.check_config {
        return Ok(());
    }

    let listeners = hive_coordinator::Listeners::bind(&config).await?;
    let graceful = CancellationToken::new();
    let immediate = CancellationToken::new();
    let signals = TaskTracker::new();
    hive_shared::signal::spawn_watch(&signals, graceful.clone(), immediate.clone());
    hive_shared::tracked::spawn(&signals, "forced exit", async move {
        immediate.cancelled().await;
        std::process::exit(hive_shared::signal::FORCED_EXIT_CODE);
    });
    hive_coordinator::run(config, listeners, graceful).await
}
