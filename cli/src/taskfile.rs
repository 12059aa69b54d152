//! Task files (YAML): parsing with every unknown or mistyped field named with
//! its line, checks that need the whole file (unique ids), and conversion to
//! a submission. A file with any problem submits nothing.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hive_shared::convert::{duration, json_to_struct, timestamp};
use hive_shared::pb;
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value as Json};

/// A task file.
#[derive(Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskFile {
    /// Swarm name.
    pub swarm: String,
    /// Submitting again with this key returns the swarm submitted first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idempotency_key: Option<String>,
    /// Spending limit (sum of the cost agents report); once spent, tasks wait.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub budget: Option<f64>,
    /// Values every task takes unless it sets its own.
    #[serde(default, skip_serializing_if = "Defaults::is_empty")]
    pub defaults: Defaults,
    /// The tasks.
    pub tasks: Vec<TaskEntry>,
}

/// Per-file defaults.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct Defaults {
    /// Agent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Priority.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Attempts allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Time limit per attempt.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// First retry delay.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub backoff_initial: Option<Duration>,
    /// Largest retry delay.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub backoff_max: Option<Duration>,
    /// Growth of the retry delay per failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_multiplier: Option<f64>,
}

impl Defaults {
    fn is_empty(&self) -> bool {
        self.agent.is_none()
            && self.priority.is_none()
            && self.max_attempts.is_none()
            && self.timeout.is_none()
            && self.backoff_initial.is_none()
            && self.backoff_max.is_none()
            && self.backoff_multiplier.is_none()
    }
}

/// A validator stage.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub(crate) struct ValidateEntry {
    /// Validator agent.
    pub agent: String,
    /// Validator prompt.
    #[serde(default)]
    pub prompt: String,
    /// Builder runs allowed (default 3).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rounds: Option<u32>,
}

/// What a retry does with the agent's session.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub(crate) enum Session {
    /// Start a new one (the default).
    Fresh,
    /// Resume the last attempt's session ($HIVE_RESUME_SESSION).
    Resume,
}

/// One task in a file.
#[derive(Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct TaskEntry {
    /// Name, unique within the file; what `depends_on` refers to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    /// Agent (or the file default).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub agent: Option<String>,
    /// Prompt.
    #[serde(default)]
    pub prompt: String,
    /// Structured input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub input: Option<Map<String, Json>>,
    /// Priority, higher first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<i32>,
    /// Attempts allowed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Time limit per attempt.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// First retry delay.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub backoff_initial: Option<Duration>,
    /// Largest retry delay.
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub backoff_max: Option<Duration>,
    /// Growth of the retry delay per failure.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff_multiplier: Option<f64>,
    /// Do not start before this time (RFC 3339, e.g. 2026-12-01T09:00:00Z).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_after: Option<DateTime<Utc>>,
    /// Do not start until this long after submission (e.g. 10m).
    #[serde(default, with = "humantime_serde", skip_serializing_if = "Option::is_none")]
    pub delay: Option<Duration>,
    /// Tasks that must succeed first: ids from this file, or existing task ids.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub depends_on: Vec<String>,
    /// Labels a worker must carry (e.g. gpu: "true").
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
    /// Locks held while it runs (paths or keys).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub locks: Vec<String>,
    /// A validator stage.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub validate: Option<ValidateEntry>,
    /// What a retry does with the agent's session.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session: Option<Session>,
    /// Agents to fall back on, in order, when a build attempt fails (or its
    /// provider refuses it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub fallback_agents: Vec<String>,
    /// Concurrency keys with their limits (`{"repo:api": 3}`): it starts only
    /// while fewer than the limit of tasks holding each key run.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub concurrency: BTreeMap<String, u32>,
}

/// A task file that cannot be submitted; the message names the file, the field and (where known) the line.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problems}", problems = problems.join("\n  "))]
pub(crate) struct TaskFileError {
    /// The file.
    pub file: String,
    /// Every problem found.
    pub problems: Vec<String>,
}

/// Reads and checks a task file.
///
/// # Errors
/// [`TaskFileError`] listing what is wrong.
pub(crate) fn load(path: &Path) -> Result<TaskFile, TaskFileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|err| TaskFileError { file: name.clone(), problems: vec![format!("cannot read: {err}")] })?;
    parse(&name, &text)
}

/// Parses and checks task file text.
///
/// # Errors
/// [`TaskFileError`] listing what is wrong.
pub(crate) fn parse(name: &str, text: &str) -> Result<TaskFile, TaskFileError> {
    let error = |problems: Vec<String>| TaskFileError { file: name.to_owned(), problems };
    let file: TaskFile = serde_norway::from_str(text).map_err(|err| error(vec![describe_yaml_error(&err)]))?;
    let problems = problems(&file, text);
    if problems.is_empty() { Ok(file) } else { Err(error(problems)) }
}

fn describe_yaml_error(err: &serde_norway::Error) -> String {
    let message = err.to_string();
    match err.location() {
        Some(location) if !message.contains("line") => {
            format!("line {} column {}: {message}", location.line(), location.column())
        }
        _ => message,
    }
}

fn problems(file: &TaskFile, text: &str) -> Vec<String> {
    let mut problems = Vec::new();
    if file.swarm.trim().is_empty() {
        problems.push("swarm: must not be empty".to_owned());
    }
    if file.tasks.is_empty() {
        problems.push("tasks: the file has no tasks".to_owned());
    }
    let mut seen: HashMap<&str, usize> = HashMap::new();
    for (index, task) in file.tasks.iter().enumerate() {
        let agent = task.agent.as_deref().or(file.defaults.agent.as_deref()).unwrap_or("");
        if agent.trim().is_empty() {
            problems.push(format!("tasks[{index}].agent: must not be empty (set it, or defaults.agent)"));
        }
        if task.run_after.is_some() && task.delay.is_some() {
            problems.push(format!("tasks[{index}].delay: give run_after or delay, not both"));
        }
        for (position, dependency) in task.depends_on.iter().enumerate() {
            let known = file.tasks.iter().any(|other| other.id.as_deref() == Some(dependency.as_str()));
            if !known && !looks_like_task_id(dependency) {
                problems.push(format!(
                    "tasks[{index}].depends_on[{position}]: `{dependency}` is neither an id in this file nor a task id"
                ));
            }
        }
        let Some(id) = task.id.as_deref() else {
            continue;
        };
        if id.trim().is_empty() {
            problems.push(format!("tasks[{index}].id: must not be empty when given"));
        } else if let Some(first) = seen.insert(id, index) {
            let line = line_of_id(text, id, 2).map(|line| format!(" (line {line})")).unwrap_or_default();
            problems.push(format!("tasks[{index}].id{line}: duplicate id `{id}`, first used by tasks[{first}]"));
        }
    }
    problems
}

/// The line (from 1) of the `nth` `id: <id>` entry, found textually.
fn line_of_id(text: &str, id: &str, nth: usize) -> Option<usize> {
    text.lines()
        .enumerate()
        .filter(|(_, line)| {
            let line = line.trim_start().trim_start_matches('-').trim_start();
            line.strip_prefix("id:").is_some_and(|value| value.trim().trim_matches(['"', '\'']) == id)
        })
        .nth(nth - 1)
        .map(|(index, _)| index + 1)
}

impl TaskFile {
    /// The submission this file describes.
    pub(crate) fn into_request(self) -> pb::SubmitTasksRequest {
        let (idempotency_key, budget) = (self.idempotency_key.unwrap_or_default(), self.budget.unwrap_or(0.0));
        let defaults = self.defaults;
        let tasks = self
            .tasks
            .into_iter()
            .map(|task| pb::TaskSpec {
                key: task.id.unwrap_or_default(),
                agent: task.agent.or_else(|| defaults.agent.clone()).unwrap_or_default(),
                prompt: task.prompt,
                input: task.input.map(json_to_struct),
                priority: task.priority.or(defaults.priority).unwrap_or(0),
                max_attempts: task.max_attempts.or(defaults.max_attempts).unwrap_or(0),
                timeout: task.timeout.or(defaults.timeout).map(duration),
                backoff_initial: task.backoff_initial.or(defaults.backoff_initial).map(duration),
                backoff_max: task.backoff_max.or(defaults.backoff_max).map(duration),
                backoff_multiplier: task.backoff_multiplier.or(defaults.backoff_multiplier).unwrap_or(0.0),
                run_after: start_time(task.run_after, task.delay).map(timestamp),
                depends_on: task.depends_on,
                labels: task.labels.into_iter().collect(),
                locks: task.locks,
                validate: task.validate.map(|validate| pb::ValidateSpec {
                    agent: validate.agent,
                    prompt: validate.prompt,
                    max_rounds: validate.max_rounds.unwrap_or(0),
                }),
                session: match task.session {
                    Some(Session::Resume) => pb::SessionPolicy::Resume,
                    Some(Session::Fresh) | None => pb::SessionPolicy::Fresh,
                }
                .into(),
                fallback_agents: task.fallback_agents,
                concurrency: task.concurrency.into_iter().collect(),
            })
            .collect();
        pb::SubmitTasksRequest { swarm: self.swarm, tasks, idempotency_key, budget }
    }
}

/// Whether text is a task id (a UUID), for dependencies on existing tasks.
fn looks_like_task_id(text: &str) -> bool {
    text.len() == 36 && text.chars().all(|c| c.is_ascii_hexdigit() || c == '-')
}

/// When a task may start: an explicit time, or now plus a delay.
fn start_time(run_after: Option<DateTime<Utc>>, delay: Option<Duration>) -> Option<DateTime<Utc>> {
    run_after.or_else(|| delay.and_then(|delay| chrono::Duration::from_std(delay).ok()).map(|delay| Utc::now() + delay))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_documented_example_parses() {
        let file = parse(
            "t.yaml",
            "swarm: hello\ntasks:\n  - id: greet-1\n    agent: echo\n    prompt: \"say hello\"\n    priority: 5\n",
        )
        .unwrap();
        let request = file.into_request();
        assert_eq!(request.swarm, "hello");
        assert_eq!(request.tasks[0].key, "greet-1");
        assert_eq!(request.tasks[0].priority, 5);
    }

    #[test]
    fn defaults_fill_in_and_tasks_override_them() {
        let text = "swarm: s\ndefaults:\n  agent: echo\n  priority: 2\n  timeout: 5m\ntasks:\n  - prompt: a\n  - prompt: b\n    agent: other\n    priority: 9\n";
        let request = parse("t.yaml", text).unwrap().into_request();
        assert_eq!(request.tasks[0].agent, "echo");
        assert_eq!(request.tasks[0].priority, 2);
        assert_eq!(request.tasks[0].timeout.unwrap().seconds, 300);
        assert_eq!(request.tasks[1].agent, "other");
        assert_eq!(request.tasks[1].priority, 9);
    }

    #[test]
    fn an_unknown_field_is_named_with_its_line() {
        let err = parse("t.yaml", "swarm: s\ntasks:\n  - id: a\n    agnet: echo\n").unwrap_err().to_string();
        assert!(err.contains("agnet"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn a_wrong_type_is_named_with_its_line() {
        let err = parse("t.yaml", "swarm: s\ntasks:\n  - agent: echo\n    priority: high\n").unwrap_err().to_string();
        assert!(err.contains("priority") || err.contains("invalid type"), "{err}");
        assert!(err.contains("line 4"), "{err}");
    }

    #[test]
    fn malformed_yaml_names_the_line() {
        let err = parse("t.yaml", "swarm: s\ntasks:\n  - agent: [echo\n").unwrap_err().to_string();
        assert!(err.contains("line"), "{err}");
    }

    #[test]
    fn duplicate_ids_and_empty_agents_are_all_reported() {
        let text = "swarm: s\ntasks:\n  - id: a\n    agent: echo\n  - id: a\n    agent: \"\"\n";
        let err = parse("t.yaml", text).unwrap_err();
        assert_eq!(err.problems.len(), 2, "{err}");
        assert!(
            err.problems.iter().any(|p| p == "tasks[1].id (line 5): duplicate id `a`, first used by tasks[0]"),
            "{err}"
        );
        assert!(err.problems.iter().any(|p| p.starts_with("tasks[1].agent: must not be empty")), "{err}");
    }

    #[test]
    fn retry_policy_and_start_time_travel_with_the_task() {
        let text = "swarm: s\ndefaults:\n  backoff_initial: 2s\ntasks:\n  - agent: a\n    backoff_max: 1m\n    backoff_multiplier: 3\n    delay: 1h\n  - agent: a\n    run_after: 2030-01-02T03:04:05Z\n";
        let request = parse("t.yaml", text).unwrap().into_request();
        let first = &request.tasks[0];
        assert_eq!(first.backoff_initial.unwrap().seconds, 2);
        assert_eq!(first.backoff_max.unwrap().seconds, 60);
        assert!((first.backoff_multiplier - 3.0).abs() < f64::EPSILON);
        let in_an_hour = first.run_after.unwrap().seconds - Utc::now().timestamp();
        assert!((3590..=3600).contains(&in_an_hour), "{in_an_hour}");
        assert_eq!(request.tasks[1].run_after.unwrap().seconds, 1_893_553_445);
    }

    #[test]
    fn run_after_and_delay_together_are_refused() {
        let err =
            parse("t.yaml", "swarm: s\ntasks:\n  - agent: a\n    delay: 1m\n    run_after: 2030-01-01T00:00:00Z\n")
                .unwrap_err();
        assert!(err.to_string().contains("tasks[0].delay: give run_after or delay, not both"), "{err}");
    }

    #[test]
    fn the_graph_labels_locks_and_stages_travel_with_the_file() {
        let text = "swarm: s\nidempotency_key: k1\nbudget: 2.5\ntasks:\n  - id: a\n    agent: x\n    labels: {gpu: \"true\"}\n    locks: [src/lib.rs]\n    session: resume\n  - id: b\n    agent: x\n    depends_on: [a]\n    validate: {agent: check, prompt: review it, max_rounds: 2}\n";
        let request = parse("t.yaml", text).unwrap().into_request();
        assert_eq!((request.idempotency_key.as_str(), request.budget), ("k1", 2.5));
        assert_eq!(request.tasks[0].labels["gpu"], "true");
        assert_eq!(request.tasks[0].locks, ["src/lib.rs"]);
        assert_eq!(request.tasks[0].session, i32::from(pb::SessionPolicy::Resume));
        assert_eq!(request.tasks[1].depends_on, ["a"]);
        assert_eq!(request.tasks[1].validate.as_ref().unwrap().max_rounds, 2);
    }

    #[test]
    fn an_unknown_dependency_is_named_with_its_task() {
        let err = parse("t.yaml", "swarm: s\ntasks:\n  - id: a\n    agent: x\n    depends_on: [nope]\n").unwrap_err();
        assert!(
            err.to_string().contains("tasks[0].depends_on[0]: `nope` is neither an id in this file nor a task id"),
            "{err}"
        );
    }

    #[test]
    fn a_bad_timeout_is_named() {
        let err = parse("t.yaml", "swarm: s\ntasks:\n  - agent: echo\n    timeout: soon\n").unwrap_err().to_string();
        assert!(err.contains("timeout") || err.contains("line 4"), "{err}");
    }

    /// Pieces task files are made of, so generated files get past the first
    /// line often and reach every field's parser.
    fn fragment() -> impl proptest::strategy::Strategy<Value = String> {
        use proptest::prelude::*;
        prop_oneof![
            Just("swarm: s\n".to_owned()),
            Just("tasks:\n".to_owned()),
            Just("  - agent: echo\n".to_owned()),
            Just("    prompt: hi\n".to_owned()),
            Just("    depends_on: [a, b]\n".to_owned()),
            Just("    timeout: 5s\n".to_owned()),
            Just("    input: {n: 1}\n".to_owned()),
            Just("    validate: {agent: v, prompt: p, max_rounds: 99999999999}\n".to_owned()),
            Just("    priority: -2147483649\n".to_owned()),
            Just("budget: .nan\n".to_owned()),
            Just("&a [*a, *a]\n".to_owned()),
            any::<String>(),
            "[ -~\\n\\t:\\[\\]{}]{0,40}",
        ]
    }

    proptest::proptest! {
        #![proptest_config(proptest::test_runner::Config::with_cases(
            std::env::var("HIVE_FUZZ_CASES").ok().and_then(|n| n.parse().ok()).unwrap_or(256)
        ))]

        #[test]
        fn any_task_file_parses_or_is_refused_without_a_panic(
            parts in proptest::collection::vec(fragment(), 0..24),
        ) {
            let text = parts.concat();
            if let Ok(file) = parse("fuzz.yaml", &text) {
                let _ = file.into_request();
            }
        }
    }
}
