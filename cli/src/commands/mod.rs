//! One module per hivectl subcommand.

pub mod audit;
pub mod bulk;
pub mod certs;
pub mod lock;
pub mod logs;
pub mod pauses;
pub mod progress;
pub mod providers;
pub mod status;
pub mod submit;
pub mod swarms;
pub mod tasks;
pub mod tokens;
pub mod up;
pub mod watch;
pub mod webhooks;
pub mod workers;

use hive_shared::client::{AuthChannel, Connect};
use hive_shared::pb::worker_service_client::WorkerServiceClient;

use crate::client::{self, Admin};

/// What every subcommand needs: how to reach the coordinator and how to print.
#[derive(Debug, Clone)]
pub struct Ctx {
    /// Coordinator URL, token and TLS files.
    pub connect: Connect,
    /// Print JSON instead of tables.
    pub json: bool,
}

impl Ctx {
    /// An admin client for the coordinator.
    ///
    /// # Errors
    /// A malformed URL, unreadable TLS files, a token a header cannot carry.
    pub fn admin(&self) -> anyhow::Result<Admin> {
        client::admin(&self.connect)
    }

    /// A WorkerService client (agents' lock calls).
    ///
    /// # Errors
    /// As [`Ctx::admin`].
    pub fn worker(&self) -> anyhow::Result<WorkerServiceClient<AuthChannel>> {
        client::worker(&self.connect)
    }

    /// Describes a refused call.
    pub fn refused(&self, what: &str, status: &tonic::Status) -> anyhow::Error {
        client::refused(what, &self.connect.url, status)
    }
}
