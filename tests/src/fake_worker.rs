//! A worker driven by hand over real gRPC, for tests that need to control
//! exactly what a worker says: register, claim, beat (or not), report (or not).

use std::time::Duration;

use hive_shared::client::AuthChannel;
use hive_shared::convert::duration;
use hive_shared::ids::WorkerId;
use hive_shared::pb;
use hive_shared::pb::worker_service_client::WorkerServiceClient;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_stream::wrappers::ReceiverStream;

use crate::coordinator::TestCoordinator;

/// A registered worker whose every call the test makes.
#[derive(Debug)]
pub struct FakeWorker {
    /// Its client.
    pub client: WorkerServiceClient<AuthChannel>,
    /// Its id.
    pub id: String,
}

/// A heartbeat stream that keeps beating the same list until dropped.
#[derive(Debug)]
pub struct Beating {
    /// The coordinator's replies.
    pub replies: tonic::Streaming<pb::HeartbeatResponse>,
    beater: JoinHandle<()>,
}

impl Drop for Beating {
    fn drop(&mut self) {
        self.beater.abort();
    }
}

impl FakeWorker {
    /// Registers a worker offering `agents` with `slots`.
    ///
    /// # Panics
    /// When the coordinator refuses.
    pub async fn register(coordinator: &TestCoordinator, name: &str, agents: &[&str], slots: u32) -> Self {
        let mut client = coordinator.worker_client().await;
        let id = WorkerId::new().to_string();
        let request = pb::RegisterRequest {
            worker_id: id.clone(),
            name: name.into(),
            agents: agents.iter().map(|agent| (*agent).to_owned()).collect(),
            slots,
            ..Default::default()
        };
        client.register(request).await.expect("register the fake worker");
        Self { client, id }
    }

    /// Claims up to `max` tasks, waiting up to `wait`.
    ///
    /// # Panics
    /// When the call fails.
    pub async fn claim(&mut self, max: u32, wait: Duration) -> Vec<pb::Assignment> {
        let request =
            pb::ClaimRequest { worker_id: self.id.clone(), max_tasks: max, wait: Some(duration(wait)), agents: vec![] };
        self.client.claim(request).await.expect("claim").into_inner().assignments
    }

    /// Opens a heartbeat stream listing `attempts` every `every`.
    ///
    /// # Panics
    /// When the stream cannot be opened.
    pub async fn keep_beating(&mut self, attempts: Vec<String>, every: Duration) -> Beating {
        let beat = pb::HeartbeatRequest { worker_id: self.id.clone(), attempt_ids: attempts, ..Default::default() };
        let (beats, outbound) = mpsc::channel(4);
        let replies =
            self.client.heartbeat(ReceiverStream::new(outbound)).await.expect("open a heartbeat stream").into_inner();
        let beater = tokio::spawn(async move {
            while beats.send(beat.clone()).await.is_ok() {
                tokio::time::sleep(every).await;
            }
        });
        Beating { replies, beater }
    }
}
