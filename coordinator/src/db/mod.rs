//! All of the coordinator's SQL, one module per concern, one function per
//! statement. Functions take an executor (a pool or a transaction), so the
//! use-cases in `tasks/` decide where transactions begin and commit.
//!
//! What is durable: swarms, tasks, attempts, workers and task output, all in
//! PostgreSQL; docs/data-model.md says which table holds which fact and
//! which statement writes it. What is rebuilt in memory on start: nothing
//! but the wake-up fan-out of notifications (see `crate::notifications`).
//!
//! sqlx owns this module: the pool, migrations and every compile-time-checked
//! query. tokio-postgres has one other job, the dedicated LISTEN connection in
//! `notifications`, where a long-lived connection with direct access to
//! asynchronous notifications is what is needed.

pub mod audit;
pub mod beats;
pub mod claims;
pub mod cooldowns;
pub mod events;
pub mod filters;
pub mod graph;
pub mod leases;
pub mod locks;
pub mod logs;
pub mod metrics;
pub mod notifications;
pub mod outcomes;
pub mod pauses;
pub mod progress;
pub mod sessions;
pub mod stages;
pub mod statistics;
pub mod swarms;
pub mod tasks;
pub mod tokens;
pub mod webhooks;
pub mod workers;

use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{Connection as _, PgConnection, PgPool};

use crate::config::{DatabaseConfig, EventsConfig};

/// Opens the query pool for everything but the workers' hot path: what
/// [`hot_connections`] leaves of `max_connections`.
///
/// # Errors
/// A malformed URL or an unreachable server.
pub async fn connect(config: &DatabaseConfig, events: &EventsConfig) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = config.url.expose().parse()?;
    let options = options.application_name("hive-coordinator").options(session_settings(events));
    pool_options(config, config.max_connections - hot_connections(config)).connect_with(options).await
}

/// Begins a transaction whose statements run on their generic plans, made
/// once per connection (`plan_cache_mode = force_generic_plan` for this
/// transaction only; one round trip with the `begin`). For submissions: the
/// planner otherwise plans the task insert anew on every call, since its
/// custom plan for a handful of rows looks cheaper than the generic one,
/// and that planning costs more than running it. Its generic plan joins the
/// batch's columns by hash, so large batches are served by it too.
///
/// # Errors
/// Database failures.
pub async fn begin_generic(pool: &PgPool) -> sqlx::Result<sqlx::Transaction<'static, sqlx::Postgres>> {
    pool.begin_with("begin; set local plan_cache_mode = force_generic_plan").await
}

/// Settings every connection of the coordinator's pools starts with: with
/// `events.tasks` off, `hive.task_events = off`, which the statements that
/// write task events read (the SQL function `task_events_on`).
fn session_settings(events: &EventsConfig) -> Vec<(&'static str, &'static str)> {
    if events.tasks { Vec::new() } else { vec![("hive.task_events", "off")] }
}

/// Opens (lazily) the pool for the workers' hot path — claims, outcomes,
/// heartbeats, output — whose connections plan each statement once
/// (`plan_cache_mode = force_generic_plan`) instead of on every call: for a
/// batch of a few tasks, planning the claim or Complete costs as much as
/// running it. Every statement run here is written so its generic plan
/// looks rows up by id or walks one of the indexes `docs/data-model.md`
/// lists, whatever the parameters.
///
/// Sequential scans are priced out here (`enable_seqscan = off`): a generic
/// plan made while a table is small lives on as it grows, and a scan with
/// the batch's ids as a filter compares every row with every id.
///
/// Bitmap scans are off here (`enable_bitmapscan = off`): the per-task
/// probes of a batch — a claimed task's dependencies, a completed task's
/// dependents and locks — each find a row or none, where building a bitmap
/// costs more than a plain index scan.
///
/// JIT compilation is off here (`jit = off`): a generic plan prices its
/// `limit $n` at a tenth of the table, so with a large queue the claim's
/// estimated cost passes the JIT thresholds, and compiling its expressions
/// would take far longer than running them for a few tasks.
///
/// Each connection prepares and plans the claim, Complete and heartbeat
/// statements as it opens ([`prepare_hot_path`]), and [`open_hot_pool`]
/// opens them all at start (the pool keeps them), so the first claims after
/// a start do not wait for connections to open and statements to be parsed.
///
/// # Errors
/// A malformed URL.
pub fn hot_pool(config: &DatabaseConfig, events: &EventsConfig) -> Result<PgPool, sqlx::Error> {
    let options: PgConnectOptions = config.url.expose().parse()?;
    let options = options
        .application_name("hive-coordinator-hot")
        .options([
            ("plan_cache_mode", "force_generic_plan"),
            ("enable_seqscan", "off"),
            ("jit", "off"),
            ("enable_bitmapscan", "off"),
        ])
        .options(session_settings(events));
    let connections = hot_connections(config);
    Ok(pool_options(config, connections)
        .min_connections(connections)
        // Kept open, not reaped when idle and opened again (each reopening
        // prepares its statements anew); replaced at sqlx's maximum lifetime.
        .idle_timeout(None)
        // sqlx pings every connection it hands out by default: a round trip
        // before each claim and each Complete. A connection used within the
        // last second is trusted instead; a dead one fails its statement,
        // which the worker retries like any database error.
        .test_before_acquire(false)
        .before_acquire(|conn, meta| {
            Box::pin(async move {
                if meta.idle_for >= HOT_PING_AFTER {
                    conn.ping().await?;
                }
                Ok(true)
            })
        })
        .after_connect(|conn, _| Box::pin(prepare_hot_path(conn)))
        .connect_lazy_with(options))
}

/// Opens the hot pool's connections, together (each prepares its statements
/// as it opens). Call once the schema is migrated. A failure only leaves
/// them to open on first use, so it is logged, not returned.
pub async fn open_hot_pool(pool: &PgPool) {
    let opening = (0..pool.options().get_min_connections()).map(|_| pool.acquire());
    for opened in futures_util::future::join_all(opening).await {
        if let Err(err) = opened {
            tracing::warn!(error = %err, "could not open a hot-path connection at start; it opens on first use");
        }
    }
}

/// Runs the claim, Complete and heartbeat statements once on a new hot
/// connection, on nothing (a claim of no tasks, empty batches): they are
/// parsed, planned and cached for the calls that follow, and change nothing.
async fn prepare_hot_path(conn: &mut PgConnection) -> Result<(), sqlx::Error> {
    let scope = claims::ClaimScope { worker: uuid::Uuid::nil(), agents: &[], max_bytes: 0, probe_account: None };
    let timing = claims::ClaimTiming { lease_seconds: 0.0, max_runtime_seconds: 0.0, deadline_grace_seconds: 0.0 };
    claims::claim(&mut *conn, scope, 0, timing).await?;
    outcomes::complete(&mut *conn, &outcomes::Reports::default()).await?;
    beats::record(&mut *conn, &beats::Beats::default(), 0.0).await?;
    Ok(())
}

/// How long a hot connection may sit idle before it is pinged as it is handed out.
const HOT_PING_AFTER: Duration = Duration::from_secs(1);

/// How many connections the hot path has: `database.hot_connections`, or
/// by default as many as this host has cores (at least 2, at most half of
/// `max_connections`).
///
/// More of the hot path's statements in flight than the database has cores
/// only queue inside PostgreSQL, where its backends take turns on the cores
/// and concurrent claims skip each other's locked rows; fewer connections
/// keep the queue in the coordinator instead (BENCHMARKS.md, "Knobs"). The
/// coordinator cannot see the database server's cores, so it counts its
/// own: right where the two share a host (`hivectl up`'s embedded database,
/// a single machine); with a larger server elsewhere, set
/// `database.hot_connections` to its cores.
pub fn hot_connections(config: &DatabaseConfig) -> u32 {
    config.hot_connections.unwrap_or_else(|| {
        let cores = std::thread::available_parallelism().map_or(2, |cores| cores.get());
        u32::try_from(cores).unwrap_or(u32::MAX).max(2).min(config.max_connections / 2)
    })
}

fn pool_options(config: &DatabaseConfig, connections: u32) -> PgPoolOptions {
    PgPoolOptions::new()
        .max_connections(connections)
        .acquire_timeout(config.acquire_timeout)
        .idle_timeout(Some(Duration::from_secs(300)))
}

/// No connection to the database could be made (it is unreachable, or it
/// refused the login): where it was looked for (never the password), for how
/// long, and the last failure's cause.
#[derive(Debug, thiserror::Error)]
#[error("cannot connect to PostgreSQL at {address} (tried for {waited:?})")]
pub struct ConnectError {
    /// Host and port (or socket folder) and database.
    pub address: String,
    /// How long connecting was tried.
    pub waited: Duration,
    /// The last attempt's failure.
    #[source]
    pub cause: sqlx::Error,
}

/// Opens the query pool, retrying with backoff for up to `connect_timeout`
/// (a coordinator may start before its database, or during an outage).
/// Each try first opens one plain connection, whose failure says why (the
/// pool's own only says it timed out).
///
/// # Errors
/// A malformed URL at once; an unreachable server once the time is up.
pub async fn connect_patiently(config: &DatabaseConfig, events: &EventsConfig) -> Result<PgPool, ConnectError> {
    let started = tokio::time::Instant::now();
    let deadline = started + config.connect_timeout;
    let failed = |cause| ConnectError { address: address(config), waited: started.elapsed(), cause };
    let options: PgConnectOptions = config.url.expose().parse().map_err(failed)?;
    let mut delay = Duration::from_millis(200);
    loop {
        let tried = match sqlx::PgConnection::connect_with(&options).await {
            Ok(probe) => {
                let _ = sqlx::Connection::close(probe).await;
                connect(config, events).await
            }
            Err(err) => Err(err),
        };
        match tried {
            Ok(pool) => return Ok(pool),
            Err(err @ sqlx::Error::Configuration(_)) => return Err(failed(err)),
            Err(err) if tokio::time::Instant::now() + delay > deadline => return Err(failed(err)),
            Err(err) => {
                tracing::warn!(address = %address(config), error = %err, retry_in = ?delay, "cannot reach the database yet");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Where `config` points: host and port (or socket folder) and database, without credentials.
fn address(config: &DatabaseConfig) -> String {
    match config.url.expose().parse::<PgConnectOptions>() {
        Ok(options) => {
            let database = options.get_database().unwrap_or("(default database)");
            match options.get_socket() {
                Some(socket) => format!("{} (socket), database {database}", socket.display()),
                None => format!("{}:{}, database {database}", options.get_host(), options.get_port()),
            }
        }
        Err(_) => "a malformed database.url".to_owned(),
    }
}

/// Whether `err` says the database could not be reached (it is down,
/// restarting or shutting down, or out of connections), not that a
/// statement failed: class 08 (connection exception), 53300, 57P01–57P03.
pub fn unreachable(err: &sqlx::Error) -> bool {
    match err {
        sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Database(db) => db.code().is_some_and(|code| {
            code.starts_with("08") || matches!(code.as_ref(), "53300" | "57P01" | "57P02" | "57P03")
        }),
        _ => false,
    }
}

/// Whether the same call may get past `err` shortly: the database is
/// [`unreachable`], or the statement lost a serialization race or a
/// deadlock (40001, 40P01). Callers see UNAVAILABLE and retry, so an outage
/// never turns a worker's report into one it gives up on.
pub fn transient(err: &sqlx::Error) -> bool {
    unreachable(err)
        || matches!(err, sqlx::Error::Database(db) if db.code().is_some_and(|code| matches!(code.as_ref(), "40001" | "40P01")))
}

/// Converts a duration to the seconds PostgreSQL's `make_interval` takes.
pub(crate) fn seconds(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_failures_are_unreachable_and_statement_errors_are_not() {
        assert!(unreachable(&sqlx::Error::Io(std::io::Error::from(std::io::ErrorKind::ConnectionReset))));
        assert!(unreachable(&sqlx::Error::PoolTimedOut));
        assert!(!unreachable(&sqlx::Error::RowNotFound));
        assert!(transient(&sqlx::Error::PoolTimedOut));
        assert!(!transient(&sqlx::Error::Protocol("bad".into())));
    }

    #[test]
    fn the_hot_path_has_the_hosts_cores_within_half_of_all_connections_unless_set() {
        let config = |max_connections, hot_connections| DatabaseConfig {
            max_connections,
            hot_connections,
            ..DatabaseConfig::default()
        };
        let cores = std::thread::available_parallelism().map_or(2, |cores| cores.get());
        let expected = u32::try_from(cores).unwrap().clamp(2, 32);
        assert_eq!(hot_connections(&config(64, None)), expected);
        assert_eq!(hot_connections(&config(4, None)), 2, "at least 2, and half of 4");
        assert_eq!(hot_connections(&config(2, None)), 1, "half of 2");
        assert_eq!(hot_connections(&config(16, Some(12))), 12, "as set");
    }
}
