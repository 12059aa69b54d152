//! The worker's spans in each task's trace (ids and export in
//! `hive_shared::traces`): `hive.attempt`, the attempt on this worker from
//! taking a slot to its outcome being queued, a child of the task's root
//! span (`Assignment.traceparent`); and `hive.agent`, the agent's process,
//! its child, which the agent's own spans join through `TRACEPARENT`.

use std::time::SystemTime;

use hive_shared::pb;
use hive_shared::traces::{self, Kind, Span, SpanId, TraceId, Tracer, Value};
use uuid::Uuid;

use crate::process::supervise::Exit;

/// One attempt's place in its task's trace.
#[derive(Debug, Clone)]
pub(crate) struct AttemptTrace {
    trace: TraceId,
    root: SpanId,
    attempt: SpanId,
    agent: SpanId,
    state: String,
    started: SystemTime,
}

impl AttemptTrace {
    /// The trace of `assignment` (its `traceparent`, else the one its task
    /// id names), starting now.
    pub(crate) fn of(assignment: &pb::Assignment, task: Uuid, attempt: Uuid) -> Self {
        let (trace, root) = traces::parse_traceparent(&assignment.traceparent)
            .unwrap_or_else(|| (traces::task_trace(task), traces::task_span(task)));
        Self {
            trace,
            root,
            attempt: traces::attempt_span(attempt),
            agent: SpanId::random(),
            state: assignment.tracestate.clone(),
            started: SystemTime::now(),
        }
    }

    /// `TRACEPARENT` (and `TRACESTATE`) for the agent: its process span when
    /// this worker exports spans, else the task's root.
    pub(crate) fn agent_env(&self, traced: bool) -> Vec<(&'static str, String)> {
        let parent = if traced { self.agent } else { self.root };
        let mut env = vec![("TRACEPARENT", traces::traceparent(self.trace, parent))];
        if !self.state.is_empty() {
            env.push(("TRACESTATE", self.state.clone()));
        }
        env
    }

    /// Records the agent's process, from `start` until now, and how it ended.
    pub(crate) fn agent_ended(&self, tracer: &Tracer, start: SystemTime, agent: &str, exit: &Exit) {
        tracer.record(Span {
            trace: self.trace,
            id: self.agent,
            parent: Some(self.attempt),
            name: "hive.agent",
            kind: Kind::Client,
            start,
            end: SystemTime::now(),
            attributes: vec![("hive.agent", agent.into()), ("hive.exit", format!("{exit:?}").into())],
            error: failure(exit),
        });
    }

    /// Records the attempt, from taking its slot until now.
    pub(crate) fn attempt_ended(&self, tracer: &Tracer, assignment: &pb::Assignment, worker: &str, exit: &Exit) {
        tracer.record(Span {
            trace: self.trace,
            id: self.attempt,
            parent: Some(self.root),
            name: "hive.attempt",
            kind: Kind::Consumer,
            start: self.started,
            end: SystemTime::now(),
            attributes: vec![
                ("hive.task_id", assignment.task_id.clone().into()),
                ("hive.attempt_id", assignment.attempt_id.clone().into()),
                ("hive.attempt", Value::Int(i64::from(assignment.attempt))),
                ("hive.agent", assignment.agent.clone().into()),
                ("hive.worker", worker.into()),
            ],
            error: failure(exit),
        });
    }
}

fn failure(exit: &Exit) -> Option<String> {
    (!matches!(exit, Exit::Code(0))).then(|| format!("{exit:?}"))
}
