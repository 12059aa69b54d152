//! Statements for tasks with a validator stage: a successful attempt is
//! appended with its result (a builder's output or a validator's verdict),
//! and the task moves to its next stage — to its validator, back to its
//! builder with the verdict, or finished. What a stage hands to its agent is
//! read from those attempts at claim (see `claims`).

use serde_json::Value as Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::outcomes::Reports;
use crate::status::TaskStatus;

/// A task with a validator whose attempt succeeded, locked for the stage decision.
#[derive(Debug)]
pub struct StagedTask {
    /// Task id.
    pub id: Uuid,
    /// The attempt that succeeded.
    pub attempt_id: Uuid,
    /// Running, or cancelling when a cancel came while it ran.
    pub status: TaskStatus,
    /// "build" or "validate".
    pub stage: String,
    /// Builder round, from 1.
    pub round: i32,
    /// Builder runs allowed.
    pub max_rounds: i32,
    /// The result of the builder's last successful attempt, which a passing
    /// verdict makes the task's result.
    pub build_result: Option<Json>,
    /// The agent the attempt ran.
    pub run_agent: String,
    /// How long the attempt ran, seconds.
    pub ran_seconds: f64,
}

/// Locks the tasks with a validator whose current attempt is among the
/// reported ones (and held by `worker`, when given).
pub async fn lock_staged(
    conn: &mut PgConnection,
    task_ids: &[Uuid],
    attempt_ids: &[Uuid],
    worker: Option<Uuid>,
) -> sqlx::Result<Vec<StagedTask>> {
    sqlx::query_as!(
        StagedTask,
        r#"
        select s.task_id as "id!", s.attempt_id as "attempt_id!", s.status as "status!: TaskStatus",
               s.stage as "stage!", s.round as "round!", t.max_rounds,
               (select a.result from attempts a
                where a.task_id = s.task_id and a.stage = 'build' and a.outcome = 'succeeded'
                order by a.number desc limit 1) as build_result,
               s.run_agent as "run_agent!", extract(epoch from now() - s.attempt_started_at)::float8 as "ran_seconds!"
        from task_states s
        join unnest($1::uuid[], $2::uuid[]) as r(task_id, attempt_id)
          on s.task_id = r.task_id and s.attempt_id = r.attempt_id
        join tasks t on t.id = s.task_id
        where s.validated and ($3::uuid is null or s.worker_id = $3)
        order by s.task_id
        for update of s
        "#,
        task_ids,
        attempt_ids,
        worker,
    )
    .fetch_all(conn)
    .await
}

/// Appends one successful stage attempt with its result and usage, and
/// charges its swarm (cost and tokens).
pub async fn record_attempt(conn: &mut PgConnection, reports: &Reports, index: usize) -> sqlx::Result<()> {
    let (task, attempt) = (reports.task_ids[index], reports.attempt_ids[index]);
    sqlx::query!(
        r#"
        with recorded as (
            insert into attempts (id, task_id, number, worker_id, stage, agent, started_at, finished_at, outcome,
                                  result, session_id, input_tokens, output_tokens, cost)
            select s.attempt_id, s.task_id, s.attempts, s.worker_id, s.stage, s.run_agent, s.attempt_started_at, now(),
                   'succeeded', $3, $4, $5, $6, $7
            from task_states s where s.task_id = $1 and s.attempt_id = $2
            returning task_id
        )
        update swarms w set spent = w.spent + coalesce($7, 0), input_tokens = add_tokens(w.input_tokens, coalesce($5, 0)),
                            output_tokens = add_tokens(w.output_tokens, coalesce($6, 0))
        from recorded r join task_states s on s.task_id = r.task_id
        where w.id = s.swarm_id and (coalesce($7, 0) > 0 or coalesce($5, 0) > 0 or coalesce($6, 0) > 0)
        "#,
        task,
        attempt,
        reports.results[index],
        reports.session_ids[index],
        reports.input_tokens[index],
        reports.output_tokens[index],
        reports.costs[index],
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Where a staged task goes next.
#[derive(Debug, Clone, PartialEq)]
pub enum NextStage {
    /// To its validator, with the builder's result.
    Validate(Json),
    /// Back to its builder for another round, with the validator's verdict.
    Rebuild(Json),
    /// Finished: succeeded (with the builder's result), dead or cancelled
    /// (with an error).
    Finish {
        /// Succeeded, dead or cancelled.
        status: TaskStatus,
        /// The task's result, for a success: the builder's last result.
        result: Option<Json>,
        /// Why, otherwise.
        error: Option<String>,
    },
}

/// Makes a staged task ready for its next stage — its validator, or its
/// builder's next round — with `payload` (the build result or the verdict)
/// counted in what its claim hands over; releases its lease and locks.
pub async fn advance(conn: &mut PgConnection, task: Uuid, to_validator: bool, payload: &Json) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        with moved as (
            update task_states s
            set status = 'ready',
                stage = case when $2 then 'validate' else 'build' end,
                round = case when $2 then s.round else s.round + 1 end,
                run_agent = case when $2 then t.validate_agent else t.agent end,
                bytes = octet_length(case when $2 then coalesce(t.validate_prompt, '') else t.prompt end)
                        + coalesce(octet_length(t.input::text), 0) + octet_length($3::jsonb::text),
                run_after = now(),
                worker_id = null, attempt_id = null, lease_expires_at = null, attempt_deadline = null,
                attempt_started_at = null, stalled_since = null, progress_at = null, progress = null
            from tasks t
            where s.task_id = $1 and t.id = s.task_id
            -- The subquery reads the row as it was: the worker of the attempt that ended.
            returning s.task_id, s.swarm_id, s.attempts, s.stage, s.round,
                      (select o.worker_id from task_states o where o.task_id = s.task_id) as worker_id
        ), logged as (
            insert into events (kind, task_ids, swarm_ids, worker_ids, attempts, details)
            select 'task.next_stage', array[m.task_id], array[m.swarm_id], array[m.worker_id], array[m.attempts],
                   array[jsonb_build_object('stage', m.stage, 'round', m.round)]
            from moved m
            where task_events_on()
        )
        delete from task_locks l using moved where l.task_id = moved.task_id
        "#,
        task,
        to_validator,
        payload,
    )
    .execute(conn)
    .await?;
    Ok(())
}

/// Finishes a staged task: succeeded, with its builder's last successful
/// attempt as the result; or dead or cancelled, with `error`. Releases its
/// lease and locks.
pub async fn finish(conn: &mut PgConnection, task: Uuid, status: TaskStatus, error: Option<&str>) -> sqlx::Result<()> {
    sqlx::query!(
        r#"
        with prior as (
            select task_id, swarm_id, worker_id, attempts from task_states where task_id = $1
        ), finished as (
            update task_states s
            set status = $2, finished_at = now(), error = $3,
                result_attempt = case when $2 = 'succeeded'::task_status then
                    (select max(a.number) from attempts a
                     where a.task_id = s.task_id and a.stage = 'build' and a.outcome = 'succeeded')
                end,
                worker_id = null, attempt_id = null, lease_expires_at = null, attempt_deadline = null,
                attempt_started_at = null, stalled_since = null, progress_at = null, progress = null
            where s.task_id = $1
            returning s.task_id
        ), logged as (
            insert into events (kind, task_ids, swarm_ids, worker_ids, attempts, details)
            select case $2::task_status when 'succeeded' then 'task.succeeded' when 'dead' then 'task.dead'
                                        else 'task.cancelled' end,
                   array[p.task_id], array[p.swarm_id], array[p.worker_id], array[p.attempts],
                   array[jsonb_strip_nulls(jsonb_build_object('error', $3::text))]
            from prior p join finished f on f.task_id = p.task_id
            where task_events_on()
        )
        delete from task_locks l using finished where l.task_id = finished.task_id
        "#,
        task,
        status as TaskStatus,
        error,
    )
    .execute(conn)
    .await?;
    Ok(())
}
