//! One POST of a delivery: HTTP/1.1 over TCP, or TLS (the system's roots)
//! for `https://`, signed the Standard Webhooks way (`webhook-id`,
//! `webhook-timestamp`, `webhook-signature: v1,<base64 HMAC-SHA256 of
//! "id.timestamp.body">`), answered within a timeout or given up. Only the
//! status line and a little of the body are read.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use hmac::{Hmac, KeyInit, Mac};
use sha2::Sha256;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_rustls::rustls::{self, ClientConfig, RootCertStore};

/// Most bytes of an answer read: its status line, headers and the start of its body.
const MAX_ANSWER: usize = 4096;

/// How a post went.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Answer {
    /// A 2xx status.
    Accepted(u16),
    /// Another status, with the start of the body.
    Refused(u16, String),
    /// No answer: what went wrong.
    Failed(String),
}

/// The `webhook-signature` header for a message.
pub(crate) fn signature(key: &[u8], id: &str, timestamp: i64, body: &str) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key");
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(body.as_bytes());
    format!("v1,{}", STANDARD.encode(mac.finalize().into_bytes()))
}

/// Posts `body` to `url` as message `id`, signed with `key`, waiting at most `timeout`.
pub(crate) async fn post(url: &http::Uri, key: &[u8], id: &str, body: &str, timeout: Duration) -> Answer {
    match tokio::time::timeout(timeout, exchange(url, key, id, body)).await {
        Ok(Ok(answer)) => answer,
        Ok(Err(err)) => Answer::Failed(err),
        Err(_) => Answer::Failed(format!("no answer within {}", humantime::format_duration(timeout))),
    }
}

async fn exchange(url: &http::Uri, key: &[u8], id: &str, body: &str) -> Result<Answer, String> {
    let host = url.host().unwrap_or_default();
    let tls = url.scheme_str() == Some("https");
    let port = url.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let tcp = TcpStream::connect((host.trim_matches(['[', ']']), port))
        .await
        .map_err(|err| format!("cannot connect to {host}:{port}: {err}"))?;
    let _ = tcp.set_nodelay(true);
    let timestamp = chrono::Utc::now().timestamp();
    let path = url.path_and_query().map_or("/", |path| path.as_str());
    let authority = url.authority().map_or(host, |authority| authority.as_str());
    let request = format!(
        "POST {path} HTTP/1.1\r\nhost: {authority}\r\nuser-agent: hive/{version}\r\n\
         content-type: application/json\r\ncontent-length: {length}\r\nwebhook-id: {id}\r\n\
         webhook-timestamp: {timestamp}\r\nwebhook-signature: {signature}\r\nconnection: close\r\n\r\n{body}",
        version = hive_shared::VERSION,
        length = body.len(),
        signature = signature(key, id, timestamp, body),
    );
    if !tls {
        return converse(tcp, &request).await;
    }
    let name = rustls::pki_types::ServerName::try_from(host.trim_matches(['[', ']']).to_owned())
        .map_err(|err| format!("{host} is not a TLS server name: {err}"))?;
    let stream = TlsConnector::from(client_config())
        .connect(name, tcp)
        .await
        .map_err(|err| format!("TLS with {host}:{port} failed: {err}"))?;
    converse(stream, &request).await
}

async fn converse(mut stream: impl AsyncRead + AsyncWrite + Unpin, request: &str) -> Result<Answer, String> {
    stream.write_all(request.as_bytes()).await.map_err(|err| format!("sending failed: {err}"))?;
    let mut answer = Vec::with_capacity(1024);
    let mut chunk = [0_u8; 1024];
    while answer.len() < MAX_ANSWER {
        match stream.read(&mut chunk).await {
            Ok(0) => break,
            Ok(n) => answer.extend_from_slice(&chunk[..n]),
            // A TLS peer that closes without close_notify, after its answer.
            Err(_) if !answer.is_empty() => break,
            Err(err) => return Err(format!("reading the answer failed: {err}")),
        }
    }
    let text = String::from_utf8_lossy(&answer);
    let status = text
        .strip_prefix("HTTP/1.")
        .and_then(|rest| rest.get(2..5))
        .and_then(|code| code.parse::<u16>().ok())
        .ok_or_else(|| format!("not an HTTP answer: {:?}", text.chars().take(80).collect::<String>()))?;
    if (200..300).contains(&status) {
        return Ok(Answer::Accepted(status));
    }
    let said = text.split_once("\r\n\r\n").map_or("", |(_, body)| body).trim();
    Ok(Answer::Refused(status, said.chars().take(300).collect()))
}

/// TLS settings for receivers: the system's root certificates.
fn client_config() -> Arc<ClientConfig> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    Arc::clone(CONFIG.get_or_init(|| {
        let mut roots = RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        let config = ClientConfig::builder_with_provider(crate::grpc::tls::ring_provider())
            .with_safe_default_protocol_versions()
            .map(|builder| builder.with_root_certificates(roots).with_no_client_auth());
        Arc::new(config.expect("ring supports TLS 1.2 and 1.3"))
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_signature_matches_the_standard_webhooks_example() {
        let key = STANDARD.decode("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signed = signature(&key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1_614_265_330, r#"{"test": 2432232314}"#);
        assert_eq!(signed, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }
}
