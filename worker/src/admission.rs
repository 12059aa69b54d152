//! Admission: whether this host may take more work now. No task is claimed
//! while CPU or memory use is at its configured limit, or while `work_dir`'s
//! disk has less free space than `admission.min_free_disk` (watched in a loop
//! of its own, so a disk that hangs stalls only its own check); otherwise only
//! agents whose memory estimate fits in the free memory are claimed for.

use std::time::Duration;

use hive_shared::pb;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::config::Config;
use crate::context::Context;
use crate::unavailable::DISK;

/// Measures `work_dir`'s free space every `interval` until `stop`, holding
/// claims while it is short, or while a measurement takes longer than `interval`.
pub(crate) async fn watch_disk(context: std::sync::Arc<Context>, interval: Duration, stop: CancellationToken) {
    let needed = context.config.admission.min_free_disk.as_u64();
    if needed == 0 {
        return;
    }
    let work_dir = context.config.work_dir.clone();
    loop {
        let measuring = crate::resources::free_disk(work_dir.clone());
        tokio::pin!(measuring);
        let free = tokio::select! {
            free = &mut measuring => free,
            () = tokio::time::sleep(interval) => {
                let reason = format!("the disk of {} did not answer within {interval:?}", work_dir.display());
                warn!(reason = %reason, "claiming nothing until it does");
                context.unavailable.hold(DISK, reason);
                tokio::select! {
                    free = measuring => free,
                    () = stop.cancelled() => return,
                }
            }
            () = stop.cancelled() => return,
        };
        match free {
            Some(free) if free < needed => {
                if !context.unavailable.contains(DISK, std::time::Instant::now()) {
                    warn!(free, needed, "work_dir's disk is short of space; claiming nothing");
                }
                let reason = format!(
                    "{} free on the disk of {}, below admission.min_free_disk ({})",
                    bytesize::ByteSize::b(free),
                    work_dir.display(),
                    bytesize::ByteSize::b(needed)
                );
                context.unavailable.hold(DISK, reason);
            }
            _ => context.unavailable.clear(DISK),
        }
        if !crate::connection::pause(interval, &stop).await {
            return;
        }
    }
}

/// Agents that may be claimed for now: `None` when every agent may be,
/// `Some(empty)` when none may.
pub(crate) fn admissible(config: &Config, latest: &pb::ResourceUsage) -> Option<Vec<String>> {
    let total = latest.memory_total_bytes;
    let used = latest.memory_used_bytes;
    let memory_percent = if total == 0 { 0.0 } else { 100.0 * used as f64 / total as f64 };
    let over = |used: f64, limit: f64| limit < 100.0 && used >= limit;
    if over(latest.cpu_percent, config.admission.max_cpu_percent)
        || over(memory_percent, config.admission.max_memory_percent)
    {
        return Some(Vec::new());
    }
    if config.agents.values().all(|agent| agent.memory.is_none()) || total == 0 {
        return None;
    }
    let free = total.saturating_sub(used);
    Some(
        config
            .agents
            .iter()
            .filter(|(_, agent)| agent.memory.is_none_or(|needed| needed.as_u64() <= free))
            .map(|(name, _)| name.clone())
            .collect(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(text: &str) -> Config {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        std::io::Write::write_all(&mut file, text.as_bytes()).unwrap();
        Config::load(Some(file.path()), vec![], crate::config::Flags::default()).unwrap()
    }

    fn usage(cpu: f64, used_gib: u64, total_gib: u64) -> pb::ResourceUsage {
        pb::ResourceUsage {
            cpu_percent: cpu,
            memory_used_bytes: used_gib << 30,
            memory_total_bytes: total_gib << 30,
            attempts: vec![],
        }
    }

    #[test]
    fn a_busy_host_claims_nothing_and_a_free_one_claims_what_fits() {
        let config = config(
            "[admission]\nmax_cpu_percent = 80\nmax_memory_percent = 90\n[agents.small]\ncommand = [\"x\"]\nmemory = \"1GiB\"\n[agents.big]\ncommand = [\"x\"]\nmemory = \"8GiB\"\n[agents.any]\ncommand = [\"x\"]\n",
        );
        assert_eq!(admissible(&config, &usage(85.0, 1, 16)), Some(vec![]), "CPU over the limit");
        assert_eq!(admissible(&config, &usage(10.0, 15, 16)), Some(vec![]), "memory over the limit");
        assert_eq!(admissible(&config, &usage(10.0, 12, 16)), Some(vec!["any".to_owned(), "small".to_owned()]));
        assert_eq!(
            admissible(&config, &usage(10.0, 2, 16)),
            Some(vec!["any".to_owned(), "big".to_owned(), "small".to_owned()])
        );
    }

    #[test]
    fn a_limit_of_100_percent_is_no_limit() {
        let config = config("[admission]\nmax_cpu_percent = 100\n[agents.a]\ncommand = [\"x\"]\n");
        assert_eq!(admissible(&config, &usage(100.0, 1, 16)), None);
    }

    #[test]
    fn without_estimates_every_agent_is_admissible_below_the_limits() {
        let config = config("[agents.a]\ncommand = [\"x\"]\n");
        assert_eq!(admissible(&config, &usage(10.0, 1, 16)), None);
    }
}
