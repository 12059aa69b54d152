//! Wire conversions for the coordinator's rows and use-case inputs: decoding
//! requests (every "bad id" or "bad duration" error is born here) and
//! encoding rows as messages.

use hive_shared::convert::{duration, from_duration, from_timestamp, json_to_struct, struct_to_json, timestamp};
use hive_shared::pb;
use hive_shared::traces;
use serde_json::Value as Json;

use crate::db;
use crate::error::{Error, Result};
use crate::tasks::logs::HIVE_STREAM;
use crate::tasks::report::{Ack, Spend};
use crate::tasks::retry::{FailureClass, Stop};
use crate::tasks::submit::{NewTask, Validate};
use crate::tasks::validate::{storable, text_problem};

/// Parses an id field, naming the field on failure (`field` is formatted
/// only then: a batch's element names cost nothing when its ids parse).
pub(crate) fn parse_id<T>(
    field: impl std::fmt::Display,
    text: &str,
    parse: impl Fn(&str) -> Result<T, hive_shared::ids::BadId>,
) -> Result<T> {
    if text.is_empty() {
        return Err(Error::invalid(&field, "is required"));
    }
    parse(text).map_err(|err| Error::invalid(&field, err))
}

/// Decodes an optional id field: empty is `None`.
pub(crate) fn optional_id<T>(
    field: &str,
    text: &str,
    parse: impl Fn(&str) -> Result<T, hive_shared::ids::BadId>,
) -> Result<Option<T>> {
    if text.is_empty() { Ok(None) } else { parse_id(field, text, parse).map(Some) }
}

/// Decodes an optional duration field, naming it when negative.
pub(crate) fn optional_duration(
    field: impl FnOnce() -> String,
    value: Option<&prost_types::Duration>,
) -> Result<Option<std::time::Duration>> {
    match value {
        None => Ok(None),
        Some(value) => {
            from_duration(value).map(Some).ok_or_else(|| Error::invalid(field(), "must be a positive duration"))
        }
    }
}

/// Decodes an optional wait: unset is no wait, a negative one is refused.
pub(crate) fn wait(field: &str, value: Option<&prost_types::Duration>) -> Result<std::time::Duration> {
    Ok(optional_duration(|| field.to_owned(), value)?.unwrap_or_default())
}

/// Decodes the slots a worker registers with: at least one, and few enough
/// to store.
pub(crate) fn slots(slots: u32) -> Result<i32> {
    if slots == 0 {
        return Err(Error::invalid("slots", "must be at least 1"));
    }
    if slots > MAX_SLOTS {
        return Err(Error::invalid("slots", format!("{slots} is more than {MAX_SLOTS}")));
    }
    Ok(i32::try_from(slots).expect("at most MAX_SLOTS"))
}

/// Most slots one worker may offer: more agents than this on one host is a
/// mistake (or a typo), and the claim sizes follow from it.
const MAX_SLOTS: u32 = 10_000;

/// Decodes how many tasks a claim asks for: at least one (the coordinator
/// may hand out fewer, up to its batch limit).
pub(crate) fn max_tasks(max_tasks: u32) -> Result<u32> {
    if max_tasks == 0 {
        return Err(Error::invalid("max_tasks", "must be at least 1"));
    }
    Ok(max_tasks)
}

/// Decodes how a reported attempt stopped; an unset class counts as
/// transient, as the protocol says.
pub(crate) fn stop(field: impl FnOnce() -> String, class: i32) -> Result<Stop> {
    match pb::FailureClass::try_from(class) {
        Ok(pb::FailureClass::Permanent) => Ok(Stop::Failed(FailureClass::Permanent)),
        Ok(pb::FailureClass::Transient | pb::FailureClass::Unspecified) => Ok(Stop::Failed(FailureClass::Transient)),
        Ok(pb::FailureClass::Interrupted) => Ok(Stop::Interrupted),
        Ok(pb::FailureClass::Cancelled) => Ok(Stop::Cancelled),
        // A refusal's own allowance is the task's; see `refusal`.
        Ok(pb::FailureClass::RateLimited) => Ok(Stop::Failed(FailureClass::Transient)),
        Err(_) => Err(Error::invalid(field(), format!("{class} is not a failure class"))),
    }
}

/// Decodes the provider accounts a worker registers: each names one of its
/// agents and is `provider/account`.
pub(crate) fn accounts(
    accounts: &std::collections::HashMap<String, String>,
    agents: &[String],
) -> Result<serde_json::Value> {
    let mut problems = Vec::new();
    for (agent, account) in accounts {
        if !agents.contains(agent) {
            problems.push(format!("accounts.{agent}: not one of the worker's agents"));
        }
        if !is_account(account) {
            problems.push(format!("accounts.{agent}: `{}` is not provider/account", account.escape_debug()));
        }
    }
    if !problems.is_empty() {
        problems.sort();
        return Err(Error::InvalidArgument { problems });
    }
    Ok(serde_json::to_value(accounts).unwrap_or_default())
}

/// Whether `text` names a provider account: `provider/account`, printable.
fn is_account(text: &str) -> bool {
    text.len() <= 256
        && !text.chars().any(char::is_control)
        && text.split_once('/').is_some_and(|(provider, name)| !provider.is_empty() && !name.is_empty())
}

/// Longest wait a refusal may ask for.
const MAX_RETRY_AFTER: std::time::Duration = std::time::Duration::from_secs(24 * 3600);

/// Decodes the provider's refusal of a rate-limited failure: it must name
/// its agent's provider account, and may say when to try again (at most a day).
pub(crate) fn refusal(index: usize, failure: &pb::Failure) -> Result<Option<crate::cooldowns::Refusal>> {
    if failure.class() != pb::FailureClass::RateLimited {
        return Ok(None);
    }
    if !is_account(&failure.provider_account) {
        return Err(Error::invalid(
            format!("failures[{index}].provider_account"),
            "a rate-limited failure must name its agent's provider account as provider/account",
        ));
    }
    let field = || format!("failures[{index}].retry_after");
    let retry_after = optional_duration(field, failure.retry_after.as_ref())?;
    if retry_after.is_some_and(|wait| wait > MAX_RETRY_AFTER) {
        return Err(Error::invalid(field(), "must be at most a day"));
    }
    let reason = crate::tasks::validate::storable(&failure.error);
    Ok(Some(crate::cooldowns::Refusal {
        account: failure.provider_account.clone(),
        retry_after,
        reason: reason.chars().take(512).collect(),
    }))
}

/// Decodes a log chunk's stream into the number stored with it.
pub(crate) fn log_stream(field: impl FnOnce() -> String, stream: i32) -> Result<i16> {
    match pb::LogStream::try_from(stream) {
        Ok(pb::LogStream::Stdout) => Ok(1),
        Ok(pb::LogStream::Stderr) => Ok(2),
        Ok(pb::LogStream::Hive) => Ok(HIVE_STREAM),
        Ok(pb::LogStream::Unspecified) | Err(_) => {
            Err(Error::invalid(field(), format!("{stream} is not a stream (stdout, stderr or hive)")))
        }
    }
}

/// Encodes the acknowledgement of each reported attempt, in order.
pub(crate) fn acks(attempts: Vec<String>, acks: Vec<Ack>) -> Vec<pb::Ack> {
    attempts
        .into_iter()
        .zip(acks)
        .map(|(attempt_id, ack)| {
            let (status, message) = match ack {
                Ack::Recorded => (pb::AckStatus::Recorded, String::new()),
                Ack::AlreadyRecorded => (pb::AckStatus::AlreadyRecorded, String::new()),
                Ack::LeaseLost(message) => (pb::AckStatus::LeaseLost, message),
            };
            pb::Ack { attempt_id, status: status.into(), message }
        })
        .collect()
}

/// Decodes a submitted task spec.
pub(crate) fn new_task(index: usize, spec: pb::TaskSpec) -> Result<NewTask> {
    let field = |name: &str| format!("tasks[{index}].{name}");
    let timeout = optional_duration(|| field("timeout"), spec.timeout.as_ref())?;
    let backoff_initial = optional_duration(|| field("backoff_initial"), spec.backoff_initial.as_ref())?;
    let backoff_max = optional_duration(|| field("backoff_max"), spec.backoff_max.as_ref())?;
    let run_after = match &spec.run_after {
        None => None,
        Some(stamp) => {
            Some(from_timestamp(stamp).ok_or_else(|| Error::invalid(field("run_after"), "is not a valid time"))?)
        }
    };
    Ok(NewTask {
        backoff_initial,
        backoff_max,
        backoff_multiplier: (spec.backoff_multiplier != 0.0).then_some(spec.backoff_multiplier),
        run_after,
        key: (!spec.key.is_empty()).then_some(spec.key),
        agent: spec.agent,
        prompt: spec.prompt,
        input: spec.input.map(struct_to_json),
        priority: spec.priority,
        max_attempts: (spec.max_attempts > 0).then_some(spec.max_attempts),
        timeout,
        depends_on: spec.depends_on,
        labels: spec.labels.into_iter().collect(),
        locks: spec.locks,
        validate: spec.validate.map(|validate| Validate {
            agent: validate.agent,
            prompt: validate.prompt,
            max_rounds: if validate.max_rounds == 0 { 3 } else { validate.max_rounds },
        }),
        resume_sessions: spec.session == i32::from(pb::SessionPolicy::Resume),
        fallback_agents: spec.fallback_agents,
        concurrency: spec.concurrency.into_iter().collect(),
    })
}

/// Decodes what an agent reported using; `field` names the report (`completions[3]`).
pub(crate) fn spend(field: impl std::fmt::Display, session_id: String, usage: Option<pb::Usage>) -> Result<Spend> {
    let usage = usage.unwrap_or_default();
    let tokens = |name: &str, count: u64| {
        let count = i64::try_from(count).map_err(|_| {
            Error::invalid(format!("{field}.usage.{name}"), format!("{count} is more than {}", i64::MAX))
        })?;
        Ok::<_, Error>((count > 0).then_some(count))
    };
    if !(usage.cost.is_finite() && usage.cost >= 0.0) {
        return Err(Error::invalid(
            format!("{field}.usage.cost"),
            format!("{}; must be a finite amount, not negative", usage.cost),
        ));
    }
    Ok(Spend {
        session_id: (!session_id.is_empty()).then(|| storable(&session_id).into_owned()),
        input_tokens: tokens("input_tokens", usage.input_tokens)?,
        output_tokens: tokens("output_tokens", usage.output_tokens)?,
        cost: (usage.cost > 0.0).then_some(usage.cost),
    })
}

fn usage(input_tokens: i64, output_tokens: i64, cost: f64) -> pb::Usage {
    pb::Usage {
        input_tokens: u64::try_from(input_tokens).unwrap_or(0),
        output_tokens: u64::try_from(output_tokens).unwrap_or(0),
        cost,
    }
}

/// A JSON object of strings (labels, unavailable agents) as a map.
fn string_map(value: &Json) -> std::collections::HashMap<String, String> {
    value
        .as_object()
        .map(|map| {
            map.iter().map(|(key, value)| (key.clone(), value.as_str().unwrap_or_default().to_owned())).collect()
        })
        .unwrap_or_default()
}

fn object(value: Option<Json>) -> Option<prost_types::Struct> {
    match value {
        Some(Json::Object(map)) => Some(json_to_struct(map)),
        _ => None,
    }
}

fn millis(value: Option<i64>) -> Option<prost_types::Duration> {
    value.and_then(|ms| u64::try_from(ms).ok()).map(|ms| duration(std::time::Duration::from_millis(ms)))
}

fn count(value: i32) -> u32 {
    u32::try_from(value).unwrap_or(0)
}

/// Encodes a claimed task with the token its agent gets, and its trace
/// context when this coordinator exports traces (without, the worker
/// derives the same from the task id).
pub(crate) fn assignment(task: db::claims::ClaimedTask, agent_token: String, traced: bool) -> pb::Assignment {
    let traceparent = if traced {
        traces::traceparent(traces::task_trace(task.id), traces::task_span(task.id))
    } else {
        String::new()
    };
    pb::Assignment {
        task_id: task.id.to_string(),
        attempt_id: task.attempt_id.to_string(),
        attempt: count(task.attempt),
        agent: task.agent,
        prompt: task.prompt,
        input: object(task.input),
        timeout: millis(task.timeout_ms),
        lease_expires_at: Some(timestamp(task.lease_expires_at)),
        swarm_id: task.swarm_id.to_string(),
        inputs: object(task.inputs),
        stage: task.stage,
        build_result: object(task.build_result),
        feedback: object(task.feedback),
        resume_session: task.resume_session.unwrap_or_default(),
        keep_session: task.resume_sessions,
        probe: false,
        round: count(task.round),
        agent_token,
        traceparent,
        tracestate: String::new(),
    }
}

/// Encodes a task row.
pub(crate) fn task(row: db::tasks::TaskRow) -> pb::Task {
    pb::Task {
        id: row.id.to_string(),
        swarm_id: row.swarm_id.to_string(),
        swarm: row.swarm,
        key: row.key.unwrap_or_default(),
        agent: row.agent,
        prompt: row.prompt,
        summary: row.summary,
        input: object(row.input),
        priority: row.priority,
        status: row.status.to_pb().into(),
        attempts: count(row.attempts),
        max_attempts: count(row.max_attempts),
        result: object(row.result),
        error: row.error.unwrap_or_default(),
        created_at: Some(timestamp(row.created_at)),
        started_at: row.started_at.map(timestamp),
        finished_at: row.finished_at.map(timestamp),
        worker_id: row.worker_id.map(|id| id.to_string()).unwrap_or_default(),
        timeout: millis(row.timeout_ms),
        current_attempt_id: row.current_attempt.map(|id| id.to_string()).unwrap_or_default(),
        run_after: Some(timestamp(row.run_after)),
        logs_truncated: row.log_truncated,
        failures: count(row.failures),
        depends_on: row.depends_on.iter().map(ToString::to_string).collect(),
        waiting_on: count(row.waiting_on),
        labels: string_map(&row.required_labels),
        locks: row.locks,
        validate: row.validate_agent.map(|agent| pb::ValidateSpec {
            agent,
            prompt: row.validate_prompt.unwrap_or_default(),
            max_rounds: count(row.max_rounds),
        }),
        stage: row.stage,
        round: count(row.round),
        session: if row.resume_sessions { pb::SessionPolicy::Resume } else { pb::SessionPolicy::Fresh }.into(),
        usage: Some(usage(row.input_tokens, row.output_tokens, row.cost)),
        backoff_initial: millis(row.backoff_initial_ms),
        backoff_max: millis(row.backoff_max_ms),
        backoff_multiplier: row.backoff_multiplier.unwrap_or(0.0),
        fallback_agents: row.fallback_agents,
        concurrency: row
            .concurrency
            .and_then(|keys| serde_json::from_value::<std::collections::HashMap<String, u32>>(keys).ok())
            .unwrap_or_default(),
    }
}

/// Encodes an attempt row.
pub(crate) fn attempt(row: db::tasks::AttemptRow) -> pb::Attempt {
    pb::Attempt {
        id: row.id.to_string(),
        number: count(row.number),
        worker_id: row.worker_id.to_string(),
        started_at: Some(timestamp(row.started_at)),
        finished_at: row.finished_at.map(timestamp),
        outcome: row.outcome.to_pb().into(),
        exit_code: row.exit_code,
        signal: row.signal,
        error: row.error.unwrap_or_default(),
        session_id: row.session_id.unwrap_or_default(),
        usage: Some(usage(row.input_tokens.unwrap_or(0), row.output_tokens.unwrap_or(0), row.cost.unwrap_or(0.0))),
        stage: row.stage,
        result: object(row.result),
        agent: row.agent.unwrap_or_default(),
        stalled_since: row.stalled_since.map(timestamp),
        progress: row.progress.unwrap_or_default(),
        progress_at: row.progress_at.map(timestamp),
    }
}

/// Encodes a stalled attempt.
pub(crate) fn stalled(row: db::leases::Stalled) -> pb::StalledAttempt {
    pb::StalledAttempt {
        task_id: row.task_id.to_string(),
        attempt_id: row.attempt_id.to_string(),
        worker_id: row.worker_id.to_string(),
        since: Some(timestamp(row.since)),
        swarm_id: row.swarm_id.to_string(),
    }
}

/// Encodes a held lock.
pub(crate) fn lock(row: db::locks::LockRow) -> pb::Lock {
    pb::Lock {
        key: row.key,
        task_id: row.task_id.to_string(),
        attempt_id: row.attempt_id.to_string(),
        acquired_at: Some(timestamp(row.acquired_at)),
    }
}

/// Decodes what a pause holds back.
pub(crate) fn pause_scope(scope: pb::PauseScope) -> Result<db::pauses::PauseScope> {
    use db::pauses::PauseScope;
    match scope {
        pb::PauseScope::Swarm => Ok(PauseScope::Swarm),
        pb::PauseScope::Agent => Ok(PauseScope::Agent),
        pb::PauseScope::Worker => Ok(PauseScope::Worker),
        pb::PauseScope::Unspecified => Err(Error::invalid("scope", "must be swarm, agent or worker")),
    }
}

/// Encodes a pause.
pub(crate) fn pause(row: db::pauses::PauseRow) -> pb::Pause {
    use db::pauses::PauseScope;
    let scope = match row.scope {
        PauseScope::Swarm => pb::PauseScope::Swarm,
        PauseScope::Agent => pb::PauseScope::Agent,
        PauseScope::Worker => pb::PauseScope::Worker,
    };
    pb::Pause {
        scope: scope.into(),
        target: row.target,
        paused_by: row.paused_by,
        reason: row.reason,
        paused_at: Some(timestamp(row.paused_at)),
        until: row.until.map(timestamp),
        stop_running: row.stop_running,
    }
}

/// Encodes a provider account's cool-down.
pub(crate) fn delivery(row: db::webhooks::DeliveryRow) -> pb::WebhookDelivery {
    pb::WebhookDelivery {
        id: row.id.to_string(),
        webhook: row.webhook,
        first_seq: u64::try_from(row.first_seq).unwrap_or(0),
        last_seq: u64::try_from(row.last_seq).unwrap_or(0),
        events: u32::try_from(row.events).unwrap_or(0),
        status: row.status,
        attempts: u32::try_from(row.attempts).unwrap_or(0),
        created_at: Some(timestamp(row.created_at)),
        next_attempt_at: Some(timestamp(row.next_attempt_at)),
        last_attempt_at: row.last_attempt_at.map(timestamp),
        last_status: row.last_status.and_then(|status| u32::try_from(status).ok()).unwrap_or(0),
        last_error: row.last_error.unwrap_or_default(),
        delivered_at: row.delivered_at.map(timestamp),
        body: row.body,
    }
}

pub(crate) fn cooldown(row: db::cooldowns::CooldownRow) -> pb::Cooldown {
    pb::Cooldown {
        account: row.account,
        until: Some(timestamp(row.until)),
        step: u32::try_from(row.step).unwrap_or(0),
        reason: row.reason,
        started_at: Some(timestamp(row.started_at)),
        probing: row.probing,
    }
}

/// Encodes a named token (never its secret).
pub(crate) fn token(row: db::tokens::TokenRow) -> pb::TokenInfo {
    pb::TokenInfo {
        name: row.name,
        role: row.role,
        created_at: Some(timestamp(row.created_at)),
        created_by: row.created_by,
        expires_at: row.expires_at.map(timestamp),
        revoked_at: row.revoked_at.map(timestamp),
    }
}

/// Encodes a worker row.
pub(crate) fn worker(row: db::workers::WorkerRow) -> pb::Worker {
    let status = if row.live { pb::WorkerStatus::Live } else { pb::WorkerStatus::Gone };
    pb::Worker {
        id: row.id.to_string(),
        name: row.name,
        hostname: row.hostname,
        agents: row.agents,
        slots: count(row.slots),
        free_slots: count(row.free_slots),
        running: count(row.running),
        resources: Some(pb::ResourceUsage {
            cpu_percent: row.cpu_percent.unwrap_or(0.0),
            memory_used_bytes: row.memory_used_bytes.and_then(|bytes| u64::try_from(bytes).ok()).unwrap_or(0),
            memory_total_bytes: row.memory_total_bytes.and_then(|bytes| u64::try_from(bytes).ok()).unwrap_or(0),
            attempts: row
                .attempt_rss
                .as_object()
                .map(|map| {
                    map.iter()
                        .map(|(attempt, rss)| pb::AttemptMemory {
                            attempt_id: attempt.clone(),
                            rss_bytes: rss.as_u64().unwrap_or(0),
                        })
                        .collect()
                })
                .unwrap_or_default(),
        }),
        registered_at: Some(timestamp(row.registered_at)),
        last_seen_at: Some(timestamp(row.last_seen_at)),
        status: status.into(),
        version: row.version,
        draining: row.draining,
        labels: string_map(&row.labels),
        unavailable: string_map(&row.unavailable),
    }
}

/// Encodes a stored log chunk.
pub(crate) fn chunk(task_id: &str, row: db::logs::ChunkRow) -> pb::LogChunk {
    let stream = match row.stream {
        1 => pb::LogStream::Stdout,
        2 => pb::LogStream::Stderr,
        _ => pb::LogStream::Hive,
    };
    pb::LogChunk {
        task_id: task_id.to_owned(),
        attempt_id: row.attempt_id.to_string(),
        stream: stream.into(),
        data: row.data,
        seq: u64::try_from(row.seq).unwrap_or(0),
    }
}

/// Adds a row's count to the per-status totals.
pub(crate) fn add_count(counts: &mut pb::StatusCounts, status: crate::status::TaskStatus, count: i64) {
    use crate::status::TaskStatus;
    let count = u64::try_from(count).unwrap_or(0);
    let slot = match status {
        TaskStatus::Blocked => &mut counts.blocked,
        TaskStatus::Ready => &mut counts.ready,
        TaskStatus::Running => &mut counts.running,
        TaskStatus::Cancelling => &mut counts.cancelling,
        TaskStatus::Succeeded => &mut counts.succeeded,
        TaskStatus::Dead => &mut counts.dead,
        TaskStatus::Cancelled => &mut counts.cancelled,
    };
    *slot += count;
}

/// Decodes a list's agent filter (empty: any agent).
pub(crate) fn agent_filter(agent: String) -> Result<Option<String>> {
    match text_problem(&agent) {
        Some(problem) => Err(Error::invalid("agent", problem)),
        None => Ok((!agent.is_empty()).then_some(agent)),
    }
}

/// Decodes a bulk-operation filter, naming bad ids.
pub(crate) fn task_filter(filter: Option<pb::TaskFilter>) -> Result<db::filters::TaskFilter> {
    let filter = filter.unwrap_or_default();
    let task_ids = if filter.task_ids.is_empty() {
        None
    } else {
        let ids = filter.task_ids.iter().enumerate().map(|(index, id)| {
            parse_id(format_args!("filter.task_ids[{index}]"), id, hive_shared::ids::TaskId::parse).map(|id| id.0)
        });
        Some(ids.collect::<Result<Vec<_>>>()?)
    };
    let swarm_id = if filter.swarm_id.is_empty() {
        None
    } else {
        Some(parse_id("filter.swarm_id", &filter.swarm_id, hive_shared::ids::SwarmId::parse)?.0)
    };
    let text = |field: &str, value: String| match text_problem(&value) {
        Some(problem) => Err(Error::invalid(format!("filter.{field}"), problem)),
        None => Ok((!value.is_empty()).then_some(value)),
    };
    Ok(db::filters::TaskFilter {
        task_ids,
        swarm_id,
        agent: text("agent", filter.agent)?,
        error_contains: text("error_contains", filter.error_contains)?,
    })
}

/// Encodes a swarm's progress.
pub(crate) fn swarm(progress: crate::tasks::progress::Progress) -> pb::SwarmStats {
    let mut counts = pb::StatusCounts::default();
    for (status, number) in &progress.counts {
        add_count(&mut counts, *status, *number);
    }
    let summary = progress.summary;
    let all_finished = counts.blocked + counts.ready + counts.running + counts.cancelling == 0;
    pb::SwarmStats {
        swarm_id: progress.id.to_string(),
        name: progress.name,
        counts: Some(counts),
        created_at: Some(timestamp(progress.created_at)),
        started_at: summary.as_ref().and_then(|summary| summary.started_at).map(timestamp),
        finished_at: summary.as_ref().and_then(|summary| summary.finished_at).filter(|_| all_finished).map(timestamp),
        usage: summary.as_ref().map(|summary| usage(summary.input_tokens, summary.output_tokens, summary.spent)),
        budget: summary.as_ref().and_then(|summary| summary.budget).unwrap_or(0.0),
        waiting: progress.waiting,
    }
}
