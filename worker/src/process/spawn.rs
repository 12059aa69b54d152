//! Building an agent's command: its own process group, `kill_on_drop`, a
//! cleared environment plus an explicit allowlist, the `HIVE_*` variables, and
//! the prompt delivered as configured (never through a shell string).

use std::ffi::OsString;
use std::process::Stdio;

use tokio::process::Command;

use crate::config::{AgentConfig, PromptMode};
use crate::process::supervise::Exit;
use crate::process::workdir::Scratch;

/// Variables passed from the worker's environment to every agent.
pub(crate) const BASE_ALLOWLIST: &[&str] =
    &["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR", "TERM"];

/// What identifies an attempt to its agent.
#[derive(Debug, Clone)]
pub(crate) struct HiveVars {
    /// `HIVE_TASK_ID`.
    pub task_id: String,
    /// `HIVE_ATTEMPT_ID`.
    pub attempt_id: String,
    /// `HIVE_COORDINATOR`.
    pub coordinator: String,
    /// `HIVE_TOKEN`: the attempt's own token (locks of this attempt, nothing
    /// else); empty when the coordinator runs without auth.
    pub agent_token: hive_shared::config::Secret<String>,
    /// Further `HIVE_*` variables (`HIVE_STAGE`, `HIVE_ROUND`, `HIVE_RESUME_SESSION`, `HIVE_TLS_CA`).
    pub extra: Vec<(&'static str, String)>,
}

/// What an agent's kind adds to its configured command for one attempt.
#[derive(Debug, Clone, Default)]
pub(crate) struct Launch {
    /// Arguments after the configured ones (and before a `prompt = "arg"` prompt).
    pub args: Vec<String>,
    /// Variables set after the agent's own `env`.
    pub env: Vec<(&'static str, OsString)>,
    /// The working folder, instead of the agent's `workdir` or the scratch folder.
    pub cwd: Option<std::path::PathBuf>,
}

/// Builds the command for one attempt; `inherited` is the worker's own environment.
pub(crate) fn command(
    agent: &AgentConfig,
    prompt: &str,
    vars: &HiveVars,
    scratch: &Scratch,
    launch: &Launch,
    inherited: impl Fn(&str) -> Option<OsString>,
) -> Command {
    let (program, args) = agent.command.split_first().map_or(("", &[][..]), |(program, args)| (program.as_str(), args));
    let mut command = Command::new(program);
    command.args(args).args(&launch.args);
    if agent.prompt == PromptMode::Arg {
        command.arg(prompt);
    }

    command.env_clear();
    for name in BASE_ALLOWLIST.iter().copied().chain(agent.pass_env.iter().map(String::as_str)) {
        if let Some(value) = inherited(name) {
            command.env(name, value);
        }
    }
    command.envs(&agent.env);
    command.envs(launch.env.iter().map(|(name, value)| (name, value)));
    command
        .env("HIVE_TASK_ID", &vars.task_id)
        .env("HIVE_ATTEMPT_ID", &vars.attempt_id)
        .env("HIVE_COORDINATOR", &vars.coordinator)
        .env("HIVE_TOKEN", vars.agent_token.expose())
        .env("HIVE_RESULT_FILE", &scratch.result_file)
        .env("HIVE_WORK_DIR", &scratch.dir);
    for (variable, path) in &scratch.files {
        command.env(variable, path);
    }
    for (variable, value) in &vars.extra {
        command.env(variable, value);
    }
    match agent.prompt {
        PromptMode::File => {
            command.env("HIVE_PROMPT_FILE", &scratch.prompt_file);
        }
        PromptMode::Env => {
            command.env("HIVE_PROMPT", prompt);
        }
        PromptMode::Stdin | PromptMode::Arg => {}
    }

    command
        .current_dir(launch.cwd.as_ref().or(agent.workdir.as_ref()).unwrap_or(&scratch.dir))
        .stdin(if agent.prompt == PromptMode::Stdin { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    command
}

/// How a failed spawn of `agent` ends its attempt: the task's fault only when
/// its prompt, passed as an argument or variable, made the command line too
/// long; otherwise the worker's (its program or working folder is missing,
/// or the host is out of resources).
pub(crate) fn not_started(agent: &AgentConfig, err: &std::io::Error) -> Exit {
    let program = agent.command.first().map_or("", String::as_str);
    let prompt_on_command_line = matches!(agent.prompt, PromptMode::Arg | PromptMode::Env);
    if prompt_on_command_line && err.raw_os_error() == Some(nix::errno::Errno::E2BIG as i32) {
        let problem = format!(
            "cannot start `{program}`: its arguments and environment are longer than the system allows \
             (a long prompt needs the agent's `prompt = \"file\"` or `\"stdin\"`)"
        );
        return Exit::NotStarted { problem, worker_fault: false };
    }
    let problem = match crate::preflight::problem(agent) {
        Some(found) => format!("cannot start `{program}`: {found}"),
        None => format!("cannot start `{program}`: {err}"),
    };
    Exit::NotStarted { problem, worker_fault: true }
}
