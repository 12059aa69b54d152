//! Task files (YAML): parsing with every unknown or mistyped field named with
//! its line, checks that need the whole file (unique ids), and conversion to
//! a submission. A file with any problem submits nothing.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use hive_shared::convert::{duration, json_to_struct};
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
            })
            .collect();
        pb::SubmitTasksRequest { swarm: self.swarm, tasks }
    }
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
    fn a_bad_timeout_is_named() {
        let err = parse("t.yaml", "swarm: s\ntasks:\n  - agent: echo\n    timeout: soon\n").unwrap_err().to_string();
        assert!(err.contains("timeout") || err.contains("line 4"), "{err}");
    }
}
