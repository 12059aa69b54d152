//! Commands that act on many tasks at once: `hivectl cancel`, `hivectl retry`
//! (the dead-letter queue's way back), and `hivectl dlq list`.

use hive_shared::pb;
use serde::Serialize;

use super::Ctx;
use super::tasks::{self, ListArgs};
use crate::output;

/// Which tasks: ids, or a filter (they combine).
#[derive(Debug, clap::Args)]
pub struct FilterArgs {
    /// Task ids.
    pub ids: Vec<String>,
    /// Only tasks of this swarm id.
    #[arg(long)]
    pub swarm: Option<String>,
    /// Only tasks for this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Only tasks whose last error contains this text.
    #[arg(long)]
    pub error: Option<String>,
}

impl FilterArgs {
    fn to_pb(&self) -> pb::TaskFilter {
        pb::TaskFilter {
            task_ids: self.ids.clone(),
            swarm_id: self.swarm.clone().unwrap_or_default(),
            agent: self.agent.clone().unwrap_or_default(),
            error_contains: self.error.clone().unwrap_or_default(),
        }
    }
}

/// Arguments of `cancel`.
#[derive(Debug, clap::Args)]
pub struct CancelArgs {
    /// Which tasks.
    #[command(flatten)]
    pub filter: FilterArgs,
    /// Why (kept as each task's error).
    #[arg(long, default_value = "")]
    pub reason: String,
}

/// What `cancel` did.
#[derive(Debug, Serialize)]
struct Cancelled {
    cancelled: u64,
    cancelling: u64,
}

/// Runs `cancel`: queued tasks are cancelled at once; running ones are stopped by their workers.
///
/// # Errors
/// No filter, or a refused call.
pub async fn cancel(ctx: &Ctx, args: CancelArgs) -> anyhow::Result<()> {
    let request = pb::CancelTasksRequest { filter: Some(args.filter.to_pb()), reason: args.reason };
    let response =
        ctx.admin()?.cancel_tasks(request).await.map_err(|status| ctx.refused("cancel refused", &status))?.into_inner();
    let done = Cancelled { cancelled: response.cancelled, cancelling: response.cancelling };
    if ctx.json {
        output::json(&done);
    } else {
        output::line(format!("{} cancelled, {} being stopped by their workers", done.cancelled, done.cancelling));
    }
    Ok(())
}

/// Runs `retry`: dead tasks go back to the queue with a fresh failure budget.
///
/// # Errors
/// No filter, or a refused call.
pub async fn retry(ctx: &Ctx, filter: FilterArgs) -> anyhow::Result<()> {
    let request = pb::RetryTasksRequest { filter: Some(filter.to_pb()) };
    let response =
        ctx.admin()?.retry_tasks(request).await.map_err(|status| ctx.refused("retry refused", &status))?.into_inner();
    if ctx.json {
        output::json(&response.task_ids);
    } else {
        output::line(format!("{} dead task(s) queued again", response.retried));
    }
    Ok(())
}

/// `dlq` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum DlqCommand {
    /// List dead tasks with their last error (see `tasks show ID` for every attempt, `logs ID` for output).
    List {
        /// Only tasks of this swarm id.
        #[arg(long)]
        swarm: Option<String>,
        /// Only tasks for this agent.
        #[arg(long)]
        agent: Option<String>,
        /// Most tasks to show.
        #[arg(long, default_value_t = 100)]
        limit: usize,
    },
    /// Queue dead tasks again (same as `hivectl retry`).
    Retry(FilterArgs),
}

/// Runs a `dlq` subcommand.
///
/// # Errors
/// A refused call.
pub async fn dlq(ctx: &Ctx, command: DlqCommand) -> anyhow::Result<()> {
    let (swarm, agent, limit) = match command {
        DlqCommand::Retry(filter) => return retry(ctx, filter).await,
        DlqCommand::List { swarm, agent, limit } => (swarm, agent, limit),
    };
    let args = ListArgs { status: Some("dead".into()), swarm, agent, limit };
    let dead = tasks::fetch(ctx, &args).await?;
    if ctx.json {
        output::json(&dead);
        return Ok(());
    }
    let mut table = output::table(&["id", "swarm", "key", "agent", "failures", "died", "last error"]);
    for task in &dead {
        let error = output::printable(&task.error.chars().take(100).collect::<String>());
        table.add_row(vec![
            task.id.clone(),
            task.swarm.clone(),
            task.key.clone(),
            task.agent.clone(),
            format!("{}/{}", task.failures, task.max_attempts),
            output::ago(task.finished_at),
            error,
        ]);
    }
    output::line(table);
    Ok(())
}
