//! Statements on `workers`: registration, heartbeat figures, listing.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

/// A worker as it registers.
#[derive(Debug)]
pub struct Registration<'a> {
    /// Worker id.
    pub id: Uuid,
    /// Name.
    pub name: &'a str,
    /// Host.
    pub hostname: &'a str,
    /// Agents offered.
    pub agents: &'a [String],
    /// Slots.
    pub slots: i32,
    /// Version.
    pub version: &'a str,
    /// Labels (a JSON object of strings).
    pub labels: serde_json::Value,
    /// Each agent's provider account (a JSON object of strings).
    pub accounts: serde_json::Value,
    /// Name of the registering token (`None` when auth is off).
    pub registered_by: Option<&'a str>,
}

/// Records a worker, or refreshes it when it registers again after a
/// reconnect with the same token, and appends `worker.joined`; `false` when
/// the id belongs to a worker another token registered (nothing changed).
pub async fn upsert(executor: impl PgExecutor<'_>, worker: &Registration<'_>) -> sqlx::Result<bool> {
    let result = sqlx::query_scalar!(
        r#"
        with registered as (
            insert into workers (id, name, hostname, agents, slots, free_slots, version, labels, registered_by, accounts)
            values ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9)
            on conflict (id) do update
            set name = excluded.name, hostname = excluded.hostname, agents = excluded.agents,
                slots = excluded.slots, version = excluded.version, labels = excluded.labels,
                accounts = excluded.accounts, last_seen_at = now(), gone_at = null
            where workers.registered_by is not distinct from excluded.registered_by
            returning id
        ), logged as (
            insert into events (kind, worker_ids, details)
            select 'worker.joined', array[id],
                   array[jsonb_build_object('name', $2::text, 'host', $3::text, 'agents', $4::text[], 'slots', $5::int4,
                                            'version', $6::text)]
            from registered
        )
        select count(*) as "registered!" from registered
        "#,
        worker.id,
        worker.name,
        worker.hostname,
        worker.agents,
        worker.slots,
        worker.version,
        worker.labels,
        worker.registered_by,
        worker.accounts,
    )
    .fetch_one(executor)
    .await?;
    Ok(result == 1)
}

/// Who registered the worker: `None` for an unknown worker, `Some(None)` when auth was off.
pub async fn registered_by(executor: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Option<String>>> {
    let row =
        sqlx::query_scalar!("select registered_by from workers where id = $1", id).fetch_optional(executor).await?;
    Ok(row)
}

/// A command waiting for a worker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Drain: claim nothing more, let running agents finish.
    Drain,
    /// Stop now: stop every agent and hand its task back.
    Stop,
}

impl Command {
    pub(crate) fn parse(text: Option<&str>) -> Option<Self> {
        match text {
            Some("drain") => Some(Self::Drain),
            Some("stop") => Some(Self::Stop),
            _ => None,
        }
    }
}

/// The command waiting for a worker, if any.
pub async fn command_of(executor: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<Option<Command>> {
    let command = sqlx::query_scalar!("select command from workers where id = $1", id).fetch_optional(executor).await?;
    Ok(Command::parse(command.flatten().as_deref()))
}

/// Sets a drain (or, with `now`, a stop) command for the given live workers,
/// or all live ones; a stop is never downgraded to a drain. Returns their ids.
pub async fn set_command(
    executor: impl PgExecutor<'_>,
    ids: &[Uuid],
    all: bool,
    now: bool,
    lease_seconds: f64,
) -> sqlx::Result<Vec<Uuid>> {
    sqlx::query_scalar!(
        r#"
        update workers
        set command = case when $3 or command = 'stop' then 'stop' else 'drain' end
        where ($2 or id = any($1)) and last_seen_at > now() - make_interval(secs => $4)
        returning id
        "#,
        ids,
        all,
        now,
        lease_seconds,
    )
    .fetch_all(executor)
    .await
}

/// Whether a worker is registered.
pub async fn exists(executor: impl PgExecutor<'_>, id: Uuid) -> sqlx::Result<bool> {
    let found = sqlx::query_scalar!(r#"select exists(select 1 from workers where id = $1) as "found!""#, id)
        .fetch_one(executor)
        .await?;
    Ok(found)
}

/// A worker as stored, with whether it was heard from within the lease.
#[derive(Debug)]
pub struct WorkerRow {
    /// Worker id.
    pub id: Uuid,
    /// Name.
    pub name: String,
    /// Host.
    pub hostname: String,
    /// Agents.
    pub agents: Vec<String>,
    /// Slots.
    pub slots: i32,
    /// Free slots.
    pub free_slots: i32,
    /// Attempts held.
    pub running: i32,
    /// CPU use.
    pub cpu_percent: Option<f64>,
    /// Memory in use.
    pub memory_used_bytes: Option<i64>,
    /// Memory installed.
    pub memory_total_bytes: Option<i64>,
    /// Version.
    pub version: String,
    /// Whether it is draining.
    pub draining: bool,
    /// Labels.
    pub labels: serde_json::Value,
    /// Resident memory per running attempt.
    pub attempt_rss: serde_json::Value,
    /// What it could not do at its last heartbeat (agent or `work_dir` → reason).
    pub unavailable: serde_json::Value,
    /// First registration.
    pub registered_at: DateTime<Utc>,
    /// Last contact.
    pub last_seen_at: DateTime<Utc>,
    /// Heard from within the lease.
    pub live: bool,
}

/// Registered workers, most recently seen first; `gone` ones only when asked.
pub async fn list(
    executor: impl PgExecutor<'_>,
    lease_seconds: f64,
    include_gone: bool,
) -> sqlx::Result<Vec<WorkerRow>> {
    sqlx::query_as!(
        WorkerRow,
        r#"
        select id, name, hostname, agents, slots, free_slots, running, cpu_percent, memory_used_bytes,
               memory_total_bytes, version, draining, labels, attempt_rss, unavailable, registered_at, last_seen_at,
               last_seen_at > now() - make_interval(secs => $1) as "live!"
        from workers
        where $2 or last_seen_at > now() - make_interval(secs => $1)
        order by last_seen_at desc
        "#,
        lease_seconds,
        include_gone,
    )
    .fetch_all(executor)
    .await
}

/// Which of `agents` no registered worker offers.
pub async fn agents_without_worker(executor: impl PgExecutor<'_>, agents: &[String]) -> sqlx::Result<Vec<String>> {
    sqlx::query_scalar!(
        r#"
        select a as "agent!" from unnest($1::text[]) as a
        where not exists (select 1 from workers w where a = any(w.agents))
        order by a
        "#,
        agents
    )
    .fetch_all(executor)
    .await
}

/// Forgets workers not seen for `retention_seconds` that hold no lease;
/// returns how many.
pub async fn prune_gone(executor: impl PgExecutor<'_>, retention_seconds: f64) -> sqlx::Result<u64> {
    let result = sqlx::query!(
        r#"
        delete from workers w
        where w.last_seen_at < now() - make_interval(secs => $1)
          and not exists (select 1 from task_states s where s.worker_id = w.id and s.lease_expires_at is not null)
        "#,
        retention_seconds,
    )
    .execute(executor)
    .await?;
    Ok(result.rows_affected())
}

/// Marks the workers that left and appends their events: `worker.gone` for
/// one that drained and stopped beating (not seen for `quiet_seconds`, its
/// last beat draining with nothing running), `worker.lost` for one not seen
/// for `lease_seconds` otherwise. Each is marked once, until it registers
/// or beats again; returns how many were marked.
pub async fn mark_left(executor: impl PgExecutor<'_>, lease_seconds: f64, quiet_seconds: f64) -> sqlx::Result<u64> {
    let marked = sqlx::query_scalar!(
        r#"
        with departed as (
            update workers
            set gone_at = now()
            where gone_at is null
              and (last_seen_at < now() - make_interval(secs => $1)
                   or (draining and running = 0 and last_seen_at < now() - make_interval(secs => $2)))
            returning id, name, hostname, draining and running = 0 as drained
        ), logged as (
            insert into events (kind, worker_ids, details)
            select case when drained then 'worker.gone' else 'worker.lost' end, array_agg(id),
                   array_agg(jsonb_build_object('name', name, 'host', hostname))
            from departed
            group by drained
        )
        select count(*) as "marked!" from departed
        "#,
        lease_seconds,
        quiet_seconds,
    )
    .fetch_one(executor)
    .await?;
    Ok(u64::try_from(marked).unwrap_or(0))
}
