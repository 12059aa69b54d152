//! Task files (YAML): parsing with every unknown or mistyped field named with
//! its line, checks that need the whole file (unique ids), and conversion to
//! a submission. A file with any problem submits nothing.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hive_shared::convert::{duration, json_to_struct, timestamp};
use hive_shared::pb;
use serde::Deserialize;
use serde_json::{Map, Value as Json};

/// A task file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskFile {
    /// Swarm name.
    pub swarm: String,
    /// Values every task takes unless it sets its own.
    #[serde(default)]
    pub defaults: Defaults,
    /// The tasks.
    pub tasks: Vec<TaskEntry>,
}

/// Per-file defaults.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// Agent.
    pub agent: Option<String>,
    /// Priority.
    pub priority: Option<i32>,
    /// Attempts allowed.
    pub max_attempts: Option<u32>,
    /// Time limit per attempt.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// First retry delay.
    #[serde(default, with = "humantime_serde")]
    pub backoff_initial: Option<Duration>,
    /// Largest retry delay.
    #[serde(default, with = "humantime_serde")]
    pub backoff_max: Option<Duration>,
    /// Growth of the retry delay per failure.
    pub backoff_multiplier: Option<f64>,
}

/// One task in a file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskEntry {
    /// Name, unique within the file.
    pub id: Option<String>,
    /// Agent (or the file default).
    pub agent: Option<String>,
    /// Prompt.
    #[serde(default)]
    pub prompt: String,
    /// Structured input.
    pub input: Option<Map<String, Json>>,
    /// Priority, higher first.
    pub priority: Option<i32>,
    /// Attempts allowed.
    pub max_attempts: Option<u32>,
    /// Time limit per attempt.
    #[serde(default, with = "humantime_serde")]
    pub timeout: Option<Duration>,
    /// First retry delay.
    #[serde(default, with = "humantime_serde")]
    pub backoff_initial: Option<Duration>,
    /// Largest retry delay.
    #[serde(default, with = "humantime_serde")]
    pub backoff_max: Option<Duration>,
    /// Growth of the retry delay per failure.
    pub backoff_multiplier: Option<f64>,
    /// Do not start before this time (RFC 3339, e.g. 2026-12-01T09:00:00Z).
    pub run_after: Option<DateTime<Utc>>,
    /// Do not start until this long after submission (e.g. 10m).
    #[serde(default, with = "humantime_serde")]
    pub delay: Option<Duration>,
}

/// A task file that cannot be submitted; the message names the file, the field and (where known) the line.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {problems}", problems = problems.join("\n  "))]
pub struct TaskFileError {
    /// The file.
    pub file: String,
    /// Every problem found.
    pub problems: Vec<String>,
}

/// Reads and checks a task file.
///
/// # Errors
/// [`TaskFileError`] listing what is wrong.
pub fn load(path: &Path) -> Result<TaskFile, TaskFileError> {
    let name = path.display().to_string();
    let text = std::fs::read_to_string(path)
        .map_err(|err| TaskFileError { file: name.clone(), problems: vec![format!("cannot read: {err}")] })?;
    parse(&name, &text)
}

/// Parses and checks task file text.
///
/// # Errors
/// [`TaskFileError`] listing what is wrong.
pub fn parse(name: &str, text: &str) -> Result<TaskFile, TaskFileError> {
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
    pub fn into_request(self) -> pb::SubmitTasksRequest {
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
            })
            .collect();
        pb::SubmitTasksRequest { swarm: self.swarm, tasks }
    }
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
    fn a_bad_timeout_is_named() {
        let err = parse("t.yaml", "swarm: s\ntasks:\n  - agent: echo\n    timeout: soon\n").unwrap_err().to_string();
        assert!(err.contains("timeout") || err.contains("line 4"), "{err}");
    }
}
