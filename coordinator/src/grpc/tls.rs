//! TLS of the gRPC server (`tls.cert`, `tls.key`, optionally `tls.client_ca`):
//! the rustls configuration built from PEM files, kept fresh while they change
//! on disk (rotation without a restart), and the accept loop that hands each
//! connection to tonic once its handshake is done. Each handshake runs in its
//! own task with a deadline, so a slow or plaintext client holds up nobody.

use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use hive_shared::tracked;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls::pki_types::pem::PemObject;
use tokio_rustls::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use tokio_rustls::rustls::server::WebPkiClientVerifier;
use tokio_rustls::rustls::{RootCertStore, ServerConfig, crypto};
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{debug, info, warn};

use crate::config::TlsConfig;
use crate::maintenance;

/// Longest a client may take over its handshake.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the files are looked at for changes.
const RELOAD_CHECK_EVERY: Duration = Duration::from_secs(1);
/// Pause after a failed `accept` (out of file descriptors, say), so the loop does not spin.
const ACCEPT_ERROR_PAUSE: Duration = Duration::from_millis(100);
/// Connections through their handshake, waiting for the server to take them.
const HANDSHAKEN_QUEUE: usize = 64;

/// A TLS file that cannot be used, named by its config key and path.
#[derive(Debug, thiserror::Error)]
#[error("{key} {}: {reason}", path.display())]
pub(crate) struct TlsFileError {
    /// The config key naming the file (`tls.cert`).
    key: &'static str,
    /// The file.
    path: PathBuf,
    /// What is wrong with it.
    reason: String,
}

/// The server's TLS files.
#[derive(Debug, Clone)]
pub(crate) struct TlsFiles {
    cert: PathBuf,
    key: PathBuf,
    client_ca: Option<PathBuf>,
}

/// What the files looked like when last read: modification time and length of each.
type Stamp = Vec<Option<(SystemTime, u64)>>;

impl TlsFiles {
    /// The files `config` names; `None` when TLS is off.
    pub(crate) fn from_config(config: &TlsConfig) -> Option<Self> {
        Some(Self { cert: config.cert.clone()?, key: config.key.clone()?, client_ca: config.client_ca.clone() })
    }

    fn each(&self) -> impl Iterator<Item = (&'static str, &Path)> {
        [("tls.cert", self.cert.as_path()), ("tls.key", self.key.as_path())]
            .into_iter()
            .chain(self.client_ca.as_deref().map(|path| ("tls.client_ca", path)))
    }

    async fn stamp(&self) -> Stamp {
        let mut stamp = Vec::with_capacity(3);
        for (_, path) in self.each() {
            let metadata = tokio::fs::metadata(path).await.ok();
            stamp.push(metadata.and_then(|m| Some((m.modified().ok()?, m.len()))));
        }
        stamp
    }

    async fn read(&self, key: &'static str, path: &Path) -> Result<Vec<u8>, TlsFileError> {
        tokio::fs::read(path).await.map_err(|err| self.error(key, path, format!("cannot be read: {err}")))
    }

    fn error(&self, key: &'static str, path: &Path, reason: impl Into<String>) -> TlsFileError {
        TlsFileError { key, path: path.to_owned(), reason: reason.into() }
    }

    /// Reads the files and builds the server's configuration from them.
    ///
    /// # Errors
    /// A file that cannot be read or parsed, or a key that does not fit the certificate.
    pub(crate) async fn load(&self) -> Result<Arc<ServerConfig>, TlsFileError> {
        let cert = self.read("tls.cert", &self.cert).await?;
        let key = self.read("tls.key", &self.key).await?;
        let client_ca = match &self.client_ca {
            Some(path) => Some(self.read("tls.client_ca", path).await?),
            None => None,
        };
        self.server_config(&cert, &key, client_ca.as_deref()).map(Arc::new)
    }

    fn server_config(&self, cert: &[u8], key: &[u8], client_ca: Option<&[u8]>) -> Result<ServerConfig, TlsFileError> {
        let provider = ring_provider();
        let chain = self.certificates("tls.cert", &self.cert, cert)?;
        let key = PrivateKeyDer::from_pem_slice(key)
            .map_err(|err| self.error("tls.key", &self.key, format!("holds no usable PEM private key: {err}")))?;
        let builder = ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .map_err(|err| self.error("tls.cert", &self.cert, err.to_string()))?;
        let builder = match (client_ca, &self.client_ca) {
            (Some(pem), Some(path)) => {
                let mut roots = RootCertStore::empty();
                for certificate in self.certificates("tls.client_ca", path, pem)? {
                    roots.add(certificate).map_err(|err| self.error("tls.client_ca", path, err.to_string()))?;
                }
                let verifier = WebPkiClientVerifier::builder_with_provider(Arc::new(roots), provider)
                    .build()
                    .map_err(|err| self.error("tls.client_ca", path, err.to_string()))?;
                builder.with_client_cert_verifier(verifier)
            }
            _ => builder.with_no_client_auth(),
        };
        let mut config = builder.with_single_cert(chain, key).map_err(|err| {
            let reason = format!("does not fit the certificate tls.cert {}: {err}", self.cert.display());
            self.error("tls.key", &self.key, reason)
        })?;
        config.alpn_protocols = vec![b"h2".to_vec()];
        Ok(config)
    }

    fn certificates(
        &self,
        key: &'static str,
        path: &Path,
        pem: &[u8],
    ) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
        let certificates = CertificateDer::pem_slice_iter(pem)
            .collect::<Result<Vec<_>, _>>()
            .map_err(|err| self.error(key, path, format!("is not valid PEM: {err}")))?;
        if certificates.is_empty() {
            return Err(self.error(key, path, "holds no PEM certificate"));
        }
        Ok(certificates)
    }
}

/// The *ring* crypto provider, the one tonic's clients use (`tls-ring`).
/// rustls deprecates it for lacking post-quantum key exchange; the
/// alternative, aws-lc-rs, needs a C and assembler toolchain to build.
#[allow(deprecated)]
pub(crate) fn ring_provider() -> Arc<crypto::CryptoProvider> {
    Arc::new(crypto::ring::default_provider())
}

/// The server's TLS configuration, rebuilt when its files change.
#[derive(Debug)]
pub(crate) struct ServerTls {
    current: watch::Receiver<Arc<ServerConfig>>,
}

impl ServerTls {
    /// Loads the files, and keeps reloading them on `tracker` until `cancel`:
    /// a change is picked up within about a second; a changed file that cannot
    /// be used is logged, naming it, and the previous configuration stays.
    ///
    /// # Errors
    /// The files cannot be used now.
    pub(crate) async fn start(
        files: TlsFiles,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> Result<Self, TlsFileError> {
        let stamp = files.stamp().await;
        let config = files.load().await?;
        let (sender, current) = watch::channel(config);
        tracked::spawn(tracker, "TLS file reload", keep_fresh(files, stamp, sender, cancel));
        Ok(Self { current })
    }

    /// Accepts connections on `listener` until `cancel`, each through its
    /// handshake in a task of its own on `tracker`, and yields those that
    /// complete it.
    pub(crate) fn incoming(
        &self,
        listener: TcpListener,
        tracker: &TaskTracker,
        cancel: CancellationToken,
    ) -> ReceiverStream<io::Result<TlsStream<TcpStream>>> {
        let (sender, receiver) = mpsc::channel(HANDSHAKEN_QUEUE);
        let accept = Accept { listener, current: self.current.clone(), sender, tracker: tracker.clone(), cancel };
        tracked::spawn(tracker, "TLS accept loop", accept.run());
        ReceiverStream::new(receiver)
    }
}

async fn keep_fresh(
    files: TlsFiles,
    stamp: Stamp,
    sender: watch::Sender<Arc<ServerConfig>>,
    cancel: CancellationToken,
) {
    let last_seen = Mutex::new(stamp);
    let (files, sender, last_seen) = (&files, &sender, &last_seen);
    maintenance::every(RELOAD_CHECK_EVERY, &cancel, move || async move {
        let before = std::mem::take(&mut *last_seen.lock().unwrap_or_else(PoisonError::into_inner));
        let now = reload_if_changed(files, before, sender).await;
        *last_seen.lock().unwrap_or_else(PoisonError::into_inner) = now;
    })
    .await;
}

/// Rebuilds the configuration if any file changed since `stamp`; returns the files' stamp now.
async fn reload_if_changed(files: &TlsFiles, stamp: Stamp, sender: &watch::Sender<Arc<ServerConfig>>) -> Stamp {
    // Stamped before reading: a file that changes during the read is read again next time.
    let now = files.stamp().await;
    if now == stamp {
        return stamp;
    }
    match files.load().await {
        Ok(config) => {
            sender.send_replace(config);
            info!("TLS files changed: new connections get the new certificate");
        }
        Err(err) => warn!(error = %err, "TLS files changed but cannot be used; the previous certificate stays"),
    }
    now
}

/// The accept loop and what it needs.
struct Accept {
    listener: TcpListener,
    current: watch::Receiver<Arc<ServerConfig>>,
    sender: mpsc::Sender<io::Result<TlsStream<TcpStream>>>,
    tracker: TaskTracker,
    cancel: CancellationToken,
}

impl Accept {
    async fn run(self) {
        loop {
            let accepted = tokio::select! {
                accepted = self.listener.accept() => accepted,
                () = self.cancel.cancelled() => return,
                () = self.sender.closed() => return,
            };
            match accepted {
                Ok((stream, peer)) => self.start_handshake(stream, peer),
                Err(err) => self.pause_after(&err).await,
            }
        }
    }

    fn start_handshake(&self, stream: TcpStream, peer: SocketAddr) {
        if let Err(err) = stream.set_nodelay(true) {
            debug!(%peer, error = %err, "cannot set TCP_NODELAY");
        }
        let acceptor = TlsAcceptor::from(Arc::clone(&self.current.borrow()));
        let (sender, cancel) = (self.sender.clone(), self.cancel.clone());
        tracked::spawn(&self.tracker, "TLS handshake", async move {
            let handshake = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream));
            let finished = tokio::select! {
                finished = handshake => finished,
                () = cancel.cancelled() => return,
            };
            match finished {
                // The server may have stopped taking connections; then this one just closes.
                Ok(Ok(tls)) => drop(sender.send(Ok(tls)).await),
                Ok(Err(err)) => debug!(%peer, error = %err, "TLS handshake failed"),
                Err(_) => debug!(%peer, timeout = ?HANDSHAKE_TIMEOUT, "TLS handshake took too long"),
            }
        });
    }

    async fn pause_after(&self, err: &io::Error) {
        warn!(error = %err, "cannot accept a connection");
        tokio::select! {
            () = tokio::time::sleep(ACCEPT_ERROR_PAUSE) => {}
            () = self.cancel.cancelled() => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn certified(names: &[&str]) -> (String, String) {
        let key = rcgen::KeyPair::generate().unwrap();
        let params = rcgen::CertificateParams::new(names.iter().map(|n| (*n).to_owned()).collect::<Vec<_>>()).unwrap();
        (params.self_signed(&key).unwrap().pem(), key.serialize_pem())
    }

    fn files(dir: &Path, with_ca: bool) -> TlsFiles {
        TlsFiles {
            cert: dir.join("cert.pem"),
            key: dir.join("key.pem"),
            client_ca: with_ca.then(|| dir.join("ca.pem")),
        }
    }

    #[tokio::test]
    async fn matching_files_load_with_h2_with_and_without_a_client_ca() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = certified(&["localhost"]);
        std::fs::write(dir.path().join("cert.pem"), &cert).unwrap();
        std::fs::write(dir.path().join("key.pem"), &key).unwrap();
        std::fs::write(dir.path().join("ca.pem"), &cert).unwrap();
        let config = files(dir.path(), false).load().await.unwrap();
        assert_eq!(config.alpn_protocols, vec![b"h2".to_vec()]);
        files(dir.path(), true).load().await.unwrap();
    }

    #[tokio::test]
    async fn each_bad_file_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let (cert, key) = certified(&["localhost"]);
        let (_, other_key) = certified(&["localhost"]);
        let cases: [(&str, &str, &str, &str); 4] = [
            ("not pem", &key, "tls.cert", "holds no PEM certificate"),
            (&cert, "not pem", "tls.key", "no usable PEM private key"),
            (&cert, &other_key, "tls.key", "does not fit the certificate"),
            (&cert, &key, "tls.client_ca", "cannot be read"),
        ];
        for (cert_text, key_text, key_name, reason) in cases {
            std::fs::write(dir.path().join("cert.pem"), cert_text).unwrap();
            std::fs::write(dir.path().join("key.pem"), key_text).unwrap();
            let with_ca = key_name == "tls.client_ca";
            let err = files(dir.path(), with_ca).load().await.unwrap_err().to_string();
            assert!(err.starts_with(key_name) && err.contains(reason), "{err}");
            assert!(err.contains(&dir.path().display().to_string()), "names the file: {err}");
        }
    }

    #[tokio::test]
    async fn a_changed_file_is_reloaded_and_a_broken_one_keeps_the_old_config() {
        let dir = tempfile::tempdir().unwrap();
        let files = files(dir.path(), false);
        let write = |(cert, key): (String, String)| {
            std::fs::write(&files.cert, cert).unwrap();
            std::fs::write(&files.key, key).unwrap();
        };
        write(certified(&["one"]));
        let stamp = files.stamp().await;
        let (sender, receiver) = watch::channel(files.load().await.unwrap());
        let first = Arc::clone(&receiver.borrow());
        let stamp = reload_if_changed(&files, stamp, &sender).await;
        assert!(Arc::ptr_eq(&first, &receiver.borrow()), "unchanged files are not read again");

        write(certified(&["two", "a-longer-name-so-the-length-differs"]));
        let stamp = reload_if_changed(&files, stamp, &sender).await;
        let second = Arc::clone(&receiver.borrow());
        assert!(!Arc::ptr_eq(&first, &second), "a new certificate is served");

        std::fs::write(&files.key, "garbage").unwrap();
        reload_if_changed(&files, stamp, &sender).await;
        assert!(Arc::ptr_eq(&second, &receiver.borrow()), "a broken key keeps the previous config");
    }
}
