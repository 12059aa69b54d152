//! What a worker checks before it offers an agent: that the agent's program
//! can be found and executed and that its working folder exists. An agent
//! that fails is not offered (and `--check-config` fails naming it), so a
//! misconfigured host never claims tasks it can only fail.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::path::{Path, PathBuf};

use nix::unistd::{AccessFlags, access};

use crate::config::{AgentConfig, Config};

/// Agents of `config` that cannot run on this host, each with the reason.
pub(crate) fn unusable_agents(config: &Config) -> BTreeMap<String, String> {
    config
        .agents
        .iter()
        .filter(|(_, agent)| agent.builtin.is_none())
        .filter_map(|(name, agent)| problem(agent).map(|problem| (name.clone(), problem)))
        .collect()
}

/// Why `agent` cannot run here, if it cannot.
pub(crate) fn problem(agent: &AgentConfig) -> Option<String> {
    if let Some(workdir) = &agent.workdir
        && !workdir.is_dir()
    {
        return Some(format!("its workdir {} does not exist or is not a folder", workdir.display()));
    }
    let program = agent.command.first()?;
    let path = agent.env.get("PATH").map(OsString::from).or_else(|| std::env::var_os("PATH"));
    match resolve(program, path.as_deref()) {
        Some(found) if access(&found, AccessFlags::X_OK).is_ok() => None,
        Some(found) => Some(format!("its program {} is not executable", found.display())),
        None if program.contains('/') => Some(format!("its program {program} does not exist")),
        None => Some(format!("its program `{program}` is not on PATH")),
    }
}

/// Where `program` is: itself when it names a path, else the first match on `path`.
fn resolve(program: &str, path: Option<&std::ffi::OsStr>) -> Option<PathBuf> {
    if program.contains('/') {
        return Path::new(program).is_file().then(|| PathBuf::from(program));
    }
    std::env::split_paths(path?).map(|dir| dir.join(program)).find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn agent(command: &[&str], workdir: Option<&Path>) -> AgentConfig {
        let mut agent: AgentConfig = serde_json::from_str(r#"{"command": ["x"]}"#).unwrap();
        agent.command = command.iter().map(|part| (*part).to_owned()).collect();
        agent.workdir = workdir.map(Path::to_path_buf);
        agent
    }

    #[test]
    fn a_program_on_path_or_by_path_passes() {
        assert_eq!(problem(&agent(&["sh", "-c", "true"], None)), None);
        assert_eq!(problem(&agent(&["/bin/sh"], None)), None);
    }

    #[test]
    fn a_missing_program_a_plain_file_and_a_missing_workdir_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("missing-agent");
        assert!(problem(&agent(&[missing.to_str().unwrap()], None)).unwrap().contains("does not exist"));
        assert!(problem(&agent(&["no-such-agent-on-path"], None)).unwrap().contains("is not on PATH"));
        let plain = dir.path().join("plain");
        std::fs::write(&plain, "#!/bin/sh\n").unwrap();
        assert!(problem(&agent(&[plain.to_str().unwrap()], None)).unwrap().contains("not executable"));
        let gone = dir.path().join("gone");
        let found = problem(&agent(&["sh"], Some(&gone))).unwrap();
        assert!(found.contains("workdir") && found.contains("gone"), "{found}");
    }
}
