//! spawn: N tasks whose agent is `/bin/true`, run as real subprocesses (own
//! process group, scrubbed environment, output pipes) by `procs` workers ×
//! `concurrency` slots; tasks per second, against the machine's spawn ceiling
//! (`limits.sh`: `xargs -P 16 /bin/true`), which it also measures itself just
//! before, with the same N: a machine's spawn rate drifts between runs, so
//! only a ceiling taken seconds apart makes a ratio.

use std::time::Instant;

use super::{DEADLINE, Shape, Variant, busy_seconds, submit_bulk};
use crate::stack::{Binaries, Database, wait_succeeded};
use crate::stats::emit;

/// `/bin/true` as an agent; the prompt goes in the environment, so there is no stdin pipe to write.
const TRUE_AGENT: &str = "[agents.true]\ncommand = [\"/bin/true\"]\nprompt = \"env\"\n";

/// Runs one variant and prints its line. `hive-bench` runs two by default:
/// claiming only free slots (`peer=hive`) and holding 16 more tasks per
/// worker (`peer=hive-batched`), as the drain workload does.
///
/// # Errors
/// When a part fails to start.
pub async fn run(db: &Database, binaries: &Binaries, shape: Shape) -> anyhow::Result<()> {
    let Shape { n, procs, concurrency, prefetch } = shape;
    let Variant { name, pool, mut hive } = Variant::start(db, binaries, "spawn", prefetch).await?;
    submit_bulk(&hive.url, "spawn", "true", n).await?;
    let ceiling = xargs_ceiling(n).await?;
    let go = Instant::now();
    hive.start_workers(procs, concurrency, &format!("prefetch = {prefetch}\n{TRUE_AGENT}"))?;
    let complete = wait_succeeded(&pool, DEADLINE).await? >= i64::try_from(n)?;
    let wall_s = go.elapsed().as_secs_f64();
    let busy = busy_seconds(&pool).await?;
    emit(
        name,
        "spawn",
        &[
            ("n", n.to_string()),
            ("complete", complete.to_string()),
            ("jobs_per_s", format!("{:.1}", n as f64 / busy)),
            ("ceiling_per_s", format!("{ceiling:.1}")),
            ("share_of_ceiling", format!("{:.2}", n as f64 / busy / ceiling)),
            ("busy_s", format!("{busy:.3}")),
            ("wall_from_go_s", format!("{wall_s:.3}")),
            ("procs", procs.to_string()),
            ("concurrency", concurrency.to_string()),
            ("settings", format!("cmd=/bin/true,prefetch={prefetch}")),
        ],
    );
    db.print_totals(&pool, &format!("spawn {name}")).await?;
    hive.stop().await;
    Ok(())
}

/// `seq n | xargs -P 16 -n 1 /bin/true`, as `limits.sh` runs it: spawns per second.
async fn xargs_ceiling(n: usize) -> anyhow::Result<f64> {
    let started = Instant::now();
    let status = tokio::process::Command::new("sh")
        .args(["-c", &format!("seq {n} | xargs -P 16 -n 1 /bin/true")])
        .status()
        .await?;
    anyhow::ensure!(status.success(), "xargs -P 16 /bin/true failed: {status}");
    Ok(n as f64 / started.elapsed().as_secs_f64())
}
