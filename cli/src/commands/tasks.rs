//! `hivectl tasks list|show|cancel`.

use hive_shared::pb;
use serde::Serialize;

use super::Ctx;
use crate::client;
use crate::output::{self, AttemptView, TaskView};

/// `tasks` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum TasksCommand {
    /// List tasks, newest first.
    List(ListArgs),
    /// Show one task with its attempts and result.
    Show {
        /// Task id.
        id: String,
    },
    /// Print the patch a task's agent made in its git workspace (against
    /// the branch's base), as its result records it.
    Diff {
        /// Task id.
        id: String,
    },
    /// Cancel a task (a running one is stopped by its worker).
    Cancel {
        /// Task id.
        id: String,
        /// Why (kept as the task's error).
        #[arg(long, default_value = "")]
        reason: String,
    },
}

/// Filters of `tasks list`.
#[derive(Debug, clap::Args)]
pub struct ListArgs {
    /// Only this status (blocked, ready, running, cancelling, succeeded, dead, cancelled).
    #[arg(long)]
    pub status: Option<String>,
    /// Only this swarm id.
    #[arg(long)]
    pub swarm: Option<String>,
    /// Only this agent.
    #[arg(long)]
    pub agent: Option<String>,
    /// Most tasks to show (pages are fetched as needed).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
}

fn parse_status(text: &str) -> anyhow::Result<pb::TaskStatus> {
    let wire = format!("TASK_STATUS_{}", text.to_uppercase());
    pb::TaskStatus::from_str_name(&wire).filter(|status| *status != pb::TaskStatus::Unspecified).ok_or_else(|| {
        anyhow::anyhow!(
            "--status: `{text}` is not one of blocked, ready, running, cancelling, succeeded, dead, cancelled"
        )
    })
}

/// Runs a `tasks` subcommand.
///
/// # Errors
/// Bad arguments or a refused call.
pub async fn run(ctx: &Ctx, command: TasksCommand) -> anyhow::Result<()> {
    match command {
        TasksCommand::List(args) => list(ctx, args).await,
        TasksCommand::Show { id } => show(ctx, &id).await,
        TasksCommand::Diff { id } => diff(ctx, &id).await,
        TasksCommand::Cancel { id, reason } => cancel(ctx, id, reason).await,
    }
}

/// Fetches up to `limit` tasks, newest first, page by page.
///
/// # Errors
/// A bad status word or a refused call.
pub(crate) async fn fetch(ctx: &Ctx, args: &ListArgs) -> anyhow::Result<Vec<TaskView>> {
    let status = args.status.as_deref().map(parse_status).transpose()?.unwrap_or(pb::TaskStatus::Unspecified);
    let filter = pb::ListTasksRequest {
        status: status.into(),
        swarm_id: args.swarm.clone().unwrap_or_default(),
        agent: args.agent.clone().unwrap_or_default(),
        ..Default::default()
    };
    let tasks = client::list_tasks(&mut ctx.admin()?, filter, args.limit)
        .await
        .map_err(|status| ctx.refused("list tasks", &status))?;
    Ok(tasks.into_iter().map(TaskView::from).collect())
}

async fn list(ctx: &Ctx, args: ListArgs) -> anyhow::Result<()> {
    let tasks = fetch(ctx, &args).await?;
    if ctx.json {
        output::json(&tasks);
        return Ok(());
    }
    let mut table = output::table(&["id", "swarm", "key", "agent", "status", "tries", "created"]);
    for task in &tasks {
        table.add_row(vec![
            task.id.clone(),
            task.swarm.clone(),
            task.key.clone(),
            task.agent.clone(),
            task.status.clone(),
            format!("{}/{}", task.attempts, task.max_attempts),
            output::ago(task.created_at),
        ]);
    }
    output::line(table);
    Ok(())
}

/// A task with its attempts.
#[derive(Debug, Serialize)]
struct Detail {
    task: TaskView,
    attempts: Vec<AttemptView>,
}

/// One task with its attempts.
async fn get(ctx: &Ctx, id: &str, what: &str) -> anyhow::Result<pb::GetTaskResponse> {
    let request = pb::GetTaskRequest { task_id: id.to_owned() };
    let response = ctx.admin()?.get_task(request).await.map_err(|status| ctx.refused(what, &status))?;
    Ok(response.into_inner())
}

async fn diff(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let response = get(ctx, id, "diff task").await?;
    let result = response.task.and_then(|task| task.result).map(hive_shared::convert::struct_to_json);
    let workspace = result.as_ref().and_then(|result| result.get("workspace"));
    let Some(patch) = workspace.and_then(|workspace| workspace.get("patch")).and_then(serde_json::Value::as_str) else {
        anyhow::bail!(
            "task {id} has no patch: it has not succeeded, or its agent has no workspace ([agents.NAME.workspace])"
        );
    };
    if ctx.json {
        output::json(&workspace);
        return Ok(());
    }
    // As the agent's git wrote it: a patch applies only byte for byte.
    let _ = std::io::Write::write_all(&mut std::io::stdout().lock(), patch.as_bytes());
    if workspace.and_then(|workspace| workspace.get("patch_truncated")).and_then(serde_json::Value::as_bool)
        == Some(true)
    {
        anyhow::bail!("the patch was cut at the agent's workspace.max_patch; the whole change is on its branch");
    }
    Ok(())
}

async fn show(ctx: &Ctx, id: &str) -> anyhow::Result<()> {
    let response = get(ctx, id, "show task").await?;
    let Some(task) = response.task else { anyhow::bail!("the coordinator returned no task for {id}") };
    let detail = Detail { task: task.into(), attempts: response.attempts.into_iter().map(AttemptView::from).collect() };
    if ctx.json {
        output::json(&detail);
        return Ok(());
    }
    let task = &detail.task;
    output::line(format!(
        "task     {}\nswarm    {} ({})\nkey      {}\nagent    {}\nstatus   {}\nattempts {}/{}\npriority {}",
        task.id,
        task.swarm,
        task.swarm_id,
        task.key,
        task.agent,
        task.status,
        task.attempts,
        task.max_attempts,
        task.priority
    ));
    if !task.error.is_empty() {
        output::line(format!("error    {}", output::printable(&task.error)));
    }
    if let Some(result) = &task.result {
        output::line(format!("result   {result}"));
    }
    let mut table = output::table(&["#", "attempt id", "agent", "worker", "outcome", "exit", "started", "error"]);
    for attempt in &detail.attempts {
        let exit = match (attempt.exit_code, attempt.signal) {
            (Some(code), _) => code.to_string(),
            (None, Some(signal)) => format!("signal {signal}"),
            (None, None) => "-".into(),
        };
        table.add_row(vec![
            attempt.number.to_string(),
            attempt.id.clone(),
            output::printable(&attempt.agent),
            attempt.worker_id.clone(),
            attempt.outcome.clone(),
            exit,
            output::ago(attempt.started_at),
            output::printable(&attempt.error),
        ]);
    }
    output::line(table);
    for attempt in detail.attempts.iter().filter(|attempt| attempt.finished_at.is_none()) {
        if attempt.stalled_since.is_some() {
            output::line(format!(
                "stalled  attempt {} stalled {} (no output, folder change, CPU use or progress report since)",
                attempt.number,
                output::ago(attempt.stalled_since)
            ));
        }
        if attempt.progress_at.is_some() {
            output::line(format!(
                "progress attempt {} reported {}: {}",
                attempt.number,
                output::ago(attempt.progress_at),
                output::printable(&attempt.progress)
            ));
        }
    }
    Ok(())
}

async fn cancel(ctx: &Ctx, id: String, reason: String) -> anyhow::Result<()> {
    let response = ctx
        .admin()?
        .cancel_task(pb::CancelTaskRequest { task_id: id, reason })
        .await
        .map_err(|status| ctx.refused("cancel refused", &status))?
        .into_inner();
    let task: Option<TaskView> = response.task.map(TaskView::from);
    if ctx.json {
        output::json(&task);
    } else if let Some(task) = task {
        output::line(format!("task {} is {}", task.id, task.status));
    }
    Ok(())
}
