//! The Hive worker: registers with a coordinator, keeps a heartbeat stream
//! open, claims tasks while it has free slots, runs each task's agent as a
//! supervised subprocess in its own process group (and cgroup, where it may
//! make one), streams the agent's output and reports its outcome.
//!
//! Other crates see [`run`], which takes its config and shutdown tokens so
//! tests can run a worker in-process, the layered and validated
//! configuration it takes ([`config`]), and [`MAX_MESSAGE`], so a test
//! coordinator accepts what a worker sends. The rest is internal:
//! - `connection`: the client, retryable codes, backoff.
//! - `heartbeat`: the heartbeat stream. `claim`: the claim loop.
//! - `attempt`: one task from start to report; `process`: the subprocess itself.
//! - `outcome`: how an exit becomes a report; `report`: sending reports.
//! - `claude_code`: the Claude Code agent kind; `resume`: agents' sessions
//!   saved through the coordinator and restored on any host; `workspace`: a
//!   git worktree per attempt (reused between attempts, of a repository on
//!   the host or a URL's mirror), its change the result.
//! - `shipper`: streaming output; `held`: attempts held; `resources`: host figures;
//!   `admission`: whether the host may take more work; `context`: what the loops share.
//! - `metrics`: what `/metrics` on `http.listen` shows; `traces`: this
//!   worker's spans in each task's trace, and the agent's `TRACEPARENT`.
//! - `preflight`: which agents can run on this host; `unavailable`: what the
//!   worker cannot do now (failures that are its fault), which claims skip.

mod admission;
mod attempt;
mod claim;
mod claude_code;
pub mod config;
mod connection;
mod context;
mod heartbeat;
mod held;
mod metrics;
mod outcome;
mod preflight;
mod process;
mod report;
mod resources;
mod resume;
mod shipper;
mod traces;
mod unavailable;
mod workspace;

use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use hive_shared::convert::from_duration;
use hive_shared::ids::WorkerId;
use hive_shared::{pb, tracked};
use tokio::sync::{Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

pub use connection::MAX_MESSAGE;
pub use process::guardian::guard;

use config::Config;
use context::Context;
use held::{CancelReason, Held};
use process::cgroup::CgroupRoot;

/// Outcomes waiting to be reported before attempts wait to queue theirs.
const REPORT_QUEUE: usize = 1024;
/// After agents are stopped, how long the worker keeps trying to hand their
/// tasks back before it exits anyway (their leases then expire instead).
const HAND_BACK_DEADLINE: Duration = Duration::from_secs(30);

/// Runs a worker until it has drained or stopped.
///
/// - `shutdown` (SIGTERM, or a Drain command from the coordinator): claim
///   nothing more, let running agents finish within `drain_grace`, then stop
///   the rest and hand their tasks back.
/// - `stop_now` (a second signal, or a Stop command): stop every agent at once
///   and hand its task back.
///
/// Hand-backs are not counted as failed attempts. Outcomes are reported
/// before the worker exits, for up to 30 seconds (`HAND_BACK_DEADLINE`).
/// A panic in an essential loop (heartbeats, reports, claims) stops every
/// agent at once, like `stop_now`, and returns an error.
///
/// # Errors
/// A malformed coordinator URL, a registration the coordinator refuses,
/// no agent that can run on this host, or an essential loop that panicked.
pub async fn run(config: Config, shutdown: CancellationToken, stop_now: CancellationToken) -> anyhow::Result<()> {
    let config = Arc::new(config);
    let connect = hive_shared::client::Connect {
        url: config.coordinator.clone(),
        token: hive_shared::client::read_token(config.token_file.as_deref())?,
        tls: config.tls.client_tls(),
    };
    let client = connection::client(&connect).context("coordinator URL")?;
    let worker_id = WorkerId::new();
    let _hold = process::orphans::hold(&config.work_dir, &worker_id.to_string())
        .with_context(|| format!("take a folder under work_dir {}", config.work_dir.display()))?;
    process::sweep::adopt_orphans();
    let cgroups = attempt_cgroups(&config).await;
    let reaped = process::orphans::reap(&config.work_dir, cgroups.as_ref()).await;
    if reaped > 0 {
        warn!(reaped, work_dir = %config.work_dir.display(), "killed agents a previous worker left running");
    }
    // Their worktrees' folders are gone with their scratch folders.
    let worktrees = Arc::new(workspace::Worktrees::new(config.work_dir.clone(), worker_id.to_string()));
    for workspace in config.agents.values().filter_map(|agent| agent.workspace.as_ref()) {
        workspace::prune(workspace, &worktrees).await;
    }
    let guardian = process::guardian::spawn(&config.work_dir, &worker_id.to_string(), cgroups.is_some());
    let unusable = config.unusable_agents();
    for (agent, problem) in &unusable {
        error!(agent = %agent, problem = %problem, "agent cannot run on this host; not offering it");
    }
    if unusable.len() == config.agents.len() {
        anyhow::bail!("no agent can run on this host: {}", describe(&unusable));
    }
    let unavailable = unavailable::Unavailable::default();
    for (agent, problem) in &unusable {
        unavailable.hold(agent, problem.clone());
    }
    let name = if config.name.is_empty() { hostname() } else { config.name.clone() };
    let registration = pb::RegisterRequest {
        worker_id: worker_id.to_string(),
        name: name.clone(),
        hostname: hostname(),
        agents: config.agents.keys().filter(|agent| !unusable.contains_key(*agent)).cloned().collect(),
        slots: config.slots,
        version: hive_shared::VERSION.to_owned(),
        labels: config.labels.clone().into_iter().collect(),
        accounts: config
            .agents
            .iter()
            .filter(|(agent, _)| !unusable.contains_key(*agent))
            .filter_map(|(agent, settings)| Some((agent.clone(), settings.provider_account()?)))
            .collect(),
    };
    let timing = tokio::select! {
        timing = connection::register(&client, &registration, &stop_now) => timing.context("register with the coordinator")?,
        () = shutdown.cancelled() => return Ok(()),
    };
    // A floor, so a nonsense interval from the coordinator cannot make every loop spin.
    let heartbeat = timing
        .heartbeat_interval
        .as_ref()
        .and_then(from_duration)
        .unwrap_or(Duration::from_secs(5))
        .max(Duration::from_millis(50));
    let problems = config::stall_timeout_problems(&config, heartbeat);
    if !problems.is_empty() {
        return Err(hive_shared::config::ConfigError { problems }.into());
    }
    info!(%worker_id, %name, coordinator = %config.coordinator, slots = config.slots, ?heartbeat, "worker registered");

    let http = match config.http.listen {
        Some(address) => Some(
            tokio::net::TcpListener::bind(address).await.with_context(|| format!("bind {address} (http.listen)"))?,
        ),
        None => None,
    };
    let metrics = Arc::new(metrics::WorkerMetrics::default());
    // Stopped last, after the outcomes are reported, so the last spans go out.
    let traces_stop = CancellationToken::new();
    let exporter = config.traces.clone().map(|export| {
        info!(endpoint = %export.endpoint, service = %export.service_name, "exporting traces (OTLP)");
        hive_shared::traces::Tracer::start(export, traces_stop.clone())
    });
    let (tracer, exporter) = match exporter {
        Some((tracer, exporter)) => (Some(tracer), Some(tokio::spawn(exporter))),
        None => (None, None),
    };
    let chunk = usize::try_from(config.logs.chunk_size.as_u64()).unwrap_or(1).max(1);
    let log_capacity = usize::try_from(config.logs.buffer.as_u64()).unwrap_or(usize::MAX) / chunk;
    let (logs, log_queue) = mpsc::channel(log_capacity.max(1));
    let (reports, report_queue) = mpsc::channel(REPORT_QUEUE);
    let held = Held::default();
    let folders = Arc::new(process::workdir::Folders::new(
        config.work_dir.clone(),
        worker_id.to_string(),
        config.keep_work_dirs,
        cgroups,
    ));
    let (drain, stop_now) = (shutdown.child_token(), stop_now.child_token());
    let context = Arc::new(Context {
        config: Arc::clone(&config),
        client: client.clone(),
        worker_id,
        registration,
        retry_delay_max: heartbeat,
        held: held.clone(),
        unavailable,
        slots: Arc::new(Semaphore::new(config.slots as usize)),
        claiming: std::sync::atomic::AtomicUsize::new(0),
        queued: tokio::sync::watch::Sender::new(0),
        logs,
        reports,
        drain: drain.clone(),
        stop_now: stop_now.clone(),
        folders: Arc::clone(&folders),
        worktrees: Arc::clone(&worktrees),
        latest: std::sync::Mutex::new(None),
        metrics: Arc::clone(&metrics),
        tracer: tracer.clone(),
    });

    let loops = TaskTracker::new();
    let (session_stop, give_up) = (CancellationToken::new(), CancellationToken::new());
    // Cancelled when an essential loop panics: every agent stops, the worker exits with an error.
    let failed = CancellationToken::new();
    let session = heartbeat::run(Arc::clone(&context), heartbeat, session_stop.clone());
    tracked::spawn_essential(&loops, "heartbeat session", failed.clone(), session);
    tracked::spawn(&loops, "disk watch", admission::watch_disk(Arc::clone(&context), heartbeat, session_stop.clone()));
    if let Some(listener) = http {
        info!(address = ?listener.local_addr().ok(), "serving /metrics over HTTP");
        let agents = context.registration.agents.clone();
        let serving = metrics::serve(metrics, agents, listener, session_stop.clone());
        tracked::spawn(&loops, "HTTP listener", async move {
            if let Err(err) = serving.await {
                warn!(error = %err, "the HTTP listener failed");
            }
        });
    }
    let flush_interval = config.logs.flush_interval;
    tracked::spawn(
        &loops,
        "log shipper",
        shipper::run(client.clone(), worker_id.to_string(), log_queue, flush_interval, heartbeat, give_up.clone()),
    );
    let reporter = report::run(client, worker_id.to_string(), report_queue, held.clone(), heartbeat, give_up.clone());
    tracked::spawn_essential(&loops, "outcome reporter", failed.clone(), reporter);
    let (attempts, claiming) = (TaskTracker::new(), TaskTracker::new());
    let claims = claim::run(Arc::clone(&context), attempts.clone(), drain.clone());
    tracked::spawn_essential(&claiming, "claim loop", failed.clone(), claims);
    claiming.close();
    drop(context);

    tokio::select! {
        () = drain.cancelled() => {}
        () = failed.cancelled() => {
            drain.cancel();
            stop_now.cancel();
        }
    }
    info!(running = held.len(), grace = ?config.drain_grace, "draining: no new claims");
    claiming.wait().await;
    attempts.close();
    tokio::select! {
        () = attempts.wait() => {}
        () = tokio::time::sleep(config.drain_grace) => {
            warn!("drain grace period over; stopping the remaining agents and handing their tasks back");
            held.cancel_all(CancelReason::Shutdown);
        }
        () = stop_now.cancelled() => {
            warn!("stopping every agent now and handing their tasks back");
            held.cancel_all(CancelReason::Shutdown);
        }
    }
    attempts.wait().await;
    // Every attempt has queued its outcome; heartbeats keep the leases while
    // the reporter delivers them.
    if tokio::time::timeout(HAND_BACK_DEADLINE, wait_until_settled(&held)).await.is_err() {
        warn!(
            unreported = held.len(),
            "could not report every outcome in time; those tasks return when their leases expire"
        );
    }
    // After the outcomes: removing worktrees is disk work they need not wait for.
    worktrees.remove_parked().await;
    folders.remove_cgroups().await;
    give_up.cancel();
    session_stop.cancel();
    loops.close();
    loops.wait().await;
    traces_stop.cancel();
    if let Some(exporter) = exporter {
        let _ = exporter.await;
    }
    if let Some(guardian) = guardian {
        guardian.dismiss().await;
    }
    info!("worker stopped");
    if failed.is_cancelled() {
        anyhow::bail!("an essential loop panicked (see the log); the worker stopped its agents and exited");
    }
    Ok(())
}

/// The worker's cgroup, under which each attempt gets one, where the config
/// allows it and the host lets the worker make them.
async fn attempt_cgroups(config: &Config) -> Option<CgroupRoot> {
    if !config.cgroups {
        return None;
    }
    match process::blocking_io(CgroupRoot::detect).await {
        Ok(root) => {
            info!(cgroup = %root.dir().display(), "each attempt runs in a cgroup of its own");
            Some(root)
        }
        Err(err) => {
            info!(error = %err, "attempts run without cgroups of their own; their processes are found by process group and HIVE_ATTEMPT_ID");
            None
        }
    }
}

/// Waits until every held attempt's outcome is settled.
async fn wait_until_settled(held: &Held) {
    while !held.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn describe(problems: &std::collections::BTreeMap<String, String>) -> String {
    problems.iter().map(|(agent, problem)| format!("agent {agent}: {problem}")).collect::<Vec<_>>().join("; ")
}

fn hostname() -> String {
    nix::unistd::gethostname().ok().and_then(|name| name.into_string().ok()).unwrap_or_else(|| "unknown-host".into())
}
