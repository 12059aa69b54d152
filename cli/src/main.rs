//! `hivectl`: parse the command line and run one subcommand.

use std::path::PathBuf;

use clap::{Parser, Subcommand};
use hive_shared::client::{ClientTls, Connect};
use hivectl::commands::{self, Ctx};

/// Operate a Hive swarm.
#[derive(Debug, Parser)]
#[command(name = "hivectl", version = hive_shared::VERSION)]
struct Cli {
    /// Coordinator URL.
    #[arg(long, global = true, env = "HIVE_COORDINATOR", default_value = "http://127.0.0.1:50051")]
    coordinator: String,
    /// File holding the token to send (default: $HIVE_TOKEN).
    #[arg(long, global = true, env = "HIVE_TOKEN_FILE")]
    token_file: Option<PathBuf>,
    /// CA bundle the coordinator's certificate must chain to (https:// URLs).
    #[arg(long, global = true, env = "HIVE_TLS_CA")]
    tls_ca: Option<PathBuf>,
    /// Client certificate, for coordinators that require one.
    #[arg(long, global = true, env = "HIVE_TLS_CERT")]
    tls_cert: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long, global = true, env = "HIVE_TLS_KEY")]
    tls_key: Option<PathBuf>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Submit a task file (or one inline task).
    Submit(commands::submit::SubmitArgs),
    /// List, show or cancel tasks.
    #[command(subcommand)]
    Tasks(commands::tasks::TasksCommand),
    /// Cancel tasks by id or filter (running ones are stopped by their workers).
    Cancel(commands::bulk::CancelArgs),
    /// Queue dead tasks again, by id or filter.
    Retry(commands::bulk::FilterArgs),
    /// The dead-letter queue: tasks that failed for good.
    #[command(subcommand)]
    Dlq(commands::bulk::DlqCommand),
    /// Print a task's output.
    Logs(commands::logs::LogsArgs),
    /// List workers, or drain or stop them.
    Workers(commands::workers::WorkersArgs),
    /// Show progress per swarm.
    Status(commands::status::StatusArgs),
    /// List swarms with their progress, time and cost; set a budget.
    Swarms {
        /// What to do; without one, list.
        #[command(subcommand)]
        command: Option<commands::swarms::SwarmsCommand>,
    },
    /// Print a swarm as a task file.
    Export {
        /// Swarm id.
        swarm: String,
    },
    /// For agents: take or release a lock for the running attempt.
    #[command(subcommand)]
    Lock(commands::lock::LockCommand),
    /// List held locks.
    Locks,
    /// For agents: say the running attempt is making progress (it is not stalled).
    Progress(commands::progress::ProgressArgs),
    /// Make, list and revoke tokens.
    #[command(subcommand)]
    Tokens(commands::tokens::TokensCommand),
    /// Make TLS certificates.
    #[command(subcommand)]
    Certs(commands::certs::CertsCommand),
    /// Run a whole swarm on this machine: database, coordinator, workers, tasks.
    Up(commands::up::UpArgs),
    /// Show the audit log (who changed what, refused calls), or verify its hash chain.
    Audit(commands::audit::AuditArgs),
    /// Pause a swarm, an agent or a worker: claims skip it; running tasks finish (or `--stop`).
    Pause(commands::pauses::PauseArgs),
    /// End a pause.
    Resume(commands::pauses::ResumeArgs),
    /// List what is paused, by whom, why and until when.
    Pauses,
    /// Follow the event log live (task, worker, swarm and operator events); resumes after a broken stream.
    Watch(commands::watch::WatchArgs),
    /// List the alert webhooks' deliveries (sent, failed and why); resend one.
    #[command(subcommand)]
    Webhooks(commands::webhooks::WebhooksCommand),
    /// List provider accounts cooling down after a rate limit; clear one.
    Providers {
        /// What to do; without one, list.
        #[command(subcommand)]
        command: Option<commands::providers::ProvidersCommand>,
    },
}

#[tokio::main]
async fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    hive_shared::telemetry::init("info", hive_shared::telemetry::LogFormat::Text);
    let token = match hive_shared::client::read_token(cli.token_file.as_deref()) {
        Ok(token) => token,
        Err(err) => return failed(&err.into()),
    };
    let tls = ClientTls { ca: cli.tls_ca, cert: cli.tls_cert, key: cli.tls_key, server_name: None };
    let ctx = Ctx { connect: Connect { url: cli.coordinator, token, tls }, json: cli.json };
    let result = match cli.command {
        Command::Submit(args) => commands::submit::run(&ctx, args).await,
        Command::Tasks(command) => commands::tasks::run(&ctx, command).await,
        Command::Cancel(args) => commands::bulk::cancel(&ctx, args).await,
        Command::Retry(filter) => commands::bulk::retry(&ctx, filter).await,
        Command::Dlq(command) => commands::bulk::dlq(&ctx, command).await,
        Command::Logs(args) => commands::logs::run(&ctx, args).await,
        Command::Workers(args) => commands::workers::run(&ctx, args).await,
        Command::Status(args) => commands::status::run(&ctx, args).await,
        Command::Swarms { command } => commands::swarms::run(&ctx, command).await,
        Command::Export { swarm } => commands::swarms::export(&ctx, &swarm).await,
        Command::Lock(command) => commands::lock::run(&ctx, command).await,
        Command::Locks => commands::lock::list(&ctx).await,
        Command::Progress(args) => commands::progress::run(&ctx, args).await,
        Command::Tokens(command) => commands::tokens::run(&ctx, command).await,
        Command::Certs(command) => commands::certs::run(command),
        Command::Up(args) => commands::up::run(args, ctx.json).await,
        Command::Audit(args) => commands::audit::run(&ctx, args).await,
        Command::Pause(args) => commands::pauses::pause(&ctx, args).await,
        Command::Resume(args) => commands::pauses::resume(&ctx, args).await,
        Command::Pauses => commands::pauses::list(&ctx).await,
        Command::Providers { command } => commands::providers::run(&ctx, command).await,
        Command::Watch(args) => commands::watch::run(&ctx, args).await,
        Command::Webhooks(command) => commands::webhooks::run(&ctx, command).await,
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => failed(&err),
    }
}

/// Prints `err` with its causes and returns the failure exit code.
fn failed(err: &anyhow::Error) -> std::process::ExitCode {
    let _ = std::io::Write::write_fmt(&mut std::io::stderr(), format_args!("error: {err:#}\n"));
    std::process::ExitCode::FAILURE
}
