//! The tokens every test uses, so the whole suite runs with auth on: one
//! admin token per test process (in a file the coordinators are given as
//! `auth.admin_token_file`) and one worker token, stored in each test
//! database once its coordinator has made the schema.

use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use hive_shared::tokens::{self, Role};

/// Name of the harness's worker token.
pub const WORKER_TOKEN_NAME: &str = "test-workers";

struct Tokens {
    admin: String,
    worker: String,
    admin_file: PathBuf,
    _dir: tempfile::TempDir,
}

fn tokens() -> &'static Tokens {
    static TOKENS: OnceLock<Tokens> = OnceLock::new();
    TOKENS.get_or_init(|| {
        let dir = tempfile::tempdir().expect("a folder for the admin token");
        let admin = tokens::generate(Role::Admin);
        let admin_file = dir.path().join("admin.token");
        std::fs::write(&admin_file, &admin).expect("write the admin token");
        Tokens { admin, worker: tokens::generate(Role::Worker), admin_file, _dir: dir }
    })
}

/// The admin token every test coordinator trusts.
pub fn admin_token() -> &'static str {
    &tokens().admin
}

/// The file holding [`admin_token`].
pub fn admin_token_file() -> &'static Path {
    &tokens().admin_file
}

/// The worker token [`seed_worker_token`] stores.
pub fn worker_token() -> &'static str {
    &tokens().worker
}

/// Stores the worker token (named [`WORKER_TOKEN_NAME`]) in the database at
/// `database_url`, whose schema the coordinator has made; idempotent.
///
/// # Panics
/// When the database cannot be reached.
pub async fn seed_worker_token(database_url: &str) {
    let pool = sqlx::PgPool::connect(database_url).await.expect("connect to seed the worker token");
    let hash = tokens::hash(worker_token());
    let token = hive_coordinator::db::tokens::NewToken {
        name: WORKER_TOKEN_NAME,
        role: Role::Worker.as_str(),
        hash: &hash,
        created_by: "test harness",
        expires_at: None,
    };
    // A second seed of the same database finds the name taken: nothing to do.
    hive_coordinator::db::tokens::insert(&pool, &token).await.expect("store the worker token");
    pool.close().await;
}
