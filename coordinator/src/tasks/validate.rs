//! Checking a submission before anything is written: every problem is
//! listed, each naming its field, grouped by what it checks — the swarm's
//! own fields, names and keys, content (sizes, and text PostgreSQL can
//! store), retry settings, routing (labels and locks) and the validator
//! stage. Dependencies are checked against the
//! database in `submit`.

use std::collections::HashMap;
use std::time::Duration;

use hive_shared::convert::JsonObject;

use crate::config::LimitConfig;
use crate::tasks::submit::{NewTask, Submission};

/// Most locks and labels a task may have.
pub(crate) const MAX_LOCKS_AND_LABELS: usize = 32;
/// Most builder rounds.
pub(crate) const MAX_ROUNDS_LIMIT: u32 = 20;

/// Checks a label key (`gpu`, `region`, `example.com/zone`) and value (`true`, `eu-west`).
pub(crate) fn label_problem(key: &str, value: &str) -> Option<String> {
    let key_ok = !key.is_empty()
        && key.len() <= 63
        && key.chars().all(|c| c.is_ascii_alphanumeric() || "-_./".contains(c))
        && key.starts_with(|c: char| c.is_ascii_alphanumeric());
    let value_ok = value.len() <= 63 && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    match (key_ok, value_ok) {
        (false, _) => Some(format!("`{key}` is not a label name (letters, digits, - _ . /; at most 63)")),
        (true, false) => Some(format!("`{key}={value}`: the value may hold letters, digits, - _ . (at most 63)")),
        (true, true) => None,
    }
}

/// Longest agent, swarm or key name.
pub(crate) const MAX_NAME_LEN: usize = 128;
/// Most attempts a task may ask for.
pub(crate) const MAX_ATTEMPTS_LIMIT: u32 = 100;
/// Longest per-attempt timeout.
pub(crate) const MAX_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);

/// Checks a name: non-empty, at most [`MAX_NAME_LEN`], letters, digits and `-_.:/@` only.
pub(crate) fn name_problem(name: &str) -> Option<String> {
    if name.is_empty() {
        return Some("must not be empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Some(format!("is {} characters; the limit is {MAX_NAME_LEN}", name.len()));
    }
    let bad = name.chars().find(|c| !(c.is_ascii_alphanumeric() || "-_.:/@".contains(*c)));
    bad.map(|c| format!("`{name}` contains {c:?}; use letters, digits and - _ . : / @"))
}

/// Checks text that is stored as it is: PostgreSQL's text cannot hold a NUL character.
pub(crate) fn text_problem(text: &str) -> Option<String> {
    text.contains('\0').then(|| "contains a NUL character, which cannot be stored".to_owned())
}

/// Checks a JSON object that is stored as it is: no string or key may
/// hold a NUL character (PostgreSQL's jsonb cannot); names the first one's path.
pub(crate) fn json_problem(object: &JsonObject) -> Option<String> {
    let at = nul_in_fields(object, &mut String::new())?;
    Some(format!("{at} contains a NUL character, which cannot be stored"))
}

/// Where the first NUL character in these fields is: a key (`the key .a`) or a string (`.a[2]`).
fn nul_in_fields(fields: &JsonObject, path: &mut String) -> Option<String> {
    fields.iter().find_map(|(key, value)| {
        let len = path.len();
        path.push('.');
        path.push_str(&key.replace('\0', "\\u0000"));
        let found = if key.contains('\0') { Some(format!("the key {path}")) } else { nul_in_value(value, path) };
        path.truncate(len);
        found
    })
}

fn nul_in_value(value: &serde_json::Value, path: &mut String) -> Option<String> {
    match value {
        serde_json::Value::String(text) if text.contains('\0') => Some(path.clone()),
        serde_json::Value::Array(items) => items.iter().enumerate().find_map(|(index, item)| {
            let len = path.len();
            path.push_str(&format!("[{index}]"));
            let found = nul_in_value(item, path);
            path.truncate(len);
            found
        }),
        serde_json::Value::Object(fields) => nul_in_fields(fields, path),
        _ => None,
    }
}

/// Text an agent wrote (an error, a session id), made storable: each NUL
/// character becomes U+FFFD, as the README says.
pub(crate) fn storable(text: &str) -> std::borrow::Cow<'_, str> {
    if text.contains('\0') { text.replace('\0', "\u{FFFD}").into() } else { text.into() }
}

/// Lists every problem with a submission, each naming its field.
pub(crate) fn problems(submission: &Submission, limits: &LimitConfig) -> Vec<String> {
    let mut problems = swarm_problems(submission, limits);
    let mut seen_keys: HashMap<&str, usize> = HashMap::new();
    for (index, task) in submission.tasks.iter().enumerate() {
        let field = |name: &str| format!("tasks[{index}].{name}");
        let mut found = Vec::new();
        name_problems(task, index, &mut seen_keys, &mut found);
        content_problems(task, limits, &mut found);
        retry_problems(task, &mut found);
        routing_problems(task, &mut found);
        stage_problems(task, &mut found);
        problems.extend(found.into_iter().map(|(name, problem)| format!("{}: {problem}", field(&name))));
    }
    problems
}

/// A problem with one field of a task: the field's name within the task, and what is wrong.
type TaskProblem = (String, String);

/// The swarm's own fields: its name, the number of tasks, the idempotency key and the budget.
fn swarm_problems(submission: &Submission, limits: &LimitConfig) -> Vec<String> {
    let mut problems = Vec::new();
    if let Some(problem) = name_problem(&submission.swarm) {
        problems.push(format!("swarm: {problem}"));
    }
    if submission.tasks.is_empty() {
        problems.push("tasks: at least one task is required".into());
    }
    let max_tasks = limits.max_tasks_per_submit as usize;
    if submission.tasks.len() > max_tasks {
        problems.push(format!("tasks: {} tasks; the limit is {max_tasks} per submission", submission.tasks.len()));
    }
    if let Some(key) = &submission.idempotency_key {
        if key.is_empty() || key.len() > 256 {
            problems.push("idempotency_key: must have 1 to 256 characters".into());
        } else if let Some(problem) = text_problem(key) {
            problems.push(format!("idempotency_key: {problem}"));
        }
    }
    if let Some(budget) = submission.budget
        && !(budget.is_finite() && budget > 0.0)
    {
        problems.push(format!("budget: {budget}; must be a positive amount"));
    }
    let mut limits: HashMap<&str, (usize, u32)> = HashMap::new();
    for (index, task) in submission.tasks.iter().enumerate() {
        for (key, limit) in &task.concurrency {
            match limits.get(key.as_str()) {
                Some((first, other)) if other != limit => problems.push(format!(
                    "tasks[{index}].concurrency.{key}: limit {limit}, but tasks[{first}] gives it {other}; a key has one limit"
                )),
                Some(_) => {}
                None => {
                    limits.insert(key, (index, *limit));
                }
            }
        }
    }
    problems
}

/// Most fallback agents one task may name.
const MAX_FALLBACKS: usize = 8;

/// The agent's name and its fallbacks', and the key: well formed, and unique
/// (the key within the submission, each agent within the task).
fn name_problems<'a>(
    task: &'a NewTask,
    index: usize,
    seen: &mut HashMap<&'a str, usize>,
    found: &mut Vec<TaskProblem>,
) {
    if let Some(problem) = name_problem(&task.agent) {
        found.push(("agent".into(), problem));
    }
    if task.fallback_agents.len() > MAX_FALLBACKS {
        found.push(("fallback_agents".into(), format!("at most {MAX_FALLBACKS} agents")));
    } else {
        for (at, fallback) in task.fallback_agents.iter().enumerate() {
            let field = format!("fallback_agents[{at}]");
            if let Some(problem) = name_problem(fallback) {
                found.push((field, problem));
            } else if *fallback == task.agent || task.fallback_agents[..at].contains(fallback) {
                found.push((field, format!("`{fallback}` is already the task's agent or an earlier fallback")));
            }
        }
    }
    if let Some(key) = task.key.as_deref() {
        if let Some(problem) = name_problem(key) {
            found.push(("key".into(), problem));
        } else if let Some(first) = seen.insert(key, index) {
            found.push(("key".into(), format!("duplicate key `{key}` (also used by tasks[{first}])")));
        }
    }
}

/// The prompt and input: within their size limits, and storable.
fn content_problems(task: &NewTask, limits: &LimitConfig, found: &mut Vec<TaskProblem>) {
    let prompt_limit = limits.max_prompt_size.as_u64();
    if task.prompt.len() as u64 > prompt_limit {
        found.push(("prompt".into(), format!("{} bytes; the limit is {prompt_limit}", task.prompt.len())));
    } else if let Some(problem) = text_problem(&task.prompt) {
        found.push(("prompt".into(), problem));
    }
    if let Some(input) = &task.input {
        let size = json_size(input);
        let input_limit = limits.max_input_size.as_u64();
        if size > input_limit {
            found.push(("input".into(), format!("{size} bytes as JSON; the limit is {input_limit}")));
        } else if let Some(problem) = json_problem(input) {
            found.push(("input".into(), problem));
        }
    }
}

/// Attempts, the timeout and the backoff within their ranges.
fn retry_problems(task: &NewTask, found: &mut Vec<TaskProblem>) {
    if let Some(max_attempts) = task.max_attempts
        && !(1..=MAX_ATTEMPTS_LIMIT).contains(&max_attempts)
    {
        found.push(("max_attempts".into(), format!("{max_attempts}; use 1 to {MAX_ATTEMPTS_LIMIT}")));
    }
    if let Some(timeout) = task.timeout
        && (timeout < Duration::from_millis(1) || timeout > MAX_TIMEOUT)
    {
        found.push(("timeout".into(), format!("{timeout:?}; use 1ms to 7 days")));
    }
    for (name, value) in [("backoff_initial", task.backoff_initial), ("backoff_max", task.backoff_max)] {
        if value.is_some_and(|delay| delay > MAX_TIMEOUT) {
            found.push((name.into(), "longer than 7 days".into()));
        }
    }
    if let (Some(initial), Some(max)) = (task.backoff_initial, task.backoff_max)
        && initial > max
    {
        found.push(("backoff_initial".into(), format!("{initial:?} is more than backoff_max {max:?}")));
    }
    if let Some(multiplier) = task.backoff_multiplier
        && !(1.0..=100.0).contains(&multiplier)
    {
        found.push(("backoff_multiplier".into(), format!("{multiplier}; use 1 to 100")));
    }
}

/// Largest limit of a concurrency key.
const MAX_CONCURRENCY_LIMIT: u32 = 100_000;

/// Labels, locks and concurrency keys: well formed, and not too many.
fn routing_problems(task: &NewTask, found: &mut Vec<TaskProblem>) {
    for (key, value) in &task.labels {
        if let Some(problem) = label_problem(key, value) {
            found.push(("labels".into(), problem));
        }
    }
    if task.labels.len() > MAX_LOCKS_AND_LABELS || task.locks.len() > MAX_LOCKS_AND_LABELS {
        found.push(("locks".into(), format!("at most {MAX_LOCKS_AND_LABELS} labels and {MAX_LOCKS_AND_LABELS} locks")));
    }
    if task.concurrency.len() > MAX_LOCKS_AND_LABELS {
        found.push(("concurrency".into(), format!("at most {MAX_LOCKS_AND_LABELS} keys")));
    }
    for (key, limit) in &task.concurrency {
        let field = format!("concurrency.{key}");
        if key.is_empty() || key.len() > 512 {
            found.push((field, "a concurrency key must have 1 to 512 characters".into()));
        } else if let Some(problem) = text_problem(key) {
            found.push((field, problem));
        } else if !(1..=MAX_CONCURRENCY_LIMIT).contains(limit) {
            found.push((field, format!("limit {limit}; use 1 to {MAX_CONCURRENCY_LIMIT}")));
        }
    }
    for (position, lock) in task.locks.iter().enumerate() {
        if lock.is_empty() || lock.len() > 512 {
            found.push((format!("locks[{position}]"), "a lock key must have 1 to 512 characters".into()));
        } else if let Some(problem) = text_problem(lock) {
            found.push((format!("locks[{position}]"), problem));
        }
    }
}

/// The validator stage: its agent's name and the number of rounds.
fn stage_problems(task: &NewTask, found: &mut Vec<TaskProblem>) {
    let Some(validate) = &task.validate else { return };
    if let Some(problem) = name_problem(&validate.agent) {
        found.push(("validate.agent".into(), problem));
    }
    if let Some(problem) = text_problem(&validate.prompt) {
        found.push(("validate.prompt".into(), problem));
    }
    if !(1..=MAX_ROUNDS_LIMIT).contains(&validate.max_rounds) {
        found.push(("validate.max_rounds".into(), format!("{}; use 1 to {MAX_ROUNDS_LIMIT}", validate.max_rounds)));
    }
}

/// Size of a JSON object as serialized.
pub(crate) fn json_size(object: &JsonObject) -> u64 {
    serde_json::to_vec(object).map_or(u64::MAX, |bytes| bytes.len() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tasks::submit::Validate;

    #[test]
    fn a_nul_character_in_json_is_named_by_its_path() {
        let object = |value: serde_json::Value| value.as_object().unwrap().clone();
        assert_eq!(json_problem(&object(serde_json::json!({"a": ["ok", {"b": "fine"}]}))), None);
        assert_eq!(
            json_problem(&object(serde_json::json!({"a": ["ok", {"b": "x\u{0}"}]}))).unwrap(),
            ".a[1].b contains a NUL character, which cannot be stored"
        );
        assert_eq!(
            json_problem(&object(serde_json::json!({"k\u{0}": 1}))).unwrap(),
            "the key .k\\u0000 contains a NUL character, which cannot be stored"
        );
        assert_eq!(storable("a\u{0}b"), "a\u{FFFD}b");
    }

    fn task(agent: &str) -> NewTask {
        NewTask { agent: agent.into(), prompt: "hi".into(), ..NewTask::default() }
    }

    fn limits() -> LimitConfig {
        LimitConfig::default()
    }

    #[test]
    fn a_good_submission_has_no_problems() {
        let submission = Submission { swarm: "hello".into(), tasks: vec![task("echo")], ..Submission::default() };
        assert!(problems(&submission, &limits()).is_empty());
    }

    #[test]
    fn every_problem_is_reported_with_its_field() {
        let mut big = task("echo");
        big.prompt = "x".repeat(limits().max_prompt_size.as_u64() as usize + 1);
        let mut first = task("echo");
        first.key = Some("a".into());
        let mut second = task("");
        second.key = Some("a".into());
        second.max_attempts = Some(0);
        let submission =
            Submission { swarm: "bad name!".into(), tasks: vec![first, second, big], ..Submission::default() };
        let found = problems(&submission, &limits());
        let expected = [
            "swarm: `bad name!` contains ' '",
            "tasks[1].agent: must not be empty",
            "tasks[1].key: duplicate key `a` (also used by tasks[0])",
            "tasks[1].max_attempts: 0",
            "tasks[2].prompt: 1048577 bytes; the limit is 1048576",
        ];
        for needle in expected {
            assert!(found.iter().any(|problem| problem.starts_with(needle)), "missing {needle:?} in {found:#?}");
        }
        assert_eq!(found.len(), expected.len(), "{found:#?}");
    }

    #[test]
    fn bad_labels_locks_and_validators_are_named() {
        let mut bad = task("echo");
        bad.labels = [("gpu!".to_owned(), "true".to_owned()), ("zone".to_owned(), "eu west".to_owned())].into();
        bad.locks = vec![String::new()];
        bad.validate = Some(Validate { agent: "check".into(), prompt: "p".into(), max_rounds: 0 });
        let submission =
            Submission { swarm: "s".into(), tasks: vec![bad], budget: Some(-1.0), ..Submission::default() };
        let found = problems(&submission, &limits());
        for needle in [
            "tasks[0].labels: `gpu!` is not a label name",
            "tasks[0].labels: `zone=eu west`: the value may hold",
            "tasks[0].locks[0]: a lock key must have 1 to 512 characters",
            "tasks[0].validate.max_rounds: 0",
            "budget: -1",
        ] {
            assert!(found.iter().any(|problem| problem.starts_with(needle)), "missing {needle:?} in {found:#?}");
        }
    }

    #[test]
    fn an_empty_submission_is_refused() {
        let submission = Submission { swarm: "s".into(), tasks: vec![], ..Submission::default() };
        assert_eq!(problems(&submission, &limits()), ["tasks: at least one task is required"]);
    }
}
