//! Claude Code as an agent kind (`kind = "claude-code"`): what the worker
//! adds to the configured `claude` command, where each attempt keeps its
//! config folder, how a session is started, resumed and saved, and how its
//! JSON result becomes a report.
//!
//! - **Started** as `<command> -p --output-format json --permission-mode …
//!   [--model …] [--allowedTools …] (--session-id ID | --resume ID)`, the
//!   prompt on stdin (closed after it) or as the last argument.
//! - **Config folder** (`CLAUDE_CONFIG_DIR`): one per attempt in its scratch
//!   folder, so transcripts and settings never leak between tasks.
//! - **Sessions**: a fresh attempt chooses its session id up front (the
//!   attempt id), so the session is known even when the agent is killed
//!   before it prints a result. Under `session = "resume"` the transcript is
//!   saved through the coordinator and written back, under the new working
//!   folder's project, before the attempt that resumes it.
//! - **Result**: success needs exit 0 *and* a result object with `is_error`
//!   false and `subtype` `success` (an interrupted run exits 0 and prints
//!   nothing). Failures are classed by `api_error_status`: rate limits and
//!   overload cool down the agent's provider account (`anthropic/default`
//!   unless `provider`/`account` say otherwise); server errors and failures
//!   without a status (a lost connection) are transient; authentication and
//!   bad requests permanent.
//!   The cost is `total_cost_usd`.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use hive_shared::convert::{JsonObject, json_to_struct};
use hive_shared::pb;
use serde_json::Value;

use crate::config::{AgentConfig, PromptMode};
use crate::outcome::{self, Ids, Report};
use crate::process::spawn::Launch;
use crate::process::supervise::{Exit, Finished};

/// The attempt's config folder, inside its scratch folder.
const CONFIG_DIR: &str = ".hive-claude-config";

/// Permission modes `--permission-mode` takes.
const PERMISSION_MODES: &[&str] = &["acceptEdits", "bypassPermissions", "default", "plan"];

/// Flags the worker sets itself; a configured command must not.
const OWN_FLAGS: &[&str] = &[
    "-p",
    "--print",
    "--output-format",
    "--session-id",
    "--resume",
    "-r",
    "--continue",
    "-c",
    "--fork-session",
    "--model",
    "--permission-mode",
    "--allowedTools",
    "--allowed-tools",
];

/// How an attempt's session starts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SessionStart {
    /// A new session with this id.
    New(String),
    /// Resume this session, whose transcript is in the config folder.
    Resume(String),
}

impl SessionStart {
    /// The session's id.
    pub(crate) fn id(&self) -> &str {
        match self {
            Self::New(id) | Self::Resume(id) => id,
        }
    }
}

/// Problems with a Claude Code agent's settings, each naming its key.
pub(crate) fn config_problems(name: &str, agent: &AgentConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if !matches!(agent.prompt, PromptMode::Stdin | PromptMode::Arg) {
        problems.push(format!(
            "agents.{name}.prompt: Claude Code reads its prompt from stdin or an argument (\"stdin\" or \"arg\")"
        ));
    }
    let flag_of = |arg: &'_ String| arg.split_once('=').map_or(arg.clone(), |(flag, _)| flag.to_owned());
    if let Some(flag) = agent.command.iter().skip(1).map(flag_of).find(|flag| OWN_FLAGS.contains(&flag.as_str())) {
        problems.push(format!(
            "agents.{name}.command: `{flag}` is set by the worker for kind = \"claude-code\" \
             (use model, permission_mode and allowed_tools for those)"
        ));
    }
    if let Some(mode) = &agent.permission_mode
        && !PERMISSION_MODES.contains(&mode.as_str())
    {
        problems.push(format!("agents.{name}.permission_mode: `{mode}` is not one of {}", PERMISSION_MODES.join(", ")));
    }
    if agent.model.as_deref().is_some_and(str::is_empty) {
        problems.push(format!("agents.{name}.model: must not be empty (leave it out for Claude Code's default)"));
    }
    if agent.allowed_tools.iter().any(String::is_empty) {
        problems.push(format!("agents.{name}.allowed_tools: a tool name must not be empty"));
    }
    let bypass = agent.permission_mode.as_deref() == Some("bypassPermissions")
        || agent.command.iter().any(|arg| arg == "--dangerously-skip-permissions");
    if bypass && nix::unistd::geteuid().is_root() && !agent.env.contains_key("IS_SANDBOX") {
        problems.push(format!(
            "agents.{name}: Claude Code refuses to skip permissions as root; run the worker as another user, \
             use permission_mode = \"acceptEdits\" with allowed_tools, or set env.IS_SANDBOX = \"1\" \
             where the host is a sandbox"
        ));
    }
    problems
}

/// The attempt's config folder.
pub(crate) fn config_dir(scratch_dir: &Path) -> PathBuf {
    scratch_dir.join(CONFIG_DIR)
}

/// What the worker adds to the configured command for one attempt.
pub(crate) fn launch(agent: &AgentConfig, config_dir: &Path, session: &SessionStart) -> Launch {
    let mut args: Vec<String> = vec!["-p".into(), "--output-format".into(), "json".into()];
    args.push("--permission-mode".into());
    args.push(agent.permission_mode.clone().unwrap_or_else(|| "acceptEdits".into()));
    if let Some(model) = &agent.model {
        args.extend(["--model".into(), model.clone()]);
    }
    if !agent.allowed_tools.is_empty() {
        args.extend(["--allowedTools".into(), agent.allowed_tools.join(",")]);
    }
    match session {
        SessionStart::New(id) => args.extend(["--session-id".into(), id.clone()]),
        SessionStart::Resume(id) => args.extend(["--resume".into(), id.clone()]),
    }
    Launch { args, env: vec![("CLAUDE_CONFIG_DIR", OsString::from(config_dir))], cwd: None }
}

/// Where Claude Code keeps the transcript of `session` run from `cwd`:
/// `projects/<project>/<id>.jsonl`, see [`project_folder`].
pub(crate) fn transcript(config_dir: &Path, cwd: &Path, session: &str) -> PathBuf {
    config_dir.join("projects").join(project_folder(&cwd.to_string_lossy())).join(format!("{session}.jsonl"))
}

/// Claude Code's folder name for a working folder: each UTF-16 unit but
/// ASCII letters and digits becomes `-`; a name over 200 units keeps its
/// first 200, then `-` and the base-36 of the absolute 32-bit string hash
/// (`h = 31 h + unit`) of the whole path.
fn project_folder(cwd: &str) -> String {
    let units: Vec<u16> = cwd.encode_utf16().collect();
    let mangle = |unit: &u16| match char::from_u32(u32::from(*unit)) {
        Some(c) if c.is_ascii_alphanumeric() => c,
        _ => '-',
    };
    if units.len() <= 200 {
        return units.iter().map(mangle).collect();
    }
    let hash = units.iter().fold(0_i32, |hash, unit| hash.wrapping_mul(31).wrapping_add(i32::from(*unit)));
    let mut folder: String = units[..200].iter().map(mangle).collect();
    folder.push('-');
    folder.push_str(&base36(hash.unsigned_abs()));
    folder
}

fn base36(mut value: u32) -> String {
    const DIGITS: &[u8; 36] = b"0123456789abcdefghijklmnopqrstuvwxyz";
    let mut digits = Vec::new();
    loop {
        digits.push(DIGITS[(value % 36) as usize]);
        value /= 36;
        if value == 0 {
            break;
        }
    }
    digits.iter().rev().map(|digit| char::from(*digit)).collect()
}

/// Whether `text` is a session id as Claude Code writes them (a hyphenated,
/// lower-case UUID), so a saved id is never passed on unchecked.
pub(crate) fn is_session_id(text: &str) -> bool {
    uuid::Uuid::try_parse(text).is_ok_and(|id| id.hyphenated().to_string() == text)
}

/// Decides the report of a Claude Code attempt; `None` when the lease was lost.
pub(crate) fn decide(
    ids: &Ids,
    agent: &AgentConfig,
    timeout: std::time::Duration,
    finished: &Finished,
    session: &SessionStart,
    cancelled: Option<crate::held::CancelReason>,
) -> Option<Report> {
    let result = finished.stdout_json.as_ref().filter(|object| object.get("type") == Some(&Value::from("result")));
    let spent = spend(result, session);
    let clean = |result: &JsonObject| {
        result.get("is_error") == Some(&Value::Bool(false)) && result.get("subtype") == Some(&Value::from("success"))
    };
    let report = match (&finished.exit, result) {
        (Exit::Code(code), Some(result)) if !(*code == 0 && clean(result)) => {
            let (class, what) = api_error_class(result);
            let text = result.get("result").and_then(Value::as_str).unwrap_or_default();
            let error = format!("Claude Code reported {what} (exit {code}): {}", outcome::clip(text, 1024));
            match agent.provider_account() {
                Some(account) if class == pb::FailureClass::RateLimited => {
                    outcome::rate_limited(ids, account, error, finished, None)
                }
                _ => outcome::failure(ids, class, error, Some(finished)),
            }
        }
        (Exit::Code(0), Some(result)) => Report::Complete(pb::Completion {
            task_id: ids.task_id.clone(),
            attempt_id: ids.attempt_id.clone(),
            result: Some(json_to_struct(result.clone())),
            session_id: String::new(),
            usage: None,
            probe: false,
        }),
        (Exit::Code(0), None) => outcome::failure(
            ids,
            pb::FailureClass::Transient,
            "Claude Code exited 0 without printing its result (it was interrupted)".into(),
            Some(finished),
        ),
        _ => {
            return outcome::decide(ids, agent, timeout, finished, Ok(None), cancelled)
                .map(|report| outcome::with_spend(report, spent));
        }
    };
    Some(outcome::with_spend(report, spent))
}

/// How a failed run classes, and what it was: rate limits (429) and
/// overload (529) cool the account down; server errors and failures
/// without an API status (a lost connection) are worth retrying;
/// authentication, permission and request errors are not.
fn api_error_class(result: &JsonObject) -> (pb::FailureClass, String) {
    use pb::FailureClass::{Permanent, RateLimited, Transient};
    match result.get("api_error_status").and_then(Value::as_u64) {
        Some(429) => (RateLimited, "a rate limit (HTTP 429)".into()),
        Some(529) => (RateLimited, "an overloaded API (HTTP 529)".into()),
        Some(status @ (408 | 500..=599)) => (Transient, format!("an API server error (HTTP {status})")),
        Some(status @ (401 | 403)) => (Permanent, format!("an authentication error (HTTP {status})")),
        Some(status) => (Permanent, format!("an API error (HTTP {status})")),
        // A failed connection or a run that stopped without an API error
        // (`error_max_turns`, `error_during_execution`): not the task's
        // fault, or worth another try.
        None => {
            let subtype = result.get("subtype").and_then(Value::as_str).unwrap_or("no subtype");
            (Transient, format!("an error without an API status ({subtype})"))
        }
    }
}

/// The session and usage of a run: the result's `session_id` (else the one
/// the attempt started with), its `total_cost_usd`, and its tokens (input
/// counting cache reads and writes).
fn spend(result: Option<&JsonObject>, session: &SessionStart) -> (String, Option<pb::Usage>) {
    let session_id = result
        .and_then(|result| result.get("session_id"))
        .and_then(Value::as_str)
        .filter(|id| is_session_id(id))
        .unwrap_or(session.id())
        .to_owned();
    let usage = result.map(|result| {
        let tokens = result.get("usage").and_then(Value::as_object);
        let count = |name: &str| tokens.and_then(|usage| usage.get(name)).and_then(Value::as_u64).unwrap_or(0);
        pb::Usage {
            input_tokens: count("input_tokens")
                .saturating_add(count("cache_creation_input_tokens"))
                .saturating_add(count("cache_read_input_tokens")),
            output_tokens: count("output_tokens"),
            cost: result
                .get("total_cost_usd")
                .and_then(Value::as_f64)
                .filter(|cost| cost.is_finite() && *cost >= 0.0)
                .unwrap_or(0.0),
        }
    });
    (session_id, usage)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent(text: &str) -> AgentConfig {
        use figment::providers::Format;
        figment::Figment::from(figment::providers::Toml::string(text)).extract().unwrap()
    }

    fn ids() -> Ids {
        Ids { task_id: "t".into(), attempt_id: "a".into() }
    }

    fn finished(exit: Exit, stdout: Option<Value>) -> Finished {
        Finished {
            exit,
            stdout_json: stdout.map(|value| value.as_object().unwrap().clone()),
            session: None,
            stderr_tail: String::new(),
        }
    }

    fn result(is_error: bool, status: Option<u16>) -> Value {
        json!({
            "type": "result", "subtype": "success", "is_error": is_error, "api_error_status": status,
            "result": "text", "session_id": "0b7e2f63-5a43-4b3c-9e43-1c5a4a3f6d11", "total_cost_usd": 0.25,
            "usage": {"input_tokens": 10, "cache_read_input_tokens": 5, "output_tokens": 7}
        })
    }

    const NEW: &str = "6f1d1c7e-6a44-4b8e-a4c5-6b9b4c0e2f55";

    fn decided(exit: Exit, stdout: Option<Value>) -> Report {
        let agent = agent("kind = \"claude-code\"\ncommand = [\"claude\"]\n");
        let session = SessionStart::New(NEW.into());
        decide(&ids(), &agent, std::time::Duration::from_secs(1), &finished(exit, stdout), &session, None).unwrap()
    }

    fn class(report: &Report) -> Option<pb::FailureClass> {
        match report {
            Report::Fail(failure) => Some(failure.class()),
            Report::Complete(_) => None,
        }
    }

    #[test]
    fn a_clean_result_succeeds_with_its_cost_tokens_and_session() {
        let Report::Complete(completion) = decided(Exit::Code(0), Some(result(false, None))) else {
            panic!("a clean result is a success");
        };
        let usage = completion.usage.unwrap();
        assert_eq!((usage.input_tokens, usage.output_tokens, usage.cost), (15, 7, 0.25));
        assert_eq!(completion.session_id, "0b7e2f63-5a43-4b3c-9e43-1c5a4a3f6d11");
    }

    #[test]
    fn api_errors_class_by_status_and_still_charge_their_cost() {
        use pb::FailureClass::{Permanent, RateLimited, Transient};
        for (status, expected) in
            [(429, RateLimited), (529, RateLimited), (500, Transient), (401, Permanent), (400, Permanent)]
        {
            let report = decided(Exit::Code(1), Some(result(true, Some(status))));
            assert_eq!(class(&report), Some(expected), "HTTP {status}");
            let Report::Fail(failure) = report else { unreachable!() };
            assert!(failure.error.contains(&status.to_string()), "{}", failure.error);
            assert_eq!(failure.usage.unwrap().cost, 0.25);
            let account = if expected == RateLimited { "anthropic/default" } else { "" };
            assert_eq!(failure.provider_account, account, "a refusal names the account that cools down");
        }
    }

    #[test]
    fn only_a_clean_result_is_a_success_and_a_failure_without_status_is_retried() {
        let mut missing = result(false, None);
        missing.as_object_mut().unwrap().remove("is_error");
        assert_eq!(class(&decided(Exit::Code(0), Some(missing))), Some(pb::FailureClass::Transient));
        let mut max_turns = result(false, None);
        max_turns["subtype"] = json!("error_max_turns");
        assert_eq!(class(&decided(Exit::Code(0), Some(max_turns))), Some(pb::FailureClass::Transient));
        let report = decided(Exit::Code(1), Some(result(true, None)));
        assert_eq!(class(&report), Some(pb::FailureClass::Transient), "a lost connection is not the task's fault");
        assert!(!is_session_id("{6f1d1c7e-6a44-4b8e-a4c5-6b9b4c0e2f55}") && is_session_id(NEW));
    }

    #[test]
    fn exit_zero_without_a_result_is_an_interruption_not_a_success() {
        let report = decided(Exit::Code(0), None);
        assert_eq!(class(&report), Some(pb::FailureClass::Transient));
        let Report::Fail(failure) = report else { unreachable!() };
        assert_eq!(failure.session_id, NEW, "the session chosen up front is still reported");
    }

    #[test]
    fn a_killed_run_fails_as_any_agent_would_and_keeps_its_session() {
        let report = decided(Exit::Signal(9), None);
        assert_eq!(class(&report), Some(pb::FailureClass::Transient));
        let Report::Fail(failure) = report else { unreachable!() };
        assert_eq!(failure.session_id, NEW);
    }

    #[test]
    fn the_worker_adds_its_flags_and_the_session() {
        let agent = agent(
            "kind = \"claude-code\"\ncommand = [\"claude\", \"--verbose\"]\nmodel = \"m\"\nallowed_tools = [\"Bash\", \"Write\"]\n",
        );
        let launch = launch(&agent, Path::new("/s/c"), &SessionStart::Resume(NEW.into()));
        assert_eq!(
            launch.args,
            [
                "-p",
                "--output-format",
                "json",
                "--permission-mode",
                "acceptEdits",
                "--model",
                "m",
                "--allowedTools",
                "Bash,Write",
                "--resume",
                NEW
            ]
        );
        assert_eq!(launch.env, [("CLAUDE_CONFIG_DIR", OsString::from("/s/c"))]);
    }

    #[test]
    fn bad_settings_are_named() {
        let agent = agent(
            "kind = \"claude-code\"\ncommand = [\"claude\", \"--resume=x\"]\nprompt = \"file\"\npermission_mode = \"yolo\"\nmodel = \"\"\n",
        );
        let problems = config_problems("c", &agent).join("\n");
        for needle in ["agents.c.prompt", "`--resume`", "agents.c.permission_mode: `yolo`", "agents.c.model"] {
            assert!(problems.contains(needle), "{needle} in {problems}");
        }
    }

    #[test]
    fn transcripts_live_under_the_working_folders_project() {
        let path = transcript(Path::new("/c"), Path::new("/work/dir_1.x"), NEW);
        assert_eq!(path, Path::new(&format!("/c/projects/-work-dir-1-x/{NEW}.jsonl")));
        assert_eq!(project_folder("/tmp/r/B dir+x@y.Z_9/q"), "-tmp-r-B-dir-x-y-Z-9-q");
        assert_eq!(project_folder("/é"), "--");
        // The name Claude Code 2.1.197 gave this 237-character folder.
        let long = format!("/tmp/{}", "a".repeat(232));
        assert_eq!(project_folder(&long), format!("-tmp-{}-eyi9cp", "a".repeat(195)));
    }
}
