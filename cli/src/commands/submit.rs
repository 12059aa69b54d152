//! `hivectl submit FILE.yaml` or `hivectl submit --agent A --prompt P`: queue a swarm.

use std::path::PathBuf;

use anyhow::bail;
use hive_shared::pb;
use serde::Serialize;

use super::Ctx;
use crate::output;
use crate::taskfile;

/// Arguments of `submit`.
#[derive(Debug, clap::Args)]
pub struct SubmitArgs {
    /// Task file (YAML); omit it to submit one task given by --agent and --prompt.
    pub file: Option<PathBuf>,
    /// Agent of the single inline task.
    #[arg(long, conflicts_with = "file")]
    pub agent: Option<String>,
    /// Prompt of the single inline task.
    #[arg(long, conflicts_with = "file", requires = "agent")]
    pub prompt: Option<String>,
    /// Swarm name of the inline task.
    #[arg(long, default_value = "adhoc", conflicts_with = "file")]
    pub swarm: String,
    /// Priority of the inline task.
    #[arg(long, default_value_t = 0, conflicts_with = "file")]
    pub priority: i32,
    /// Submitting again with this key returns the swarm submitted first (overrides the file's).
    #[arg(long)]
    pub idempotency_key: Option<String>,
    /// Spending limit for the swarm (overrides the file's).
    #[arg(long)]
    pub budget: Option<f64>,
    /// Wait until every task of the swarm has finished, showing progress.
    #[arg(long)]
    pub wait: bool,
    /// Largest request the coordinator accepts (its `limits.max_message_size`);
    /// a larger submission is refused here, before anything is sent.
    #[arg(long, default_value = "16MiB")]
    pub max_message: bytesize::ByteSize,
}

/// What a submission returned.
#[derive(Debug, Serialize)]
pub(crate) struct Submitted {
    pub swarm_id: String,
    /// Task ids, in file order, with their keys.
    pub tasks: Vec<SubmittedTask>,
    /// Warnings from the coordinator.
    pub warnings: Vec<String>,
    /// Whether the idempotency key was seen before and this is the earlier swarm.
    pub existing: bool,
}

/// One submitted task.
#[derive(Debug, Serialize)]
pub(crate) struct SubmittedTask {
    /// Key from the file.
    pub key: String,
    /// Task id.
    pub id: String,
}

/// Builds the request from a file or the inline flags.
///
/// # Errors
/// A task file with problems, or neither a file nor --agent.
pub(crate) fn request(args: &SubmitArgs) -> anyhow::Result<pb::SubmitTasksRequest> {
    let mut request = if let Some(path) = &args.file {
        taskfile::load(path)?.into_request()
    } else {
        let Some(agent) = &args.agent else { bail!("give a task file, or --agent and --prompt for a single task") };
        pb::SubmitTasksRequest {
            swarm: args.swarm.clone(),
            tasks: vec![pb::TaskSpec {
                agent: agent.clone(),
                prompt: args.prompt.clone().unwrap_or_default(),
                priority: args.priority,
                ..pb::TaskSpec::default()
            }],
            ..pb::SubmitTasksRequest::default()
        }
    };
    if let Some(key) = &args.idempotency_key {
        request.idempotency_key.clone_from(key);
    }
    if let Some(budget) = args.budget {
        request.budget = budget;
    }
    let size = prost::Message::encoded_len(&request) as u64;
    if size > args.max_message.as_u64() {
        let what = args.file.as_ref().map_or_else(|| "the task".to_owned(), |path| path.display().to_string());
        bail!(
            "{what} makes a request of {}, over the coordinator's message limit of {} (its \
             limits.max_message_size; pass --max-message if it is set higher); nothing was sent: split the \
             swarm into smaller files, or keep large inputs out of the prompts",
            bytesize::ByteSize::b(size),
            args.max_message
        );
    }
    Ok(request)
}

/// Sends a submission and reports warnings on stderr.
///
/// # Errors
/// When the coordinator refuses it (nothing is queued then).
pub(crate) async fn send(ctx: &Ctx, request: pb::SubmitTasksRequest) -> anyhow::Result<Submitted> {
    let keys: Vec<String> = request.tasks.iter().map(|task| task.key.clone()).collect();
    let response = ctx
        .admin()?
        .submit_tasks(request)
        .await
        .map_err(|status| ctx.refused("submit refused; nothing was queued", &status))?
        .into_inner();
    for warning in &response.warnings {
        tracing::warn!("{warning}");
    }
    let tasks = keys.into_iter().zip(response.task_ids).map(|(key, id)| SubmittedTask { key, id }).collect();
    Ok(Submitted { swarm_id: response.swarm_id, tasks, warnings: response.warnings, existing: response.existing })
}

/// Runs `submit`.
///
/// # Errors
/// Bad input, a refused submission, or a failed wait.
pub async fn run(ctx: &Ctx, args: SubmitArgs) -> anyhow::Result<()> {
    let submitted = send(ctx, request(&args)?).await?;
    if ctx.json {
        output::json(&submitted);
    } else {
        output::line(format!("swarm {} queued with {} task(s)", submitted.swarm_id, submitted.tasks.len()));
        let mut table = output::table(&["key", "task id"]);
        for task in &submitted.tasks {
            table.add_row([task.key.as_str(), task.id.as_str()]);
        }
        output::line(table);
    }
    if args.wait {
        super::status::wait(ctx, std::slice::from_ref(&submitted.swarm_id)).await?;
    }
    Ok(())
}
