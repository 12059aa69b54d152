//! `hivectl progress [MESSAGE]`, for agents: says the running attempt (from
//! `$HIVE_TASK_ID` and `$HIVE_ATTEMPT_ID`, with its attempt token in
//! `$HIVE_TOKEN`) is making progress, so an agent that works quietly is not
//! taken for stalled; the message shows in `hivectl tasks show`.

use hive_shared::pb;

use super::Ctx;
use super::lock::AttemptArgs;

/// Arguments of `progress`.
#[derive(Debug, clap::Args)]
pub struct ProgressArgs {
    /// What the agent is doing (at most 256 bytes).
    #[arg(default_value = "")]
    pub message: String,
    /// The calling attempt (set by the worker for every agent).
    #[command(flatten)]
    pub attempt: AttemptArgs,
}

/// Runs `progress`.
///
/// # Errors
/// A refused call (a message too long, an attempt no longer current).
pub async fn run(ctx: &Ctx, args: ProgressArgs) -> anyhow::Result<()> {
    let request = pb::ReportProgressRequest {
        task_id: args.attempt.task_id,
        attempt_id: args.attempt.attempt_id,
        message: args.message,
    };
    ctx.worker()?.report_progress(request).await.map_err(|status| ctx.refused("progress refused", &status))?;
    Ok(())
}
