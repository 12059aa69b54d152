//! One claimed task from start to report: prepare its scratch folder, run
//! its agent, make sure its output is stored, queue its outcome, free the
//! slot, clean up.

use std::sync::Arc;
use std::time::Instant;

use hive_shared::convert::{from_duration, json_to_struct, struct_to_json};
use hive_shared::ids::{AttemptId, TaskId};
use hive_shared::pb;
use tokio::sync::OwnedSemaphorePermit;
use tokio_util::sync::CancellationToken;
use tracing::{Instrument, error, info, info_span, warn};

use crate::claude_code::{self, SessionStart};
use crate::config::{AgentConfig, AgentKind, Builtin, OnStall, PromptMode};
use crate::context::{Context, Queued};
use crate::outcome::{self, Ids, Report};
use crate::process::spawn::{HiveVars, Launch};
use crate::process::stall::StallWatch;
use crate::process::supervise::{self, Exit};
use crate::process::workdir::{JsonFile, Scratch};
use crate::shipper::LogSink;
use crate::traces::AttemptTrace;
use crate::workspace::{self, Unprepared, Workspace};
use crate::{resume, unavailable};

/// What an assignment holds when it arrives.
#[derive(Debug)]
pub(crate) enum Start {
    /// A free slot: it starts at once.
    Slot(OwnedSemaphorePermit),
    /// Prefetched: it waits here for a slot, counted as queued meanwhile.
    Queued(Queued),
}

/// Runs one assignment to its reported end, holding a slot while the agent runs.
pub(crate) async fn run(context: Arc<Context>, assignment: pb::Assignment, start: Start) {
    // A task's trace id is its id without dashes: a log line leads to its trace.
    let trace_id = assignment.task_id.replace('-', "");
    let span = info_span!("attempt", task_id = %assignment.task_id, attempt_id = %assignment.attempt_id, agent = %assignment.agent, trace_id = %trace_id);
    execute(context, assignment, start).instrument(span).await;
}

async fn execute(context: Arc<Context>, assignment: pb::Assignment, start: Start) {
    let (Ok(_), Ok(attempt)) = (TaskId::parse(&assignment.task_id), AttemptId::parse(&assignment.attempt_id)) else {
        error!("assignment with malformed ids; its lease will expire");
        return;
    };
    let ids = Ids { task_id: assignment.task_id.clone(), attempt_id: assignment.attempt_id.clone() };
    let cancel = context.held.hold(attempt);
    let slot = match start {
        Start::Slot(slot) => slot,
        Start::Queued(queued) => {
            let waited = tokio::select! {
                permit = Arc::clone(&context.slots).acquire_owned() => permit.ok(),
                () = cancel.cancelled() => None,
                () = context.drain.cancelled() => None,
            };
            let Some(slot) = waited else {
                // Cancelled (or the worker is stopping) before it started: hand it back unrun.
                let report = match context.held.reason(attempt) {
                    Some(crate::held::CancelReason::LeaseLost) => {
                        context.held.release(attempt);
                        return;
                    }
                    Some(crate::held::CancelReason::TaskCancelled) => {
                        outcome::failure(&ids, pb::FailureClass::Cancelled, "cancelled before it started".into(), None)
                    }
                    Some(crate::held::CancelReason::Paused) => outcome::failure(
                        &ids,
                        pb::FailureClass::Interrupted,
                        "a pause stopped it before it started; the task was handed back".into(),
                        None,
                    ),
                    _ => outcome::failure(
                        &ids,
                        pb::FailureClass::Interrupted,
                        "handed back before it started".into(),
                        None,
                    ),
                };
                queue(&context, report).await;
                return;
            };
            drop(queued);
            slot
        }
    };
    let Some(agent) = context.config.agents.get(&assignment.agent) else {
        let problem =
            format!("agent `{}` is not configured on worker `{}`", assignment.agent, context.registration.name);
        queue(&context, outcome::failure(&ids, pb::FailureClass::Permanent, problem, None)).await;
        return;
    };
    if let Some(reason) = context.cannot_run(&assignment.agent) {
        // Claimed before this worker found out (a long-poll already waiting).
        let problem = format!("handed back unstarted: this worker cannot run it now ({reason})");
        queue(&context, outcome::failure(&ids, pb::FailureClass::Interrupted, problem, None)).await;
        return;
    }
    if agent.builtin == Some(Builtin::Noop) {
        queue(&context, outcome::noop(&ids)).await;
        drop(slot);
        return;
    }
    // Boxed: its state (the subprocess, its pipes, the log sink) is most of
    // an attempt's, and only attempts that run an agent allocate it.
    Box::pin(run_agent(&context, &assignment, agent, ids, attempt, cancel, slot)).await;
}

/// Runs the agent of an attempt that holds `slot`, and queues its outcome.
async fn run_agent(
    context: &Context,
    assignment: &pb::Assignment,
    agent: &AgentConfig,
    ids: Ids,
    attempt: AttemptId,
    cancel: CancellationToken,
    slot: OwnedSemaphorePermit,
) {
    let took_slot = Instant::now();
    let agent_name: Arc<str> = Arc::from(assignment.agent.as_str());
    let task = uuid::Uuid::parse_str(&assignment.task_id).unwrap_or_default();
    let trace = AttemptTrace::of(assignment, task, attempt.0);
    let prompt_file = (agent.prompt == PromptMode::File).then_some(assignment.prompt.as_str());
    let scratch = match Scratch::create(&context.folders, attempt, prompt_file, json_files(assignment)).await {
        Ok(scratch) => scratch,
        Err(err) => {
            // The worker's fault (a full disk, a read-only or missing folder):
            // the task goes back uncharged, and this worker claims nothing for a while.
            let problem =
                format!("cannot prepare the scratch folder under {}: {err}", context.config.work_dir.display());
            warn!(problem = %problem, "handing the task back; claiming nothing until the work folder recovers");
            context.unavailable.failed(unavailable::WORK_DIR, problem.clone(), Instant::now());
            queue(context, outcome::failure(&ids, pb::FailureClass::Interrupted, problem, None)).await;
            return;
        }
    };
    context.unavailable.clear(unavailable::WORK_DIR);
    let timeout = assignment.timeout.as_ref().and_then(from_duration).unwrap_or(agent.timeout);
    let mut extra = vec![("HIVE_STAGE", assignment.stage.clone()), ("HIVE_ROUND", assignment.round.to_string())];
    if !assignment.resume_session.is_empty() {
        extra.push(("HIVE_RESUME_SESSION", assignment.resume_session.clone()));
    }
    // The CA only (absolute: agents run in their scratch folders); the
    // worker's client certificate and key never reach an agent.
    if let Some(ca) = &context.config.tls.ca {
        let ca = std::path::absolute(ca).unwrap_or_else(|_| ca.clone());
        extra.push(("HIVE_TLS_CA", ca.display().to_string()));
    }
    extra.extend(trace.agent_env(context.tracer.is_some()));
    let vars = HiveVars {
        task_id: assignment.task_id.clone(),
        attempt_id: assignment.attempt_id.clone(),
        coordinator: context.config.coordinator.clone(),
        agent_token: hive_shared::config::Secret::new(assignment.agent_token.clone()),
        extra,
    };
    let prepared = match prepare(context, assignment, agent, &ids, &scratch).await {
        Ok(prepared) => prepared,
        Err(unstarted) => {
            not_started(context, assignment, &ids, attempt, unstarted).await;
            drop(slot);
            scratch.finish(&context.folders).await;
            return;
        }
    };
    let (launch, claude) = (&prepared.launch, prepared.claude.as_ref());
    let session_regex = agent.session_regex.as_deref().and_then(|pattern| regex::Regex::new(pattern).ok());
    let (held, metrics, spawned) = (context.held.clone(), Arc::clone(&context.metrics), Arc::clone(&agent_name));
    let on_spawn = move |group: i32| {
        held.set_group(attempt, group);
        metrics.started(attempt, &spawned, group, took_slot.elapsed());
    };
    let sink = LogSink::new(context.logs.clone(), assignment.task_id.clone(), assignment.attempt_id.clone())
        .counted(Arc::clone(&context.metrics), Arc::clone(&agent_name));
    info!(attempt = assignment.attempt, "agent starting");
    let run = supervise::Run {
        agent,
        prompt: &assignment.prompt,
        vars: &vars,
        launch,
        scratch: &scratch,
        timeout,
        chunk_size: usize::try_from(context.config.logs.chunk_size.as_u64()).unwrap_or(32 * 1024),
        session_regex: session_regex.as_ref(),
        on_spawn: &on_spawn,
        stall: agent.stall_timeout.map(|timeout| StallWatch {
            timeout,
            policy: agent.on_stall.unwrap_or(OnStall::Retry),
            folders: watched_folders(&scratch, prepared.workspace.as_ref(), agent),
            held: context.held.clone(),
            attempt,
            counted: (Arc::clone(&context.metrics), Arc::clone(&agent_name)),
        }),
    };
    let saving = claude.and_then(|claude| Some((claude.transcript.clone()?, claude.start.id().to_owned()))).map(
        |(file, session)| {
            let stop = CancellationToken::new();
            let ids = ids.clone();
            (stop.clone(), async move { resume::keep_saving(context, &ids, &session, file, stop).await })
        },
    );
    let agent_started = std::time::SystemTime::now();
    let finished = match saving {
        None => supervise::run(run, sink.clone(), &cancel).await,
        Some((stop_saving, saver)) => {
            let supervised = async {
                let finished = supervise::run(run, sink.clone(), &cancel).await;
                stop_saving.cancel();
                finished
            };
            // The last save is made before the outcome is reported: after it
            // the attempt is not current and the save would be refused.
            tokio::join!(supervised, saver).0
        }
    };
    context.metrics.ended(attempt);
    if let Some(tracer) = &context.tracer {
        trace.agent_ended(tracer, agent_started, &assignment.agent, &finished.exit);
    }
    match &finished.exit {
        Exit::Code(0) => info!("agent succeeded"),
        Exit::NotStarted { problem, worker_fault: true } => {
            warn!(problem = %problem, "agent could not start; handing the task back and not claiming for it for a while");
            context.unavailable.failed(&assignment.agent, problem.clone(), Instant::now());
        }
        exit => warn!(?exit, "agent did not succeed"),
    }
    if !matches!(finished.exit, Exit::NotStarted { worker_fault: true, .. }) {
        context.unavailable.clear(&assignment.agent);
    }

    sink.flush().await;
    // Read whatever the exit: a failed agent's result may still report its
    // usage and session. The folder is emptied in the same trip.
    let result_file = outcome::take_result(scratch, &context.folders).await;
    let cancelled = context.held.reason(attempt);
    let report = match claude {
        None => outcome::decide(&ids, agent, timeout, &finished, result_file, cancelled),
        Some(claude) => claude_code::decide(&ids, agent, timeout, &finished, &claude.start, cancelled),
    }
    .map(|report| outcome::probing(report, assignment.probe));
    let report = match (prepared.workspace, agent.workspace.as_ref()) {
        (Some(workspace), Some(config)) => {
            let report = with_workspace(report, &workspace, config, &ids, assignment.attempt).await;
            workspace.release(&context.worktrees).await;
            report
        }
        _ => report,
    };
    match report {
        Some(report) => queue(context, report).await,
        None => {
            info!("attempt dropped: its lease belongs to someone else now");
            context.held.release(attempt);
        }
    }
    if let Some(tracer) = &context.tracer {
        trace.attempt_ended(tracer, assignment, &context.registration.name, &finished.exit);
    }
    // The slot frees once the outcome is on its way, not when the agent
    // exits: freed earlier, the worker could claim and start more tasks
    // while outcomes — and the costs a swarm's budget is checked against —
    // are still being stored, and overshoot the budget.
    drop(slot);
}

/// A Claude Code attempt's session: how it starts, what the worker adds to
/// its command, and the transcript to save when the task resumes sessions.
struct ClaudeSession {
    start: SessionStart,
    launch: Launch,
    transcript: Option<std::path::PathBuf>,
}

/// What an attempt's workspace and agent kind add before its agent starts.
struct Prepared {
    launch: Launch,
    claude: Option<ClaudeSession>,
    workspace: Option<Workspace>,
}

/// Makes the attempt's git worktree (for agents with a workspace) and its
/// Claude Code session (for that kind), and what they add to the command.
async fn prepare(
    context: &Context,
    assignment: &pb::Assignment,
    agent: &AgentConfig,
    ids: &Ids,
    scratch: &Scratch,
) -> Result<Prepared, Unstarted> {
    let workspace = match &agent.workspace {
        None => None,
        Some(config) => {
            let inputs = assignment.inputs.clone().map(struct_to_json);
            let made = workspace::prepare(config, &context.worktrees, &scratch.dir, &ids.task_id, inputs.as_ref())
                .await
                .map_err(|problem| match problem {
                    Unprepared::Task(problem) => Unstarted::Refused(problem),
                    Unprepared::Worker(problem) => Unstarted::Handback(problem),
                })?;
            Some(made)
        }
    };
    let cwd = workspace.as_ref().map(|workspace| workspace.dir.clone());
    let cwd = cwd.or_else(|| agent.workdir.clone()).unwrap_or_else(|| scratch.dir.clone());
    let claude = match agent.kind {
        AgentKind::Command => None,
        AgentKind::ClaudeCode => match claude_session(context, assignment, agent, ids, scratch, &cwd).await {
            Ok(session) => Some(session),
            Err(unstarted) => {
                if let Some(workspace) = workspace {
                    workspace.release(&context.worktrees).await;
                }
                return Err(unstarted);
            }
        },
    };
    let mut launch = claude.as_ref().map(|claude| claude.launch.clone()).unwrap_or_default();
    if let Some(workspace) = &workspace {
        launch.cwd = Some(workspace.dir.clone());
        launch.env.push(("HIVE_WORKSPACE", workspace.dir.clone().into()));
        launch.env.push(("HIVE_BRANCH", workspace.branch.clone().into()));
    }
    Ok(Prepared { launch, claude, workspace })
}

/// The folders whose changes are an attempt's progress: its scratch folder
/// (which holds Claude Code's config folder, where its transcript grows),
/// its worktree and the agent's own working folder, each unless inside another.
fn watched_folders(scratch: &Scratch, workspace: Option<&Workspace>, agent: &AgentConfig) -> Vec<std::path::PathBuf> {
    let mut folders = vec![scratch.dir.clone()];
    for folder in workspace.map(|workspace| &workspace.dir).into_iter().chain(agent.workdir.as_ref()) {
        if !folders.iter().any(|watched| folder.starts_with(watched)) {
            folders.push(folder.clone());
        }
    }
    folders
}

/// Reports an attempt that could not start.
async fn not_started(context: &Context, assignment: &pb::Assignment, ids: &Ids, attempt: AttemptId, why: Unstarted) {
    match why {
        Unstarted::LeaseLost => {
            info!("attempt dropped before it started: its lease belongs to someone else now");
            context.held.release(attempt);
        }
        Unstarted::Handback(problem) => {
            // Not the task's fault; this worker leaves the agent alone for a
            // while rather than claim it straight back.
            warn!(problem = %problem, "handing the task back unstarted; not claiming for the agent for a while");
            context.unavailable.failed(&assignment.agent, problem.clone(), Instant::now());
            queue(context, outcome::failure(ids, pb::FailureClass::Interrupted, problem, None)).await;
        }
        Unstarted::Refused(problem) => {
            warn!(problem = %problem, "the task cannot start");
            queue(context, outcome::failure(ids, pb::FailureClass::Permanent, problem, None)).await;
        }
    }
}

/// A success gets the workspace's change in its result (a change that
/// cannot be recorded fails it, to be retried); a failure's change is
/// committed on the branch, for the retry to continue.
async fn with_workspace(
    report: Option<Report>,
    workspace: &Workspace,
    config: &crate::config::WorkspaceConfig,
    ids: &Ids,
    attempt: u32,
) -> Option<Report> {
    match report {
        Some(Report::Complete(mut completion)) => match workspace.record(config, &ids.task_id, attempt).await {
            Ok(change) => {
                let mut result = completion.result.take().map(struct_to_json).unwrap_or_default();
                result.insert("workspace".into(), change);
                completion.result = Some(json_to_struct(result));
                Some(Report::Complete(completion))
            }
            Err(problem) => {
                let problem = format!("the agent succeeded but its change could not be recorded: {problem}");
                Some(outcome::failure(ids, pb::FailureClass::Transient, problem, None))
            }
        },
        // The lease is someone else's now: the branch is theirs too.
        None => None,
        failure => {
            workspace.keep_changes(&ids.task_id, attempt).await;
            failure
        }
    }
}

/// Starts a new session, or resumes the task's saved one with its
/// transcript written back under `cwd`, the agent's working folder. When
/// the saved session cannot be fetched or restored the attempt does not
/// start: a fresh session would overwrite the saved one.
async fn claude_session(
    context: &Context,
    assignment: &pb::Assignment,
    agent: &AgentConfig,
    ids: &Ids,
    scratch: &Scratch,
    cwd: &std::path::Path,
) -> Result<ClaudeSession, Unstarted> {
    let config_dir = claude_code::config_dir(&scratch.dir);
    let cwd = tokio::fs::canonicalize(cwd).await.unwrap_or_else(|_| cwd.to_path_buf());
    let mut start = SessionStart::New(assignment.attempt_id.clone());
    if !assignment.resume_session.is_empty() {
        match resume::load(context, ids).await {
            resume::Loaded::Found(saved) if claude_code::is_session_id(&saved.session_id) => {
                let path = claude_code::transcript(&config_dir, &cwd, &saved.session_id);
                write_transcript(&path, saved.state).await.map_err(|err| {
                    Unstarted::Handback(format!("cannot restore the saved session under {}: {err}", path.display()))
                })?;
                start = SessionStart::Resume(saved.session_id);
            }
            resume::Loaded::Found(saved) => {
                warn!(session_id = %saved.session_id, "the saved session id is not Claude Code's; starting a fresh one");
            }
            resume::Loaded::Nothing => {
                info!(session = %assignment.resume_session, "no saved session to resume; starting a fresh one");
            }
            resume::Loaded::LeaseLost => return Err(Unstarted::LeaseLost),
            resume::Loaded::Failed(problem) => return Err(Unstarted::Handback(problem)),
        }
    }
    let transcript = assignment.keep_session.then(|| claude_code::transcript(&config_dir, &cwd, start.id()));
    Ok(ClaudeSession { launch: claude_code::launch(agent, &config_dir, &start), start, transcript })
}

/// Why an attempt was not started.
enum Unstarted {
    /// The attempt is not the task's current one: say nothing.
    LeaseLost,
    /// The worker could not prepare it: hand the task back uncharged.
    Handback(String),
    /// The task cannot start (its dependencies' changes conflict): it fails for good.
    Refused(String),
}

async fn write_transcript(path: &std::path::Path, state: Vec<u8>) -> std::io::Result<()> {
    if let Some(folder) = path.parent() {
        tokio::fs::create_dir_all(folder).await?;
    }
    tokio::fs::write(path, state).await
}

/// The JSON files an agent is handed, each named by an environment variable.
fn json_files(assignment: &pb::Assignment) -> Vec<JsonFile> {
    let files = [
        ("HIVE_INPUT_FILE", "input.json", &assignment.input),
        ("HIVE_INPUTS_FILE", "inputs.json", &assignment.inputs),
        ("HIVE_BUILD_RESULT_FILE", "build-result.json", &assignment.build_result),
        ("HIVE_FEEDBACK_FILE", "feedback.json", &assignment.feedback),
    ];
    files
        .into_iter()
        .filter_map(|(variable, name, content)| {
            content.clone().map(|content| JsonFile { variable, name, content: struct_to_json(content) })
        })
        .collect()
}

async fn queue(context: &Context, report: Report) {
    let attempt = report.attempt_id().to_owned();
    if context.reports.send(report).await.is_err() {
        error!(attempt_id = %attempt, "reporter is gone; the outcome is lost and the lease will expire");
    }
}
