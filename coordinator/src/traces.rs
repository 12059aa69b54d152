//! The coordinator's spans in each task's trace (ids and export in
//! `hive_shared::traces`): `hive.task`, the trace's root, for the task's
//! submission; `hive.queued`, from when the task could first be claimed to
//! the claim, for each attempt; and `hive.complete` / `hive.fail`, the
//! handling of an attempt's report, children of the worker's `hive.attempt`.
//! With no tracer (no `OTEL_*` export configured) nothing here runs.

use std::time::{Duration, SystemTime};

use hive_shared::traces::{self, Kind, Span, Tracer, Value};
use uuid::Uuid;

/// The root span of each task submitted in one call that began at `started`.
pub(crate) fn submitted<'a>(
    tracer: &Tracer,
    started: SystemTime,
    swarm: Uuid,
    tasks: impl IntoIterator<Item = (Uuid, &'a str)>,
) {
    let end = SystemTime::now();
    for (task, agent) in tasks {
        tracer.record(Span {
            trace: traces::task_trace(task),
            id: traces::task_span(task),
            parent: None,
            name: "hive.task",
            kind: Kind::Producer,
            start: started,
            end,
            attributes: vec![
                ("hive.task_id", task.to_string().into()),
                ("hive.swarm_id", swarm.to_string().into()),
                ("hive.agent", agent.into()),
            ],
            error: None,
        });
    }
}

/// The wait of a task claimed now after `queued_seconds` in the queue.
pub(crate) fn claimed(
    tracer: &Tracer,
    task: Uuid,
    attempt: Uuid,
    number: i32,
    agent: &str,
    worker: Uuid,
    queued_seconds: f64,
) {
    let end = SystemTime::now();
    let waited = Duration::try_from_secs_f64(queued_seconds.max(0.0)).unwrap_or_default();
    tracer.record(Span {
        trace: traces::task_trace(task),
        id: traces::SpanId::random(),
        parent: Some(traces::task_span(task)),
        name: "hive.queued",
        kind: Kind::Consumer,
        start: end.checked_sub(waited).unwrap_or(end),
        end,
        attributes: vec![
            ("hive.attempt_id", attempt.to_string().into()),
            ("hive.attempt", Value::Int(i64::from(number))),
            ("hive.agent", agent.into()),
            ("hive.worker_id", worker.to_string().into()),
        ],
        error: None,
    });
}

/// The handling, from `started`, of one attempt's report (`hive.complete`
/// or `hive.fail`), with how it was taken (`recorded`, `already_recorded`,
/// `lease_lost`) and, for a failure, its error.
pub(crate) fn reported(
    tracer: &Tracer,
    name: &'static str,
    started: SystemTime,
    task: Uuid,
    attempt: Uuid,
    taken: &str,
    error: Option<&str>,
) {
    tracer.record(Span {
        trace: traces::task_trace(task),
        id: traces::SpanId::random(),
        parent: Some(traces::attempt_span(attempt)),
        name,
        kind: Kind::Server,
        start: started,
        end: SystemTime::now(),
        attributes: vec![("hive.attempt_id", attempt.to_string().into()), ("hive.report", taken.into())],
        error: error.map(str::to_owned),
    });
}
