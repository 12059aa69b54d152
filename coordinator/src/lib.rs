//! The Hive coordinator: owns the task queue in PostgreSQL and serves workers
//! (`WorkerService`) and operators (`AdminService`) over gRPC.
//!
//! Layout:
//! - [`config`]: layered, validated configuration.
//! - [`auth`]: tokens, the table of who may call what, ownership checks.
//! - [`audit`]: the append-only, hash-chained log of operators' changes and refused calls.
//! - [`grpc`]: the server and its thin handlers; [`grpc::status`] maps errors to codes.
//! - [`tasks`]: use-cases (submit, report, cancel, logs), owning transactions, and
//!   the lifecycle's pure decisions (retry policy, validator stages, dependency graphs).
//! - [`status`]: task and attempt statuses, as stored and on the wire.
//! - [`scheduler`]: long-poll claims and their wake-ups.
//! - [`notifications`]: LISTEN/NOTIFY (tokio-postgres), fanned out to claims, sessions and the event tail.
//! - [`events`]: the event log: its sequencer, this coordinator's tail of it, and watchers.
//! - [`workers`]: registration and heartbeat sessions.
//! - [`pauses`]: pausing and resuming a swarm, an agent or a worker.
//! - [`cooldowns`]: provider accounts cooling down after a rate limit, and their probes.
//! - [`healthcheck`]: `hive-coordinator healthcheck`, the probe containers run.
//! - [`http`]: the HTTP listener (`http.listen`): [`metrics`] and [`dashboard`].
//! - [`metrics`]: Prometheus metrics.
//! - [`dashboard`]: the web dashboard: pages, a live event stream, controls.
//! - [`traces`]: the coordinator's spans in each task's OpenTelemetry trace.
//! - [`webhooks`]: alert webhooks: deliveries made from the event log, signed, retried.
//! - [`maintenance`]: the reaper (expired leases, passed deadlines), planner
//!   statistics, the look for due tasks, forgetting workers long gone.
//! - [`db`]: every SQL statement (sqlx); tokio-postgres serves only the LISTEN connection.
//!
//! [`run`] takes bound [`Listeners`] and a shutdown token, so tests run it in-process on port 0.

mod app;
mod audit;
mod auth;
pub mod config;
mod cooldowns;
mod dashboard;
pub mod db;
mod error;
mod events;
mod grpc;
pub mod healthcheck;
mod http;
mod maintenance;
mod metrics;
mod notifications;
mod pauses;
mod scheduler;
pub mod status;
mod tasks;
mod traces;
mod webhooks;
mod workers;

use std::sync::Arc;

use anyhow::Context;
use hive_shared::tracked;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use app::App;
use config::Config;
use notifications::Notifications;

/// The schema migrations, embedded; applied by [`run`] on start.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The sockets a coordinator serves on, bound by the caller.
#[derive(Debug)]
pub struct Listeners {
    /// gRPC (`listen`).
    pub grpc: TcpListener,
    /// HTTP: `/metrics` (`http.listen`); none serves no HTTP.
    pub http: Option<TcpListener>,
}

impl Listeners {
    /// Binds the addresses `config` names.
    ///
    /// # Errors
    /// When an address cannot be bound.
    pub async fn bind(config: &Config) -> anyhow::Result<Self> {
        let address = config.listen_address();
        let grpc = TcpListener::bind(address).await.with_context(|| format!("bind {address} (listen)"))?;
        let http = match config.http.listen {
            Some(address) => {
                Some(TcpListener::bind(address).await.with_context(|| format!("bind {address} (http.listen)"))?)
            }
            None => None,
        };
        Ok(Self { grpc, http })
    }
}

/// Runs a coordinator on `listeners` until `shutdown` is cancelled.
///
/// Shutdown order: stop taking RPCs (long-polls return, heartbeat streams
/// close so workers reconnect elsewhere), wait for in-flight calls up to the
/// grace period, stop the background loops, close the pool. Running tasks keep
/// their leases: a coordinator that stops hands nothing away.
///
/// # Errors
/// When the database cannot be reached or migrated, or the server fails.
pub async fn run(config: Config, listeners: Listeners, shutdown: CancellationToken) -> anyhow::Result<()> {
    let Listeners { grpc: listener, http } = listeners;
    // Read before anything else, so a bad file is named at once.
    let admin_token = match &config.auth.admin_token_file {
        Some(path) => Some(auth::book::read_admin_token(path).await?),
        None => None,
    };
    let pool = db::connect_patiently(&config.database, &config.events).await.context("connect to PostgreSQL")?;
    let hot_pool = db::hot_pool(&config.database, &config.events).context("open the hot-path pool")?;
    MIGRATOR.run(&pool).await.context("apply database migrations")?;
    db::open_hot_pool(&hot_pool).await;
    let address = listener.local_addr().context("read the listen address")?;
    let tokens = open_token_book(&config, admin_token.as_deref(), &pool).await?;

    let root = CancellationToken::new();
    // Cancelled when an essential background task panics: the coordinator stops.
    let failed = CancellationToken::new();
    let maintenance = root.child_token();
    let background = TaskTracker::new();
    let (window, ttl) = (config.leases.heartbeat_write_window, config.leases.ttl);
    let (beats, beat_writer) = workers::beats::BeatWriter::start(hot_pool.clone(), window, ttl, maintenance.clone());
    tracked::spawn_essential(&background, "heartbeat writer", failed.clone(), beat_writer.run());
    let tracer = config.traces.clone().map(|export| {
        info!(endpoint = %export.endpoint, service = %export.service_name, "exporting traces (OTLP)");
        let (tracer, exporter) = hive_shared::traces::Tracer::start(export, maintenance.clone());
        tracked::spawn(&background, "trace exporter", exporter);
        tracer
    });
    let app = App {
        pool: pool.clone(),
        hot_pool: hot_pool.clone(),
        config: Arc::new(config),
        beats,
        tokens,
        worker_owners: Arc::default(),
        notifications: Arc::new(Notifications::default()),
        statistics: Arc::default(),
        tracker: TaskTracker::new(),
        rpc_shutdown: root.child_token(),
        claim_hints: Arc::default(),
        events: Arc::default(),
        overview: Arc::default(),
        metrics: Arc::default(),
        webhooks_queued: Arc::default(),
        tracer,
    };
    let url = app.config.database.url.expose().clone();
    tracked::spawn_essential(
        &background,
        "notification listener",
        failed.clone(),
        notifications::listen(url, app.notifications.clone(), maintenance.clone()),
    );
    tracked::spawn_essential(
        &background,
        "event sequencer",
        failed.clone(),
        events::sequencer::run(pool.clone(), maintenance.clone()),
    );
    tracked::spawn_essential(
        &background,
        "event tail",
        failed.clone(),
        events::tail::run(pool.clone(), app.notifications.clone(), app.events.clone(), maintenance.clone()),
    );
    if app.config.http.listen.is_some() {
        let (tail, overview) = (Arc::clone(&app.events), Arc::clone(&app.overview));
        let counting = dashboard::counts::run(pool.clone(), tail, overview, maintenance.clone());
        tracked::spawn(&background, "dashboard counts", counting);
    }
    let (defaults, leases) = (app.config.tasks.clone(), app.config.leases.clone());
    tracked::spawn_essential(
        &background,
        "lease reaper",
        failed.clone(),
        maintenance::lease_reaper::run(pool.clone(), defaults, leases, Arc::clone(&app.metrics), maintenance.clone()),
    );

    let recheck = app.config.claims.recheck_interval;
    tracked::spawn_essential(
        &background,
        "due tasks",
        failed.clone(),
        maintenance::due_tasks::run(
            pool.clone(),
            app.notifications.clone(),
            recheck,
            Arc::clone(&app.claim_hints),
            maintenance.clone(),
        ),
    );
    tracked::spawn(
        &background,
        "statistics",
        maintenance::statistics::run(pool.clone(), app.statistics.clone(), maintenance.clone()),
    );
    tracked::spawn(
        &background,
        "retention",
        maintenance::retention::run(
            pool.clone(),
            app.config.workers.retention,
            app.config.sessions.retention,
            app.config.events.retention,
            app.config.webhook_delivery.retention,
            maintenance.clone(),
        ),
    );

    let endpoints = webhooks::endpoints(&app.config.webhooks);
    if !endpoints.is_empty() {
        let queued = Arc::clone(&app.webhooks_queued);
        tracked::spawn(
            &background,
            "webhook outbox",
            webhooks::outbox::run(pool.clone(), endpoints.clone(), Arc::clone(&queued), maintenance.clone()),
        );
        let sender = webhooks::sender::Sender {
            pool: pool.clone(),
            endpoints: Arc::new(endpoints.into_iter().map(|endpoint| (endpoint.name.clone(), endpoint)).collect()),
            settings: app.config.webhook_delivery.clone(),
        };
        tracked::spawn(
            &background,
            "webhook sender",
            webhooks::sender::run(sender, queued, background.clone(), maintenance.clone()),
        );
    }
    let mut server = tokio::spawn(grpc::serve(app.clone(), listener));
    info!(%address, hot_connections = db::hot_connections(&app.config.database), "coordinator serving");
    if let Some(http) = http {
        let http_address = http.local_addr().context("read the HTTP listen address")?;
        info!(address = %http_address, "serving /metrics and the dashboard over HTTP");
        let served = app.clone();
        tracked::spawn(&app.tracker, "HTTP listener", async move {
            if let Err(err) = http::serve(served, http).await {
                warn!(error = %err, "the HTTP listener failed");
            }
        });
    }
    let early_exit = tokio::select! {
        result = &mut server => Some(result),
        () = shutdown.cancelled() => None,
        () = failed.cancelled() => None,
    };

    info!("coordinator stopping: no new RPCs");
    app.rpc_shutdown.cancel();
    let grace = app.config.shutdown_grace;
    let served = match early_exit {
        Some(result) => result,
        None => match tokio::time::timeout(grace, &mut server).await {
            Ok(result) => result,
            Err(_) => {
                warn!(?grace, "in-flight RPCs did not finish within the grace period");
                server.abort();
                Ok(Ok(()))
            }
        },
    };
    app.tracker.close();
    if tokio::time::timeout(grace, app.tracker.wait()).await.is_err() {
        warn!("handler tasks did not finish within the grace period");
    }
    maintenance.cancel();
    background.close();
    background.wait().await;
    pool.close().await;
    hot_pool.close().await;
    info!("coordinator stopped");
    if failed.is_cancelled() {
        anyhow::bail!(
            "an essential background task panicked (see the log); the coordinator stopped so it can be restarted"
        );
    }
    served.context("gRPC server task panicked")?
}

/// The token book when auth is on (trusting `admin_token`, read from the file); says loudly when it is off.
async fn open_token_book(
    config: &Config,
    admin_token: Option<&str>,
    pool: &sqlx::PgPool,
) -> anyhow::Result<Option<Arc<auth::book::TokenBook>>> {
    let (Some(path), Some(token)) = (&config.auth.admin_token_file, admin_token) else {
        if config.auth.insecure {
            warn!(
                "auth is off and --insecure was given: anyone who can reach this coordinator can run code on every worker"
            );
        } else {
            info!("auth is off (no auth.admin_token_file): serving loopback only");
        }
        return Ok(None);
    };
    let book = auth::book::TokenBook::open(pool.clone(), token).await.context("read the attempt-token key")?;
    info!(admin_token_file = %path.display(), "auth is on");
    Ok(Some(Arc::new(book)))
}
