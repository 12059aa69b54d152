//! One module per hivectl subcommand.

pub mod audit;
pub mod bulk;
pub mod lock;
pub mod logs;
pub mod status;
pub mod submit;
pub mod swarms;
pub mod tasks;
pub mod up;
pub mod workers;

use crate::client::{self, Admin};

/// What every subcommand needs: where the coordinator is and how to print.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Coordinator URL.
    pub url: String,
    /// Print JSON instead of tables.
    pub json: bool,
}

impl Ctx {
    /// An admin client for the coordinator.
    ///
    /// # Errors
    /// A malformed URL.
    pub fn admin(&self) -> anyhow::Result<Admin> {
        client::admin(&self.url)
    }

    /// Describes a refused call.
    pub fn refused(&self, what: &str, status: &tonic::Status) -> anyhow::Error {
        client::refused(what, &self.url, status)
    }
}
