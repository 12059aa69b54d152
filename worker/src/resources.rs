//! Host resource figures for heartbeats: CPU use since the last sample (from
//! `/proc/stat`) and memory in use (from `/proc/meminfo`). Where /proc is
//! missing the figures are zero.

use hive_shared::pb;

/// Samples CPU and memory; keeps the previous CPU counters to compute a rate.
#[derive(Debug, Default)]
pub(crate) struct Sampler {
    previous: Option<(u64, u64)>,
}

impl Sampler {
    /// Takes a sample, with the resident memory of each agent's process group.
    pub(crate) async fn sample(&mut self, groups: Vec<(hive_shared::ids::AttemptId, i32)>) -> pb::ResourceUsage {
        let attempts = tokio::task::spawn_blocking(move || group_rss(&groups)).await.unwrap_or_default();
        let stat = tokio::fs::read_to_string("/proc/stat").await.unwrap_or_default();
        let meminfo = tokio::fs::read_to_string("/proc/meminfo").await.unwrap_or_default();
        let cpu_percent = cpu_counters(&stat).map_or(0.0, |(busy, total)| {
            let percent = match self.previous {
                Some((last_busy, last_total)) if total > last_total => {
                    100.0 * (busy.saturating_sub(last_busy)) as f64 / (total - last_total) as f64
                }
                _ => 0.0,
            };
            self.previous = Some((busy, total));
            percent
        });
        let (used, total) = memory(&meminfo);
        pb::ResourceUsage { cpu_percent, memory_used_bytes: used, memory_total_bytes: total, attempts }
    }
}

/// Free bytes an unprivileged process may use on the disk holding `path`,
/// when they can be measured.
#[allow(clippy::useless_conversion, reason = "the counts are 32-bit on some targets")]
pub(crate) async fn free_disk(path: std::path::PathBuf) -> Option<u64> {
    let measured = tokio::task::spawn_blocking(move || nix::sys::statvfs::statvfs(&path)).await.ok()?.ok()?;
    Some(u64::from(measured.blocks_available()).saturating_mul(u64::from(measured.fragment_size())))
}

/// Resident memory of each process group, summed over its processes (one pass over /proc).
fn group_rss(groups: &[(hive_shared::ids::AttemptId, i32)]) -> Vec<pb::AttemptMemory> {
    let bytes = rss_bytes(groups.iter().map(|(_, group)| *group));
    groups
        .iter()
        .zip(bytes)
        .map(|((attempt, _), rss_bytes)| pb::AttemptMemory { attempt_id: attempt.to_string(), rss_bytes })
        .collect()
}

/// Resident bytes of each of `groups`, in order, summed over each group's
/// processes (one pass over /proc; none when `groups` is empty).
pub(crate) fn rss_bytes(groups: impl ExactSizeIterator<Item = i32>) -> Vec<u64> {
    if groups.len() == 0 {
        return Vec::new();
    }
    let page = nix::unistd::sysconf(nix::unistd::SysconfVar::PAGE_SIZE).ok().flatten().map_or(4096, |size| size as u64);
    let mut pages: std::collections::HashMap<i32, u64> = std::collections::HashMap::new();
    for stat in process_stats() {
        if let Some((group, rss)) = group_and_rss(&stat) {
            *pages.entry(group).or_insert(0) += rss;
        }
    }
    groups.map(|group| pages.get(&group).copied().unwrap_or(0) * page).collect()
}

/// The /proc/PID/stat line of every process that can be read (one pass over /proc).
pub(crate) fn process_stats() -> impl Iterator<Item = String> {
    std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| std::fs::read_to_string(entry.path().join("stat")).ok())
}

/// The fields of a /proc/PID/stat line after the command name (which may
/// hold spaces and parentheses), from the state on: index 2 is the process
/// group, 11-14 the CPU ticks, 21 the resident pages.
pub(crate) fn stat_fields(stat: &str) -> Option<Vec<&str>> {
    Some(stat.rsplit_once(')')?.1.split_whitespace().collect())
}

/// (process group, resident pages) from a /proc/PID/stat line.
fn group_and_rss(stat: &str) -> Option<(i32, u64)> {
    let fields = stat_fields(stat)?;
    let group = fields.get(2)?.parse().ok()?;
    let rss = fields.get(21)?.parse().ok()?;
    Some((group, rss))
}

/// (busy, total) jiffies from the aggregate `cpu` line.
fn cpu_counters(stat: &str) -> Option<(u64, u64)> {
    let line = stat.lines().find(|line| line.starts_with("cpu "))?;
    let values: Vec<u64> = line.split_whitespace().skip(1).filter_map(|value| value.parse().ok()).collect();
    let total: u64 = values.iter().sum();
    let idle = values.get(3).copied().unwrap_or(0) + values.get(4).copied().unwrap_or(0);
    Some((total.saturating_sub(idle), total))
}

/// (used, total) bytes.
fn memory(meminfo: &str) -> (u64, u64) {
    let field = |name: &str| {
        meminfo
            .lines()
            .find(|line| line.starts_with(name))
            .and_then(|line| line.split_whitespace().nth(1))
            .and_then(|kib| kib.parse::<u64>().ok())
            .map_or(0, |kib| kib * 1024)
    };
    let total = field("MemTotal:");
    (total.saturating_sub(field("MemAvailable:")), total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn process_group_and_rss_come_from_the_stat_line() {
        let stat = "1234 (sh -c (odd)) S 1 1234 1234 0 -1 4194560 100 0 0 0 0 0 0 0 20 0 1 0 5 1000000 321 18446744073709551615";
        assert_eq!(group_and_rss(stat), Some((1234, 321)));
    }

    #[test]
    fn proc_files_parse() {
        assert_eq!(cpu_counters("cpu  10 0 10 70 10 0 0 0 0 0\ncpu0 1 2 3\n"), Some((20, 100)));
        assert_eq!(memory("MemTotal: 100 kB\nMemFree: 1 kB\nMemAvailable: 40 kB\n"), (60 * 1024, 100 * 1024));
        assert_eq!(cpu_counters(""), None);
    }
}
