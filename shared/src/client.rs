//! How every Hive client reaches a coordinator: its URL (`https://` means
//! TLS, checked against `--tls-ca` or the system's roots, with an optional
//! client certificate), and the bearer token each call carries
//! (`authorization: Bearer …`, from `--token-file` or `HIVE_TOKEN`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};

use crate::config::Secret;

/// The environment variable a token may come from when no file is given.
pub const TOKEN_ENV: &str = "HIVE_TOKEN";

/// A channel whose every call carries the client's token.
pub type AuthChannel = InterceptedService<Channel, Bearer>;

/// Files of the client's TLS settings.
#[derive(Debug, Clone, Default)]
pub struct ClientTls {
    /// PEM bundle of the CA(s) the coordinator's certificate must chain to;
    /// without it, the system's roots.
    pub ca: Option<PathBuf>,
    /// PEM client certificate (chain), for coordinators that require one.
    pub cert: Option<PathBuf>,
    /// PEM private key of `cert`.
    pub key: Option<PathBuf>,
    /// Name the coordinator's certificate must carry, when it is not the
    /// URL's host (a probe dialling 127.0.0.1, say).
    pub server_name: Option<String>,
}

/// Where and how to reach a coordinator.
#[derive(Debug, Clone, Default)]
pub struct Connect {
    /// `http://HOST:PORT` or `https://HOST:PORT`.
    pub url: String,
    /// Sent as `authorization: Bearer …` on every call.
    pub token: Option<Secret<String>>,
    /// TLS settings, used when `url` is `https://`.
    pub tls: ClientTls,
}

/// Why a client could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    /// The URL does not parse.
    #[error("bad coordinator URL `{url}`: {reason}")]
    Url {
        /// As given.
        url: String,
        /// The parser's complaint.
        reason: String,
    },
    /// A token or certificate file cannot be read.
    #[error("cannot read {what} {path}: {source}")]
    Read {
        /// Which file (e.g. "token file").
        what: &'static str,
        /// Its path.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The token cannot travel in a header.
    #[error("the token ({from}) is empty or has characters a header cannot carry")]
    Token {
        /// Where it came from.
        from: String,
    },
    /// TLS settings that do not fit together.
    #[error("TLS: {0}")]
    Tls(String),
    /// Dialling failed.
    #[error("cannot reach the coordinator at {url}: {source}")]
    Unreachable {
        /// As given.
        url: String,
        /// The transport's error.
        source: tonic::transport::Error,
    },
}

/// Reads the token from `file`, else from `HIVE_TOKEN`; `None` when neither is set.
///
/// # Errors
/// An unreadable file.
pub fn read_token(file: Option<&Path>) -> Result<Option<Secret<String>>, ConnectError> {
    if let Some(path) = file {
        let text = std::fs::read_to_string(path).map_err(|source| ConnectError::Read {
            what: "token file",
            path: path.to_owned(),
            source,
        })?;
        return Ok(Some(Secret::new(text.trim().to_owned())));
    }
    Ok(std::env::var(TOKEN_ENV)
        .ok()
        .map(|token| Secret::new(token.trim().to_owned()))
        .filter(|t| !t.expose().is_empty()))
}

impl Connect {
    /// A plaintext connection to `url` without a token (tests, local tools).
    pub fn plain(url: impl Into<String>) -> Self {
        Self { url: url.into(), ..Self::default() }
    }

    /// The same coordinator with `token`.
    #[must_use]
    pub fn with_token(mut self, token: impl Into<String>) -> Self {
        self.token = Some(Secret::new(token.into()));
        self
    }

    /// The endpoint to dial, with TLS set up for `https://` URLs.
    ///
    /// # Errors
    /// A malformed URL, unreadable certificate files, a key without a certificate.
    pub fn endpoint(&self) -> Result<Endpoint, ConnectError> {
        let url_error = |reason: String| ConnectError::Url { url: self.url.clone(), reason };
        let endpoint = Endpoint::from_shared(self.url.clone())
            .map_err(|err| url_error(err.to_string()))?
            .connect_timeout(Duration::from_secs(5));
        if !self.url.starts_with("https://") {
            if self.tls.ca.is_some() || self.tls.cert.is_some() {
                return Err(ConnectError::Tls(format!(
                    "TLS files were given but the coordinator URL `{}` is not https://",
                    self.url
                )));
            }
            return Ok(endpoint);
        }
        endpoint.tls_config(self.tls_config()?).map_err(|err| ConnectError::Tls(err.to_string()))
    }

    fn tls_config(&self) -> Result<ClientTlsConfig, ConnectError> {
        let read = |what: &'static str, path: &Path| {
            std::fs::read(path).map_err(|source| ConnectError::Read { what, path: path.to_owned(), source })
        };
        let mut config = ClientTlsConfig::new();
        if let Some(name) = &self.tls.server_name {
            config = config.domain_name(name);
        }
        config = match &self.tls.ca {
            Some(ca) => config.ca_certificate(Certificate::from_pem(read("TLS CA file", ca)?)),
            None => config.with_native_roots(),
        };
        match (&self.tls.cert, &self.tls.key) {
            (Some(cert), Some(key)) => {
                Ok(config.identity(Identity::from_pem(read("TLS certificate", cert)?, read("TLS key", key)?)))
            }
            (None, None) => Ok(config),
            _ => Err(ConnectError::Tls("a client certificate needs its key, and a key its certificate".into())),
        }
    }

    /// The interceptor that adds this client's token to each call.
    ///
    /// # Errors
    /// A token a header cannot carry.
    pub fn bearer(&self) -> Result<Bearer, ConnectError> {
        let Some(token) = &self.token else { return Ok(Bearer(None)) };
        let mut header = MetadataValue::try_from(format!("Bearer {}", token.expose()))
            .ok()
            .filter(|_| !token.expose().is_empty())
            .ok_or_else(|| ConnectError::Token { from: "the given token".into() })?;
        // Kept out of Debug output and out of HTTP/2's header compression table.
        header.set_sensitive(true);
        Ok(Bearer(Some(header)))
    }

    /// A channel that connects on first use and carries the token.
    ///
    /// # Errors
    /// See [`Connect::endpoint`] and [`Connect::bearer`].
    pub fn lazy(&self, configure: impl FnOnce(Endpoint) -> Endpoint) -> Result<AuthChannel, ConnectError> {
        let bearer = self.bearer()?;
        Ok(InterceptedService::new(configure(self.endpoint()?).connect_lazy(), bearer))
    }

    /// A channel connected now.
    ///
    /// # Errors
    /// See [`Connect::lazy`]; a coordinator that cannot be reached.
    pub async fn connect(&self) -> Result<AuthChannel, ConnectError> {
        let bearer = self.bearer()?;
        let channel = self
            .endpoint()?
            .connect()
            .await
            .map_err(|source| ConnectError::Unreachable { url: self.url.clone(), source })?;
        Ok(InterceptedService::new(channel, bearer))
    }
}

/// Adds `authorization: Bearer TOKEN` to each call (nothing without a token).
#[derive(Debug, Clone)]
pub struct Bearer(Option<MetadataValue<Ascii>>);

impl Interceptor for Bearer {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.0 {
            request.metadata_mut().insert("authorization", header.clone());
        }
        Ok(request)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_with_a_newline_is_refused_naming_no_secret() {
        let err = Connect::plain("http://127.0.0.1:1").with_token("hive_a_x\nEvil: 1").bearer().unwrap_err();
        assert!(!err.to_string().contains("Evil"), "{err}");
    }

    #[test]
    fn tls_files_on_a_plaintext_url_are_refused() {
        let mut connect = Connect::plain("http://127.0.0.1:1");
        connect.tls.ca = Some("ca.pem".into());
        assert!(connect.endpoint().unwrap_err().to_string().contains("not https://"));
    }

    #[test]
    fn a_missing_ca_file_is_named() {
        let mut connect = Connect::plain("https://127.0.0.1:1");
        connect.tls.ca = Some("/nonexistent/ca.pem".into());
        assert!(connect.endpoint().unwrap_err().to_string().contains("/nonexistent/ca.pem"));
    }
}
