//! Auth for a bench run: off by default (as the peers run), on with
//! `HIVE_BENCH_AUTH=1`, so one build measures what checking tokens costs.
//! With it on, each coordinator gets an admin token file, each database a
//! worker token, the workers `HIVE_TOKEN`, and every client its token.

use std::path::PathBuf;
use std::sync::OnceLock;

use hive_shared::client::Connect;
use hive_shared::tokens::{self, Role};
use sqlx::PgPool;

/// The tokens of a run with auth on.
#[derive(Debug)]
pub struct BenchTokens {
    /// Admin token (the coordinators' `auth.admin_token_file`).
    pub admin: String,
    /// Worker token, stored in each fresh database.
    pub worker: String,
    /// The file holding `admin`.
    pub admin_file: PathBuf,
}

/// The run's tokens, or `None` when `HIVE_BENCH_AUTH` is not `1`.
///
/// # Panics
/// When the admin token file cannot be written.
pub fn tokens() -> Option<&'static BenchTokens> {
    static TOKENS: OnceLock<Option<BenchTokens>> = OnceLock::new();
    TOKENS
        .get_or_init(|| {
            if std::env::var("HIVE_BENCH_AUTH").as_deref() != Ok("1") {
                return None;
            }
            let admin = tokens::generate(Role::Admin);
            let admin_file = std::env::temp_dir().join(format!("hive-bench-admin-{}.token", std::process::id()));
            std::fs::write(&admin_file, &admin).expect("write the bench admin token");
            Some(BenchTokens { admin, worker: tokens::generate(Role::Worker), admin_file })
        })
        .as_ref()
}

/// Stores the worker token in a freshly migrated database, when auth is on.
///
/// # Errors
/// Database failures.
pub async fn seed(pool: &PgPool) -> anyhow::Result<()> {
    let Some(tokens) = tokens() else { return Ok(()) };
    let hash = tokens::hash(&tokens.worker);
    let token = hive_coordinator::db::tokens::NewToken {
        name: "bench-workers",
        role: Role::Worker.as_str(),
        hash: &hash,
        created_by: "bench",
        expires_at: None,
    };
    hive_coordinator::db::tokens::insert(pool, &token).await?;
    Ok(())
}

/// How an operator reaches the coordinator at `url` (over TLS when the run has it).
pub fn admin(url: &str) -> Connect {
    with(url, tokens().map(|tokens| tokens.admin.as_str()))
}

/// How a worker reaches the coordinator at `url`.
pub fn worker(url: &str) -> Connect {
    with(url, tokens().map(|tokens| tokens.worker.as_str()))
}

fn with(url: &str, token: Option<&str>) -> Connect {
    let connect = crate::tls::connect(url);
    match token {
        Some(token) => connect.with_token(token),
        None => connect,
    }
}
