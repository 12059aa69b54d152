//! `hivectl status [SWARM] [--wait]`: progress per swarm; with `--wait`, a
//! progress bar per swarm until every task has finished.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::bail;
use hive_shared::pb;
use indicatif::{MultiProgress, ProgressBar, ProgressStyle};

use super::Ctx;
use crate::output::{self, SwarmView};

/// How often progress is polled.
const POLL: Duration = Duration::from_millis(250);
/// How often progress is printed when stderr is not a terminal.
const PLAIN_EVERY: Duration = Duration::from_secs(5);

/// Arguments of `status`.
#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Only this swarm id.
    pub swarm: Option<String>,
    /// Wait until every task (of this swarm, or of every unfinished swarm) has finished.
    #[arg(long)]
    pub wait: bool,
}

/// Runs `status`.
///
/// # Errors
/// A refused call; with `--wait`, tasks that ended dead or cancelled.
pub async fn run(ctx: &Ctx, args: StatusArgs) -> anyhow::Result<()> {
    let swarms = fetch(ctx, args.swarm.as_deref()).await?;
    if !args.wait {
        print(ctx, &swarms);
        return Ok(());
    }
    let unfinished: Vec<String> = swarms
        .iter()
        .filter(|swarm| swarm.counts.finished() < swarm.counts.total())
        .map(|swarm| swarm.swarm_id.clone())
        .collect();
    let watched =
        if args.swarm.is_some() { swarms.iter().map(|swarm| swarm.swarm_id.clone()).collect() } else { unfinished };
    let done = wait(ctx, &watched).await?;
    let failed: u64 = done.iter().map(|swarm| swarm.counts.dead + swarm.counts.cancelled).sum();
    if failed > 0 {
        bail!("{failed} task(s) ended dead or cancelled");
    }
    Ok(())
}

/// Per-swarm counts: one swarm, or all.
///
/// # Errors
/// A refused call, or an unknown swarm.
pub(crate) async fn fetch(ctx: &Ctx, swarm: Option<&str>) -> anyhow::Result<Vec<SwarmView>> {
    let response = ctx
        .admin()?
        .get_stats(pb::GetStatsRequest { swarm_id: swarm.unwrap_or_default().to_owned() })
        .await
        .map_err(|status| ctx.refused("read progress", &status))?
        .into_inner();
    if let Some(id) = swarm
        && response.swarms.is_empty()
    {
        bail!("swarm {id} not found");
    }
    let mut swarms: Vec<SwarmView> = response.swarms.into_iter().map(SwarmView::from).collect();
    for stalled in response.stalled {
        if let Some(swarm) = swarms.iter_mut().find(|swarm| swarm.swarm_id == stalled.swarm_id) {
            swarm.stalled.push(stalled.into());
        }
    }
    Ok(swarms)
}

/// Prints swarms as a table or JSON.
pub(crate) fn print(ctx: &Ctx, swarms: &[SwarmView]) {
    if ctx.json {
        output::json(&swarms);
        return;
    }
    let mut table =
        output::table(&["swarm", "id", "done", "ready", "running", "succeeded", "dead", "cancelled", "submitted"]);
    for swarm in swarms {
        let counts = swarm.counts;
        table.add_row(vec![
            swarm.name.clone(),
            swarm.swarm_id.clone(),
            format!("{}%", swarm.progress_percent),
            counts.ready.to_string(),
            counts.running.to_string(),
            counts.succeeded.to_string(),
            counts.dead.to_string(),
            counts.cancelled.to_string(),
            output::ago(swarm.created_at),
        ]);
    }
    output::line(table);
    for (swarm, stalled) in swarms.iter().flat_map(|swarm| swarm.stalled.iter().map(move |stalled| (swarm, stalled))) {
        output::line(format!(
            "stalled  {}: task {} (attempt {} on worker {}) stalled {}",
            swarm.name,
            stalled.task_id,
            stalled.attempt_id,
            stalled.worker_id,
            output::ago(stalled.since)
        ));
    }
}

/// Shows progress until every task of `swarm_ids` has finished; returns the final counts.
///
/// # Errors
/// A refused call.
pub(crate) async fn wait(ctx: &Ctx, swarm_ids: &[String]) -> anyhow::Result<Vec<SwarmView>> {
    let terminal = std::io::stderr().is_terminal();
    let bars = MultiProgress::new();
    let style = ProgressStyle::with_template("{prefix:>12} [{bar:30}] {pos}/{len} {msg}")
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ");
    let mut tracked: Vec<(String, ProgressBar)> = Vec::new();
    let started = Instant::now();
    let mut last_plain = Instant::now();
    loop {
        let mut current = Vec::with_capacity(swarm_ids.len());
        for id in swarm_ids {
            current.extend(fetch(ctx, Some(id)).await?);
        }
        for swarm in &current {
            let bar = match tracked.iter().find(|(id, _)| *id == swarm.swarm_id) {
                Some((_, bar)) => bar.clone(),
                None => {
                    let bar = bars.add(
                        ProgressBar::new(swarm.counts.total())
                            .with_style(style.clone())
                            .with_prefix(swarm.name.clone()),
                    );
                    if !terminal {
                        bar.set_draw_target(indicatif::ProgressDrawTarget::hidden());
                    }
                    tracked.push((swarm.swarm_id.clone(), bar.clone()));
                    bar
                }
            };
            bar.set_length(swarm.counts.total());
            bar.set_position(swarm.counts.finished());
            bar.set_message(swarm.progress_line());
        }
        let all_done = current.iter().all(|swarm| swarm.counts.finished() == swarm.counts.total());
        if !terminal && (all_done || last_plain.elapsed() >= PLAIN_EVERY) {
            last_plain = Instant::now();
            for swarm in &current {
                tracing::info!(swarm = %swarm.name, done = swarm.counts.finished(), total = swarm.counts.total(), "{}", swarm.progress_line());
            }
        }
        if all_done {
            for (_, bar) in &tracked {
                bar.finish();
            }
            tracing::debug!(elapsed = ?started.elapsed(), "all watched swarms finished");
            return Ok(current);
        }
        tokio::time::sleep(POLL).await;
    }
}
