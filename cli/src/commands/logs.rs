//! `hivectl logs ID`: print a task's stored output (stdout to stdout, stderr
//! to stderr), optionally following it until the task finishes.

use std::io::Write;
use std::time::Duration;

use hive_shared::pb;

use super::Ctx;

/// Arguments of `logs`.
#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    /// Task id.
    pub id: String,
    /// Only this attempt's output.
    #[arg(long)]
    pub attempt: Option<String>,
    /// Keep printing new output until the task finishes.
    #[arg(long, short)]
    pub follow: bool,
}

/// Runs `logs`.
///
/// # Errors
/// A refused call.
pub async fn run(ctx: &Ctx, args: LogsArgs) -> anyhow::Result<()> {
    let mut admin = ctx.admin()?;
    let mut cursor = 0;
    loop {
        let page = admin
            .get_task_logs(pb::GetTaskLogsRequest {
                task_id: args.id.clone(),
                attempt_id: args.attempt.clone().unwrap_or_default(),
                cursor,
                limit: 0,
            })
            .await
            .map_err(|status| ctx.refused("read logs", &status))?
            .into_inner();
        cursor = page.next_cursor;
        for chunk in &page.chunks {
            let written = match chunk.stream() {
                pb::LogStream::Stderr | pb::LogStream::Hive => std::io::stderr().lock().write_all(&chunk.data),
                _ => std::io::stdout().lock().write_all(&chunk.data),
            };
            if written.is_err() {
                return Ok(()); // the reader went away (`| head`)
            }
        }
        if page.more {
            continue;
        }
        if !args.follow || finished(ctx, &mut admin, &args.id).await? {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
}

async fn finished(ctx: &Ctx, admin: &mut crate::client::Admin, id: &str) -> anyhow::Result<bool> {
    let task = admin
        .get_task(pb::GetTaskRequest { task_id: id.to_owned() })
        .await
        .map_err(|status| ctx.refused("read task", &status))?
        .into_inner()
        .task
        .unwrap_or_default();
    Ok(matches!(task.status(), pb::TaskStatus::Succeeded | pb::TaskStatus::Dead | pb::TaskStatus::Cancelled))
}
