//! The heartbeat statement: a batch of beats from many workers — their
//! figures and the leases of the attempts they hold — written in one
//! statement and one commit.
//!
//! Rows are locked in id order (workers, then tasks) so the batch never
//! deadlocks with Complete, which locks tasks in id order too.

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use super::workers::Command;
use crate::status::TaskStatus;

/// Beats, column by column: one entry per beat.
#[derive(Debug, Default)]
pub struct Beats {
    /// Worker ids.
    pub worker_ids: Vec<Uuid>,
    /// Free slots.
    pub free_slots: Vec<i32>,
    /// Attempts held.
    pub running: Vec<i32>,
    /// CPU use, percent.
    pub cpu_percent: Vec<f64>,
    /// Memory in use.
    pub memory_used_bytes: Vec<i64>,
    /// Memory installed.
    pub memory_total_bytes: Vec<i64>,
    /// Whether each is draining.
    pub draining: Vec<bool>,
    /// Resident memory per running attempt (a JSON object: attempt id → bytes).
    pub attempt_rss: Vec<serde_json::Value>,
    /// What each cannot do now (a JSON object: agent or `work_dir` → reason).
    pub unavailable: Vec<serde_json::Value>,
    /// The attempts the beats list, paired with their worker.
    pub held_workers: Vec<Uuid>,
    /// See `held_workers`.
    pub held_attempts: Vec<Uuid>,
    /// The listed attempts whose workers say they are stalled.
    pub stalled_attempts: Vec<Uuid>,
}

/// An attempt whose lease a beat extended, with its task's status.
#[derive(Debug, Clone)]
pub struct Extended {
    /// The attempt.
    pub attempt_id: Uuid,
    /// Running or cancelling.
    pub status: TaskStatus,
    /// When its agent last reported progress.
    pub progress_at: Option<DateTime<Utc>>,
    /// Whether a pause in force with `stop_running` holds it back (its
    /// swarm, its stage's agent or its worker's name is paused so).
    pub paused: bool,
}

/// What the statement found, by worker.
#[derive(Debug, Default)]
pub struct Written {
    /// Registered workers that beat, with the command waiting for each.
    pub commands: HashMap<Uuid, Option<Command>>,
    /// Attempts extended, by worker.
    pub extended: HashMap<Uuid, Vec<Extended>>,
    /// Tasks leased to each worker in all, listed or not.
    pub leased: HashMap<Uuid, i64>,
    /// The new lease end.
    pub lease_expires_at: DateTime<Utc>,
}

/// Records every beat's figures and extends the leases of the attempts each
/// lists that are still current, marking them stalled (since when) or not,
/// and saying which a pause stops; counts every task leased to each worker,
/// so the caller can tell whether a worker holds leases it does not know about.
pub async fn record(executor: impl PgExecutor<'_>, beats: &Beats, lease_seconds: f64) -> sqlx::Result<Written> {
    let row = sqlx::query!(
        r#"
        with beat as (
            select * from unnest($1::uuid[], $2::int4[], $3::int4[], $4::float8[], $5::int8[], $6::int8[],
                                 $7::bool[], $8::jsonb[], $12::jsonb[])
                as b(id, free_slots, running, cpu_percent, memory_used_bytes, memory_total_bytes, draining, attempt_rss,
                     unavailable)
        ), beating as (
            select w.id, w.draining from workers w where w.id = any($1) order by w.id for update
        ), seen as (
            update workers w
            set last_seen_at = now(), free_slots = b.free_slots, running = b.running, cpu_percent = b.cpu_percent,
                memory_used_bytes = b.memory_used_bytes, memory_total_bytes = b.memory_total_bytes,
                draining = b.draining, attempt_rss = b.attempt_rss, unavailable = b.unavailable, gone_at = null
            from beat b
            where w.id = b.id and w.id in (select id from beating)
            returning w.id, w.command,
                      w.draining and not (select g.draining from beating g where g.id = w.id) as began_draining
        ), listed as (
            -- Each listed attempt looked up among its worker's leased rows
            -- (`task_states_leased_idx`), one lookup each; `limit 1` keeps
            -- the lookup per attempt. As a plain join, a plan made while few
            -- tasks were leased would drive it from the index instead and
            -- compare every leased task with every listed attempt.
            select x.task_id
            from unnest($9::uuid[], $10::uuid[]) as h(worker_id, attempt_id)
            cross join lateral (
                select s.task_id from task_states s
                where s.worker_id = h.worker_id and s.lease_expires_at is not null and s.attempt_id = h.attempt_id
                limit 1
            ) x
        ), holding as (
            -- Leased, since `listed` found it by its attempt; locked by id.
            select s.task_id
            from task_states s
            where s.task_id = any(array(select task_id from listed)) and s.status in ('running', 'cancelling')
              and s.attempt_id = any($10)
            order by s.task_id
            for update of s
        ), extended as (
            update task_states s
            set lease_expires_at = now() + make_interval(secs => $11),
                stalled_since = case when s.attempt_id = any($13) then coalesce(s.stalled_since, now()) end
            -- The attempt checked again in the row's latest version: a
            -- listed attempt that ended since the snapshot extends nothing.
            where s.task_id = any(array(select task_id from holding)) and s.status in ('running', 'cancelling')
              and s.attempt_id = any($10)
            returning s.worker_id, s.attempt_id, s.status, s.progress_at, s.swarm_id, s.run_agent, s.task_id,
                      s.attempts, s.stalled_since = now() as newly_stalled
        ), stalled as (
            -- Attempts stalled since this beat (the ones stalled before
            -- keep their time).
            insert into events (kind, task_ids, swarm_ids, worker_ids, attempts)
            select 'task.stalled', array_agg(task_id), array_agg(swarm_id), array_agg(worker_id), array_agg(attempts)
            from extended
            where newly_stalled and task_events_on()
            having count(*) > 0
        ), began_draining as (
            insert into events (kind, worker_ids)
            select 'worker.draining', array_agg(id) from seen where began_draining having count(*) > 0
        ), stopping as materialized (
            select p.scope, p.target from paused p where p.stop_running
        ), halted as (
            -- Running attempts under a pause that stops them (usually none:
            -- `stopping` is empty and this reads nothing).
            select e.attempt_id
            from extended e
            where e.status = 'running' and exists(
                select 1 from stopping p
                where (p.scope = 'swarm' and p.target = e.swarm_id::text)
                   or (p.scope = 'agent' and p.target = e.run_agent)
                   or (p.scope = 'worker' and p.target = (select w.name from workers w where w.id = e.worker_id)))
        ), leased as (
            select worker_id, count(*) as n
            from task_states
            where worker_id = any($1) and lease_expires_at is not null
            group by worker_id
        )
        select array(select id from seen) as "seen!: Vec<Uuid>",
               array(select coalesce(command, '') from seen) as "commands!: Vec<String>",
               array(select worker_id from extended) as "extended_workers!: Vec<Uuid>",
               array(select attempt_id from extended) as "extended_attempts!: Vec<Uuid>",
               array(select status from extended) as "extended_statuses!: Vec<TaskStatus>",
               array(select attempt_id from extended where progress_at is not null) as "progressed!: Vec<Uuid>",
               array(select progress_at from extended where progress_at is not null)
                   as "progressed_at!: Vec<DateTime<Utc>>",
               array(select attempt_id from halted) as "halted!: Vec<Uuid>",
               array(select worker_id from leased) as "leased_workers!: Vec<Uuid>",
               array(select n from leased) as "leased_counts!: Vec<i64>",
               now() + make_interval(secs => $11) as "lease_expires_at!"
        "#,
        &beats.worker_ids,
        &beats.free_slots,
        &beats.running,
        &beats.cpu_percent,
        &beats.memory_used_bytes,
        &beats.memory_total_bytes,
        &beats.draining,
        &beats.attempt_rss,
        &beats.held_workers,
        &beats.held_attempts,
        lease_seconds,
        &beats.unavailable,
        &beats.stalled_attempts,
    )
    .fetch_one(executor)
    .await?;
    let mut written = Written { lease_expires_at: row.lease_expires_at, ..Written::default() };
    for (worker, command) in row.seen.into_iter().zip(row.commands) {
        written.commands.insert(worker, Command::parse(Some(command.as_str())));
    }
    let progressed: HashMap<Uuid, DateTime<Utc>> = row.progressed.into_iter().zip(row.progressed_at).collect();
    let extended = row.extended_workers.into_iter().zip(row.extended_attempts.into_iter().zip(row.extended_statuses));
    for (worker, (attempt_id, status)) in extended {
        let progress_at = progressed.get(&attempt_id).copied();
        let paused = row.halted.contains(&attempt_id);
        written.extended.entry(worker).or_default().push(Extended { attempt_id, status, progress_at, paused });
    }
    written.leased = row.leased_workers.into_iter().zip(row.leased_counts).collect();
    Ok(written)
}
