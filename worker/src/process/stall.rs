//! Stalls: an agent that is alive but shows no progress for its agent's
//! `stall_timeout`. Progress is any of: output bytes, a change in its
//! working folders (names, sizes, modification times), CPU used by its
//! process group (at least 1 % of a core since the last look, counting
//! children it has waited for, so a compiler's short-lived processes count),
//! and its own progress reports (`hivectl progress`, which reach the worker
//! with its heartbeats). Output silence alone never makes a stall.
//!
//! A stalled attempt is marked in [`Held`], so heartbeats tell the
//! coordinator (operators see it in `hivectl tasks show` and `status`), and
//! unmarked when progress resumes. Under `on_stall = "retry"` the watch
//! ends, and the supervisor stops the agent.

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::os::unix::ffi::OsStrExt;
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use hive_shared::ids::AttemptId;
use nix::unistd::Pid;
use tokio::time::Instant;
use tracing::{info, warn};

use crate::config::OnStall;
use crate::held::Held;
use crate::metrics::WorkerMetrics;
use crate::resources;

/// Most folder entries looked at per look; a larger tree is fingerprinted
/// by its first entries (changes past them are not seen).
const MAX_ENTRIES: usize = 10_000;

/// What to watch for one attempt.
#[derive(Debug, Clone)]
pub(crate) struct StallWatch {
    /// No progress for this long is a stall.
    pub timeout: Duration,
    /// What a stall leads to.
    pub policy: OnStall,
    /// Folders whose changes count, looked at in this order (the scratch
    /// folder first, then the worktree and the agent's own working folder
    /// when they are elsewhere).
    pub folders: Vec<PathBuf>,
    /// Where the attempt is marked stalled, and its progress reports are.
    pub held: Held,
    /// The attempt.
    pub attempt: AttemptId,
    /// Where stalls are counted, under this agent.
    pub counted: (Arc<WorkerMetrics>, Arc<str>),
}

/// Everything but CPU, at one look: any difference is progress.
#[derive(Debug, PartialEq, Eq)]
struct Look {
    output: u64,
    folders: u64,
    reported: Option<SystemTime>,
}

impl StallWatch {
    /// Watches until the agent has stalled under the `retry` policy, then
    /// returns how long it went without progress; under `ignore` it only
    /// marks and unmarks the attempt, and never returns.
    pub(crate) async fn run(&self, output: &AtomicU64, group: Option<Pid>) -> Duration {
        let every = (self.timeout / 4).clamp(Duration::from_millis(100), Duration::from_secs(5));
        let mut last = self.look(output).await;
        // CPU is judged over the time since the last progress, so a
        // trickle (an idle runtime's timers) never adds up to 1 %.
        let mut cpu_since_progress = cpu_ticks(group).await;
        let (mut progress_at, mut stalled) = (Instant::now(), false);
        loop {
            tokio::time::sleep(every).await;
            let look = self.look(output).await;
            let ticks = cpu_ticks(group).await;
            let busy = ticks.saturating_sub(cpu_since_progress) >= busy_ticks(progress_at.elapsed());
            if look != last || busy {
                (progress_at, cpu_since_progress) = (Instant::now(), ticks);
                if stalled {
                    stalled = false;
                    self.held.set_stalled(self.attempt, false);
                    info!("the agent is making progress again");
                }
            }
            last = look;
            let quiet = progress_at.elapsed();
            if quiet >= self.timeout {
                if !stalled {
                    stalled = true;
                    self.held.set_stalled(self.attempt, true);
                    self.counted.0.stalled(&self.counted.1);
                    warn!(quiet = ?quiet, policy = ?self.policy, "the agent is stalled: no output, folder change, CPU use or progress report");
                }
                if self.policy == OnStall::Retry {
                    return quiet;
                }
            }
        }
    }

    async fn look(&self, output: &AtomicU64) -> Look {
        let folders = self.folders.clone();
        let fingerprint = tokio::task::spawn_blocking(move || fingerprint(&folders)).await.unwrap_or(0);
        Look {
            output: output.load(Ordering::Relaxed),
            folders: fingerprint,
            reported: self.held.reported(self.attempt),
        }
    }
}

/// Clears the attempt's stall mark (its agent has ended).
pub(crate) fn clear(watch: Option<&StallWatch>) {
    if let Some(watch) = watch {
        watch.held.set_stalled(watch.attempt, false);
    }
}

/// A shared output byte counter.
pub(crate) type OutputBytes = Arc<AtomicU64>;

/// The CPU ticks that count as busy over `elapsed`: 1 % of one core, at least one tick.
fn busy_ticks(elapsed: Duration) -> u64 {
    let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100);
    let per_second = u64::try_from(per_second).unwrap_or(100);
    ((elapsed.as_millis() as u64).saturating_mul(per_second) / 100_000).max(1)
}

/// CPU ticks used by the processes of `group`, and by the children they
/// have waited for; 0 without a group or /proc.
async fn cpu_ticks(group: Option<Pid>) -> u64 {
    let Some(group) = group else { return 0 };
    tokio::task::spawn_blocking(move || {
        resources::process_stats()
            .filter_map(|stat| group_and_ticks(&stat))
            .filter(|(pgrp, _)| *pgrp == group.as_raw())
            .fold(0_u64, |ticks, (_, used)| ticks.saturating_add(used))
    })
    .await
    .unwrap_or(0)
}

/// (process group, utime + stime + cutime + cstime) from a /proc/PID/stat line.
fn group_and_ticks(stat: &str) -> Option<(i32, u64)> {
    let fields = resources::stat_fields(stat)?;
    let group = fields.get(2)?.parse().ok()?;
    let ticks = (11..=14).map(|index| fields.get(index)?.parse::<i64>().ok()).sum::<Option<i64>>()?;
    Some((group, u64::try_from(ticks).unwrap_or(0)))
}

/// A fingerprint of the names, sizes and modification times of the first
/// [`MAX_ENTRIES`] entries under `folders`, walked in their order (symbolic
/// links not followed).
fn fingerprint(folders: &[PathBuf]) -> u64 {
    // A stack: the first folder on top, so a large worktree after the
    // scratch folder cannot hide the transcript growing in it.
    let mut pending: Vec<PathBuf> = folders.iter().rev().cloned().collect();
    let (mut seen, mut sum) = (0_usize, 0_u64);
    while let Some(folder) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(&folder) else { continue };
        for entry in entries.flatten() {
            if seen == MAX_ENTRIES {
                return sum;
            }
            seen += 1;
            let Ok(metadata) = entry.path().symlink_metadata() else { continue };
            let mut hasher = DefaultHasher::new();
            entry.path().as_os_str().as_bytes().hash(&mut hasher);
            metadata.len().hash(&mut hasher);
            metadata.modified().ok().hash(&mut hasher);
            // Order-free, so the order entries are listed in does not matter.
            sum = sum.wrapping_add(hasher.finish());
            if metadata.is_dir() {
                pending.push(entry.path());
            }
        }
    }
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_ticks_come_from_the_stat_line() {
        let stat = "42 (a (b) c) S 1 42 42 0 -1 4194560 100 0 0 0 7 3 2 1 20 0 1 0 100 1000 50";
        assert_eq!(group_and_ticks(stat), Some((42, 13)));
    }

    #[test]
    fn a_changed_file_changes_the_fingerprint() {
        let dir = tempfile::tempdir().unwrap();
        let before = fingerprint(&[dir.path().to_path_buf()]);
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let with_folder = fingerprint(&[dir.path().to_path_buf()]);
        assert_ne!(before, with_folder);
        std::fs::write(dir.path().join("sub/file"), b"one").unwrap();
        let with_file = fingerprint(&[dir.path().to_path_buf()]);
        assert_ne!(with_folder, with_file);
        assert_eq!(with_file, fingerprint(&[dir.path().to_path_buf()]), "nothing changed, nothing differs");
        std::fs::write(dir.path().join("sub/file"), b"two!").unwrap();
        assert_ne!(with_file, fingerprint(&[dir.path().to_path_buf()]));
    }

    #[test]
    fn the_first_folder_counts_however_large_the_next() {
        let (scratch, worktree) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        for index in 0..MAX_ENTRIES {
            std::fs::write(worktree.path().join(index.to_string()), b"").unwrap();
        }
        let folders = [scratch.path().to_path_buf(), worktree.path().to_path_buf()];
        let before = fingerprint(&folders);
        std::fs::write(scratch.path().join("transcript.jsonl"), b"{}").unwrap();
        assert_ne!(before, fingerprint(&folders));
    }

    #[test]
    fn busy_is_one_percent_of_a_core() {
        assert_eq!(busy_ticks(Duration::from_millis(10)), 1);
        let per_second = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).unwrap().unwrap() as u64;
        assert_eq!(busy_ticks(Duration::from_secs(100)), per_second);
    }
}
