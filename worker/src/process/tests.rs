//! Agents as real subprocesses: exit codes, prompt delivery, environment
//! scrubbing, output streaming, and stopping whole process trees on timeout
//! and cancel, with nothing left running, not even what left the process
//! group. The test process is a child subreaper, as a worker is, and runs
//! attempts in cgroups of their own where it may make them.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap is the test failing

use std::time::{Duration, Instant};

use std::sync::OnceLock;

use crate::config::{AgentConfig, OnStall, PromptMode, UnlistedExit};
use crate::held::Held;
use crate::process::cgroup::{AgentCgroup, CgroupRoot};
use crate::process::spawn::HiveVars;
use crate::process::stall::StallWatch;
use crate::process::supervise::{self, Exit, Finished, Run};
use crate::process::sweep::{self, Scope, Traces};
use crate::process::workdir::{Folders, Scratch};
use crate::shipper::{LogSink, Shipment};
use hive_shared::ids::{AttemptId, WorkerId};
use hive_shared::pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

fn agent(script: &str, prompt: PromptMode) -> AgentConfig {
    AgentConfig {
        kind: crate::config::AgentKind::Command,
        command: vec!["sh".into(), "-c".into(), script.into()],
        builtin: None,
        prompt,
        timeout: Duration::from_secs(30),
        kill_grace: Duration::from_millis(500),
        workdir: None,
        env: [("AGENT_SETTING".to_owned(), "on".to_owned())].into(),
        pass_env: vec![],
        transient_exit_codes: vec![75],
        unlisted_exit_codes: UnlistedExit::Permanent,
        on_timeout: UnlistedExit::Transient,
        memory: None,
        session_regex: None,
        model: None,
        permission_mode: None,
        allowed_tools: vec![],
        provider: None,
        account: None,
        rate_limit_exit_codes: vec![],
        rate_limit_pattern: None,
        workspace: None,
        stall_timeout: None,
        on_stall: None,
    }
}

struct Ran {
    finished: Finished,
    stdout: String,
    stderr: String,
    elapsed: Duration,
    /// The folder's cgroup, where there was one: what was in it right after
    /// the attempt, and the cgroup (removed since, as a stopping worker does).
    cgroup: Option<(Vec<i32>, AgentCgroup)>,
}

/// Makes the test process a child subreaper, as `hive_worker::run` makes a worker.
fn as_a_worker() {
    sweep::adopt_orphans();
}

/// Where this test process may make attempt cgroups, if anywhere.
fn cgroups() -> Option<&'static CgroupRoot> {
    static ROOT: OnceLock<Option<CgroupRoot>> = OnceLock::new();
    ROOT.get_or_init(|| CgroupRoot::detect().ok()).as_ref()
}

async fn run_agent(agent: &AgentConfig, prompt: &str, timeout: Duration, cancel: &CancellationToken) -> Ran {
    run_agent_with(agent, prompt, timeout, cancel, cgroups(), None).await
}

async fn run_agent_with(
    agent: &AgentConfig,
    prompt: &str,
    timeout: Duration,
    cancel: &CancellationToken,
    cgroups: Option<&CgroupRoot>,
    stall: Option<StallWatch>,
) -> Ran {
    as_a_worker();
    let root = tempfile::tempdir().unwrap();
    // A worker of its own: folders, and so cgroups, are named after their worker.
    let folders = std::sync::Arc::new(Folders::new(
        root.path().to_path_buf(),
        WorkerId::new().to_string(),
        false,
        cgroups.cloned(),
    ));
    let prompt_file = (agent.prompt == PromptMode::File).then_some(prompt);
    let attempt = AttemptId::new();
    let scratch = Scratch::create(&folders, attempt, prompt_file, vec![]).await.unwrap();
    // Unique: the sweep at each attempt's end kills whatever carries its id.
    let attempt_id = attempt.to_string();
    let vars = HiveVars {
        task_id: "task-1".into(),
        attempt_id: attempt_id.clone(),
        coordinator: "http://c:1".into(),
        agent_token: hive_shared::config::Secret::new("hive_t_attempt".into()),
        extra: vec![],
    };
    let (queue, mut shipped) = mpsc::channel(1024);
    let sink = LogSink::new(queue, "task-1".into(), attempt_id.clone());
    let collector = tokio::spawn(async move {
        let (mut stdout, mut stderr) = (Vec::new(), Vec::new());
        while let Some(shipment) = shipped.recv().await {
            if let Shipment::Chunk(chunk) = shipment {
                match chunk.stream() {
                    pb::LogStream::Stderr => stderr.extend(chunk.data),
                    _ => stdout.extend(chunk.data),
                }
            }
        }
        (String::from_utf8(stdout).unwrap(), String::from_utf8(stderr).unwrap())
    });
    let started = Instant::now();
    let run = Run {
        agent,
        prompt,
        vars: &vars,
        launch: &crate::process::spawn::Launch::default(),
        scratch: &scratch,
        timeout,
        chunk_size: 8,
        session_regex: None,
        on_spawn: &|_| {},
        stall,
    };
    let finished = supervise::run(run, sink, cancel).await;
    let elapsed = started.elapsed();
    let cgroup = scratch.cgroup.clone().map(|cgroup| (cgroup.members(), cgroup));
    scratch.finish(&folders).await;
    folders.remove_cgroups().await;
    let (stdout, stderr) = collector.await.unwrap();
    Ran { finished, stdout, stderr, elapsed, cgroup }
}

/// Processes whose command line contains `marker` (ours, by construction).
fn processes_with(marker: &str) -> Vec<String> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        if let Ok(cmdline) = std::fs::read(entry.path().join("cmdline")) {
            let cmdline = String::from_utf8_lossy(&cmdline).replace('\0', " ");
            if cmdline.contains(marker) && !cmdline.contains("processes_with") {
                found.push(format!("{}: {cmdline}", entry.file_name().to_string_lossy()));
            }
        }
    }
    found
}

async fn assert_gone(marker: &str) {
    let what = format!("every process with {marker} to end");
    super::eventually(&what, Duration::from_secs(5), || processes_with(marker).is_empty()).await;
}

#[tokio::test]
async fn exit_codes_output_and_the_last_json_line_come_back() {
    let script = "echo progress; echo oops >&2; echo '{\"answer\": 42}'; echo trailing; exit 3";
    let ran =
        run_agent(&agent(script, PromptMode::Stdin), "", Duration::from_secs(10), &CancellationToken::new()).await;
    assert_eq!(ran.finished.exit, Exit::Code(3));
    assert_eq!(ran.stdout, "progress\n{\"answer\": 42}\ntrailing\n");
    assert_eq!(ran.stderr, "oops\n");
    assert_eq!(ran.finished.stderr_tail, "oops");
    assert_eq!(ran.finished.stdout_json.unwrap()["answer"], 42);
}

#[tokio::test]
async fn prompts_arrive_verbatim_by_every_mode_and_never_through_a_shell() {
    let dir = tempfile::tempdir().unwrap();
    let canary = dir.path().join("pwned");
    let prompt = format!(
        "$(touch {}) `touch {}` ; echo \"quoted\" 'single' \\ back\nline two",
        canary.display(),
        canary.display()
    );
    let cases = [
        (PromptMode::Stdin, "cat"),
        (PromptMode::File, "cat \"$HIVE_PROMPT_FILE\""),
        (PromptMode::Env, "printf '%s' \"$HIVE_PROMPT\""),
        (PromptMode::Arg, "printf '%s' \"$0\""),
    ];
    for (mode, script) in cases {
        let ran = run_agent(&agent(script, mode), &prompt, Duration::from_secs(10), &CancellationToken::new()).await;
        assert_eq!(ran.finished.exit, Exit::Code(0), "{mode:?}: {}", ran.stderr);
        assert_eq!(ran.stdout, prompt, "{mode:?}");
    }
    assert!(!canary.exists(), "the prompt was run by a shell");
}

#[tokio::test]
async fn the_environment_is_scrubbed_to_the_allowlist_plus_hive_variables() {
    // cargo sets CARGO_MANIFEST_DIR for this test process; an agent must not inherit it.
    assert!(std::env::var_os("CARGO_MANIFEST_DIR").is_some());
    let script = "env | sort";
    let ran =
        run_agent(&agent(script, PromptMode::Stdin), "", Duration::from_secs(10), &CancellationToken::new()).await;
    let names: Vec<&str> = ran.stdout.lines().filter_map(|line| line.split('=').next()).collect();
    assert!(!names.contains(&"CARGO_MANIFEST_DIR"), "{names:?}");
    for expected in [
        "PATH",
        "HIVE_TASK_ID",
        "HIVE_ATTEMPT_ID",
        "HIVE_COORDINATOR",
        "HIVE_TOKEN",
        "HIVE_RESULT_FILE",
        "HIVE_WORK_DIR",
        "AGENT_SETTING",
    ] {
        assert!(names.contains(&expected), "{expected} missing from {names:?}");
    }
    assert!(ran.stdout.contains("HIVE_TASK_ID=task-1\n"));
    assert!(ran.stdout.contains("HIVE_TOKEN=hive_t_attempt\n"), "the agent gets its attempt's token, not the worker's");
    let allowed = [
        "PATH",
        "HOME",
        "USER",
        "LOGNAME",
        "LANG",
        "LC_ALL",
        "TZ",
        "TMPDIR",
        "TERM",
        "AGENT_SETTING",
        "PWD",
        "SHLVL",
        "_",
        "OLDPWD",
    ];
    let unexpected: Vec<&&str> =
        names.iter().filter(|name| !name.starts_with("HIVE_") && !allowed.contains(name)).collect();
    assert!(unexpected.is_empty(), "unexpected variables reached the agent: {unexpected:?}");
}

/// Runs `script` with a 500 ms limit: it times out, promptly, and nothing
/// carrying `marker` is left.
async fn times_out_leaving_nothing(script: &str, marker: &str) {
    let ran =
        run_agent(&agent(script, PromptMode::Stdin), "", Duration::from_millis(500), &CancellationToken::new()).await;
    assert_eq!(ran.finished.exit, Exit::TimedOut);
    assert!(ran.elapsed < Duration::from_secs(5), "took {:?}", ran.elapsed);
    assert_gone(marker).await;
}

#[tokio::test]
async fn a_timeout_stops_the_agent_and_its_grandchildren() {
    let marker = "1001.7531";
    times_out_leaving_nothing(&format!("sleep {marker} & sleep {marker} & wait"), marker).await;
}

#[tokio::test]
async fn an_agent_that_ignores_sigterm_is_killed_after_the_grace_period() {
    let marker = "1002.8642";
    let script = format!("trap '' TERM; sleep {marker} & wait; wait");
    let ran =
        run_agent(&agent(&script, PromptMode::Stdin), "", Duration::from_millis(300), &CancellationToken::new()).await;
    assert_eq!(ran.finished.exit, Exit::TimedOut);
    assert!(ran.elapsed >= Duration::from_millis(800), "grace period honoured: {:?}", ran.elapsed);
    assert_gone(marker).await;
}

#[tokio::test]
async fn a_cancel_stops_the_whole_process_tree() {
    let marker = "1003.9753";
    let script = format!("sh -c 'sleep {marker}' & sleep {marker}");
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(300)).await;
        trigger.cancel();
    });
    let ran = run_agent(&agent(&script, PromptMode::Stdin), "", Duration::from_secs(30), &cancel).await;
    assert_eq!(ran.finished.exit, Exit::Cancelled);
    assert!(ran.elapsed < Duration::from_secs(5), "took {:?}", ran.elapsed);
    assert_gone(marker).await;
}

#[tokio::test]
async fn grandchildren_left_behind_by_a_successful_agent_are_killed() {
    let marker = "1004.1357";
    // The grandchild keeps stdout open; the attempt must still end promptly.
    let script = format!("sleep {marker} & echo '{{\"ok\": true}}'");
    let ran =
        run_agent(&agent(&script, PromptMode::Stdin), "", Duration::from_secs(30), &CancellationToken::new()).await;
    assert_eq!(ran.finished.exit, Exit::Code(0));
    assert_eq!(ran.finished.stdout_json.unwrap()["ok"], true);
    assert!(ran.elapsed < Duration::from_secs(5), "took {:?}", ran.elapsed);
    assert_gone(marker).await;
}

#[tokio::test]
async fn a_signal_is_reported_as_such() {
    let ran =
        run_agent(&agent("kill -9 $$", PromptMode::Stdin), "", Duration::from_secs(10), &CancellationToken::new())
            .await;
    assert_eq!(ran.finished.exit, Exit::Signal(9));
}

#[tokio::test]
async fn a_missing_program_is_a_spawn_failure_naming_it_and_the_worker_is_at_fault() {
    let mut missing = agent("", PromptMode::Stdin);
    missing.command = vec!["/nonexistent/agent-binary".into()];
    let ran = run_agent(&missing, "", Duration::from_secs(10), &CancellationToken::new()).await;
    let Exit::NotStarted { problem, worker_fault } = ran.finished.exit else { panic!("{:?}", ran.finished.exit) };
    assert!(problem.contains("/nonexistent/agent-binary") && problem.contains("does not exist"), "{problem}");
    assert!(worker_fault);
}

#[tokio::test]
async fn a_missing_workdir_is_named_as_such() {
    let mut homeless = agent("true", PromptMode::Stdin);
    homeless.workdir = Some("/nonexistent/agent-folder".into());
    let ran = run_agent(&homeless, "", Duration::from_secs(10), &CancellationToken::new()).await;
    let Exit::NotStarted { problem, worker_fault } = ran.finished.exit else { panic!("{:?}", ran.finished.exit) };
    assert!(problem.contains("workdir /nonexistent/agent-folder does not exist"), "{problem}");
    assert!(worker_fault);
}

#[tokio::test]
async fn a_prompt_too_long_for_a_command_line_is_the_tasks_fault() {
    let long = agent("true", PromptMode::Arg);
    let prompt = "x".repeat(4 << 20);
    let ran = run_agent(&long, &prompt, Duration::from_secs(10), &CancellationToken::new()).await;
    let Exit::NotStarted { problem, worker_fault } = ran.finished.exit else { panic!("{:?}", ran.finished.exit) };
    assert!(problem.contains("prompt"), "{problem}");
    assert!(!worker_fault);
}

/// Zombie children of this process: (pid, stat line).
fn zombie_children() -> Vec<(String, String)> {
    let me = std::process::id().to_string();
    std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|entry| {
            let stat = std::fs::read_to_string(entry.path().join("stat")).ok()?;
            let fields: Vec<&str> = stat.rsplit(')').next().unwrap_or("").split_whitespace().collect();
            let zombie = fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str());
            zombie.then(|| (entry.file_name().to_string_lossy().into_owned(), stat))
        })
        .collect()
}

#[tokio::test]
async fn no_zombie_children_remain() {
    let marker = "1005.2468";
    let script = format!("sleep 0.01 & setsid sleep {marker} & sleep {marker} & true");
    for _ in 0..5 {
        run_agent(&agent(&script, PromptMode::Stdin), "", Duration::from_secs(10), &CancellationToken::new()).await;
    }
    assert_gone(marker).await;
    // Other tests' attempts may be ending at this moment: each zombie seen
    // now must be reaped soon, none may stay.
    let seen = zombie_children();
    let reaped = || zombie_children().iter().all(|zombie| !seen.contains(zombie));
    super::eventually(&format!("the zombie children seen to be reaped: {seen:?}"), Duration::from_secs(5), reaped)
        .await;
}

/// A script that starts `daemon` in a session of its own (out of the agent's
/// process group) and waits until it runs there, then runs `then`.
fn with_daemon(daemon: &str, then: &str) -> String {
    format!(
        "setsid sh -c 'touch \"$HIVE_WORK_DIR/up\"; exec {daemon}' & \
         while [ ! -e \"$HIVE_WORK_DIR/up\" ]; do sleep 0.01; done; {then}"
    )
}

#[tokio::test]
async fn a_daemon_that_left_the_group_ends_with_its_successful_attempt() {
    for (marker, cgroups) in [("1006.1111", None), ("1006.2222", cgroups())] {
        let script = with_daemon(&format!("sleep {marker}"), "echo '{\"ok\": true}'");
        let agent = agent(&script, PromptMode::Stdin);
        let ran = run_agent_with(&agent, "", Duration::from_secs(30), &CancellationToken::new(), cgroups, None).await;
        assert_eq!(ran.finished.exit, Exit::Code(0), "{}", ran.stderr);
        assert_eq!(ran.finished.stdout_json.as_ref().unwrap()["ok"], true);
        // The daemon holds stdout open: the attempt ends when it is killed, not after the drain timeout.
        assert!(ran.elapsed < Duration::from_secs(4), "took {:?}", ran.elapsed);
        assert_gone(marker).await;
        if cgroups.is_some() {
            assert_emptied_then_removed(&ran);
        }
    }
}

#[tokio::test]
async fn a_daemon_that_left_the_group_ends_with_its_timed_out_attempt() {
    let marker = "1006.3333";
    times_out_leaving_nothing(&with_daemon(&format!("sleep {marker}"), "sleep 30"), marker).await;
}

#[tokio::test]
async fn a_daemon_that_left_the_group_ends_with_its_cancelled_attempt() {
    let marker = "1006.4444";
    // The daemon starts a child of its own, which must go too.
    let script = with_daemon(&format!("sh -c \"sleep {marker}; true\""), "sleep 30");
    let cancel = CancellationToken::new();
    let trigger = cancel.clone();
    tokio::spawn(async move {
        // Cancelled once the daemon runs.
        super::eventually("the daemon to run", Duration::from_secs(30), || !processes_with(marker).is_empty()).await;
        trigger.cancel();
    });
    let ran =
        run_agent_with(&agent(&script, PromptMode::Stdin), "", Duration::from_secs(30), &cancel, None, None).await;
    assert_eq!(ran.finished.exit, Exit::Cancelled);
    assert!(ran.elapsed < Duration::from_secs(5), "took {:?}", ran.elapsed);
    assert_gone(marker).await;
}

/// Without a cgroup this daemon escapes (the sweep knows it by nothing); the
/// test needs a host where the test process may make cgroups, and passes
/// without checking anything elsewhere.
#[tokio::test]
async fn a_daemon_that_cleared_its_environment_ends_with_its_attempt_cgroup() {
    let Some(root) = cgroups() else { return };
    let marker = "1006.5555";
    // The agent forks only once it is in its cgroup: what it forks before it
    // is moved stays in the worker's.
    let daemon = format!("env -i /bin/sh -c \"exec sleep {marker}\"");
    let wait_for_cgroup =
        "while ! grep -q \"hive-$(basename \"$HIVE_WORK_DIR\")\" /proc/$$/cgroup; do sleep 0.01; done";
    let script = format!("{wait_for_cgroup}; {}", with_daemon(&daemon, "true"));
    let ran = run_agent_with(
        &agent(&script, PromptMode::Stdin),
        "",
        Duration::from_secs(30),
        &CancellationToken::new(),
        Some(root),
        None,
    )
    .await;
    assert_eq!(ran.finished.exit, Exit::Code(0), "{}", ran.stderr);
    assert_gone(marker).await;
    assert_emptied_then_removed(&ran);
}

/// The attempt's cgroup held nothing once it ended, and is gone once its
/// worker stopped.
fn assert_emptied_then_removed(ran: &Ran) {
    let (left, cgroup) = ran.cgroup.as_ref().expect("the attempt ran in a cgroup");
    assert_eq!(left, &Vec::<i32>::new(), "{cgroup} is empty when the attempt ends");
    assert!(!cgroup.exists(), "{cgroup} is removed when the worker stops");
}

#[tokio::test]
async fn agents_exit_codes_are_reported_with_the_worker_a_subreaper() {
    as_a_worker();
    assert!(nix::sys::prctl::get_child_subreaper().unwrap());
    let marker = "1006.6666";
    let cases = [
        (with_daemon(&format!("sleep {marker}"), "exit 7"), Exit::Code(7)),
        (format!("sleep {marker} & kill -9 $$"), Exit::Signal(9)),
        ("exit 0".to_owned(), Exit::Code(0)),
    ];
    for (script, expected) in cases {
        let ran =
            run_agent(&agent(&script, PromptMode::Stdin), "", Duration::from_secs(10), &CancellationToken::new()).await;
        assert_eq!(ran.finished.exit, expected, "{script}: {}", ran.stderr);
    }
    assert_gone(marker).await;
}

/// Starts `sleep <marker>` in a session of its own, orphaned at once, with
/// `HIVE_ATTEMPT_ID=<attempt>`; returns once it runs.
async fn start_daemon(attempt: &str, marker: &str) {
    let status = std::process::Command::new("sh")
        .args(["-c", &format!("setsid sleep {marker} &")])
        .env("HIVE_ATTEMPT_ID", attempt)
        .status()
        .unwrap();
    assert!(status.success());
    super::eventually("the daemon to start", Duration::from_secs(5), || !processes_with(marker).is_empty()).await;
}

#[tokio::test]
async fn the_sweep_kills_an_attempts_processes_by_its_id_and_no_others() {
    as_a_worker();
    let (attempt, other) = (AttemptId::new().to_string(), AttemptId::new().to_string());
    for (scope, mine, theirs) in
        [(Scope::Host, "1007.1111", "1007.2222"), (Scope::Descendants, "1007.3333", "1007.4444")]
    {
        start_daemon(&attempt, mine).await;
        start_daemon(&other, theirs).await;
        let traces = Traces { attempt_ids: vec![attempt.clone()], group: None, cgroups: vec![], scope };
        let swept = sweep::sweep(traces).await;
        assert_eq!((swept.killed, swept.left), (1, 0), "{scope:?}");
        assert_gone(mine).await;
        assert_eq!(processes_with(theirs).len(), 1, "another attempt's process must survive ({scope:?})");
        let traces = Traces { attempt_ids: vec![other.clone()], group: None, cgroups: vec![], scope };
        sweep::sweep(traces).await;
        assert_gone(theirs).await;
    }
}

/// A stall watch on `folder` with `timeout`, and where it marks the attempt.
fn stall_watch(timeout: Duration, policy: OnStall, folder: &std::path::Path) -> (StallWatch, Held, AttemptId) {
    let (held, attempt) = (Held::default(), AttemptId::new());
    held.hold(attempt);
    let counted = (std::sync::Arc::default(), std::sync::Arc::from("echo"));
    let watch =
        StallWatch { timeout, policy, folders: vec![folder.to_path_buf()], held: held.clone(), attempt, counted };
    (watch, held, attempt)
}

async fn run_watched(script: &str, timeout: Duration, policy: OnStall) -> (Ran, Held, AttemptId) {
    let folder = tempfile::tempdir().unwrap();
    let (watch, held, attempt) = stall_watch(timeout, policy, folder.path());
    let script = script.replace("FOLDER", &folder.path().display().to_string());
    let ran = run_agent_with(
        &agent(&script, PromptMode::Stdin),
        "",
        Duration::from_secs(30),
        &CancellationToken::new(),
        None,
        Some(watch),
    )
    .await;
    (ran, held, attempt)
}

#[tokio::test]
async fn an_agent_that_does_nothing_is_stopped_as_stalled() {
    let marker = "1007.1234";
    let (ran, held, _) = run_watched(&format!("sleep {marker}"), Duration::from_millis(600), OnStall::Retry).await;
    let Exit::Stalled(quiet) = ran.finished.exit else { panic!("not stalled: {:?}", ran.finished.exit) };
    assert!(quiet >= Duration::from_millis(600), "stopped after {quiet:?} without progress");
    assert!(ran.elapsed < Duration::from_secs(10), "took {:?}", ran.elapsed);
    assert!(held.stalled_ids().is_empty(), "the mark goes with the agent");
    assert_gone(marker).await;
}

#[tokio::test]
async fn a_silent_agent_that_uses_cpu_is_not_stalled() {
    // Compiling: no output and no files for 3 s, but a busy core.
    let script = "end=$(( $(date +%s) + 3 )); while [ $(date +%s) -lt $end ]; do :; done";
    let (ran, _, _) = run_watched(script, Duration::from_millis(600), OnStall::Retry).await;
    assert_eq!(ran.finished.exit, Exit::Code(0), "{}", ran.stderr);
}

#[tokio::test]
async fn a_silent_agent_that_changes_its_folder_is_not_stalled() {
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo $i >> FOLDER/notes; sleep 0.2; done";
    let (ran, _, _) = run_watched(script, Duration::from_millis(600), OnStall::Retry).await;
    assert_eq!(ran.finished.exit, Exit::Code(0), "{}", ran.stderr);
}

#[tokio::test]
async fn an_agent_that_writes_output_is_not_stalled() {
    let script = "for i in 1 2 3 4 5 6 7 8 9 10; do echo working $i; sleep 0.2; done";
    let (ran, _, _) = run_watched(script, Duration::from_millis(600), OnStall::Retry).await;
    assert_eq!(ran.finished.exit, Exit::Code(0), "{}", ran.stderr);
}

/// A FIFO an agent blocks on (`read go < GATE`): silent, no CPU, no folder
/// change, until [`open_gate`].
fn gate(dir: &std::path::Path, name: &str) -> std::path::PathBuf {
    let path = dir.join(name);
    nix::unistd::mkfifo(&path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    path
}

/// Lets the agent blocked on `gate` go on; `false` when no agent came to
/// read it within 10 s (it was stopped, or never got there).
async fn open_gate(gate: &std::path::Path) -> bool {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut ticks = tokio::time::interval(Duration::from_millis(10));
    while Instant::now() < deadline {
        // Without a reader, a non-blocking open fails (ENXIO) instead of waiting.
        let opened = std::fs::OpenOptions::new().write(true).custom_flags(nix::libc::O_NONBLOCK).open(gate);
        if let Ok(mut fifo) = opened {
            return fifo.write_all(b"go\n").is_ok();
        }
        ticks.tick().await;
    }
    false
}

#[tokio::test]
async fn under_ignore_a_stall_is_marked_then_cleared_and_the_agent_runs_on() {
    // Silent until the first gate opens, then output until the second does.
    let (folder, gates) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (silent, talking) = (gate(gates.path(), "silent"), gate(gates.path(), "talking"));
    let script = format!(
        "read go < {}; while true; do echo tick; sleep 0.1; done & read go < {}; kill $!",
        silent.display(),
        talking.display()
    );
    let (watch, held, attempt) = stall_watch(Duration::from_millis(500), OnStall::Ignore, folder.path());
    let agent = agent(&script, PromptMode::Stdin);
    let cancel = CancellationToken::new();
    let run = run_agent_with(&agent, "", Duration::from_secs(30), &cancel, None, Some(watch));
    let steps = async {
        let attempt = attempt.to_string();
        crate::process::eventually("the stall mark", Duration::from_secs(10), || {
            held.stalled_ids() == [attempt.clone()]
        })
        .await;
        assert!(open_gate(&silent).await, "the agent was stopped, though stalls are ignored");
        crate::process::eventually("the mark cleared by output", Duration::from_secs(10), || {
            held.stalled_ids().is_empty()
        })
        .await;
        assert!(open_gate(&talking).await, "the agent was stopped while it wrote output");
    };
    let (ran, ()) = tokio::join!(run, steps);
    assert_eq!(ran.finished.exit, Exit::Code(0), "{}", ran.stderr);
}

#[tokio::test]
async fn a_progress_report_counts_as_progress() {
    let (folder, gates) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let silent = gate(gates.path(), "silent");
    let (watch, held, attempt) = stall_watch(Duration::from_millis(600), OnStall::Retry, folder.path());
    let agent = agent(&format!("read go < {}", silent.display()), PromptMode::Stdin);
    let cancel = CancellationToken::new();
    let run = run_agent_with(&agent, "", Duration::from_secs(30), &cancel, None, Some(watch));
    // A silent agent whose reports arrive every 200 ms, as heartbeats would
    // bring them, for five times the stall timeout; then it is let go.
    let reports = async {
        for _ in 0..15 {
            held.set_reported(attempt, std::time::SystemTime::now());
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        assert!(open_gate(&silent).await, "the agent was stopped while its reports arrived");
    };
    let (ran, ()) = tokio::join!(run, reports);
    assert_eq!(ran.finished.exit, Exit::Code(0), "{}", ran.stderr);
}
