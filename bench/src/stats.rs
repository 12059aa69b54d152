//! Percentiles and the peers' `key=value` result lines.

/// The `p`-th percentile (0–100) of sorted values, nearest rank.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

/// Monotonic clock in nanoseconds (CLOCK_MONOTONIC, shared by every process on the host).
pub fn monotonic_ns() -> i64 {
    nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |now| now.tv_sec() * 1_000_000_000 + now.tv_nsec())
}

/// CLOCK_REALTIME minus CLOCK_MONOTONIC, in nanoseconds: moves a wall-clock
/// time (PostgreSQL's `now()`) onto the monotonic timeline.
pub fn realtime_offset_ns() -> i64 {
    let realtime = nix::time::clock_gettime(nix::time::ClockId::CLOCK_REALTIME)
        .map_or(0, |now| now.tv_sec() * 1_000_000_000 + now.tv_nsec());
    realtime - monotonic_ns()
}

/// Prints one result line: `peer=PEER workload=NAME key=value …`.
pub fn emit(peer: &str, workload: &str, fields: &[(&str, String)]) {
    let mut line = format!("peer={peer} workload={workload}");
    for (key, value) in fields {
        line.push_str(&format!(" {key}={value}"));
    }
    let _ = std::io::Write::write_all(&mut std::io::stdout(), format!("{line}\n").as_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_use_the_nearest_rank() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(percentile(&values, 50.0), 50.0);
        assert_eq!(percentile(&values, 99.0), 99.0);
        assert_eq!(percentile(&values, 100.0), 100.0);
        assert_eq!(percentile(&[7.0], 99.0), 7.0);
    }
}
