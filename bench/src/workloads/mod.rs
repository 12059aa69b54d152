//! One module per workload, each matching the peers' workload of the same
//! name so the figures compare.

pub mod backlog;
pub mod claude;
pub mod dashboard;
pub mod drain;
pub mod fleet;
pub mod latency;
pub mod logs;
pub mod spawn;

use std::time::Duration;

use hive_shared::client::AuthChannel;
use hive_shared::pb;
use hive_shared::pb::admin_service_client::AdminServiceClient;

/// The worker agent table for the built-in no-op executor.
pub const NOOP_AGENT: &str = "[agents.noop]\nbuiltin = \"noop\"\n";

/// An admin client that accepts large submissions.
///
/// # Errors
/// When the coordinator cannot be reached.
pub async fn admin(url: &str) -> anyhow::Result<AdminServiceClient<AuthChannel>> {
    let client = AdminServiceClient::new(crate::auth::admin(url).connect().await?);
    Ok(client.max_encoding_message_size(256 << 20).max_decoding_message_size(256 << 20))
}

/// Submits `n` tasks for `agent` in one call (one transaction).
///
/// # Errors
/// When the coordinator refuses.
pub async fn submit_bulk(url: &str, swarm: &str, agent: &str, n: usize) -> anyhow::Result<Vec<String>> {
    let tasks =
        (0..n).map(|i| pb::TaskSpec { agent: agent.into(), prompt: i.to_string(), ..Default::default() }).collect();
    let request = pb::SubmitTasksRequest { swarm: swarm.into(), tasks, ..Default::default() };
    Ok(admin(url).await?.submit_tasks(request).await?.into_inner().task_ids)
}

/// Seconds from the first attempt's start to the last task's finish, as the database recorded them.
///
/// # Errors
/// Database failures.
pub async fn busy_seconds(pool: &sqlx::PgPool) -> anyhow::Result<f64> {
    let seconds: Option<f64> = sqlx::query_scalar(
        "select extract(epoch from (select max(finished_at) from task_states) - (select min(started_at) from task_states))::float8",
    )
    .fetch_one(pool)
    .await?;
    Ok(seconds.unwrap_or(f64::NAN))
}

/// A point in PostgreSQL's write-ahead log: what a workload cost the
/// database in writes, steadier from run to run than time. (From the WAL
/// position, which is exact; `pg_stat_wal`'s counters reach the view up to
/// seconds late, after a sub-second drain had ended.)
#[derive(Debug, Clone)]
pub struct Wal(String);

impl Wal {
    /// The position now.
    ///
    /// # Errors
    /// Database failures.
    pub async fn read(pool: &sqlx::PgPool) -> anyhow::Result<Self> {
        Ok(Self(sqlx::query_scalar("select pg_current_wal_lsn()::text").fetch_one(pool).await?))
    }

    /// WAL bytes written since `self`.
    ///
    /// # Errors
    /// Database failures.
    pub async fn bytes_since(self, pool: &sqlx::PgPool) -> anyhow::Result<f64> {
        Ok(sqlx::query_scalar("select pg_wal_lsn_diff(pg_current_wal_lsn(), $1::pg_lsn)::float8")
            .bind(self.0)
            .fetch_one(pool)
            .await?)
    }

    /// The field for a workload's line: WAL bytes written since `self`, per job.
    ///
    /// # Errors
    /// Database failures.
    pub async fn per_job(self, pool: &sqlx::PgPool, jobs: usize) -> anyhow::Result<[(&'static str, String); 1]> {
        let bytes = self.bytes_since(pool).await?;
        Ok([("wal_bytes_per_job", format!("{:.0}", bytes / jobs.max(1) as f64))])
    }
}

/// The longest any workload waits for its tasks.
pub const DEADLINE: Duration = Duration::from_secs(90);

/// The size of one run of a queue workload (drain, spawn): tasks, worker
/// processes × slots, and how many tasks each worker may hold beyond its slots.
#[derive(Debug, Clone, Copy)]
pub struct Shape {
    /// Tasks submitted.
    pub n: usize,
    /// Worker processes.
    pub procs: usize,
    /// Slots per worker.
    pub concurrency: usize,
    /// Tasks a worker claims beyond its free slots (0: `peer=hive`; more: `peer=hive-batched`).
    pub prefetch: u32,
}

/// One variant of a workload: its peer name (`hive` claims only free slots,
/// `hive-batched` also prefetches), and its own database and coordinator.
pub struct Variant {
    /// `hive` or `hive-batched`.
    pub name: &'static str,
    /// The variant's database.
    pub pool: sqlx::PgPool,
    /// Its coordinator (workers are started by the workload).
    pub hive: crate::stack::Hive,
}

impl Variant {
    /// A fresh database `bench_<workload>_<prefetch>` and a coordinator on it.
    ///
    /// # Errors
    /// When a part fails to start.
    pub async fn start(
        db: &crate::stack::Database,
        binaries: &crate::stack::Binaries,
        workload: &str,
        prefetch: u32,
    ) -> anyhow::Result<Self> {
        let name = if prefetch == 0 { "hive" } else { "hive-batched" };
        let (url, pool) = db.fresh(&format!("bench_{workload}_{prefetch}")).await?;
        let dir = db.dir.join(format!("{workload}-{prefetch}"));
        std::fs::create_dir_all(&dir)?;
        let hive = crate::stack::Hive::start(binaries, &url, &dir, &[]).await?;
        Ok(Self { name, pool, hive })
    }
}
