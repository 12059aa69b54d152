//! logs: agents writing output as fast as they can (`head -c 4MiB /dev/zero`
//! through `tr`); megabytes of output stored per second, from the first
//! attempt's start to the last task's finish.

use std::time::Instant;

use super::{DEADLINE, busy_seconds, submit_bulk};
use crate::stack::{Binaries, Database, Hive, wait_succeeded};
use crate::stats::emit;

/// Output per task: the coordinator's default per-task cap, so nothing is cut.
const BYTES_PER_TASK: u64 = 4 * 1024 * 1024;

/// Runs the workload and prints its line.
///
/// # Errors
/// When a part fails to start.
pub async fn run(
    db: &Database,
    binaries: &Binaries,
    tasks: usize,
    procs: usize,
    concurrency: usize,
) -> anyhow::Result<()> {
    let (url, pool) = db.fresh("bench_logs").await?;
    let dir = db.dir.join("logs");
    std::fs::create_dir_all(&dir)?;
    let agent = format!(
        "[agents.chatty]\ncommand = [\"sh\", \"-c\", \"head -c {BYTES_PER_TASK} /dev/zero | tr '\\\\0' x\"]\nprompt = \"env\"\n"
    );
    let mut hive = Hive::start(binaries, &url, &dir, &[]).await?;
    submit_bulk(&hive.url, "logs", "chatty", tasks).await?;
    let go = Instant::now();
    hive.start_workers(procs, concurrency, &agent)?;
    let complete = wait_succeeded(&pool, DEADLINE).await? >= i64::try_from(tasks)?;
    let wall_s = go.elapsed().as_secs_f64();
    let busy = busy_seconds(&pool).await?;
    let stored: i64 =
        sqlx::query_scalar("select coalesce(sum(length(data)), 0)::int8 from task_logs").fetch_one(&pool).await?;
    let megabytes = stored as f64 / 1_000_000.0;
    emit(
        "hive",
        "logs",
        &[
            ("tasks", tasks.to_string()),
            ("complete", complete.to_string()),
            ("mb_stored", format!("{megabytes:.1}")),
            ("mb_per_s", format!("{:.1}", megabytes / busy)),
            ("busy_s", format!("{busy:.3}")),
            ("wall_from_go_s", format!("{wall_s:.3}")),
            ("procs", procs.to_string()),
            ("concurrency", concurrency.to_string()),
        ],
    );
    db.print_totals(&pool, "logs").await?;
    hive.stop().await;
    Ok(())
}
