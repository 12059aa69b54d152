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
pub fn line(text: impl std::fmt::Display) {
    let _ = writeln!(std::io::stdout().lock(), "{text}");
}

/// Writes a value as pretty JSON to stdout.
pub fn json(value: &impl Serialize) {
    match serde_json::to_string_pretty(value) {
        Ok(text) => line(text),
        Err(err) => tracing::error!(error = %err, "cannot encode output as JSON"),
    }
}

/// A borderless table with a header row.
pub fn table(header: &[&str]) -> Table {
    let mut table = Table::new();
    table.load_style(NOTHING).set_header(header.iter().map(|name| name.to_uppercase()));
    table
}

/// A status as a lowercase word (`ready`, `succeeded`, …).
pub fn status_word(value: i32) -> String {
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
pub struct TaskView {
    /// Id.
    pub id: String,
    /// Swarm id.
    pub swarm_id: String,
    /// Swarm name.
    pub swarm: String,
    /// Key from the task file.
    pub key: String,
    /// Agent.
    pub agent: String,
    /// Status word.
    pub status: String,
    /// Priority.
    pub priority: i32,
    /// Attempts started.
    pub attempts: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// Failed or lost attempts counted against `max_attempts`.
    pub failures: u32,
    /// Prompt.
    pub prompt: String,
    /// Input.
    pub input: Option<Json>,
    /// Result.
    pub result: Option<Json>,
    /// Last error.
    pub error: String,
    /// Worker running it.
    pub worker_id: String,
    /// Current attempt.
    pub current_attempt_id: String,
    /// Submitted.
    pub created_at: Option<DateTime<Utc>>,
    /// First started.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
    /// Earliest claim time.
    pub run_after: Option<DateTime<Utc>>,
    /// Time limit, in seconds.
    pub timeout_seconds: Option<f64>,
    /// Whether output was truncated.
    pub logs_truncated: bool,
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
            error: task.error,
            worker_id: task.worker_id,
            current_attempt_id: task.current_attempt_id,
            logs_truncated: task.logs_truncated,
        }
    }
}

/// An attempt as hivectl shows it.
#[derive(Debug, Serialize)]
pub struct AttemptView {
    /// Id.
    pub id: String,
    /// Number.
    pub number: u32,
    /// Worker.
    pub worker_id: String,
    /// Outcome word.
    pub outcome: String,
    /// Exit code.
    pub exit_code: Option<i32>,
    /// Signal.
    pub signal: Option<i32>,
    /// Error.
    pub error: String,
    /// Started.
    pub started_at: Option<DateTime<Utc>>,
    /// Finished.
    pub finished_at: Option<DateTime<Utc>>,
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
        }
    }
}

/// A worker as hivectl shows it.
#[derive(Debug, Serialize)]
pub struct WorkerView {
    /// Id.
    pub id: String,
    /// Name.
    pub name: String,
    /// Host.
    pub hostname: String,
    /// live or gone.
    pub status: String,
    /// Agents.
    pub agents: Vec<String>,
    /// Slots.
    pub slots: u32,
    /// Free slots.
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
    /// Version.
    pub version: String,
    /// Whether it is draining.
    pub draining: bool,
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
        }
    }
}

/// Task counts as hivectl shows them.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CountsView {
    /// Blocked.
    pub blocked: u64,
    /// Ready.
    pub ready: u64,
    /// Running.
    pub running: u64,
    /// Succeeded.
    pub succeeded: u64,
    /// Dead.
    pub dead: u64,
    /// Cancelled.
    pub cancelled: u64,
    /// Being cancelled.
    pub cancelling: u64,
}

impl CountsView {
    /// Tasks in total.
    pub fn total(&self) -> u64 {
        self.blocked + self.ready + self.running + self.cancelling + self.succeeded + self.dead + self.cancelled
    }

    /// Tasks that will not change again.
    pub fn finished(&self) -> u64 {
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
pub struct SwarmView {
    /// Swarm id.
    pub swarm_id: String,
    /// Name.
    pub name: String,
    /// Counts.
    pub counts: CountsView,
    /// Submitted.
    pub created_at: Option<DateTime<Utc>>,
}

impl From<pb::SwarmStats> for SwarmView {
    fn from(swarm: pb::SwarmStats) -> Self {
        Self {
            counts: swarm.counts.into(),
            created_at: time(swarm.created_at.as_ref()),
            swarm_id: swarm.swarm_id,
            name: swarm.name,
        }
    }
}

/// A short "how long ago" for tables.
pub fn ago(at: Option<DateTime<Utc>>) -> String {
    let Some(at) = at else { return "-".into() };
    let seconds = (Utc::now() - at).num_seconds().max(0);
    match seconds {
        0..60 => format!("{seconds}s ago"),
        60..3600 => format!("{}m ago", seconds / 60),
        3600..86_400 => format!("{}h ago", seconds / 3600),
        _ => format!("{}d ago", seconds / 86_400),
    }
}
