//! Worker config files for scenario tests, built from typed settings and
//! written as TOML by a serializer, so a test reads as the worker it
//! describes and the shell scripts of its agents need no escaping.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use hive_worker::config::{AgentKind, PromptMode};
use serde::Serialize;

/// A worker's settings and agents; unset settings keep the worker's defaults.
#[derive(Debug, Clone, Default, Serialize)]
pub struct WorkerSetup {
    work_dir: Option<PathBuf>,
    slots: Option<u32>,
    prefetch: Option<u32>,
    claim_wait: Option<String>,
    drain_grace: Option<String>,
    keep_work_dirs: Option<bool>,
    labels: BTreeMap<String, String>,
    admission: Option<AdmissionSetup>,
    http: Option<HttpSetup>,
    agents: BTreeMap<String, Agent>,
}

/// The `[http]` table.
#[derive(Debug, Clone, Default, Serialize)]
struct HttpSetup {
    listen: String,
}

/// The `[admission]` table.
#[derive(Debug, Clone, Default, Serialize)]
struct AdmissionSetup {
    min_free_disk: Option<String>,
}

/// One agent of a [`WorkerSetup`]; unset settings keep the worker's defaults.
#[derive(Debug, Clone, Serialize)]
pub struct Agent {
    kind: Option<AgentKind>,
    command: Vec<String>,
    prompt: Option<PromptMode>,
    env: BTreeMap<String, String>,
    timeout: Option<String>,
    kill_grace: Option<String>,
    memory: Option<String>,
    session_regex: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pass_env: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    allowed_tools: Vec<String>,
    workdir: Option<PathBuf>,
    provider: Option<String>,
    account: Option<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    rate_limit_exit_codes: Vec<i32>,
    workspace: Option<WorkspaceSetup>,
    stall_timeout: Option<String>,
    on_stall: Option<String>,
}

/// An agent's `[workspace]` table; unset settings keep the worker's defaults.
#[derive(Debug, Clone, Serialize)]
pub struct WorkspaceSetup {
    repo: String,
    push: Option<String>,
    fetch_interval: Option<String>,
}

impl WorkspaceSetup {
    /// A worktree of `repo` (a path or a URL) per attempt.
    pub fn new(repo: &str) -> Self {
        Self { repo: repo.to_owned(), push: None, fetch_interval: None }
    }

    /// The remote each task's branch is pushed to when its attempt succeeds.
    #[must_use]
    pub fn push(mut self, remote: &str) -> Self {
        self.push = Some(remote.to_owned());
        self
    }

    /// How old a URL's mirror's last fetch may be, as a humantime string.
    #[must_use]
    pub fn fetch_interval(mut self, interval: &str) -> Self {
        self.fetch_interval = Some(interval.to_owned());
        self
    }
}

impl WorkerSetup {
    /// A worker with the default settings and no agents.
    pub fn new() -> Self {
        Self::default()
    }

    /// Agents run at once.
    #[must_use]
    pub fn slots(mut self, slots: u32) -> Self {
        self.slots = Some(slots);
        self
    }

    /// Tasks claimed beyond the free slots.
    #[must_use]
    pub fn prefetch(mut self, prefetch: u32) -> Self {
        self.prefetch = Some(prefetch);
        self
    }

    /// Longest claim long-poll, as a humantime string (`"60s"`).
    #[must_use]
    pub fn claim_wait(mut self, wait: &str) -> Self {
        self.claim_wait = Some(wait.to_owned());
        self
    }

    /// How long running agents may finish on SIGTERM, as a humantime string.
    #[must_use]
    pub fn drain_grace(mut self, grace: &str) -> Self {
        self.drain_grace = Some(grace.to_owned());
        self
    }

    /// Each attempt's scratch folder is its own and stays.
    #[must_use]
    pub fn keep_work_dirs(mut self) -> Self {
        self.keep_work_dirs = Some(true);
        self
    }

    /// A label tasks may require.
    #[must_use]
    pub fn label(mut self, key: &str, value: &str) -> Self {
        self.labels.insert(key.to_owned(), value.to_owned());
        self
    }

    /// Free disk space below which the worker claims nothing (`"1PiB"`).
    #[must_use]
    pub fn min_free_disk(mut self, size: &str) -> Self {
        self.admission = Some(AdmissionSetup { min_free_disk: Some(size.to_owned()) });
        self
    }

    /// Serve `/metrics` on `address` (`http.listen`).
    #[must_use]
    pub fn http_listen(mut self, address: std::net::SocketAddr) -> Self {
        self.http = Some(HttpSetup { listen: address.to_string() });
        self
    }

    /// An agent the worker can run, by name.
    #[must_use]
    pub fn agent(mut self, name: &str, agent: Agent) -> Self {
        self.agents.insert(name.to_owned(), agent);
        self
    }

    /// The config file's text, without a work folder.
    ///
    /// # Panics
    /// When the settings cannot be written as TOML (a bug in this module).
    pub fn to_toml(&self) -> String {
        toml::to_string(self).expect("worker settings serialize as TOML")
    }

    /// Writes the config as `<dir>/<name>.toml`, with a work folder of its
    /// own (`<dir>/<name>-work`), and returns its path.
    ///
    /// # Panics
    /// When the file cannot be written.
    pub fn write(&self, dir: &Path, name: &str) -> PathBuf {
        let path = dir.join(format!("{name}.toml"));
        let setup = Self { work_dir: Some(dir.join(format!("{name}-work"))), ..self.clone() };
        std::fs::write(&path, setup.to_toml()).expect("write worker config");
        path
    }
}

impl Agent {
    /// An agent started as `argv` (no shell involved).
    pub fn command<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        Self {
            kind: None,
            command: argv.into_iter().map(Into::into).collect(),
            prompt: None,
            env: BTreeMap::new(),
            timeout: None,
            kill_grace: None,
            memory: None,
            session_regex: None,
            pass_env: Vec::new(),
            allowed_tools: Vec::new(),
            workdir: None,
            provider: None,
            account: None,
            rate_limit_exit_codes: Vec::new(),
            workspace: None,
            stall_timeout: None,
            on_stall: None,
        }
    }

    /// A Claude Code agent (`kind = "claude-code"`) started as `argv`.
    pub fn claude_code<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> Self {
        Self { kind: Some(AgentKind::ClaudeCode), ..Self::command(argv) }
    }

    /// Tools a Claude Code agent may use without asking.
    #[must_use]
    pub fn allowed_tools(mut self, tools: &[&str]) -> Self {
        self.allowed_tools = tools.iter().map(|tool| (*tool).to_owned()).collect();
        self
    }

    /// The agent's working folder (instead of its attempt's scratch folder).
    #[must_use]
    pub fn workdir(mut self, dir: &Path) -> Self {
        self.workdir = Some(dir.to_path_buf());
        self
    }

    /// The provider account it calls, whose cool-down a rate limit starts.
    #[must_use]
    pub fn account(mut self, provider: &str, account: &str) -> Self {
        self.provider = Some(provider.to_owned());
        self.account = Some(account.to_owned());
        self
    }

    /// A git worktree of `repo` per attempt as its working folder.
    #[must_use]
    pub fn workspace(self, repo: &str) -> Self {
        self.workspace_setup(WorkspaceSetup::new(repo))
    }

    /// A git worktree per attempt as its working folder, as `setup` says.
    #[must_use]
    pub fn workspace_setup(mut self, setup: WorkspaceSetup) -> Self {
        self.workspace = Some(setup);
        self
    }

    /// Exit codes that mean its provider refused it for a rate limit.
    #[must_use]
    pub fn rate_limit_exit_codes(mut self, codes: &[i32]) -> Self {
        self.rate_limit_exit_codes = codes.to_vec();
        self
    }

    /// A variable passed through from the worker's environment.
    #[must_use]
    pub fn pass_env(mut self, name: &str) -> Self {
        self.pass_env.push(name.to_owned());
        self
    }

    /// An agent that is the shell script `script` (`sh -c script`).
    pub fn shell(script: impl Into<String>) -> Self {
        Self::command(["sh".to_owned(), "-c".to_owned(), script.into()])
    }

    /// How the prompt is handed over.
    #[must_use]
    pub fn prompt(mut self, mode: PromptMode) -> Self {
        self.prompt = Some(mode);
        self
    }

    /// A variable set for the agent.
    #[must_use]
    pub fn env(mut self, name: &str, value: impl Into<String>) -> Self {
        self.env.insert(name.to_owned(), value.into());
        self
    }

    /// Time limit per attempt, as a humantime string.
    #[must_use]
    pub fn timeout(mut self, limit: &str) -> Self {
        self.timeout = Some(limit.to_owned());
        self
    }

    /// Wait between TERM and KILL, as a humantime string.
    #[must_use]
    pub fn kill_grace(mut self, grace: &str) -> Self {
        self.kill_grace = Some(grace.to_owned());
        self
    }

    /// Memory one run needs, with its unit (`"100TiB"`).
    #[must_use]
    pub fn memory(mut self, size: &str) -> Self {
        self.memory = Some(size.to_owned());
        self
    }

    /// No progress for this long (a humantime string) is a stall, which
    /// `on_stall` (`"ignore"` or `"retry"`) handles.
    #[must_use]
    pub fn stall(mut self, timeout: &str, on_stall: &str) -> Self {
        self.stall_timeout = Some(timeout.to_owned());
        self.on_stall = Some(on_stall.to_owned());
        self
    }

    /// Finds the agent's session id in its output.
    #[must_use]
    pub fn session_regex(mut self, regex: &str) -> Self {
        self.session_regex = Some(regex.to_owned());
        self
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

    use std::time::Duration;

    use hive_worker::config::{Config, Flags};

    use super::*;

    #[test]
    fn the_worker_reads_back_what_the_setup_says_quotes_and_all() {
        let script = r#"echo "{\"ok\": true}" 'it''s' \\ $HOME"#;
        let dir = tempfile::tempdir().unwrap();
        let path = WorkerSetup::new()
            .slots(3)
            .prefetch(8)
            .claim_wait("60s")
            .drain_grace("1500ms")
            .label("gpu", "true")
            .agent(
                "quoted",
                Agent::shell(script)
                    .prompt(PromptMode::File)
                    .env("LEDGER", "/tmp/a \"b\"")
                    .timeout("5s")
                    .kill_grace("200ms")
                    .memory("1GiB")
                    .session_regex(r"session: (\S+)"),
            )
            .agent("plain", Agent::command(["true"]))
            .write(dir.path(), "worker");

        let config = Config::load(Some(&path), [], Flags::default()).unwrap();

        assert_eq!((config.slots, config.prefetch), (3, 8));
        assert_eq!((config.claim_wait, config.drain_grace), (Duration::from_secs(60), Duration::from_millis(1500)));
        assert_eq!(config.labels.get("gpu").map(String::as_str), Some("true"));
        assert_eq!(config.work_dir, dir.path().join("worker-work"));
        let quoted = &config.agents["quoted"];
        assert_eq!(quoted.command, ["sh", "-c", script]);
        assert_eq!(quoted.prompt, PromptMode::File);
        assert_eq!(quoted.env["LEDGER"], "/tmp/a \"b\"");
        assert_eq!((quoted.timeout, quoted.kill_grace), (Duration::from_secs(5), Duration::from_millis(200)));
        assert_eq!(quoted.memory.map(|size| size.as_u64()), Some(1 << 30));
        assert_eq!(quoted.session_regex.as_deref(), Some(r"session: (\S+)"));
        assert_eq!(config.agents["plain"].command, ["true"]);
    }
}
