//! What the loops and attempts of one worker process share.

use std::sync::Arc;

use hive_shared::ids::WorkerId;
use tokio::sync::{Semaphore, mpsc};

use crate::config::Config;
use crate::connection::Client;
use crate::held::Held;
use crate::outcome::Report;
use crate::shipper::Shipment;

/// Shared state of one worker.
#[derive(Debug)]
pub struct Context {
    /// Effective config.
    pub config: Arc<Config>,
    /// Coordinator client.
    pub client: Client,
    /// This process's id.
    pub worker_id: WorkerId,
    /// Registration, resent after a reconnect that lost it.
    pub registration: hive_shared::pb::RegisterRequest,
    /// Attempts held.
    pub held: Held,
    /// Free agent slots.
    pub slots: Arc<Semaphore>,
    /// Output queue.
    pub logs: mpsc::Sender<Shipment>,
    /// Outcome queue.
    pub reports: mpsc::Sender<Report>,
}

impl Context {
    /// Free slots right now.
    pub fn free_slots(&self) -> u32 {
        u32::try_from(self.slots.available_permits()).unwrap_or(u32::MAX)
    }
}
