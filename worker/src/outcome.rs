//! Turning how an agent ended into what the coordinator is told: a result
//! (exit 0), or a failure classed transient or permanent. The decision
//! ([`decide`]) is pure, so every case is a table test; reading the agent's
//! result file ([`take_result`]) is the one piece that touches the disk.

use std::sync::Arc;
use std::time::Duration;

use hive_shared::convert::{JsonObject, json_to_struct};
use hive_shared::pb;

use crate::config::{AgentConfig, UnlistedExit};
use crate::held::CancelReason;
use crate::process::supervise::{Exit, Finished};
use crate::process::workdir::{Folders, Scratch};

/// Largest result file read.
pub(crate) const MAX_RESULT_FILE: u64 = 4 * 1024 * 1024;

/// What to tell the coordinator about one attempt.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Report {
    /// It succeeded.
    Complete(pb::Completion),
    /// It failed.
    Fail(pb::Failure),
}

impl Report {
    /// The attempt the report is about.
    pub(crate) fn attempt_id(&self) -> &str {
        match self {
            Self::Complete(completion) => &completion.attempt_id,
            Self::Fail(failure) => &failure.attempt_id,
        }
    }
}

/// Identity of the attempt being reported.
#[derive(Debug, Clone)]
pub(crate) struct Ids {
    pub task_id: String,
    pub attempt_id: String,
}

/// The built-in no-op executor's report: success at once, with the
/// CLOCK_MONOTONIC time it started (comparable across processes on one host).
pub(crate) fn noop(ids: &Ids) -> Report {
    let started_ns = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_or(0, |now| now.tv_sec() as i128 * 1_000_000_000 + i128::from(now.tv_nsec()));
    let mut result = JsonObject::new();
    result.insert("started_ns".into(), serde_json::Value::from(i64::try_from(started_ns).unwrap_or(0)));
    Report::Complete(pb::Completion {
        task_id: ids.task_id.clone(),
        attempt_id: ids.attempt_id.clone(),
        result: Some(json_to_struct(result)),
        session_id: String::new(),
        usage: None,
        probe: false,
    })
}

/// A failure report.
pub(crate) fn failure(ids: &Ids, class: pb::FailureClass, error: String, finished: Option<&Finished>) -> Report {
    let (exit_code, signal, timed_out) = match finished.map(|finished| &finished.exit) {
        Some(Exit::Code(code)) => (Some(*code), None, false),
        Some(Exit::Signal(signal)) => (None, Some(*signal), false),
        Some(Exit::TimedOut) => (None, None, true),
        _ => (None, None, false),
    };
    Report::Fail(pb::Failure {
        task_id: ids.task_id.clone(),
        attempt_id: ids.attempt_id.clone(),
        class: class.into(),
        error,
        exit_code,
        signal,
        timed_out,
        session_id: String::new(),
        usage: None,
        provider_account: String::new(),
        retry_after: None,
    })
}

/// The agent's provider account, when its exit says the provider refused
/// it for a rate limit (a `rate_limit_exit_codes` code, or
/// `rate_limit_pattern` in the end of its stderr).
fn refused(agent: &AgentConfig, code: i32, stderr_tail: &str) -> Option<String> {
    let account = agent.provider_account()?;
    let pattern = || {
        agent
            .rate_limit_pattern
            .as_deref()
            .and_then(|pattern| regex::Regex::new(pattern).ok())
            .is_some_and(|pattern| pattern.is_match(stderr_tail))
    };
    (agent.rate_limit_exit_codes.contains(&code) || pattern()).then_some(account)
}

/// A failure the agent's provider caused (a rate limit, an overload): the
/// task goes back uncounted and `account` cools down, for as long as the
/// agent's result says (`"retry_after_seconds": N`) when it does.
pub(crate) fn rate_limited(
    ids: &Ids,
    account: String,
    error: String,
    finished: &Finished,
    result: Option<&JsonObject>,
) -> Report {
    let retry_after = result
        .and_then(|result| result.get("retry_after_seconds"))
        .and_then(serde_json::Value::as_f64)
        .filter(|seconds| seconds.is_finite() && *seconds > 0.0 && *seconds <= 86_400.0)
        .map(|seconds| hive_shared::convert::duration(Duration::from_secs_f64(seconds)));
    match failure(ids, pb::FailureClass::RateLimited, error, Some(finished)) {
        Report::Fail(failure) => Report::Fail(pb::Failure { provider_account: account, retry_after, ..failure }),
        complete @ Report::Complete(_) => complete,
    }
}

/// The report, its success marked as its account's probe after a cool-down
/// (which the success ends).
pub(crate) fn probing(report: Report, probe: bool) -> Report {
    match report {
        Report::Complete(completion) => Report::Complete(pb::Completion { probe, ..completion }),
        failure @ Report::Fail(_) => failure,
    }
}

/// At most `limit` bytes of `text`, cut at a character boundary.
pub(crate) fn clip(text: &str, limit: usize) -> &str {
    let mut end = text.len().min(limit);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// The session id and usage an agent reported: `session_id` and `usage`
/// (`input_tokens`, `output_tokens`, `cost`) in its result, the session falling
/// back to what its output showed.
pub(crate) fn spend(result: Option<&JsonObject>, output_session: Option<&str>) -> (String, Option<pb::Usage>) {
    let session = result
        .and_then(|object| object.get("session_id"))
        .and_then(serde_json::Value::as_str)
        .or(output_session)
        .unwrap_or_default()
        .to_owned();
    let usage = result.and_then(|object| object.get("usage")).and_then(serde_json::Value::as_object).map(|usage| {
        let count = |name: &str| usage.get(name).and_then(serde_json::Value::as_u64).unwrap_or(0);
        pb::Usage {
            input_tokens: count("input_tokens"),
            output_tokens: count("output_tokens"),
            cost: usage
                .get("cost")
                .and_then(serde_json::Value::as_f64)
                .filter(|cost| cost.is_finite() && *cost >= 0.0)
                .unwrap_or(0.0),
        }
    });
    (session, usage)
}

/// The report with the session and usage an agent reported.
pub(crate) fn with_spend(report: Report, (session_id, usage): (String, Option<pb::Usage>)) -> Report {
    match report {
        Report::Complete(completion) => Report::Complete(pb::Completion { session_id, usage, ..completion }),
        Report::Fail(failure) => Report::Fail(pb::Failure { session_id, usage, ..failure }),
    }
}

fn with_stderr(message: String, finished: &Finished) -> String {
    if finished.stderr_tail.is_empty() { message } else { format!("{message}; stderr ends: {}", finished.stderr_tail) }
}

/// Decides the report for a finished attempt; `None` means say nothing (the lease was lost).
///
/// `result_file` is what `$HIVE_RESULT_FILE` held: `Ok(None)` when the agent wrote none.
pub(crate) fn decide(
    ids: &Ids,
    agent: &AgentConfig,
    timeout: Duration,
    finished: &Finished,
    result_file: Result<Option<JsonObject>, String>,
    cancelled: Option<CancelReason>,
) -> Option<Report> {
    use pb::FailureClass::{Permanent, Transient};
    let reported = match &result_file {
        Ok(Some(object)) => Some(object.clone()),
        _ => finished.stdout_json.clone(),
    };
    let spent = spend(reported.as_ref(), finished.session.as_deref());
    let report = match &finished.exit {
        Exit::Code(0) => match result_file {
            Err(problem) => failure(ids, Permanent, problem, Some(finished)),
            Ok(_) => Report::Complete(pb::Completion {
                task_id: ids.task_id.clone(),
                attempt_id: ids.attempt_id.clone(),
                result: Some(json_to_struct(reported.unwrap_or_default())),
                session_id: String::new(),
                usage: None,
                probe: false,
            }),
        },
        Exit::Code(code) => {
            let error = with_stderr(format!("the agent exited with code {code}"), finished);
            if let Some(account) = refused(agent, *code, &finished.stderr_tail) {
                return Some(with_spend(rate_limited(ids, account, error, finished, reported.as_ref()), spent));
            }
            let transient =
                agent.transient_exit_codes.contains(code) || agent.unlisted_exit_codes == UnlistedExit::Transient;
            let class = if transient { Transient } else { Permanent };
            failure(ids, class, error, Some(finished))
        }
        Exit::Signal(signal) => {
            let name = nix::sys::signal::Signal::try_from(*signal)
                .map_or_else(|_| signal.to_string(), |s| s.as_str().to_owned());
            failure(ids, Transient, with_stderr(format!("the agent was killed by {name}"), finished), Some(finished))
        }
        Exit::TimedOut => failure(
            ids,
            if agent.on_timeout == UnlistedExit::Transient { Transient } else { Permanent },
            format!("the agent ran past its time limit of {} and was stopped", humantime::format_duration(timeout)),
            Some(finished),
        ),
        Exit::Stalled(quiet) => failure(
            ids,
            Transient,
            format!(
                "the agent was stalled (no output, folder change, CPU use or progress report for {}) and was stopped",
                humantime::format_duration(Duration::from_secs(quiet.as_secs()))
            ),
            Some(finished),
        ),
        Exit::Cancelled => match cancelled {
            Some(CancelReason::LeaseLost) | None => return None,
            Some(CancelReason::TaskCancelled) => failure(
                ids,
                pb::FailureClass::Cancelled,
                "the task was cancelled; its agent was stopped".into(),
                Some(finished),
            ),
            Some(CancelReason::Shutdown) => failure(
                ids,
                pb::FailureClass::Interrupted,
                "the worker stopped before the agent finished; the task was handed back".into(),
                Some(finished),
            ),
            Some(CancelReason::Paused) => failure(
                ids,
                pb::FailureClass::Interrupted,
                "a pause stopped the agent before it finished; the task was handed back".into(),
                Some(finished),
            ),
        },
        // The worker's fault: the task goes back uncharged, for a worker that can run it.
        Exit::NotStarted { problem, worker_fault: true } => {
            failure(ids, pb::FailureClass::Interrupted, problem.clone(), Some(finished))
        }
        Exit::NotStarted { problem, worker_fault: false } => failure(ids, Permanent, problem.clone(), Some(finished)),
        Exit::Unknown(problem) => failure(ids, Transient, problem.clone(), Some(finished)),
    };
    Some(with_spend(report, spent))
}

/// Longest the result file's read may take: it is read after the agent
/// exited, so a read that waits is one something else keeps open.
const RESULT_FILE_READ_LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Reads the result file ([`read_result_file`]) and hands the scratch folder
/// back, in one trip to the blocking pool. A read that takes longer than
/// [`RESULT_FILE_READ_LIMIT`] is an error (the folder is handed back when
/// the trip ends).
pub(crate) async fn take_result(scratch: Scratch, folders: &Arc<Folders>) -> Result<Option<JsonObject>, String> {
    let path = scratch.result_file.clone();
    match tokio::time::timeout(RESULT_FILE_READ_LIMIT, scratch.finish_after(folders, move || read_result_file(&path)))
        .await
    {
        Ok(Some(read)) => read,
        Ok(None) => Err("the result file could not be read: the worker's file job failed".to_owned()),
        Err(_) => Err(format!("the result file could not be read within {RESULT_FILE_READ_LIMIT:?}")),
    }
}

/// Reads the result file (blocking): `Ok(None)` when absent, an error
/// naming the problem when it is not a regular file (a symbolic link, a
/// FIFO, a device), is too large, or is not a JSON object. The agent chose
/// what is at that path, so nothing here may wait on it or follow it
/// elsewhere.
pub(crate) fn read_result_file(path: &std::path::Path) -> Result<Option<JsonObject>, String> {
    use std::io::Read;
    use std::os::unix::fs::OpenOptionsExt;

    use nix::fcntl::OFlag;
    let cannot = |err: std::io::Error| format!("cannot read the result file {}: {err}", path.display());
    let mut options = std::fs::OpenOptions::new();
    options.read(true).custom_flags((OFlag::O_NOFOLLOW | OFlag::O_NONBLOCK).bits());
    let file = match options.open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(err) if err.raw_os_error() == Some(nix::errno::Errno::ELOOP as i32) => {
            return Err("the result file is a symbolic link; write a regular file".to_owned());
        }
        Err(err) => return Err(cannot(err)),
    };
    if !file.metadata().map_err(cannot)?.is_file() {
        return Err("the result file is not a regular file (a FIFO, socket or device); write a regular file".to_owned());
    }
    let mut bytes = Vec::new();
    file.take(MAX_RESULT_FILE + 1).read_to_end(&mut bytes).map_err(cannot)?;
    if bytes.len() as u64 > MAX_RESULT_FILE {
        return Err(format!("the result file is larger than {MAX_RESULT_FILE} bytes"));
    }
    if bytes.trim_ascii().is_empty() {
        return Ok(None);
    }
    serde_json::from_slice::<JsonObject>(&bytes)
        .map(Some)
        .map_err(|err| format!("the result file is not a JSON object: {err}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn agent() -> AgentConfig {
        toml_agent("command = [\"x\"]\ntransient_exit_codes = [75]\n")
    }

    fn toml_agent(text: &str) -> AgentConfig {
        use figment::providers::Format;
        figment::Figment::from(figment::providers::Serialized::defaults(json!({})))
            .merge(figment::providers::Toml::string(text))
            .extract()
            .unwrap()
    }

    fn ids() -> Ids {
        Ids { task_id: "t".into(), attempt_id: "a".into() }
    }

    fn finished(exit: Exit) -> Finished {
        let stdout_json = Some(json!({"from": "stdout"}).as_object().unwrap().clone());
        Finished { exit, stdout_json, session: None, stderr_tail: "boom".into() }
    }

    fn class_of(report: Option<Report>) -> Option<pb::FailureClass> {
        match report {
            Some(Report::Fail(failure)) => Some(failure.class()),
            _ => None,
        }
    }

    #[test]
    fn exit_zero_prefers_the_result_file_then_stdout() {
        let from_file = json!({"from": "file"}).as_object().unwrap().clone();
        let report =
            decide(&ids(), &agent(), Duration::from_secs(1), &finished(Exit::Code(0)), Ok(Some(from_file)), None);
        let Some(Report::Complete(done)) = report else { panic!("{report:?}") };
        assert_eq!(hive_shared::convert::struct_to_json(done.result.unwrap())["from"], "file");

        let report = decide(&ids(), &agent(), Duration::from_secs(1), &finished(Exit::Code(0)), Ok(None), None);
        let Some(Report::Complete(done)) = report else { panic!("{report:?}") };
        assert_eq!(hive_shared::convert::struct_to_json(done.result.unwrap())["from"], "stdout");
    }

    #[test]
    fn a_refusal_by_exit_code_or_stderr_pattern_names_the_account_that_cools_down() {
        let agent = toml_agent(
            "command = [\"x\"]\nprovider = \"openai\"\naccount = \"team-a\"\nrate_limit_exit_codes = [42]\nrate_limit_pattern = \"429|rate limit\"\n",
        );
        let by_code = Finished { stderr_tail: "busy".into(), ..finished(Exit::Code(42)) };
        let by_pattern = Finished { stderr_tail: "HTTP 429: slow down".into(), ..finished(Exit::Code(1)) };
        for finished in [by_code, by_pattern] {
            let Some(Report::Fail(failure)) = decide(&ids(), &agent, Duration::from_secs(1), &finished, Ok(None), None)
            else {
                panic!("a refusal is a failure");
            };
            assert_eq!(failure.class(), pb::FailureClass::RateLimited);
            assert_eq!(failure.provider_account, "openai/team-a");
        }
        let other = Finished { stderr_tail: "segfault".into(), ..finished(Exit::Code(1)) };
        let report = decide(&ids(), &agent, Duration::from_secs(1), &other, Ok(None), None);
        assert_eq!(class_of(report), Some(pb::FailureClass::Permanent), "other exits are read as before");
    }

    #[test]
    fn failures_are_classed_by_code_signal_timeout_and_spawn() {
        use pb::FailureClass::{Permanent, Transient};
        let table = [
            (Exit::Code(75), Some(Transient)),
            (Exit::Code(1), Some(Permanent)),
            (Exit::Signal(9), Some(Transient)),
            (Exit::TimedOut, Some(Transient)),
            (
                Exit::NotStarted { problem: "no such file".into(), worker_fault: true },
                Some(pb::FailureClass::Interrupted),
            ),
            (Exit::NotStarted { problem: "argument list too long".into(), worker_fault: false }, Some(Permanent)),
            (Exit::Unknown("waiting failed".into()), Some(Transient)),
        ];
        for (exit, expected) in table {
            let report = decide(&ids(), &agent(), Duration::from_secs(1), &finished(exit.clone()), Ok(None), None);
            assert_eq!(class_of(report), expected, "{exit:?}");
        }
    }

    #[test]
    fn unlisted_codes_can_be_declared_transient() {
        let lenient = toml_agent("command = [\"x\"]\nunlisted_exit_codes = \"transient\"\n");
        let report = decide(&ids(), &lenient, Duration::from_secs(1), &finished(Exit::Code(1)), Ok(None), None);
        assert_eq!(class_of(report), Some(pb::FailureClass::Transient));
    }

    #[test]
    fn timeouts_can_be_declared_permanent() {
        let strict = toml_agent("command = [\"x\"]\non_timeout = \"permanent\"\n");
        let report = decide(&ids(), &strict, Duration::from_secs(1), &finished(Exit::TimedOut), Ok(None), None);
        assert_eq!(class_of(report), Some(pb::FailureClass::Permanent));
    }

    #[test]
    fn a_bad_result_file_fails_permanently_and_says_why() {
        let report =
            decide(&ids(), &agent(), Duration::from_secs(1), &finished(Exit::Code(0)), Err("not JSON".into()), None);
        let Some(Report::Fail(failure)) = report else { panic!() };
        assert_eq!(failure.class(), pb::FailureClass::Permanent);
        assert_eq!(failure.error, "not JSON");
    }

    #[test]
    fn a_cancelled_task_reports_its_cancel() {
        let stopped = decide(
            &ids(),
            &agent(),
            Duration::from_secs(1),
            &finished(Exit::Cancelled),
            Ok(None),
            Some(CancelReason::TaskCancelled),
        );
        assert_eq!(class_of(stopped), Some(pb::FailureClass::Cancelled));
    }

    #[test]
    fn a_lost_lease_reports_nothing_and_a_shutdown_or_pause_reports_an_interruption() {
        let lost = decide(
            &ids(),
            &agent(),
            Duration::from_secs(1),
            &finished(Exit::Cancelled),
            Ok(None),
            Some(CancelReason::LeaseLost),
        );
        assert_eq!(lost, None);
        let drained = decide(
            &ids(),
            &agent(),
            Duration::from_secs(1),
            &finished(Exit::Cancelled),
            Ok(None),
            Some(CancelReason::Shutdown),
        );
        assert_eq!(class_of(drained), Some(pb::FailureClass::Interrupted));
        let paused = decide(
            &ids(),
            &agent(),
            Duration::from_secs(1),
            &finished(Exit::Cancelled),
            Ok(None),
            Some(CancelReason::Paused),
        );
        let Some(Report::Fail(failure)) = paused else { panic!("a pause reports the attempt") };
        assert_eq!(failure.class(), pb::FailureClass::Interrupted);
        assert!(failure.error.contains("a pause stopped the agent"), "{}", failure.error);
    }

    #[test]
    fn errors_carry_the_exit_code_and_stderr_tail() {
        let report = decide(&ids(), &agent(), Duration::from_secs(1), &finished(Exit::Code(3)), Ok(None), None);
        let Some(Report::Fail(failure)) = report else { panic!() };
        assert_eq!(failure.exit_code, Some(3));
        assert_eq!(failure.error, "the agent exited with code 3; stderr ends: boom");
    }

    #[test]
    fn usage_and_session_travel_with_the_report() {
        let result = json!({"session_id": "s-1", "usage": {"input_tokens": 10, "output_tokens": 5, "cost": 0.25}});
        let file = Ok(Some(result.as_object().unwrap().clone()));
        let report = decide(&ids(), &agent(), Duration::from_secs(1), &finished(Exit::Code(1)), file, None);
        let Some(Report::Fail(failure)) = report else { panic!() };
        assert_eq!(failure.session_id, "s-1");
        assert_eq!(failure.usage, Some(pb::Usage { input_tokens: 10, output_tokens: 5, cost: 0.25 }));

        let mut seen = finished(Exit::Code(0));
        seen.session = Some("from-output".into());
        let Some(Report::Complete(done)) = decide(&ids(), &agent(), Duration::from_secs(1), &seen, Ok(None), None)
        else {
            panic!()
        };
        assert_eq!(done.session_id, "from-output");
    }

    #[test]
    fn result_files_are_read_bounded_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("result.json");
        assert_eq!(read_result_file(&path), Ok(None));
        std::fs::write(&path, b"{\"ok\":true}").unwrap();
        assert_eq!(read_result_file(&path).unwrap().unwrap()["ok"], true);
        std::fs::write(&path, b"[1]").unwrap();
        assert!(read_result_file(&path).unwrap_err().contains("not a JSON object"));
        std::fs::write(&path, vec![b' '; usize::try_from(MAX_RESULT_FILE).unwrap() + 1]).unwrap();
        assert!(read_result_file(&path).unwrap_err().contains("larger than"));
    }

    #[test]
    fn a_result_file_that_is_a_fifo_or_a_link_is_refused_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("fifo.json");
        nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::S_IRWXU).unwrap();
        // Opened without waiting for a writer, and refused before any read.
        assert!(read_result_file(&fifo).unwrap_err().contains("not a regular file"));
        let secret = dir.path().join("secret");
        std::fs::write(&secret, b"{\"key\": \"hunter2\"}").unwrap();
        let link = dir.path().join("link.json");
        std::os::unix::fs::symlink(&secret, &link).unwrap();
        assert!(read_result_file(&link).unwrap_err().contains("symbolic link"));
    }

    #[tokio::test]
    async fn taking_the_result_hands_the_folder_back_emptied() {
        let root = tempfile::tempdir().unwrap();
        let folders = Arc::new(Folders::new(root.path().to_path_buf(), "w".into(), false, None));
        let scratch = Scratch::create(&folders, hive_shared::ids::AttemptId::new(), None, vec![]).await.unwrap();
        let dir = scratch.dir.clone();
        std::fs::write(&scratch.result_file, b"{\"ok\":true}").unwrap();
        assert_eq!(take_result(scratch, &folders).await.unwrap().unwrap()["ok"], true);
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0, "the folder is emptied");
        let next = Scratch::create(&folders, hive_shared::ids::AttemptId::new(), None, vec![]).await.unwrap();
        assert_eq!(next.dir, dir, "and reused");
        assert_eq!(take_result(next, &folders).await, Ok(None), "no result file is no result");
    }

    fn any_json() -> impl proptest::strategy::Strategy<Value = serde_json::Value> {
        use proptest::prelude::*;
        let leaf = prop_oneof![
            Just(serde_json::Value::Null),
            any::<bool>().prop_map(serde_json::Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            any::<u64>().prop_map(|n| json!(n)),
            any::<f64>().prop_filter_map("finite", |n| serde_json::Number::from_f64(n).map(serde_json::Value::Number)),
            any::<String>().prop_map(serde_json::Value::String),
        ];
        leaf.prop_recursive(4, 24, 5, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..5).prop_map(serde_json::Value::Array),
                prop::collection::btree_map(
                    prop_oneof![
                        Just("usage".to_owned()),
                        Just("session_id".to_owned()),
                        Just("cost".to_owned()),
                        Just("input_tokens".to_owned()),
                        any::<String>()
                    ],
                    inner,
                    0..5
                )
                .prop_map(|map| serde_json::Value::Object(map.into_iter().collect())),
            ]
        })
    }

    fn any_object() -> impl proptest::strategy::Strategy<Value = Option<JsonObject>> {
        use proptest::prelude::*;
        prop::option::of(any_json().prop_map(|value| match value {
            serde_json::Value::Object(object) => object,
            other => [("value".to_owned(), other)].into_iter().collect(),
        }))
    }

    proptest::proptest! {
        #[test]
        fn any_agent_output_makes_a_report_whose_usage_is_storable(
            result_file in any_object(),
            stdout_json in any_object(),
            session in proptest::option::of(proptest::prelude::any::<String>()),
            code in proptest::prelude::any::<i32>(),
        ) {
            let finished = Finished { exit: Exit::Code(code), stdout_json, session, stderr_tail: String::new() };
            let report = decide(&ids(), &agent(), Duration::from_secs(1), &finished, Ok(result_file), None);
            let usage = match report {
                Some(Report::Complete(completion)) => completion.usage,
                Some(Report::Fail(failure)) => failure.usage,
                None => None,
            };
            if let Some(usage) = usage {
                proptest::prop_assert!(usage.cost.is_finite() && usage.cost >= 0.0, "{usage:?}");
            }
        }

        #[test]
        fn any_bytes_in_a_result_file_are_read_or_refused_without_panic(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("result.json");
            std::fs::write(&path, &bytes).unwrap();
            let read = read_result_file(&path);
            let parsed = serde_json::from_slice::<JsonObject>(&bytes).ok();
            match read {
                Ok(Some(object)) => proptest::prop_assert_eq!(Some(object), parsed),
                Ok(None) => proptest::prop_assert!(bytes.trim_ascii().is_empty()),
                Err(problem) => proptest::prop_assert!(parsed.is_none() && problem.contains("not a JSON object"), "{problem}"),
            }
        }
    }
}
