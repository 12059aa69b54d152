//! The worker's configuration: defaults in code, then `--config FILE` (TOML),
//! then `HIVE_WORKER__*` variables, then flags. Names the agents this worker
//! can run and how each is started. `validate` lists every problem at once.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use bytesize::ByteSize;
use hive_shared::config::ConfigError;
use hive_shared::telemetry::LogFormat;
use hive_shared::traces::ExportConfig;
use serde::{Deserialize, Serialize};

use crate::workspace::remote::{self, Source};

/// Prefix of the environment variables that set config keys (`__` separates levels).
pub const ENV_PREFIX: &str = "HIVE_WORKER__";

/// Everything the worker can be configured with.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    /// Coordinator URL (`http://host:50051`, or `https://` for TLS).
    pub coordinator: String,
    /// File holding the worker's token (`hive_w_…`); without it, `$HIVE_TOKEN`.
    pub token_file: Option<PathBuf>,
    /// TLS files, for an `https://` coordinator.
    pub tls: TlsConfig,
    /// Name shown to operators; defaults to the host name.
    pub name: String,
    /// Agents run at once.
    pub slots: u32,
    /// Tasks claimed beyond the free slots and held here until a slot frees
    /// (their leases are kept by heartbeats): fewer, larger claims for short
    /// tasks. 0 claims only what can start at once.
    pub prefetch: u32,
    /// Folder under which each attempt gets a scratch folder.
    pub work_dir: PathBuf,
    /// Keep attempt scratch folders after they finish (for debugging).
    pub keep_work_dirs: bool,
    /// Run each attempt in a cgroup v2 of its own (its scratch folder's,
    /// made under the worker's cgroup), where the worker may write there;
    /// turn it off where that cgroup is another program's to manage (a
    /// systemd unit without `Delegate=yes`).
    pub cgroups: bool,
    /// Longest a claim long-poll waits before asking again.
    #[serde(with = "humantime_serde")]
    pub claim_wait: Duration,
    /// On SIGTERM: how long running agents may finish before they are stopped.
    #[serde(with = "humantime_serde")]
    pub drain_grace: Duration,
    /// Log line format.
    pub log_format: LogFormat,
    /// Output shipping.
    pub logs: LogShipping,
    /// Labels tasks may require (e.g. gpu = "true", region = "eu").
    pub labels: BTreeMap<String, String>,
    /// When the host is too busy to take more work.
    pub admission: Admission,
    /// The HTTP listener for `/metrics`.
    pub http: HttpConfig,
    /// Where traces go: from the standard `OTEL_*` variables, not the file
    /// (see `hive_shared::traces`); none exports nothing.
    #[serde(skip)]
    pub traces: Option<ExportConfig>,
    /// The agents, by name.
    pub agents: BTreeMap<String, AgentConfig>,
}

/// The worker's HTTP listener: `/metrics` (Prometheus text format), with no
/// token, so bind it to loopback or a network only the scrapers reach.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to serve HTTP on; none (the default) serves no HTTP.
    pub listen: Option<std::net::SocketAddr>,
}

/// The worker's TLS files (PEM; relative paths are relative to the folder
/// the worker starts in). Flags `--tls-ca`, `--tls-cert`, `--tls-key`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct TlsConfig {
    /// CA bundle the coordinator's certificate must chain to; without it, the system's roots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ca: Option<PathBuf>,
    /// Client certificate, for coordinators that require one (it must name
    /// this worker's `name` or its host name).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cert: Option<PathBuf>,
    /// Key of `cert`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key: Option<PathBuf>,
}

impl TlsConfig {
    /// The files as a client's TLS settings.
    pub fn client_tls(&self) -> hive_shared::client::ClientTls {
        hive_shared::client::ClientTls {
            ca: self.ca.clone(),
            cert: self.cert.clone(),
            key: self.key.clone(),
            server_name: None,
        }
    }
}

/// Host limits at or above which the worker claims nothing new; 100 means no limit.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Admission {
    /// Host CPU use (percent of all cores); off by default, since other
    /// processes on the host count too.
    pub max_cpu_percent: f64,
    /// Host memory use (percent).
    pub max_memory_percent: f64,
    /// Free space `work_dir`'s disk must have; below it the worker claims
    /// nothing (0 turns the check off).
    pub min_free_disk: ByteSize,
}

impl Default for Admission {
    fn default() -> Self {
        Self { max_cpu_percent: 100.0, max_memory_percent: 95.0, min_free_disk: ByteSize::gib(1) }
    }
}

/// How agent output travels to the coordinator.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogShipping {
    /// Largest chunk read from an agent's pipe at once.
    pub chunk_size: ByteSize,
    /// Most output held in memory waiting to ship before readers wait.
    pub buffer: ByteSize,
    /// How often buffered output is sent.
    #[serde(with = "humantime_serde")]
    pub flush_interval: Duration,
}

/// How a task's prompt reaches its agent; never spliced into a shell string.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptMode {
    /// Written to the agent's standard input, which is then closed.
    Stdin,
    /// Written to a file whose path is in `$HIVE_PROMPT_FILE`.
    File,
    /// Put in `$HIVE_PROMPT`.
    Env,
    /// Appended to the command as one argument.
    Arg,
}

/// Whether a kind of failure is worth retrying (for exit codes not listed as
/// transient, and for timeouts).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UnlistedExit {
    /// Retry it.
    Transient,
    /// Do not retry it.
    Permanent,
}

/// Executors built into the worker, for measuring Hive itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Builtin {
    /// Succeeds at once, without a process, with `{"started_ns": <CLOCK_MONOTONIC>}`:
    /// measures the coordinator, not process spawning.
    Noop,
}

/// What kind of program an agent is, which decides how it is started and
/// how its result and failures are read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum AgentKind {
    /// Any command: the prompt as configured, the result in
    /// `$HIVE_RESULT_FILE` or stdout's last JSON line, failures by exit code.
    #[default]
    Command,
    /// Claude Code (`claude -p`): the worker adds `--output-format json` and
    /// its session flags, gives each attempt its own config folder, reads
    /// `total_cost_usd` and `is_error`, classes API errors by status, and
    /// saves the session's transcript for `session = "resume"`.
    ClaudeCode,
}

/// One agent: how to start it and how to read its failures.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfig {
    /// What kind of program it is.
    #[serde(default)]
    pub kind: AgentKind,
    /// Program and arguments (no shell involved unless you name one).
    #[serde(default)]
    pub command: Vec<String>,
    /// A built-in executor instead of a command (for benchmarks).
    #[serde(default)]
    pub builtin: Option<Builtin>,
    /// How the prompt is handed over.
    #[serde(default = "default_prompt")]
    pub prompt: PromptMode,
    /// Time limit per attempt, unless the task sets its own.
    #[serde(default = "default_timeout", with = "humantime_serde")]
    pub timeout: Duration,
    /// After TERM, how long before KILL.
    #[serde(default = "default_kill_grace", with = "humantime_serde")]
    pub kill_grace: Duration,
    /// Working folder; defaults to the attempt's scratch folder.
    #[serde(default)]
    pub workdir: Option<PathBuf>,
    /// Variables set for the agent (the environment is otherwise cleared).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Variables passed through from the worker's own environment.
    #[serde(default)]
    pub pass_env: Vec<String>,
    /// Exit codes that mean "try again later".
    #[serde(default = "default_transient_codes")]
    pub transient_exit_codes: Vec<i32>,
    /// What other non-zero exit codes mean.
    #[serde(default = "default_unlisted")]
    pub unlisted_exit_codes: UnlistedExit,
    /// What running past the time limit means.
    #[serde(default = "default_on_timeout")]
    pub on_timeout: UnlistedExit,
    /// Memory one run needs; a task is claimed only while this much is free.
    #[serde(default)]
    pub memory: Option<ByteSize>,
    /// Finds the agent's session id in its output (the first capture group of
    /// the last matching line), when its result has no `session_id`.
    #[serde(default)]
    pub session_regex: Option<String>,
    /// Claude Code: the model (`--model`); unset, Claude Code's default.
    #[serde(default)]
    pub model: Option<String>,
    /// Claude Code: `--permission-mode` (`acceptEdits`, `bypassPermissions`,
    /// `default`, `plan`); unset, `acceptEdits`, so the agent may edit its
    /// working folder.
    #[serde(default)]
    pub permission_mode: Option<String>,
    /// Claude Code: tools it may use without asking (`--allowedTools`, e.g.
    /// `["Bash(git *)", "Write"]`).
    #[serde(default)]
    pub allowed_tools: Vec<String>,
    /// The model provider it calls (`anthropic` for Claude Code unless set):
    /// a rate limit from it cools down its account for the whole fleet.
    #[serde(default)]
    pub provider: Option<String>,
    /// Its account at the provider (`default` unless set).
    #[serde(default)]
    pub account: Option<String>,
    /// Exit codes that mean the provider refused it for a rate limit.
    #[serde(default)]
    pub rate_limit_exit_codes: Vec<i32>,
    /// A pattern in the end of its stderr that means the provider refused it
    /// for a rate limit (e.g. `"429|rate limit"`).
    #[serde(default)]
    pub rate_limit_pattern: Option<String>,
    /// A git worktree per attempt as its working folder, its change the result.
    #[serde(default)]
    pub workspace: Option<WorkspaceConfig>,
    /// An attempt whose agent shows no progress for this long is stalled:
    /// no output, no change in its working folder, no CPU use by its process
    /// group and no progress report (`hivectl progress`). Unset, stalls are
    /// not watched for.
    #[serde(default, with = "humantime_serde")]
    pub stall_timeout: Option<Duration>,
    /// What a stall leads to (`retry` unless set).
    #[serde(default)]
    pub on_stall: Option<OnStall>,
}

/// What happens to an attempt whose agent stalls.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnStall {
    /// It is shown as stalled (`hivectl tasks show`, `hivectl status`) and left to run.
    Ignore,
    /// Its agent is stopped and the task retried, as a transient failure.
    Retry,
}

/// A git worktree per attempt (`[agents.NAME.workspace]`); see the README.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WorkspaceConfig {
    /// The repository: a path on this host (relative to the config file),
    /// or a URL (`https://`, `http://`, `ssh://`, `git://`, `file://`,
    /// `user@host:path`) the worker mirrors on this host.
    pub repo: String,
    /// What a task's branch starts from (a branch, tag or commit); `HEAD`
    /// unless set. For a URL, the upstream's branch of that name first
    /// (`origin/<base>`), and the upstream's default branch unless set.
    #[serde(default)]
    pub base: Option<String>,
    /// Branch names: this, then the task id.
    #[serde(default = "default_branch_prefix")]
    pub branch_prefix: String,
    /// A remote to push each task's branch to when its attempt succeeds
    /// (for a URL, `origin` is the URL).
    #[serde(default)]
    pub push: Option<String>,
    /// Keep worktrees after attempts end (with `keep_work_dirs`, whose
    /// scratch folders they live in then).
    #[serde(default)]
    pub keep: bool,
    /// Largest patch the result carries; the whole change is on the branch.
    #[serde(default = "default_max_patch")]
    pub max_patch: ByteSize,
    /// For a URL: the folder of the host's mirrors (a bare repository per
    /// URL, shared by the workers on the host that name the same folder);
    /// `<work_dir>/mirrors` unless set.
    #[serde(default)]
    pub mirror_dir: Option<PathBuf>,
    /// For a URL: how old the mirror's last fetch may be when an attempt
    /// starts; `60s` unless set.
    #[serde(default, with = "humantime_serde")]
    pub fetch_interval: Option<Duration>,
}

/// How old a mirror's last fetch may be, unless `fetch_interval` says.
const DEFAULT_FETCH_INTERVAL: Duration = Duration::from_secs(60);

impl WorkspaceConfig {
    /// How old the mirror's last fetch may be when an attempt starts.
    pub fn fetch_interval(&self) -> Duration {
        self.fetch_interval.unwrap_or(DEFAULT_FETCH_INTERVAL)
    }
}

/// Shows `repo` and `push` without the credentials a URL may carry: the
/// effective config is logged.
impl std::fmt::Debug for WorkspaceConfig {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("WorkspaceConfig")
            .field("repo", &crate::workspace::remote::redact(&self.repo))
            .field("base", &self.base)
            .field("branch_prefix", &self.branch_prefix)
            .field("push", &self.push.as_deref().map(remote::redact))
            .field("keep", &self.keep)
            .field("max_patch", &self.max_patch)
            .field("mirror_dir", &self.mirror_dir)
            .field("fetch_interval", &self.fetch_interval)
            .finish()
    }
}

fn default_branch_prefix() -> String {
    "hive/".to_owned()
}
fn default_max_patch() -> ByteSize {
    ByteSize::mib(1)
}

impl AgentConfig {
    /// Its provider account, `provider/account`, when it names a provider
    /// (Claude Code always does: `anthropic` unless set).
    pub fn provider_account(&self) -> Option<String> {
        let provider = match (&self.provider, self.kind) {
            (Some(provider), _) => provider.as_str(),
            (None, AgentKind::ClaudeCode) => "anthropic",
            (None, AgentKind::Command) => return None,
        };
        Some(format!("{provider}/{}", self.account.as_deref().unwrap_or("default")))
    }
}

fn default_prompt() -> PromptMode {
    PromptMode::Stdin
}
fn default_timeout() -> Duration {
    Duration::from_secs(30 * 60)
}
fn default_kill_grace() -> Duration {
    Duration::from_secs(10)
}
fn default_transient_codes() -> Vec<i32> {
    vec![75] // EX_TEMPFAIL
}
fn default_unlisted() -> UnlistedExit {
    UnlistedExit::Permanent
}
fn default_on_timeout() -> UnlistedExit {
    UnlistedExit::Transient
}

impl Default for Config {
    fn default() -> Self {
        Self {
            coordinator: "http://127.0.0.1:50051".into(),
            token_file: None,
            tls: TlsConfig::default(),
            name: String::new(),
            slots: 4,
            prefetch: 0,
            work_dir: std::env::temp_dir().join("hive-worker"),
            keep_work_dirs: false,
            cgroups: true,
            claim_wait: Duration::from_secs(20),
            drain_grace: Duration::from_secs(30),
            log_format: LogFormat::Text,
            logs: LogShipping::default(),
            labels: BTreeMap::new(),
            admission: Admission::default(),
            http: HttpConfig::default(),
            traces: None,
            agents: BTreeMap::new(),
        }
    }
}

impl Default for LogShipping {
    fn default() -> Self {
        Self { chunk_size: ByteSize::kib(32), buffer: ByteSize::mib(16), flush_interval: Duration::from_millis(200) }
    }
}

/// The settings that also have flags (and environment variables).
#[derive(Debug, Default, Serialize)]
pub struct Flags {
    /// `--coordinator` / `HIVE_COORDINATOR`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub coordinator: Option<String>,
    /// `--name`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// `--token-file` / `HIVE_TOKEN_FILE`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub token_file: Option<PathBuf>,
    /// `--slots`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub slots: Option<u32>,
    /// `--tls-ca`, `--tls-cert`, `--tls-key` (and `HIVE_TLS_*`).
    pub tls: TlsConfig,
}

impl Config {
    /// Loads the layered config and validates it.
    ///
    /// # Errors
    /// Every unreadable, unknown or invalid setting, each named.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        flags: Flags,
    ) -> Result<Self, ConfigError> {
        let env: Vec<(String, String)> = env.into_iter().collect();
        let mut config: Self = hive_shared::config::load(file, env.clone(), ENV_PREFIX, flags, Self::validate)?;
        config.traces = ExportConfig::from_env("hive-worker", env).map_err(|problems| ConfigError { problems })?;
        if let Some(base) = file.and_then(Path::parent) {
            config.resolve_relative_paths(base);
        }
        Ok(config)
    }

    /// Makes relative paths in agent commands (`./agent.sh`, `agents/x`),
    /// agents' working folders and the worker's `work_dir` relative to the
    /// config file's folder, not to wherever the worker was started (each
    /// agent runs in its own scratch folder). Bare program names (`sh`) stay
    /// as they are and are looked up on `PATH`.
    fn resolve_relative_paths(&mut self, base: &Path) {
        let base = std::path::absolute(base).unwrap_or_else(|_| base.to_path_buf());
        if self.work_dir.is_relative() {
            self.work_dir = base.join(&self.work_dir);
        }
        for agent in self.agents.values_mut() {
            if let Some(program) = agent.command.first_mut()
                && program.contains('/')
                && Path::new(program.as_str()).is_relative()
            {
                *program = base.join(program.as_str()).to_string_lossy().into_owned();
            }
            if let Some(workdir) = agent.workdir.as_mut()
                && workdir.is_relative()
            {
                *workdir = base.join(&*workdir);
            }
            if let Some(workspace) = agent.workspace.as_mut() {
                if let Ok(Source::Path(repo)) = remote::parse(&workspace.repo)
                    && repo.is_relative()
                {
                    workspace.repo = base.join(repo).to_string_lossy().into_owned();
                }
                if let Some(mirrors) = workspace.mirror_dir.as_mut()
                    && mirrors.is_relative()
                {
                    *mirrors = base.join(&*mirrors);
                }
            }
        }
    }

    /// Agents that cannot run on this host (their program or working folder
    /// is missing), each with the reason; the worker does not offer them.
    pub fn unusable_agents(&self) -> BTreeMap<String, String> {
        crate::preflight::unusable_agents(self)
    }

    /// Lists every problem with this config; empty when it is usable.
    pub fn validate(&self) -> Vec<String> {
        let mut problems = Vec::new();
        if !(self.coordinator.starts_with("http://") || self.coordinator.starts_with("https://")) {
            problems.push(format!("coordinator: `{}` must start with http:// or https://", self.coordinator));
        }
        if self.tls.cert.is_some() != self.tls.key.is_some() {
            problems.push("tls.cert and tls.key must be set together (the client certificate and its key)".into());
        }
        let any_tls = self.tls.ca.is_some() || self.tls.cert.is_some();
        if any_tls && !self.coordinator.starts_with("https://") {
            problems.push(format!("tls: TLS files are set but the coordinator `{}` is not https://", self.coordinator));
        }
        if !(1..=1024).contains(&self.slots) {
            problems.push(format!("slots: {} must be between 1 and 1024", self.slots));
        }
        if self.agents.is_empty() {
            problems.push("agents: at least one agent is required ([agents.NAME] with a command)".into());
        }
        if self.logs.chunk_size.as_u64() == 0 || self.logs.chunk_size > ByteSize::mib(1) {
            problems.push("logs.chunk_size must be between 1 byte and 1 MiB".into());
        }
        if self.logs.buffer < self.logs.chunk_size {
            problems.push("logs.buffer must be at least logs.chunk_size".into());
        }
        for (name, agent) in &self.agents {
            problems.extend(agent_problems(name, agent));
            if agent.workspace.as_ref().is_some_and(|workspace| workspace.keep) && !self.keep_work_dirs {
                problems.push(format!(
                    "agents.{name}.workspace.keep: needs keep_work_dirs = true (kept worktrees live in the scratch folders)"
                ));
            }
        }
        for (key, value) in &self.labels {
            let key_ok = !key.is_empty()
                && key.len() <= 63
                && key.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
            let value_ok = value.len() <= 63 && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
            if !(key_ok && value_ok) {
                problems.push(format!("labels.{key}: `{key}={value}` is not a label (letters, digits, - _ . / in the name; - _ . in the value)"));
            }
        }
        for (name, limit) in [
            ("max_cpu_percent", self.admission.max_cpu_percent),
            ("max_memory_percent", self.admission.max_memory_percent),
        ] {
            if !(1.0..=100.0).contains(&limit) {
                problems.push(format!("admission.{name}: {limit} must be between 1 and 100"));
            }
        }
        problems
    }
}

/// Shortest `stall_timeout`; it must also be longer than two of the
/// coordinator's heartbeat intervals, checked once registered
/// ([`stall_timeout_problems`]).
const MIN_STALL_TIMEOUT: Duration = Duration::from_secs(1);

/// Agents whose stall timeout is not longer than two heartbeat intervals:
/// their progress reports reach the worker with its beats, so a shorter
/// timeout would call an agent stalled whose report is on its way.
pub fn stall_timeout_problems(config: &Config, heartbeat: Duration) -> Vec<String> {
    config
        .agents
        .iter()
        .filter_map(|(name, agent)| {
            let timeout = agent.stall_timeout?;
            (timeout <= heartbeat * 2).then(|| {
                format!(
                    "agents.{name}.stall_timeout: {} must be longer than two of the coordinator's heartbeat intervals ({} each)",
                    humantime::format_duration(timeout),
                    humantime::format_duration(heartbeat)
                )
            })
        })
        .collect()
}

fn agent_problems(name: &str, agent: &AgentConfig) -> Vec<String> {
    let mut problems = Vec::new();
    let valid_name = !name.is_empty()
        && name.len() <= 128
        && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.:/@".contains(c));
    if !valid_name {
        problems.push(format!("agents.{name}: the name must be 1-128 letters, digits or - _ . : / @"));
    }
    if [crate::unavailable::WORK_DIR, crate::unavailable::DISK].contains(&name) {
        problems
            .push(format!("agents.{name}: the name is reserved (it names the worker's {name} in `hivectl workers`)"));
    }
    match agent.command.first() {
        None if agent.builtin.is_some() => {}
        None => problems.push(format!("agents.{name}.command: must name a program")),
        Some(program) if program.is_empty() => problems.push(format!("agents.{name}.command[0]: must not be empty")),
        Some(_) => {}
    }
    if agent.timeout.is_zero() {
        problems.push(format!("agents.{name}.timeout: must be greater than zero"));
    }
    if let Some(key) = agent.env.keys().find(|key| key.starts_with("HIVE_")) {
        problems.push(format!("agents.{name}.env.{key}: HIVE_* variables are set by the worker"));
    }
    if let Some(key) = agent.pass_env.iter().find(|key| key.starts_with("HIVE_")) {
        problems.push(format!(
            "agents.{name}.pass_env: {key}: HIVE_* variables are the worker's own (its token must never reach an agent)"
        ));
    }
    if let Some(pattern) = &agent.session_regex
        && let Err(err) = regex::Regex::new(pattern)
    {
        problems.push(format!("agents.{name}.session_regex: {err}"));
    }
    if let Some(code) = agent.transient_exit_codes.iter().find(|code| !(1..=255).contains(*code)) {
        problems.push(format!("agents.{name}.transient_exit_codes: {code} is not an exit code (1-255)"));
    }
    for (key, value) in [("provider", &agent.provider), ("account", &agent.account)] {
        if let Some(value) = value
            && (value.is_empty()
                || value.len() > 100
                || !value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c)))
        {
            problems.push(format!("agents.{name}.{key}: `{value}` must be 1-100 letters, digits or - _ . @"));
        }
    }
    if agent.account.is_some() && agent.provider_account().is_none() {
        problems.push(format!("agents.{name}.account: needs a provider"));
    }
    let rate_limits = !agent.rate_limit_exit_codes.is_empty() || agent.rate_limit_pattern.is_some();
    if rate_limits && agent.provider_account().is_none() {
        problems.push(format!(
            "agents.{name}: rate_limit_exit_codes and rate_limit_pattern need a provider (whose account cools down)"
        ));
    }
    if let Some(code) = agent.rate_limit_exit_codes.iter().find(|code| !(1..=255).contains(*code)) {
        problems.push(format!("agents.{name}.rate_limit_exit_codes: {code} is not an exit code (1-255)"));
    }
    if let Some(pattern) = &agent.rate_limit_pattern
        && let Err(err) = regex::Regex::new(pattern)
    {
        problems.push(format!("agents.{name}.rate_limit_pattern: {err}"));
    }
    if let Some(workspace) = &agent.workspace {
        problems.extend(workspace_problems(name, workspace));
    }
    match (agent.stall_timeout, agent.on_stall) {
        (Some(timeout), _) if timeout < MIN_STALL_TIMEOUT => problems.push(format!(
            "agents.{name}.stall_timeout: {} is too short to tell a stall (at least {})",
            humantime::format_duration(timeout),
            humantime::format_duration(MIN_STALL_TIMEOUT)
        )),
        (None, Some(_)) => problems.push(format!("agents.{name}.on_stall: needs stall_timeout")),
        _ => {}
    }
    match agent.kind {
        AgentKind::Command => {
            for (key, set) in [
                ("model", agent.model.is_some()),
                ("permission_mode", agent.permission_mode.is_some()),
                ("allowed_tools", !agent.allowed_tools.is_empty()),
            ] {
                if set {
                    problems.push(format!("agents.{name}.{key}: only for kind = \"claude-code\""));
                }
            }
        }
        AgentKind::ClaudeCode => problems.extend(crate::claude_code::config_problems(name, agent)),
    }
    problems
}

fn workspace_problems(name: &str, workspace: &WorkspaceConfig) -> Vec<String> {
    let mut problems = Vec::new();
    let source = remote::parse(&workspace.repo);
    match &source {
        _ if workspace.repo.is_empty() => {
            problems.push(format!("agents.{name}.workspace.repo: must name a git repository or URL"));
        }
        Err(problem) => problems.push(format!("agents.{name}.workspace.repo: {problem}")),
        Ok(Source::Path(repo)) => {
            if !(repo.join(".git").exists() || repo.join("HEAD").is_file()) {
                problems.push(format!("agents.{name}.workspace.repo: {} is not a git repository", repo.display()));
            }
            for (key, set) in
                [("mirror_dir", workspace.mirror_dir.is_some()), ("fetch_interval", workspace.fetch_interval.is_some())]
            {
                if set {
                    problems.push(format!("agents.{name}.workspace.{key}: only for a repository URL"));
                }
            }
        }
        Ok(Source::Url(_)) => {}
    }
    if workspace.fetch_interval.is_some_and(|interval| interval.is_zero()) {
        problems.push(format!("agents.{name}.workspace.fetch_interval: must be greater than zero"));
    }
    let branch_ok = |text: &str| text.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c));
    if !branch_ok(&workspace.branch_prefix) || workspace.branch_prefix.contains("..") {
        problems.push(format!(
            "agents.{name}.workspace.branch_prefix: `{}` may hold only letters, digits and - _ . /",
            workspace.branch_prefix
        ));
    }
    if workspace.max_patch > ByteSize::mib(2) {
        problems.push(format!(
            "agents.{name}.workspace.max_patch: at most 2 MiB (it travels in the task's result, with the agent's own)"
        ));
    }
    for (key, value) in [("base", &workspace.base), ("push", &workspace.push)] {
        if value.as_deref().is_some_and(|value| value.is_empty() || value.starts_with('-')) {
            problems.push(format!("agents.{name}.workspace.{key}: must not be empty or start with -"));
        }
    }
    problems
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    fn load_text(text: &str) -> Result<Config, ConfigError> {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(text.as_bytes()).unwrap();
        Config::load(Some(file.path()), vec![], Flags::default())
    }

    #[test]
    fn the_documented_agent_table_loads() {
        let config = load_text(
            "[agents.echo]\ncommand = [\"sh\", \"-c\", \"cat; echo '{\\\"ok\\\":true}'\"]\nprompt = \"stdin\"\ntimeout = \"10m\"\n",
        )
        .unwrap();
        let echo = &config.agents["echo"];
        assert_eq!(echo.prompt, PromptMode::Stdin);
        assert_eq!(echo.timeout, Duration::from_secs(600));
        assert_eq!(echo.transient_exit_codes, [75]);
    }

    #[test]
    fn flags_override_the_file() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        file.write_all(b"slots = 2\n[agents.a]\ncommand = [\"true\"]\n").unwrap();
        let flags = Flags { slots: Some(7), ..Flags::default() };
        let config = Config::load(Some(file.path()), vec![], flags).unwrap();
        assert_eq!(config.slots, 7);
    }

    #[test]
    fn tls_flags_override_the_file_and_must_fit_the_url() {
        let mut file = tempfile::NamedTempFile::new().unwrap();
        let text = "coordinator = \"https://hive:1\"\n[tls]\nca = \"/file/ca.pem\"\ncert = \"/file/c.pem\"\nkey = \"/file/k.pem\"\n[agents.a]\ncommand = [\"true\"]\n";
        file.write_all(text.as_bytes()).unwrap();
        let tls = TlsConfig { ca: Some("/flag/ca.pem".into()), ..TlsConfig::default() };
        let config = Config::load(Some(file.path()), vec![], Flags { tls, ..Flags::default() }).unwrap();
        assert_eq!(config.tls.ca.as_deref(), Some(Path::new("/flag/ca.pem")));
        assert_eq!(config.tls.cert.as_deref(), Some(Path::new("/file/c.pem")), "unset flags leave the file's keys");

        let env = vec![("HIVE_WORKER__TLS__CERT".to_owned(), "/env/c.pem".to_owned())];
        let err = Config::load(None, env, Flags::default()).unwrap_err().to_string();
        assert!(err.contains("tls.cert and tls.key") && err.contains("is not https://"), "{err}");
    }

    #[test]
    fn every_problem_is_listed() {
        let err = load_text(
            "coordinator = \"localhost:1\"\nslots = 0\n[agents.\"bad name\"]\ncommand = []\ntimeout = \"0s\"\n[agents.x]\ncommand = [\"true\"]\nenv = { HIVE_TASK_ID = \"1\" }\n",
        )
        .unwrap_err();
        let text = err.to_string();
        for needle in
            ["coordinator:", "slots:", "agents.bad name:", "agents.bad name.command", "timeout", "HIVE_TASK_ID"]
        {
            assert!(text.contains(needle), "missing {needle} in {text}");
        }
    }

    #[test]
    fn an_unknown_prompt_mode_is_named() {
        let err = load_text("[agents.a]\ncommand = [\"true\"]\nprompt = \"telepathy\"\n").unwrap_err();
        assert!(err.to_string().contains("telepathy"), "{err}");
    }

    #[test]
    fn an_unknown_kind_and_claude_settings_on_a_plain_command_are_named() {
        let err = load_text("[agents.a]\ncommand = [\"true\"]\nkind = \"gpt\"\n").unwrap_err();
        assert!(err.to_string().contains("gpt") && err.to_string().contains("claude-code"), "{err}");
        let err = load_text("[agents.a]\ncommand = [\"true\"]\nmodel = \"m\"\n").unwrap_err();
        assert!(err.to_string().contains("agents.a.model: only for kind = \"claude-code\""), "{err}");
        let config = load_text("[agents.c]\nkind = \"claude-code\"\ncommand = [\"claude\"]\nmodel = \"m\"\n").unwrap();
        assert_eq!(config.agents["c"].kind, AgentKind::ClaudeCode);
    }

    #[test]
    fn a_workspace_that_is_not_a_git_repository_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let text = format!(
            "[agents.a]\ncommand = [\"true\"]\n[agents.a.workspace]\nrepo = \"{}\"\nbranch_prefix = \"a b\"\nmax_patch = \"5MiB\"\n",
            dir.path().display()
        );
        let err = load_text(&text).unwrap_err().to_string();
        for needle in ["agents.a.workspace.repo", "is not a git repository", "branch_prefix", "max_patch"] {
            assert!(err.contains(needle), "{needle} in {err}");
        }
    }

    #[test]
    fn a_workspace_url_and_its_fetch_interval_are_checked_by_name() {
        let err = load_text(
            "[agents.a]\ncommand = [\"true\"]\n[agents.a.workspace]\nrepo = \"ftp://user:s3cret@example.com/app.git\"\nfetch_interval = \"0s\"\n",
        )
        .unwrap_err()
        .to_string();
        for needle in [
            "agents.a.workspace.repo: `ftp://example.com/app.git` is not a URL git can fetch from",
            "agents.a.workspace.fetch_interval: must be greater than zero",
        ] {
            assert!(err.contains(needle), "{needle} in {err}");
        }
        assert!(!err.contains("s3cret"), "{err}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("repo/.git")).unwrap();
        let text = format!(
            "[agents.a]\ncommand = [\"true\"]\n[agents.a.workspace]\nrepo = \"{}\"\nfetch_interval = \"1m\"\nmirror_dir = \"m\"\n",
            dir.path().join("repo").display()
        );
        let err = load_text(&text).unwrap_err().to_string();
        assert!(!err.contains("is not a git repository"), "{err}");
        for needle in
            ["agents.a.workspace.mirror_dir: only for a repository URL", "agents.a.workspace.fetch_interval: only for"]
        {
            assert!(err.contains(needle), "{needle} in {err}");
        }
    }

    #[test]
    fn a_workspace_url_loads_with_its_mirror_folder_beside_the_config_and_never_shows_its_credentials() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.toml");
        let text = "[agents.a]\ncommand = [\"true\"]\n[agents.a.workspace]\nrepo = \"https://user:s3cret@example.com/app.git\"\nmirror_dir = \"mirrors\"\nfetch_interval = \"5m\"\n";
        std::fs::write(&path, text).unwrap();
        let config = Config::load(Some(&path), vec![], Flags::default()).unwrap();
        let workspace = config.agents["a"].workspace.as_ref().unwrap();
        assert_eq!(workspace.repo, "https://user:s3cret@example.com/app.git", "a URL is not a path to resolve");
        assert_eq!(workspace.mirror_dir.as_deref(), Some(dir.path().join("mirrors").as_path()));
        assert_eq!(workspace.fetch_interval(), Duration::from_secs(300));
        let shown = format!("{config:?}");
        assert!(shown.contains("https://example.com/app.git") && !shown.contains("s3cret"), "{shown}");
        let ssh = "[agents.a]\ncommand = [\"true\"]\n[agents.a.workspace]\nrepo = \"git@example.com:org/app.git\"\n";
        let config = load_text(ssh).unwrap();
        let workspace = config.agents["a"].workspace.as_ref().unwrap();
        assert_eq!(workspace.repo, "git@example.com:org/app.git");
        assert_eq!(workspace.fetch_interval(), Duration::from_secs(60));
    }

    #[test]
    fn stall_settings_are_checked_by_name() {
        let err = load_text("[agents.a]\ncommand = [\"true\"]\nstall_timeout = \"200ms\"\n").unwrap_err();
        assert!(err.to_string().contains("agents.a.stall_timeout: 200ms is too short"), "{err}");
        let err = load_text("[agents.a]\ncommand = [\"true\"]\non_stall = \"ignore\"\n").unwrap_err();
        assert!(err.to_string().contains("agents.a.on_stall: needs stall_timeout"), "{err}");
        let err =
            load_text("[agents.a]\ncommand = [\"true\"]\nstall_timeout = \"5m\"\non_stall = \"nap\"\n").unwrap_err();
        assert!(err.to_string().contains("nap"), "{err}");
        let config =
            load_text("[agents.a]\ncommand = [\"true\"]\nstall_timeout = \"5s\"\non_stall = \"ignore\"\n").unwrap();
        assert_eq!(config.agents["a"].on_stall, Some(OnStall::Ignore));
        assert!(stall_timeout_problems(&config, Duration::from_secs(2)).is_empty());
        let problems = stall_timeout_problems(&config, Duration::from_secs(3));
        assert!(problems[0].contains("agents.a.stall_timeout: 5s must be longer than two"), "{problems:?}");
    }

    #[test]
    fn the_example_configs_load() {
        let examples = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
        for name in ["worker.toml", "claude-code.toml"] {
            let config = Config::load(Some(&examples.join(name)), vec![], Flags::default());
            assert!(config.is_ok(), "{name}: {}", config.err().map(|err| err.to_string()).unwrap_or_default());
        }
    }

    #[test]
    fn relative_agent_paths_follow_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.toml");
        std::fs::write(
            &path,
            "[agents.a]\ncommand = [\"agents/run.sh\"]\n[agents.b]\ncommand = [\"sh\", \"-c\", \"true\"]\n",
        )
        .unwrap();
        let config = Config::load(Some(&path), vec![], Flags::default()).unwrap();
        assert_eq!(config.agents["a"].command[0], dir.path().join("agents/run.sh").to_string_lossy());
        assert_eq!(config.agents["b"].command[0], "sh");
    }

    #[test]
    fn a_relative_work_dir_follows_the_config_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("worker.toml");
        std::fs::write(&path, "work_dir = \"scratch\"\n[agents.a]\ncommand = [\"true\"]\n").unwrap();
        let config = Config::load(Some(&path), vec![], Flags::default()).unwrap();
        assert_eq!(config.work_dir, dir.path().join("scratch"));
    }

    #[test]
    fn a_worker_without_agents_is_refused() {
        let err = Config::load(None, vec![], Flags::default()).unwrap_err();
        assert!(err.to_string().contains("at least one agent"), "{err}");
    }
}
