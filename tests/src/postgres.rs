//! The test PostgreSQL server and a fresh database per test.

use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::Stdio;

use hivectl::local_pg::{Durability, LocalPostgres};
use sqlx::postgres::PgPoolOptions;
use sqlx::{Connection, PgConnection, PgPool};
use tokio::sync::OnceCell;

/// Where test databases are created.
#[derive(Debug)]
struct Server {
    /// URL of a database to connect to for `create database`.
    admin_url: String,
}

static SERVER: OnceCell<Server> = OnceCell::const_new();

/// A database for one test.
#[derive(Debug, Clone)]
pub struct TestDb {
    /// Its URL.
    pub url: String,
    /// A pool on it, for assertions.
    pub pool: PgPool,
}

/// Creates a fresh database with the coordinator's migrations applied.
///
/// # Panics
/// When no server can be started or reached.
pub async fn fresh_database() -> TestDb {
    let db = empty_database().await;
    hive_coordinator::MIGRATOR.run(&db.pool).await.expect("apply migrations");
    db
}

/// Creates a fresh database with no schema (for tests of migrations).
///
/// # Panics
/// When no server can be started or reached.
pub async fn empty_database() -> TestDb {
    let server = SERVER.get_or_init(start_server).await;
    let name = format!("hive_test_{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&server.admin_url).await.expect("connect to the test server");
    sqlx::raw_sql(sqlx::AssertSqlSafe(format!("create database {name}")))
        .execute(&mut admin)
        .await
        .expect("create a test database");
    admin.close().await.expect("close the admin connection");
    let url = with_database(&server.admin_url, &name);
    let pool = PgPoolOptions::new().max_connections(8).connect(&url).await.expect("connect to the test database");
    TestDb { url, pool }
}

async fn start_server() -> Server {
    if let Ok(url) = std::env::var("DATABASE_URL") {
        return Server { admin_url: url };
    }
    let root = tempfile::Builder::new().prefix("hive-test-pg-").tempdir().expect("make a temp folder").keep();
    let server = LocalPostgres::start(&root, Durability::Fast).await.expect("start a throwaway PostgreSQL");
    let admin_url = server.url();
    stop_with_this_process(server.pid, root);
    server.detach();
    Server { admin_url }
}

/// Statics are never dropped, so a small watchdog stops the server and
/// removes its folder once this test process has exited.
// The watchdog outlives this process by design, so it is never waited for.
#[allow(clippy::zombie_processes)]
fn stop_with_this_process(postgres_pid: i32, root: PathBuf) {
    let script = format!(
        "while kill -0 {me} 2>/dev/null; do sleep 0.2; done; kill -INT {postgres_pid} 2>/dev/null; \
         for _ in $(seq 50); do kill -0 {postgres_pid} 2>/dev/null || break; sleep 0.1; done; \
         kill -KILL {postgres_pid} 2>/dev/null; rm -rf '{root}'",
        me = std::process::id(),
        root = root.display(),
    );
    std::process::Command::new("sh")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .expect("start the PostgreSQL watchdog");
}

/// `url` with its database name replaced by `database`.
pub fn with_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').map_or((url, None), |(base, query)| (base, Some(query)));
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let path_start = base[authority_start..].find('/').map_or(base.len(), |index| authority_start + index);
    let mut out = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        out.push('?');
        out.push_str(query);
    }
    out
}

/// Counts rows of a test-only query returning one bigint.
///
/// # Panics
/// When the query fails.
pub async fn count(pool: &PgPool, sql: &'static str) -> i64 {
    sqlx::query_scalar::<_, i64>(sql).fetch_one(pool).await.expect("count query")
}

/// Waits until every task of the database is terminal, or panics after `timeout` with the counts.
///
/// # Panics
/// When tasks are still unfinished at the deadline.
pub async fn wait_all_finished(pool: &PgPool, timeout: std::time::Duration) {
    let deadline = std::time::Instant::now() + timeout;
    loop {
        let unfinished: i64 = sqlx::query_scalar(
            "select count(*) from task_states where status not in ('succeeded', 'dead', 'cancelled')",
        )
        .fetch_one(pool)
        .await
        .unwrap_or(i64::MAX);
        if unfinished == 0 {
            return;
        }
        if std::time::Instant::now() > deadline {
            let counts: Vec<(String, i64)> =
                sqlx::query_as("select status::text, count(*) from task_states group by 1")
                    .fetch_all(pool)
                    .await
                    .unwrap_or_default();
            panic!("tasks unfinished after {timeout:?}: {counts:?}");
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn database_names_are_swapped_in_urls() {
        assert_eq!(with_database("postgres://u@h:1/postgres", "x"), "postgres://u@h:1/x");
        assert_eq!(with_database("postgres://u@h:1", "x"), "postgres://u@h:1/x");
        assert_eq!(
            with_database("postgres://u@localhost/db?host=/tmp&port=5", "x"),
            "postgres://u@localhost/x?host=/tmp&port=5"
        );
    }
}
