//! `hivectl swarms`: every swarm's progress, elapsed and remaining time, cost
//! and budget; `hivectl swarms budget`; `hivectl export`: a swarm back as a
//! task file (importing it again gives the same graph).

use std::collections::HashMap;

use hive_shared::convert::{from_duration, struct_to_json};
use hive_shared::pb;

use super::Ctx;
use super::status::fetch;
use crate::client;
use crate::output;
use crate::taskfile::{Session, TaskEntry, TaskFile, ValidateEntry};

/// `swarms` subcommands.
#[derive(Debug, clap::Subcommand)]
pub enum SwarmsCommand {
    /// Set a swarm's budget (0 clears it); raising it releases held tasks.
    Budget {
        /// Swarm id.
        swarm: String,
        /// The new limit.
        amount: f64,
    },
}

/// Runs `swarms`.
///
/// # Errors
/// A refused call.
pub async fn run(ctx: &Ctx, command: Option<SwarmsCommand>) -> anyhow::Result<()> {
    if let Some(SwarmsCommand::Budget { swarm, amount }) = command {
        let request = pb::SetSwarmBudgetRequest { swarm_id: swarm, budget: amount };
        let response =
            ctx.admin()?.set_swarm_budget(request).await.map_err(|status| ctx.refused("set budget", &status))?;
        let response = response.into_inner();
        output::line(format!("budget {:.2}, spent {:.2}", response.budget, response.spent));
        return Ok(());
    }
    let swarms = fetch(ctx, None).await?;
    if ctx.json {
        output::json(&swarms);
        return Ok(());
    }
    let mut table = output::table(&["swarm", "id", "done", "running", "dead", "elapsed", "left", "cost", "notes"]);
    for swarm in &swarms {
        table.add_row(vec![
            swarm.name.clone(),
            swarm.swarm_id.clone(),
            format!("{}% ({}/{})", swarm.progress_percent, swarm.counts.finished(), swarm.counts.total()),
            (swarm.counts.running + swarm.counts.cancelling).to_string(),
            swarm.counts.dead.to_string(),
            output::seconds(swarm.elapsed_seconds),
            output::seconds(swarm.remaining_seconds),
            swarm.cost_text(),
            swarm.waiting.join("; "),
        ]);
    }
    output::line(table);
    Ok(())
}

/// Runs `export`: prints the swarm as a task file.
///
/// # Errors
/// A refused call, or a swarm with no tasks.
pub async fn export(ctx: &Ctx, swarm_id: &str) -> anyhow::Result<()> {
    let filter = pb::ListTasksRequest { swarm_id: swarm_id.to_owned(), full: true, ..Default::default() };
    let mut tasks = client::list_tasks(&mut ctx.admin()?, filter, usize::MAX)
        .await
        .map_err(|status| ctx.refused("export", &status))?;
    let Some(first) = tasks.first() else { anyhow::bail!("swarm {swarm_id} has no tasks (or does not exist)") };
    let swarm = first.swarm.clone();
    tasks.sort_by(|a, b| a.id.cmp(&b.id)); // submission order
    let file =
        TaskFile { swarm, idempotency_key: None, budget: None, defaults: Default::default(), tasks: entries(tasks) };
    output::line(serde_norway::to_string(&file)?.trim_end());
    Ok(())
}

/// Task file entries for tasks of one swarm; dependencies inside the swarm
/// refer to ids in the file (a task without one gets `task-<id>`), others
/// stay task ids.
fn entries(tasks: Vec<pb::Task>) -> Vec<TaskEntry> {
    let key_of: HashMap<String, String> = tasks
        .iter()
        .map(|task| (task.id.clone(), if task.key.is_empty() { format!("task-{}", task.id) } else { task.key.clone() }))
        .collect();
    tasks
        .into_iter()
        .map(|task| {
            let duration = |value: &Option<prost_types::Duration>| value.as_ref().and_then(from_duration);
            TaskEntry {
                id: key_of.get(&task.id).cloned(),
                agent: Some(task.agent),
                prompt: task.prompt,
                input: task.input.map(struct_to_json),
                priority: (task.priority != 0).then_some(task.priority),
                max_attempts: Some(task.max_attempts),
                timeout: duration(&task.timeout),
                backoff_initial: duration(&task.backoff_initial),
                backoff_max: duration(&task.backoff_max),
                backoff_multiplier: (task.backoff_multiplier != 0.0).then_some(task.backoff_multiplier),
                run_after: None,
                delay: None,
                depends_on: task
                    .depends_on
                    .iter()
                    .map(|id| key_of.get(id).cloned().unwrap_or_else(|| id.clone()))
                    .collect(),
                labels: task.labels.into_iter().collect(),
                locks: task.locks,
                validate: task.validate.map(|validate| ValidateEntry {
                    agent: validate.agent,
                    prompt: validate.prompt,
                    max_rounds: Some(validate.max_rounds),
                }),
                session: (task.session == i32::from(pb::SessionPolicy::Resume)).then_some(Session::Resume),
                fallback_agents: task.fallback_agents,
                concurrency: task.concurrency.into_iter().collect(),
            }
        })
        .collect()
}
