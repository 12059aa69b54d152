//! A coordinator running in-process on 127.0.0.1:0, and real gRPC clients for it.

use std::net::SocketAddr;
use std::time::Duration;

use hive_coordinator::config::Config;
use hive_shared::client::{AuthChannel, ClientTls, Connect};
use hive_shared::config::Secret;
use hive_shared::pb::admin_service_client::AdminServiceClient;
use hive_shared::pb::worker_service_client::WorkerServiceClient;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic::transport::Channel;

use crate::postgres::TestDb;
use crate::wait::eventually;

/// A running in-process coordinator.
#[derive(Debug)]
pub struct TestCoordinator {
    /// `http://127.0.0.1:PORT`, or `https://` when it speaks TLS.
    pub url: String,
    /// Bound address.
    pub addr: SocketAddr,
    /// Bound address of the HTTP listener (`/metrics`), when the config asks for one.
    pub http_addr: Option<SocketAddr>,
    /// The TLS files clients use (none for plaintext).
    pub tls: ClientTls,
    shutdown: CancellationToken,
    handle: JoinHandle<anyhow::Result<()>>,
}

/// A config for tests: the given database, auth on with the suite's admin
/// token, short leases, quick reaping.
pub fn test_config(db: &TestDb) -> Config {
    let mut config = Config::default();
    config.database.url = Secret::new(db.url.clone());
    config.auth.admin_token_file = Some(crate::auth::admin_token_file().to_owned());
    config.leases.ttl = Duration::from_secs(3);
    config.leases.heartbeat_interval = Duration::from_millis(500);
    config.leases.reap_interval = Duration::from_millis(100);
    config.shutdown_grace = Duration::from_secs(5);
    config
}

impl TestCoordinator {
    /// Starts a coordinator with `config` and waits until it serves.
    ///
    /// # Panics
    /// When it does not come up.
    pub async fn start(config: Config) -> Self {
        Self::start_at(config, "127.0.0.1:0".parse().expect("valid address")).await
    }

    /// Starts a coordinator on `addr` (to restart one on the port it had).
    ///
    /// # Panics
    /// When it cannot bind or does not come up.
    pub async fn start_at(config: Config, addr: SocketAddr) -> Self {
        Self::launch(config, addr, ClientTls::default()).await
    }

    /// Starts a coordinator whose config turns TLS on (`tls.cert`), and
    /// waits until it serves a client with the TLS files `client`.
    ///
    /// # Panics
    /// When it does not come up.
    pub async fn start_tls(config: Config, client: ClientTls) -> Self {
        Self::launch(config, "127.0.0.1:0".parse().expect("valid address"), client).await
    }

    async fn launch(config: Config, addr: SocketAddr, client: ClientTls) -> Self {
        hive_shared::telemetry::init("warn", hive_shared::telemetry::LogFormat::Text);
        let auth_on = config.auth_on();
        let database_url = config.database.url.expose().clone();
        let scheme = if config.tls.enabled() { "https" } else { "http" };
        let listener = tokio::net::TcpListener::bind(addr).await.expect("bind the coordinator address");
        let addr = listener.local_addr().expect("local address");
        let http = match config.http.listen {
            Some(address) => Some(tokio::net::TcpListener::bind(address).await.expect("bind the HTTP address")),
            None => None,
        };
        let http_addr = http.as_ref().map(|http| http.local_addr().expect("local address"));
        let shutdown = CancellationToken::new();
        let listeners = hive_coordinator::Listeners { grpc: listener, http };
        let handle = tokio::spawn(hive_coordinator::run(config, listeners, shutdown.clone()));
        let connect = Connect { url: format!("{scheme}://{addr}"), token: None, tls: client.clone() };
        let coordinator = Self { url: connect.url.clone(), addr, http_addr, tls: client, shutdown, handle };
        eventually("the coordinator to serve", Duration::from_secs(20), || {
            let endpoint = connect.endpoint().expect("valid url and TLS files");
            async move {
                let Ok(channel) = endpoint.connect().await else { return false };
                let mut health = tonic_health_client(channel);
                health
                    .check(tonic_health::pb::HealthCheckRequest { service: "hive.v1.AdminService".into() })
                    .await
                    .is_ok_and(|response| response.get_ref().status == 1)
            }
        })
        .await;
        if auth_on {
            crate::auth::seed_worker_token(&database_url).await;
        }
        coordinator
    }

    /// How to reach it with `token` (and the TLS files it was started with).
    pub fn connect(&self, token: &str) -> Connect {
        Connect { tls: self.tls.clone(), ..Connect::plain(self.url.clone()) }.with_token(token)
    }

    /// A connected WorkerService client, with the worker's message limits.
    ///
    /// # Panics
    /// When the coordinator cannot be reached.
    pub async fn worker_client(&self) -> WorkerServiceClient<AuthChannel> {
        let limit = hive_worker::MAX_MESSAGE;
        let channel = self.connect(crate::auth::worker_token()).connect().await.expect("connect a worker client");
        WorkerServiceClient::new(channel).max_decoding_message_size(limit).max_encoding_message_size(limit)
    }

    /// A connected AdminService client with the admin token.
    ///
    /// # Panics
    /// When the coordinator cannot be reached.
    pub async fn admin_client(&self) -> AdminServiceClient<AuthChannel> {
        let channel = self.connect(crate::auth::admin_token()).connect().await.expect("connect an admin client");
        AdminServiceClient::new(channel)
    }

    /// Stops it gracefully and returns how `run` ended.
    ///
    /// # Panics
    /// When the coordinator task panicked.
    pub async fn stop(self) -> anyhow::Result<()> {
        self.shutdown.cancel();
        self.handle.await.expect("coordinator task panicked")
    }
}

fn tonic_health_client(channel: Channel) -> tonic_health::pb::health_client::HealthClient<Channel> {
    tonic_health::pb::health_client::HealthClient::new(channel)
}
