//! `hive-coordinator healthcheck`: asks the coordinator this config
//! describes, on its own port over loopback, whether it serves. Container and
//! Kubernetes probes run it in the coordinator's image, which needs no shell
//! or gRPC client for them, and it speaks TLS when the server does (which
//! Kubernetes' own `grpc` probe cannot).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use hive_shared::client::{ClientTls, Connect};
use hive_shared::pb::worker_service_server::SERVICE_NAME;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::config::Config;

/// How to reach a TLS server from its own host.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// CA bundle the server's certificate chains to; needed when TLS is on.
    pub tls_ca: Option<PathBuf>,
    /// Client certificate, when the server requires one.
    pub tls_cert: Option<PathBuf>,
    /// Key of `tls_cert`.
    pub tls_key: Option<PathBuf>,
    /// Name the server's certificate carries (it is dialled at a loopback address).
    pub server_name: String,
    /// Longest wait for the answer.
    pub timeout: Duration,
}

/// The loopback address that reaches a server listening on `listen`.
pub fn local_address(listen: SocketAddr) -> SocketAddr {
    let ip = match listen.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, listen.port())
}

/// Checks that the server answers its health service with SERVING for the
/// worker API (a coordinator shutting down answers NOT_SERVING).
///
/// # Errors
/// What failed, in words: missing TLS files, no connection, not serving.
pub async fn check(config: &Config, probe: Probe) -> Result<(), String> {
    let address = local_address(config.listen_address());
    let tls = config.tls.enabled();
    if tls && probe.tls_ca.is_none() {
        return Err("the coordinator serves TLS: give the CA its certificate chains to \
                    (--tls-ca or HIVE_TLS_CA)"
            .into());
    }
    if config.tls.client_certs_required() && probe.tls_cert.is_none() {
        return Err("the coordinator requires client certificates (tls.client_ca): give one \
                    (--tls-cert and --tls-key, or HIVE_TLS_CERT and HIVE_TLS_KEY)"
            .into());
    }
    let connect = Connect {
        url: format!("{}://{address}", if tls { "https" } else { "http" }),
        token: None,
        tls: ClientTls {
            ca: probe.tls_ca,
            cert: probe.tls_cert,
            key: probe.tls_key,
            server_name: tls.then_some(probe.server_name),
        },
    };
    let ask = async {
        let channel = connect.connect().await.map_err(|err| err.to_string())?;
        let request = HealthCheckRequest { service: SERVICE_NAME.to_owned() };
        let answer = HealthClient::new(channel).check(request).await.map_err(|status| {
            format!("the health check at {address} failed: {}: {}", status.code(), status.message())
        })?;
        match answer.into_inner().status() {
            ServingStatus::Serving => Ok(()),
            other => Err(format!("the coordinator at {address} answers {}", other.as_str_name())),
        }
    };
    tokio::time::timeout(probe.timeout, ask)
        .await
        .map_err(|_| format!("no answer from {address} within {:?}", probe.timeout))?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_dialled_on_loopback() {
        let dial = |listen: &str| local_address(listen.parse().unwrap()).to_string();
        assert_eq!(dial("0.0.0.0:50051"), "127.0.0.1:50051");
        assert_eq!(dial("[::]:7"), "[::1]:7");
        assert_eq!(dial("10.1.2.3:9"), "10.1.2.3:9");
    }
}
