//! claude: the real Claude Code CLI as Hive runs it (`kind = "claude-code"`),
//! against the tests crate's stand-in for the Messages API (`model-stub`):
//! N tasks through a coordinator and one worker with P slots, set against
//! the same `claude -p --output-format json` commands run bare by `xargs -P
//! P`, each in a folder of its own with a config folder of its own and the
//! prompt on stdin. Each prompt has the stub answer with a `Write` call, then
//! `done`: two model turns and one file written, so a worktree's commit is
//! never empty.
//!
//! Three Hive variants, each right after a bare run of its own (this
//! machine's speed drifts; a ratio needs both sides within a minute), each
//! adding one part to the first: `hive` (a scratch folder per attempt),
//! `hive-resume` (`session = "resume"`: the transcript saved through the
//! coordinator) and `hive-workspace` (a git worktree per attempt, of a
//! repository the size of Hive's own, committed after; each slot's worktree
//! is parked and reused, as the worker does). The worktree variant is also
//! set against a second bare run, the shell loop a user would write to give
//! each agent a worktree of its own (`git worktree add` on a new branch,
//! the CLI, `git add` and `commit`, `git worktree remove`), since Claude
//! Code in a git checkout does more than in a plain folder. A line gives
//! throughput, CPU time per task (the agents' and git's through the worker's
//! waited-for children, the worker's own, the coordinator's; PostgreSQL's is
//! not counted), steadier than throughput when other work shares the
//! machine, and the mean attempt in three legs, from the claim's time in the
//! database and the worker's own log: `prepare` (claim to agent start:
//! scratch and config folders, the worktree's checkout and clean, session
//! load), `agent` (spawn, cgroup, the CLI's run, the last session save) and
//! `finish` (exit to the outcome recorded: the result read, commit, diff,
//! the worktree detached and cleaned, the report).
//!
//! Opt-in (`--workloads claude`): it needs the CLI (`scripts/setup`) and
//! takes minutes; without the CLI it says so and is skipped.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use hive_shared::pb;
use serde_json::Value;
use tokio::process::{Child, Command};

use super::{admin, busy_seconds};
use crate::cpu::{Cpu, ticks_per_second};
use crate::stack::{Binaries, Database, Hive, wait_succeeded};
use crate::stats::emit;

/// Where `scripts/setup` installs the pinned CLI.
const DEFAULT_CLI: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../tools/node_modules/.bin/claude");

/// Variables a worker passes from its own environment to every agent
/// (`hive-worker`'s allowlist); the bare runs get the same.
const BASE_ALLOWLIST: [&str; 9] = ["PATH", "HOME", "USER", "LOGNAME", "LANG", "LC_ALL", "TZ", "TMPDIR", "TERM"];

/// The worker logs only its attempts' start and end lines, which the legs are read from.
const WORKER_LOG_FILTER: &str = "warn,hive_worker::attempt=info";

/// One bare run: the CLI as the worker starts it (flags, config folder,
/// session id, prompt on stdin), in the run's own folder.
const BARE_RUN: &str = r#"run="$BENCH_RUNS/$1"
cd "$run/work" && CLAUDE_CONFIG_DIR="$run/config" exec "$BENCH_CLAUDE" -p --output-format json \
  --permission-mode acceptEdits --allowedTools Write --session-id "$2" <"$run/prompt" >"$run/result.json"
"#;

/// One task as a user's shell loop gives each agent a worktree of its own:
/// a worktree of `$BENCH_REPO` on a new branch, the CLI run there, what it
/// left committed, the worktree removed.
const BARE_RUN_WORKTREE: &str = r#"run="$BENCH_RUNS/$1"
git -C "$BENCH_REPO" worktree add --quiet -b "bare/$2" "$run/work" HEAD || exit 1
cd "$run/work" && CLAUDE_CONFIG_DIR="$run/config" "$BENCH_CLAUDE" -p --output-format json \
  --permission-mode acceptEdits --allowedTools Write --session-id "$2" <"$run/prompt" >"$run/result.json"
git add --all && git -c user.name=bench -c user.email=bench@localhost commit --quiet --no-verify -m "task $1"
cd / && git -C "$BENCH_REPO" worktree remove --force "$run/work"
"#;

/// The bare runs: `xargs -P $1` over the list `$3` of run folders and
/// session ids, then the shell's own `/proc` stat line, whose children's CPU
/// time is that of xargs and every run.
const BARE_ALL: &str = r#"xargs -P "$1" -n 2 sh "$2" <"$3"
read -r stat </proc/$$/stat
echo "$stat"
"#;

/// The claude workload's flags.
#[derive(Debug, Clone, clap::Args)]
pub struct Settings {
    /// Claude workload: tasks per run (each Hive variant and each bare run).
    #[arg(long = "claude-tasks", default_value_t = 100)]
    pub tasks: usize,
    /// Claude workload: agents at once, for Hive (one worker's slots) and `xargs -P` alike.
    #[arg(long = "claude-parallelism", default_value_t = 4)]
    pub parallelism: usize,
    /// Claude workload: the Claude Code CLI.
    #[arg(long = "claude-cli", default_value = DEFAULT_CLI)]
    pub cli: PathBuf,
}

/// What Hive adds around the agent: one part more than [`Variant::Scratch`] each.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Variant {
    /// A scratch folder per attempt.
    Scratch,
    /// The session saved for a retry to resume.
    Resume,
    /// A git worktree per attempt.
    Workspace,
}

impl Variant {
    const ALL: [Self; 3] = [Self::Scratch, Self::Resume, Self::Workspace];

    fn peer(self) -> &'static str {
        match self {
            Self::Scratch => "hive",
            Self::Resume => "hive-resume",
            Self::Workspace => "hive-workspace",
        }
    }

    fn has_workspace(self) -> bool {
        self == Self::Workspace
    }

    fn resumes(self) -> bool {
        self == Self::Resume
    }
}

/// Runs the bare runs and the three Hive variants, and prints a line for each.
///
/// # Errors
/// When a part fails to start.
pub async fn run(db: &Database, binaries: &Binaries, settings: &Settings) -> anyhow::Result<()> {
    let stub_program = binaries.worker.with_file_name("model-stub");
    if !settings.cli.is_file() {
        eprintln!(
            "workload claude skipped: no Claude Code CLI at {} (scripts/setup installs it; or pass --claude-cli)",
            settings.cli.display()
        );
        return Ok(());
    }
    if !stub_program.is_file() {
        eprintln!("workload claude skipped: {} is missing (cargo build --release --bins)", stub_program.display());
        return Ok(());
    }
    let dir = db.dir.join("claude");
    std::fs::create_dir_all(&dir)?;
    let cli_version = cli_version(&settings.cli, &dir.join("version-config")).await?;
    let mut stub = Stub::start(&stub_program).await?;
    let repo = repository(&dir.join("repo")).await?;
    let env = stub.agent_env();
    for variant in Variant::ALL {
        let plain = bare(settings, &dir.join(format!("bare-before-{}", variant.peer())), &env, None).await?;
        plain.emit(settings, &cli_version, variant);
        // A worktree per task, as the shell loop a user would write does it.
        let in_worktrees = if variant.has_workspace() {
            let folder = dir.join("bare-worktrees-before-hive-workspace");
            let bare = bare(settings, &folder, &env, Some(&repo)).await?;
            bare.emit(settings, &cli_version, variant);
            Some(bare)
        } else {
            None
        };
        let references = References { plain, in_worktrees };
        hive(db, binaries, settings, variant, &repo, &env, &references).await?;
    }
    stub.stop().await;
    Ok(())
}

/// The prompt of task `index`: the stub asks for a `Write` of a file, then answers `done`.
fn prompt(index: usize) -> String {
    format!("WRITE notes-{index}.md note {index}, written by the agent")
}

/// The model stub, serving on a port of its own until stopped.
struct Stub {
    child: Child,
    url: String,
}

impl Stub {
    async fn start(program: &Path) -> anyhow::Result<Self> {
        let port = hivectl::local_pg::free_port()?;
        // It prints every request body on stderr (75 KB each): not kept.
        let child = Command::new(program)
            .arg(port.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .process_group(0)
            .kill_on_drop(true)
            .spawn()
            .with_context(|| format!("start {}", program.display()))?;
        let deadline = Instant::now() + Duration::from_secs(10);
        let mut ticks = tokio::time::interval(Duration::from_millis(20));
        while tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_err() {
            ensure!(Instant::now() < deadline, "the model stub did not come up on port {port}");
            ticks.tick().await;
        }
        Ok(Self { child, url: format!("http://127.0.0.1:{port}") })
    }

    /// The variables that point the CLI at the stub, as the tests set them.
    fn agent_env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("ANTHROPIC_BASE_URL", self.url.clone()),
            ("ANTHROPIC_API_KEY", "sk-ant-bench".into()),
            ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1".into()),
            ("CLAUDE_CODE_MAX_RETRIES", "0".into()),
        ]
    }

    async fn stop(&mut self) {
        let _ = self.child.start_kill();
        let _ = self.child.wait().await;
    }
}

/// `claude --version`'s first word, with a config folder of the bench's (`config_dir`).
async fn cli_version(cli: &Path, config_dir: &Path) -> anyhow::Result<String> {
    let mut command = Command::new(cli);
    command.arg("--version").env("CLAUDE_CONFIG_DIR", config_dir).env("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC", "1");
    let output = command.stdin(Stdio::null()).output().await?;
    ensure!(output.status.success(), "{} --version failed: {}", cli.display(), output.status);
    let text = String::from_utf8_lossy(&output.stdout);
    Ok(text.split_whitespace().next().unwrap_or("unknown").to_owned())
}

/// A repository about the size of Hive's own (350 files, 2 MB) with one commit on `main`.
async fn repository(repo: &Path) -> anyhow::Result<PathBuf> {
    // A folder kept from an earlier run (`--dir`) is made again.
    let _ = std::fs::remove_dir_all(repo);
    for folder in 0..35 {
        let folder_path = repo.join(format!("module_{folder}"));
        std::fs::create_dir_all(&folder_path)?;
        for file in 0..10 {
            let line = format!("// module {folder}, file {file}: text for the checkout to write\n");
            std::fs::write(folder_path.join(format!("file_{file}.rs")), line.repeat(6_000 / line.len()))?;
        }
    }
    for args in [
        &["init", "--quiet", "--initial-branch=main"][..],
        &["add", "--all"],
        &["-c", "user.name=bench", "-c", "user.email=bench@localhost", "commit", "--quiet", "-m", "start"],
    ] {
        let status = Command::new("git").arg("-C").arg(repo).args(args).stdin(Stdio::null()).status().await?;
        ensure!(status.success(), "git {args:?} in {} failed: {status}", repo.display());
    }
    Ok(repo.to_path_buf())
}

/// The bare runs a Hive variant is set against, run just before it.
struct References {
    /// In plain folders.
    plain: Bare,
    /// In a worktree per task (the worktree variant only).
    in_worktrees: Option<Bare>,
}

/// A bare run's figures.
struct Bare {
    /// Whether each task ran in a worktree of its own.
    worktrees: bool,
    done: usize,
    wall_s: f64,
    /// CPU time of xargs and its runs, in seconds.
    cpu_s: f64,
}

impl Bare {
    fn tasks_per_s(&self) -> f64 {
        self.done as f64 / self.wall_s
    }

    fn cpu_ms_per_task(&self) -> f64 {
        self.cpu_s * 1000.0 / self.done.max(1) as f64
    }

    fn emit(&self, settings: &Settings, cli_version: &str, next: Variant) {
        emit(
            "bare",
            "claude",
            &[
                ("tasks", settings.tasks.to_string()),
                ("done", self.done.to_string()),
                ("complete", (self.done == settings.tasks).to_string()),
                ("tasks_per_s", format!("{:.3}", self.tasks_per_s())),
                ("wall_s", format!("{:.3}", self.wall_s)),
                ("cpu_ms_per_task", format!("{:.0}", self.cpu_ms_per_task())),
                ("parallelism", settings.parallelism.to_string()),
                ("settings", format!("xargs-P,worktrees={},cli={cli_version},before={}", self.worktrees, next.peer())),
            ],
        );
    }
}

/// Runs the tasks' commands with `xargs -P` (folders, prompts and session
/// ids made first, untimed), each in a worktree of `repo` of its own when
/// given, and counts the runs whose result is `done`.
async fn bare(settings: &Settings, dir: &Path, env: &[(&str, String)], repo: Option<&Path>) -> anyhow::Result<Bare> {
    // Results kept from an earlier run (`--dir`) must not count.
    let _ = std::fs::remove_dir_all(dir);
    let runs = dir.join("runs");
    let mut list = String::new();
    for index in 0..settings.tasks {
        let run = runs.join(index.to_string());
        if repo.is_none() {
            std::fs::create_dir_all(run.join("work"))?;
        }
        std::fs::create_dir_all(run.join("config"))?;
        std::fs::write(run.join("prompt"), prompt(index))?;
        list.push_str(&format!("{index} {}\n", uuid::Uuid::new_v4()));
    }
    let (script, list_file) = (dir.join("run.sh"), dir.join("runs.txt"));
    std::fs::write(&script, if repo.is_some() { BARE_RUN_WORKTREE } else { BARE_RUN })?;
    std::fs::write(&list_file, list)?;
    let mut command = Command::new("sh");
    command
        .args(["-c", BARE_ALL, "bare", &settings.parallelism.to_string()])
        .args([&script, &list_file])
        .stdin(Stdio::null())
        .stderr(std::fs::File::create(dir.join("xargs.log"))?)
        .env_clear();
    for name in BASE_ALLOWLIST {
        if let Some(value) = std::env::var_os(name) {
            command.env(name, value);
        }
    }
    command.envs(env.iter().map(|(name, value)| (name, value)));
    command.env("BENCH_RUNS", &runs).env("BENCH_CLAUDE", &settings.cli);
    if let Some(repo) = repo {
        command.env("BENCH_REPO", repo);
    }
    let started = Instant::now();
    // A failed run makes xargs exit 123; the count of clean results says how many.
    let output = command.output().await.context("run xargs")?;
    let wall_s = started.elapsed().as_secs_f64();
    let cpu_s = Cpu::parse(&String::from_utf8_lossy(&output.stdout), ticks_per_second())?.children;
    let done =
        (0..settings.tasks).filter(|index| clean_result(&runs.join(index.to_string()).join("result.json"))).count();
    Ok(Bare { worktrees: repo.is_some(), done, wall_s, cpu_s })
}

/// Whether a run printed a result without error whose text is the stub's `done`.
fn clean_result(path: &Path) -> bool {
    let Some(result) = std::fs::read(path).ok().and_then(|bytes| serde_json::from_slice::<Value>(&bytes).ok()) else {
        return false;
    };
    result["is_error"] == Value::Bool(false) && result["result"] == "done"
}

/// The worker's config after its `slots` and `work_dir`: JSON logs and the Claude Code agent.
fn agent_config(settings: &Settings, variant: Variant, repo: &Path, env: &[(&str, String)]) -> String {
    // A JSON string is a TOML basic string.
    let quote = |text: &str| Value::from(text).to_string();
    let mut config = format!(
        "log_format = \"json\"\n\n[agents.claude]\nkind = \"claude-code\"\ncommand = [{}]\n\
         allowed_tools = [\"Write\"]\ntimeout = \"5m\"\n\n[agents.claude.env]\n",
        quote(&settings.cli.to_string_lossy())
    );
    for (name, value) in env {
        config.push_str(&format!("{name} = {}\n", quote(value)));
    }
    if variant.has_workspace() {
        config.push_str(&format!("\n[agents.claude.workspace]\nrepo = {}\n", quote(&repo.to_string_lossy())));
    }
    config
}

/// Runs one Hive variant and prints its line, with its ratios to the bare run just before it.
async fn hive(
    db: &Database,
    binaries: &Binaries,
    settings: &Settings,
    variant: Variant,
    repo: &Path,
    env: &[(&str, String)],
    references: &References,
) -> anyhow::Result<()> {
    let (url, pool) = db.fresh(&format!("bench_claude_{}", variant.peer().replace('-', "_"))).await?;
    let dir = db.dir.join(format!("claude-{}", variant.peer()));
    std::fs::create_dir_all(&dir)?;
    let mut hive = Hive::start(binaries, &url, &dir, &[]).await?;
    submit(&hive.url, settings.tasks, variant.resumes()).await?;
    let coordinator_before = Cpu::of(hive.coordinator_pid())?;
    let go = Instant::now();
    let config = agent_config(settings, variant, repo, env);
    hive.start_workers_logging(1, settings.parallelism, &config, WORKER_LOG_FILTER)?;
    let deadline = Duration::from_secs(60) + Duration::from_secs(3).saturating_mul(u32::try_from(settings.tasks)?);
    let done = wait_succeeded(&pool, deadline).await?;
    let wall_from_go_s = go.elapsed().as_secs_f64();
    let worker = Cpu::of(hive.worker_pid(0))?;
    let coordinator_s = Cpu::of(hive.coordinator_pid())?.own - coordinator_before.own;
    let (changed, sessions): (i64, i64) = sqlx::query_as(
        "select (select count(*) from attempts where outcome = 'succeeded' and result->'workspace'->>'diffstat' <> ''),
                (select count(*) from task_sessions)",
    )
    .fetch_one(&pool)
    .await?;
    let run = HiveRun {
        done: usize::try_from(done)?,
        busy_s: busy_seconds(&pool).await?,
        wall_from_go_s,
        worker,
        coordinator_s,
        legs: Legs::measure(&pool, &hive.worker_log(0)).await?,
        changed,
        sessions,
    };
    run.emit(settings, variant, references);
    db.print_totals(&pool, &format!("claude {}", variant.peer())).await?;
    hive.stop().await;
    Ok(())
}

/// A Hive variant's figures.
struct HiveRun {
    done: usize,
    busy_s: f64,
    wall_from_go_s: f64,
    /// The worker's CPU time: its own, and its agents' and git's.
    worker: Cpu,
    /// The coordinator's CPU time from the workers' start, in seconds.
    coordinator_s: f64,
    legs: Legs,
    /// Successes whose workspace commit changed something.
    changed: i64,
    /// Sessions saved through the coordinator.
    sessions: i64,
}

impl HiveRun {
    fn emit(&self, settings: &Settings, variant: Variant, references: &References) {
        let bare = &references.plain;
        let per_task = |seconds: f64| seconds * 1000.0 / self.done.max(1) as f64;
        let cpu_ms = per_task(self.worker.own + self.worker.children + self.coordinator_s);
        let tasks_per_s = self.done as f64 / self.busy_s;
        let workspace = if variant.has_workspace() { "worktree" } else { "none" };
        let session = if variant.resumes() { "resume" } else { "fresh" };
        let mut fields = vec![
            ("tasks", settings.tasks.to_string()),
            ("done", self.done.to_string()),
            ("complete", (self.done == settings.tasks).to_string()),
            ("tasks_per_s", format!("{tasks_per_s:.3}")),
            ("bare_tasks_per_s", format!("{:.3}", bare.tasks_per_s())),
            ("ratio_to_bare", format!("{:.3}", tasks_per_s / bare.tasks_per_s())),
            ("cpu_ms_per_task", format!("{cpu_ms:.0}")),
            ("bare_cpu_ms_per_task", format!("{:.0}", bare.cpu_ms_per_task())),
            ("cpu_ratio_to_bare", format!("{:.3}", bare.cpu_ms_per_task() / cpu_ms)),
            ("agents_cpu_ms_per_task", format!("{:.0}", per_task(self.worker.children))),
            ("worker_cpu_ms_per_task", format!("{:.0}", per_task(self.worker.own))),
            ("coordinator_cpu_ms_per_task", format!("{:.0}", per_task(self.coordinator_s))),
            ("prepare_mean_ms", format!("{:.1}", self.legs.prepare_ms)),
            ("agent_mean_ms", format!("{:.1}", self.legs.agent_ms)),
            ("finish_mean_ms", format!("{:.1}", self.legs.finish_ms)),
            ("legs_of", self.legs.attempts.to_string()),
            ("commits_with_change", self.changed.to_string()),
            ("sessions_saved", self.sessions.to_string()),
            ("busy_s", format!("{:.3}", self.busy_s)),
            ("wall_from_go_s", format!("{:.3}", self.wall_from_go_s)),
            ("parallelism", settings.parallelism.to_string()),
            ("settings", format!("workers=1,workspace={workspace},session={session}")),
        ];
        if let Some(reference) = &references.in_worktrees {
            fields.extend([
                ("bare_worktrees_tasks_per_s", format!("{:.3}", reference.tasks_per_s())),
                ("ratio_to_bare_worktrees", format!("{:.3}", tasks_per_s / reference.tasks_per_s())),
                ("cpu_ratio_to_bare_worktrees", format!("{:.3}", reference.cpu_ms_per_task() / cpu_ms)),
            ]);
        }
        emit(variant.peer(), "claude", &fields);
    }
}

/// Submits `n` tasks for the `claude` agent, one attempt each (a failure shows as a task not done).
async fn submit(url: &str, n: usize, resume: bool) -> anyhow::Result<()> {
    let session = if resume { pb::SessionPolicy::Resume } else { pb::SessionPolicy::Fresh };
    let tasks = (0..n)
        .map(|index| pb::TaskSpec {
            agent: "claude".into(),
            prompt: prompt(index),
            max_attempts: 1,
            session: session.into(),
            ..Default::default()
        })
        .collect();
    let request = pb::SubmitTasksRequest { swarm: "claude".into(), tasks, ..Default::default() };
    admin(url).await?.submit_tasks(request).await?;
    Ok(())
}

/// The mean legs of the successful attempts, in milliseconds.
struct Legs {
    /// Attempts found both in the database and in the worker's log.
    attempts: usize,
    /// Claim (the database's time) to the worker's `agent starting`.
    prepare_ms: f64,
    /// `agent starting` to `agent succeeded`.
    agent_ms: f64,
    /// `agent succeeded` to the outcome recorded (the database's time).
    finish_ms: f64,
}

impl Legs {
    /// Reads the attempts' start and exit from the worker's JSON log and
    /// their claim and end from the database; the clocks are the host's.
    async fn measure(pool: &sqlx::PgPool, worker_log: &Path) -> anyhow::Result<Self> {
        let text = tokio::fs::read_to_string(worker_log).await?;
        let (mut started, mut exited) = (HashMap::new(), HashMap::new());
        for event in text.lines().filter_map(|line| serde_json::from_str::<Value>(line).ok()) {
            let at = event["timestamp"].as_str().and_then(|at| chrono::DateTime::parse_from_rfc3339(at).ok());
            let (Some(attempt), Some(at)) = (event["span"]["attempt_id"].as_str(), at) else { continue };
            let seconds = at.timestamp_micros() as f64 / 1e6;
            match event["fields"]["message"].as_str() {
                Some("agent starting") => started.insert(attempt.to_owned(), seconds),
                Some("agent succeeded") => exited.insert(attempt.to_owned(), seconds),
                _ => None,
            };
        }
        let ended: Vec<(String, f64, f64)> = sqlx::query_as(
            "select id::text, extract(epoch from started_at)::float8, extract(epoch from finished_at)::float8
             from attempts where outcome = 'succeeded'",
        )
        .fetch_all(pool)
        .await?;
        let mut sums = [0.0; 3];
        let mut attempts = 0;
        for (id, claimed, recorded) in ended {
            let (Some(start), Some(exit)) = (started.get(&id), exited.get(&id)) else { continue };
            for (sum, leg) in sums.iter_mut().zip([start - claimed, exit - start, recorded - exit]) {
                *sum += leg * 1000.0;
            }
            attempts += 1;
        }
        let [prepare_ms, agent_ms, finish_ms] = sums.map(|sum| sum / attempts as f64);
        Ok(Self { attempts, prepare_ms, agent_ms, finish_ms })
    }
}
