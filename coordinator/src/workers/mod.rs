//! Worker-facing use-cases that are not about one task: registration and the
//! heartbeat session.

pub mod session;

use sqlx::PgPool;

use crate::db;
use crate::error::Error;
use crate::error::Result;
use crate::tasks::submit::name_problem;

/// Registers a worker (again, after a reconnect).
///
/// # Errors
/// [`Error::InvalidArgument`] naming bad agent names; database failures.
pub async fn register(pool: &PgPool, registration: &db::workers::Registration<'_>) -> Result<()> {
    let problems: Vec<String> = registration
        .agents
        .iter()
        .enumerate()
        .filter_map(|(index, agent)| name_problem(agent).map(|problem| format!("agents[{index}]: {problem}")))
        .chain(registration.name.is_empty().then(|| "name: must not be empty".to_owned()))
        .collect();
    if !problems.is_empty() {
        return Err(Error::InvalidArgument { problems });
    }
    db::workers::upsert(pool, registration).await?;
    Ok(())
}
