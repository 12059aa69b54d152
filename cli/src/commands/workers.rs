//! `hivectl workers`: registered workers with their load and host figures.

use hive_shared::pb;

use super::Ctx;
use crate::output::{self, WorkerView};

/// Arguments of `workers`.
#[derive(Debug, clap::Args)]
pub struct WorkersArgs {
    /// Include workers not heard from within the lease.
    #[arg(long)]
    pub all: bool,
}

/// Runs `workers`.
///
/// # Errors
/// A refused call.
pub async fn run(ctx: &Ctx, args: WorkersArgs) -> anyhow::Result<()> {
    let response = ctx
        .admin()?
        .list_workers(pb::ListWorkersRequest { include_gone: args.all })
        .await
        .map_err(|status| ctx.refused("list workers", &status))?
        .into_inner();
    let workers: Vec<WorkerView> = response.workers.into_iter().map(WorkerView::from).collect();
    if ctx.json {
        output::json(&workers);
        return Ok(());
    }
    let mut table = output::table(&["name", "id", "status", "busy", "agents", "cpu", "memory", "seen"]);
    for worker in &workers {
        let gib = |bytes: u64| bytes as f64 / f64::from(1 << 30);
        table.add_row(vec![
            worker.name.clone(),
            worker.id.clone(),
            worker.status.clone(),
            format!("{}/{}", worker.slots.saturating_sub(worker.free_slots), worker.slots),
            worker.agents.join(","),
            format!("{:.0}%", worker.cpu_percent),
            format!("{:.1}/{:.1} GiB", gib(worker.memory_used_bytes), gib(worker.memory_total_bytes)),
            output::ago(worker.last_seen_at),
        ]);
    }
    output::line(table);
    Ok(())
}
