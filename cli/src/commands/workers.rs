//! `hivectl workers`: registered workers with their load and host figures;
//! `hivectl workers drain|stop`: tell workers to drain, or to stop at once.

use hive_shared::pb;

use super::Ctx;
use crate::output::{self, WorkerView};

/// Arguments of `workers`.
#[derive(Debug, clap::Args)]
pub struct WorkersArgs {
    /// What to do; without one, list the workers.
    #[command(subcommand)]
    pub action: Option<WorkersAction>,
    /// Include workers not heard from within the lease.
    #[arg(long)]
    pub all: bool,
}

/// `workers` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum WorkersAction {
    /// Drain workers: they claim nothing more, let running agents finish within their grace period, hand back the rest and exit.
    Drain(Target),
    /// Stop workers: like drain; with --now, stop every agent at once and hand its task back.
    Stop {
        /// Which workers.
        #[command(flatten)]
        target: Target,
        /// Stop agents at once instead of letting them finish.
        #[arg(long)]
        now: bool,
    },
}

/// Which workers.
#[derive(Debug, clap::Args)]
pub struct Target {
    /// Worker ids.
    pub ids: Vec<String>,
    /// Every live worker.
    #[arg(long, conflicts_with = "ids")]
    pub all: bool,
}

/// Runs `workers`.
///
/// # Errors
/// A refused call.
pub async fn run(ctx: &Ctx, args: WorkersArgs) -> anyhow::Result<()> {
    match args.action {
        None => list(ctx, args.all).await,
        Some(WorkersAction::Drain(target)) => stop(ctx, target, false).await,
        Some(WorkersAction::Stop { target, now }) => stop(ctx, target, now).await,
    }
}

async fn stop(ctx: &Ctx, target: Target, now: bool) -> anyhow::Result<()> {
    if target.ids.is_empty() && !target.all {
        anyhow::bail!("name the workers (ids from `hivectl workers`) or give --all");
    }
    let request = pb::StopWorkersRequest { worker_ids: target.ids, all: target.all, now };
    let response =
        ctx.admin()?.stop_workers(request).await.map_err(|status| ctx.refused("stop refused", &status))?.into_inner();
    if ctx.json {
        output::json(&response.worker_ids);
    } else {
        let verb = if now { "stopping now" } else { "draining" };
        output::line(format!("{} worker(s) {verb}: {}", response.worker_ids.len(), response.worker_ids.join(", ")));
    }
    Ok(())
}

async fn list(ctx: &Ctx, include_gone: bool) -> anyhow::Result<()> {
    let response = ctx
        .admin()?
        .list_workers(pb::ListWorkersRequest { include_gone })
        .await
        .map_err(|status| ctx.refused("list workers", &status))?
        .into_inner();
    let workers: Vec<WorkerView> = response.workers.into_iter().map(WorkerView::from).collect();
    if ctx.json {
        output::json(&workers);
        return Ok(());
    }
    let mut table =
        output::table(&["name", "id", "status", "busy", "agents", "labels", "cpu", "memory", "agents rss", "seen"]);
    for worker in &workers {
        let labels = worker.labels.iter().map(|(key, value)| format!("{key}={value}")).collect::<Vec<_>>();
        table.add_row(vec![
            output::printable(&worker.name),
            output::printable(&worker.id),
            if worker.draining { format!("{} (draining)", worker.status) } else { worker.status.clone() },
            format!("{}/{}", worker.running, worker.slots),
            output::printable(&worker.agents.join(",")),
            output::printable(&labels.join(",")),
            format!("{:.0}%", worker.cpu_percent),
            format!("{:.1}/{:.1} GiB", output::gib(worker.memory_used_bytes), output::gib(worker.memory_total_bytes)),
            format!("{:.0} MiB", output::mib(worker.agents_rss_bytes.values().sum::<u64>())),
            output::ago(worker.last_seen_at),
        ]);
    }
    output::line(table);
    for worker in workers.iter().filter(|worker| !worker.unavailable.is_empty()) {
        for (what, reason) in &worker.unavailable {
            output::line(format!(
                "{}: {} unavailable: {}",
                output::printable(&worker.name),
                output::printable(what),
                output::printable(reason)
            ));
        }
    }
    Ok(())
}
