//! How hivectl prints: tables for people, `--json` for scripts. Wire messages
//! become plain views here (statuses as words, times as RFC 3339, input and
//! results as JSON).

use std::io::Write;

use chrono::{DateTime, Utc};
use comfy_table::{Table, presets::NOTHING};
use hive_shared::convert::{from_duration, from_timestamp, struct_to_json};
use hive_shared::pb;
use serde::Serialize;
use serde_json::Value as Json;

/// Writes a line to stdout; a closed pipe (`| head`) is not an error.
pub(crate) fn line(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Writes a value as pretty JSON to stdout.
pub(crate) fn json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => line(text),
        Err(err) => tracing::error!(error = %err, "cannot encode output as JSON"),
    }
}

/// Text a remote party wrote (a worker's name, an agent's error), safe to
/// print: control characters — terminal escape sequences among them — are
/// shown escaped (`\u{1b}`) instead of acting on the terminal.
pub(crate) fn printable(text: &str) -> String {
    if !text.chars().any(char::is_control) {
        return text.to_owned();
    }
    text.chars().map(|c| if c.is_control() { c.escape_unicode().to_string() } else { c.to_string() }).collect()
}

/// A borderless table with a header row.
pub(crate) fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(NOTHING).set_header(header.iter().map(|name| name.to_uppercase()));
    table
}

/// A status as a lowercase word (`ready`, `succeeded`, …).
pub(crate) fn status_word(value: i32) -> String {
    let status = pb::TaskStatus::try_from(value).unwrap_or(pb::TaskStatus::Unspecified);
    status.as_str_name().trim_start_matches("TASK_STATUS_").to_lowercase()
}

fn outcome_word(value: i32) -> String {
    let outcome = pb::AttemptOutcome::try_from(value).unwrap_or(pb::AttemptOutcome::Unspecified);
    outcome.as_str_name().trim_start_matches("ATTEMPT_OUTCOME_").to_lowercase()
}

fn time(stamp: Option<&prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    stamp.and_then(from_timestamp)
}

fn object(value: Option<prost_types::Struct>) -> Option<Json> {
    value.map(|object| Json::Object(struct_to_json(object)))
}

/// A task as hivectl shows it.
#[derive(Debug, Serialize)]
pub(crate) struct TaskView {
    pub id: String,
    pub swarm_id: String,
    /// Swarm name.
    pub swarm: String,
    /// Key from the task file.
    pub key: String,
    pub agent: String,
    /// Status word.
    pub status: String,
    pub priority: i32,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Failed attempts counted against `max_attempts`.
    pub failures: u32,
    pub prompt: String,
    /// A listing's summary: prompts cut, input and result left out (`tasks show` has them).
    pub summary: bool,
    pub input: Option<Json>,
    pub result: Option<Json>,
    /// Last error.
    pub error: String,
    /// Worker running it.
    pub worker_id: String,
    pub current_attempt_id: String,
    /// Submitted.
    pub created_at: Option<DateTime<Utc>>,
    /// First started.
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// Earliest claim time.
    pub run_after: Option<DateTime<Utc>>,
    /// Time limit, in seconds.
    pub timeout_seconds: Option<f64>,
    /// Whether output was truncated.
    pub logs_truncated: bool,
    /// Ids of the tasks it depends on.
    pub depends_on: Vec<String>,
    /// Dependencies not yet succeeded.
    pub waiting_on: u32,
    /// Required worker labels.
    pub labels: std::collections::BTreeMap<String, String>,
    /// Locks held while it runs.
    pub locks: Vec<String>,
    /// Validator agent, prompt and rounds.
    pub validate: Option<ValidateView>,
    /// "build" or "validate".
    pub stage: String,
    /// Builder round.
    pub round: u32,
    /// "fresh" or "resume".
    pub session: String,
    /// Usage summed over its attempts.
    pub usage: UsageView,
    /// Backoff overrides.
    pub backoff_initial_seconds: Option<f64>,
    /// Backoff overrides.
    pub backoff_max_seconds: Option<f64>,
    /// Backoff overrides (0 when unset).
    pub backoff_multiplier: f64,
}

/// A validator stage as hivectl shows it.
#[derive(Debug, Serialize)]
pub(crate) struct ValidateView {
    pub agent: String,
    pub prompt: String,
    /// Builder runs allowed.
    pub max_rounds: u32,
}

/// Usage as hivectl shows it.
#[derive(Debug, Default, Clone, Copy, Serialize)]
pub(crate) struct UsageView {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cost: f64,
}

impl From<Option<pb::Usage>> for UsageView {
    fn from(usage: Option<pb::Usage>) -> Self {
        let usage = usage.unwrap_or_default();
        Self { input_tokens: usage.input_tokens, output_tokens: usage.output_tokens, cost: usage.cost }
    }
}

impl From<pb::Task> for TaskView {
    fn from(task: pb::Task) -> Self {
        Self {
            status: status_word(task.status),
            created_at: time(task.created_at.as_ref()),
            started_at: time(task.started_at.as_ref()),
            finished_at: time(task.finished_at.as_ref()),
            run_after: time(task.run_after.as_ref()),
            timeout_seconds: task.timeout.as_ref().and_then(from_duration).map(|timeout| timeout.as_secs_f64()),
            input: object(task.input),
            result: object(task.result),
            id: task.id,
            swarm_id: task.swarm_id,
            swarm: task.swarm,
            key: task.key,
            agent: task.agent,
            priority: task.priority,
            attempts: task.attempts,
            max_attempts: task.max_attempts,
            failures: task.failures,
            prompt: task.prompt,
            summary: task.summary,
            error: task.error,
            worker_id: task.worker_id,
            current_attempt_id: task.current_attempt_id,
            logs_truncated: task.logs_truncated,
            depends_on: task.depends_on,
            waiting_on: task.waiting_on,
            labels: task.labels.into_iter().collect(),
            locks: task.locks,
            validate: task.validate.map(|validate| ValidateView {
                agent: validate.agent,
                prompt: validate.prompt,
                max_rounds: validate.max_rounds,
            }),
            stage: task.stage,
            round: task.round,
            session: if task.session == i32::from(pb::SessionPolicy::Resume) { "resume" } else { "fresh" }.into(),
            usage: task.usage.into(),
            backoff_initial_seconds: task
                .backoff_initial
                .as_ref()
                .and_then(from_duration)
                .map(|delay| delay.as_secs_f64()),
            backoff_max_seconds: task.backoff_max.as_ref().and_then(from_duration).map(|delay| delay.as_secs_f64()),
            backoff_multiplier: task.backoff_multiplier,
        }
    }
}

/// An attempt as hivectl shows it.
#[derive(Debug, Serialize)]
pub(crate) struct AttemptView {
    pub id: String,
    pub number: u32,
    pub worker_id: String,
    /// Outcome word.
    pub outcome: String,
    pub exit_code: Option<i32>,
    pub signal: Option<i32>,
    pub error: String,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
    /// "build" or "validate".
    pub stage: String,
    /// The agent that ran it.
    pub agent: String,
    /// Session id the agent reported.
    pub session_id: String,
    pub usage: UsageView,
    /// The attempt's own result (builder results and validator verdicts).
    pub result: Option<Json>,
    /// Running: since when its agent is stalled.
    pub stalled_since: Option<DateTime<Utc>>,
    /// Running: what its agent last reported doing.
    pub progress: String,
    /// Running: when its agent last reported progress.
    pub progress_at: Option<DateTime<Utc>>,
}

impl From<pb::Attempt> for AttemptView {
    fn from(attempt: pb::Attempt) -> Self {
        Self {
            outcome: outcome_word(attempt.outcome),
            started_at: time(attempt.started_at.as_ref()),
            finished_at: time(attempt.finished_at.as_ref()),
            id: attempt.id,
            number: attempt.number,
            worker_id: attempt.worker_id,
            exit_code: attempt.exit_code,
            signal: attempt.signal,
            error: attempt.error,
            stage: attempt.stage,
            agent: attempt.agent,
            session_id: attempt.session_id,
            usage: attempt.usage.into(),
            result: object(attempt.result),
            stalled_since: time(attempt.stalled_since.as_ref()),
            progress: attempt.progress,
            progress_at: time(attempt.progress_at.as_ref()),
        }
    }
}

/// A worker as hivectl shows it.
#[derive(Debug, Serialize)]
pub(crate) struct WorkerView {
    pub id: String,
    pub name: String,
    /// Host.
    pub hostname: String,
    /// live or gone.
    pub status: String,
    pub agents: Vec<String>,
    pub slots: u32,
    pub free_slots: u32,
    /// Attempts held.
    pub running: u32,
    /// CPU, percent.
    pub cpu_percent: f64,
    /// Memory in use.
    pub memory_used_bytes: u64,
    /// Memory installed.
    pub memory_total_bytes: u64,
    /// Last contact.
    pub last_seen_at: Option<DateTime<Utc>>,
    pub version: String,
    /// Whether it is draining.
    pub draining: bool,
    pub labels: std::collections::BTreeMap<String, String>,
    /// Resident memory of each running agent's process tree, by attempt.
    pub agents_rss_bytes: std::collections::BTreeMap<String, u64>,
    /// What it could not do at its last heartbeat (an agent, or `work_dir`), and why.
    pub unavailable: std::collections::BTreeMap<String, String>,
}

impl From<pb::Worker> for WorkerView {
    fn from(worker: pb::Worker) -> Self {
        let status = pb::WorkerStatus::try_from(worker.status).unwrap_or(pb::WorkerStatus::Unspecified);
        let resources = worker.resources.unwrap_or_default();
        Self {
            status: status.as_str_name().trim_start_matches("WORKER_STATUS_").to_lowercase(),
            last_seen_at: time(worker.last_seen_at.as_ref()),
            id: worker.id,
            name: worker.name,
            hostname: worker.hostname,
            agents: worker.agents,
            slots: worker.slots,
            free_slots: worker.free_slots,
            running: worker.running,
            cpu_percent: resources.cpu_percent,
            memory_used_bytes: resources.memory_used_bytes,
            memory_total_bytes: resources.memory_total_bytes,
            version: worker.version,
            draining: worker.draining,
            labels: worker.labels.into_iter().collect(),
            unavailable: worker.unavailable.into_iter().collect(),
            agents_rss_bytes: resources
                .attempts
                .iter()
                .map(|memory| (memory.attempt_id.clone(), memory.rss_bytes))
                .collect(),
        }
    }
}

/// Task counts as hivectl shows them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub(crate) struct CountsView {
    pub blocked: u64,
    pub ready: u64,
    pub running: u64,
    pub succeeded: u64,
    pub dead: u64,
    pub cancelled: u64,
    /// Being cancelled.
    pub cancelling: u64,
}

impl CountsView {
    /// Tasks in total.
    pub(crate) fn total(&self) -> u64 {
        self.blocked + self.ready + self.running + self.cancelling + self.succeeded + self.dead + self.cancelled
    }

    /// Tasks that will not change again.
    pub(crate) fn finished(&self) -> u64 {
        self.succeeded + self.dead + self.cancelled
    }
}

impl From<Option<pb::StatusCounts>> for CountsView {
    fn from(counts: Option<pb::StatusCounts>) -> Self {
        let counts = counts.unwrap_or_default();
        Self {
            blocked: counts.blocked,
            ready: counts.ready,
            running: counts.running,
            succeeded: counts.succeeded,
            dead: counts.dead,
            cancelled: counts.cancelled,
            cancelling: counts.cancelling,
        }
    }
}

/// One swarm's progress.
#[derive(Debug, Serialize)]
pub(crate) struct SwarmView {
    pub swarm_id: String,
    pub name: String,
    pub counts: CountsView,
    /// Submitted.
    pub created_at: Option<DateTime<Utc>>,
    /// First task started.
    pub started_at: Option<DateTime<Utc>>,
    /// Last task finished (once all have).
    pub finished_at: Option<DateTime<Utc>>,
    /// Finished share, percent.
    pub progress_percent: u64,
    /// Seconds since the first task started (to the end, once finished).
    pub elapsed_seconds: Option<f64>,
    /// Seconds left at the pace so far.
    pub remaining_seconds: Option<f64>,
    /// Usage summed over every attempt.
    pub usage: UsageView,
    /// Spending limit (0: none).
    pub budget: f64,
    /// Why ready tasks are not running.
    pub waiting: Vec<String>,
    /// Its running attempts whose agents are stalled, longest first.
    pub stalled: Vec<StalledView>,
}

/// A running attempt whose agent shows no progress.
#[derive(Debug, Serialize)]
pub(crate) struct StalledView {
    pub task_id: String,
    pub attempt_id: String,
    pub worker_id: String,
    /// Since when.
    pub since: Option<DateTime<Utc>>,
}

impl From<pb::StalledAttempt> for StalledView {
    fn from(stalled: pb::StalledAttempt) -> Self {
        Self {
            since: time(stalled.since.as_ref()),
            task_id: stalled.task_id,
            attempt_id: stalled.attempt_id,
            worker_id: stalled.worker_id,
        }
    }
}

impl From<pb::SwarmStats> for SwarmView {
    fn from(swarm: pb::SwarmStats) -> Self {
        let counts: CountsView = swarm.counts.into();
        let started_at = time(swarm.started_at.as_ref());
        let finished_at = time(swarm.finished_at.as_ref());
        let elapsed =
            started_at.map(|start| (finished_at.unwrap_or_else(Utc::now) - start).num_milliseconds() as f64 / 1000.0);
        let done = counts.finished();
        let left = counts.total() - done;
        let remaining = match (elapsed, done) {
            (Some(_), _) if left == 0 => Some(0.0),
            (Some(elapsed), done) if done > 0 => Some(elapsed / done as f64 * left as f64),
            _ => None,
        };
        Self {
            progress_percent: (done * 100).checked_div(counts.total()).unwrap_or(100),
            counts,
            created_at: time(swarm.created_at.as_ref()),
            started_at,
            finished_at,
            elapsed_seconds: elapsed,
            remaining_seconds: remaining,
            usage: swarm.usage.into(),
            budget: swarm.budget,
            waiting: swarm.waiting,
            stalled: Vec::new(),
            swarm_id: swarm.swarm_id,
            name: swarm.name,
        }
    }
}

impl SwarmView {
    /// Spent (and the budget, when there is one).
    pub(crate) fn cost_text(&self) -> String {
        if self.budget > 0.0 {
            format!("{:.2}/{:.2}", self.usage.cost, self.budget)
        } else {
            format!("{:.2}", self.usage.cost)
        }
    }

    /// One line of progress: counts, time left, cost, and why ready tasks wait.
    pub(crate) fn progress_line(&self) -> String {
        let counts = self.counts;
        let mut line = format!(
            "ready {} · running {} · succeeded {} · dead {} · cancelled {} · left {} · cost {}",
            counts.ready,
            counts.running + counts.cancelling,
            counts.succeeded,
            counts.dead,
            counts.cancelled,
            seconds(self.remaining_seconds),
            self.cost_text(),
        );
        if counts.blocked > 0 {
            line.push_str(&format!(" · blocked {}", counts.blocked));
        }
        for note in &self.waiting {
            line.push_str(" · ");
            line.push_str(note);
        }
        line
    }
}

/// Bytes in GiB, for tables.
pub(crate) fn gib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 30)
}

/// Bytes in MiB, for tables.
pub(crate) fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

/// Seconds as a short duration (`1h 02m`, `3m 05s`, `12s`).
pub(crate) fn seconds(value: Option<f64>) -> String {
    let Some(value) = value else { return "-".into() };
    let total = value.max(0.0).round() as u64;
    match total {
        0..60 => format!("{total}s"),
        60..3600 => format!("{}m {:02}s", total / 60, total % 60),
        _ => format!("{}h {:02}m", total / 3600, total % 3600 / 60),
    }
}

/// A wire timestamp as RFC 3339, to the second.
pub(crate) fn rfc3339(stamp: Option<&prost_types::Timestamp>) -> Option<String> {
    time(stamp).map(|at| at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
}

/// A short "how long ago" for tables.
pub(crate) fn ago(at: Option<DateTime<Utc>>) -> String {
    let Some(at) = at else { return "-".into() };
    let seconds = (Utc::now() - at).num_seconds().max(0);
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86_400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86_400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_from_remote_parties_are_shown_escaped() {
        assert_eq!(printable("worker-1"), "worker-1");
        assert_eq!(printable("\u{1b}[31mred\u{7}"), "\\u{1b}[31mred\\u{7}");
        assert_eq!(printable("a\nb"), "a\\u{a}b");
    }
}
