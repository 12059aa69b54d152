//! CPU time of a process, from `/proc/<pid>/stat`: its own, and that of the
//! children it waited for (with theirs), so a parent's figure covers every
//! short-lived agent and git process it ran.

use anyhow::Context;

/// CPU time (user and system), in seconds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Cpu {
    /// The process's own.
    pub own: f64,
    /// Its ended children's that it waited for, and theirs.
    pub children: f64,
}

impl Cpu {
    /// Reads it for `pid`.
    ///
    /// # Errors
    /// When the process is gone or its stat line cannot be read.
    pub fn of(pid: Option<u32>) -> anyhow::Result<Self> {
        let pid = pid.context("the process has exited")?;
        let stat =
            std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("read /proc/{pid}/stat"))?;
        Self::parse(&stat, ticks_per_second())
    }

    /// Reads a `/proc/<pid>/stat` line: utime, stime, cutime and cstime are
    /// its 14th to 17th fields, in clock ticks.
    ///
    /// # Errors
    /// When the line is too short or a field is not a number.
    pub fn parse(stat: &str, ticks_per_second: f64) -> anyhow::Result<Self> {
        // The command name, in parentheses, may hold spaces and parentheses: count from after it.
        let (_, after_name) = stat.rsplit_once(')').context("no command name in a /proc stat line")?;
        let ticks: Vec<f64> =
            after_name.split_whitespace().skip(11).take(4).map(str::parse).collect::<Result<_, _>>()?;
        let [utime, stime, cutime, cstime] = ticks[..] else { anyhow::bail!("a /proc stat line too short: {stat}") };
        Ok(Self { own: (utime + stime) / ticks_per_second, children: (cutime + cstime) / ticks_per_second })
    }
}

/// The clock ticks `/proc` counts in (`USER_HZ`).
pub fn ticks_per_second() -> f64 {
    nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK).ok().flatten().unwrap_or(100) as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_lines_give_own_and_children_time() {
        let line = "42 (sh (x) y) S 1 42 42 0 -1 4194560 100 200 0 0 150 50 1234 766 20 0 1 0 5 0 0\n";
        assert_eq!(Cpu::parse(line, 100.0).unwrap(), Cpu { own: 2.0, children: 20.0 });
        assert!(Cpu::parse("42 (sh) S 1", 100.0).is_err());
    }
}
