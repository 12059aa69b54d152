//! The tower layer every RPC passes: reads `authorization: Bearer TOKEN`,
//! names the caller, checks the RPC's rule, and either refuses the call
//! (UNAUTHENTICATED or PERMISSION_DENIED, audited when the RPC changes
//! state) or passes it on with the [`Caller`] in its extensions.

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Request, Response};
use tonic::body::Body;
use tonic::transport::server::{TcpConnectInfo, TlsConnectInfo};
use tower::{Layer, Service};

use super::Caller;
use super::book::TokenBook;
use super::rules::{self, Rule};
use crate::error::Error;

/// Checks every call against the token book; with no book, auth is off.
#[derive(Debug, Clone)]
pub(crate) struct AuthLayer {
    book: Option<Arc<TokenBook>>,
    refusals: Option<Arc<dyn Refusals>>,
}

/// Where refused calls of state-changing RPCs are recorded (the audit log).
pub(crate) trait Refusals: std::fmt::Debug + Send + Sync {
    /// Records that `caller` (if known) was refused `path` for `reason`.
    fn refused(&self, path: &str, caller: Option<&Caller>, peer: Option<std::net::SocketAddr>, reason: &str);
}

impl AuthLayer {
    /// A layer checking tokens in `book` (`None`: auth off).
    pub(crate) fn new(book: Option<Arc<TokenBook>>, refusals: Option<Arc<dyn Refusals>>) -> Self {
        Self { book, refusals }
    }
}

impl<S> Layer<S> for AuthLayer {
    type Service = Auth<S>;

    fn layer(&self, inner: S) -> Self::Service {
        Auth { inner, gate: self.clone() }
    }
}

/// The service [`AuthLayer`] wraps around the routes.
#[derive(Debug, Clone)]
pub(crate) struct Auth<S> {
    inner: S,
    gate: AuthLayer,
}

type BoxFuture<T, E> = Pin<Box<dyn Future<Output = Result<T, E>> + Send>>;

impl<S> Service<Request<Body>> for Auth<S>
where
    S: Service<Request<Body>, Response = Response<Body>> + Clone + Send + 'static,
    S::Future: Send,
{
    type Response = Response<Body>;
    type Error = S::Error;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, mut request: Request<Body>) -> Self::Future {
        // The ready service serves this call; a fresh clone waits for the next.
        let clone = self.inner.clone();
        let mut inner = std::mem::replace(&mut self.inner, clone);
        let gate = self.gate.clone();
        Box::pin(async move {
            let rule = rules::rule(request.uri().path());
            if rule == Rule::Open {
                return inner.call(request).await;
            }
            let admitted = match &gate.book {
                // Auth off: everyone is the anonymous admin; nothing to read or look up.
                None => Ok(Caller { peer: peer(&request), ..Caller::anonymous() }),
                Some(book) => gate.admit(book, Presented::of(&request), rule).await,
            };
            match admitted {
                Ok(caller) => {
                    request.extensions_mut().insert(caller);
                    inner.call(request).await
                }
                Err(err) => Ok(tonic::Status::from(err).into_http()),
            }
        })
    }
}

impl AuthLayer {
    async fn admit(&self, book: &TokenBook, presented: Presented, rule: Rule) -> Result<Caller, Error> {
        let Presented { path, authorization, peer } = presented;
        let path = path.as_str();
        let outcome = match bearer(authorization.as_ref()) {
            Ok(token) => book.authenticate(token).await.map(|caller| Caller {
                credential: Some(hive_shared::config::Secret::new(token.to_owned())),
                ..caller
            }),
            Err(err) => Err(err),
        };
        let mut caller = match outcome {
            Ok(caller) => caller,
            Err(err) => {
                self.record_refusal(rule, path, None, peer, &err);
                return Err(err);
            }
        };
        caller.peer = peer;
        if !rule.allows(caller.role) {
            let err = Error::PermissionDenied(format!(
                "a {} token may not call {}",
                caller.role,
                path.trim_start_matches('/')
            ));
            self.record_refusal(rule, path, Some(&caller), peer, &err);
            return Err(err);
        }
        Ok(caller)
    }

    fn record_refusal(
        &self,
        rule: Rule,
        path: &str,
        caller: Option<&Caller>,
        peer: Option<std::net::SocketAddr>,
        err: &Error,
    ) {
        if let (Rule::Roles { changes_state: true, .. }, Some(refusals)) = (rule, &self.refusals) {
            refusals.refused(path, caller, peer, &err.to_string());
        }
    }
}

/// What the layer needs of a request, taken out before any await (a body is not `Sync`).
struct Presented {
    path: String,
    authorization: Option<http::HeaderValue>,
    peer: Option<std::net::SocketAddr>,
}

impl Presented {
    fn of(request: &Request<Body>) -> Self {
        Self {
            path: request.uri().path().to_owned(),
            authorization: request.headers().get(http::header::AUTHORIZATION).cloned(),
            peer: peer(request),
        }
    }
}

/// The token of `authorization: Bearer TOKEN`.
pub(crate) fn bearer(header: Option<&http::HeaderValue>) -> Result<&str, Error> {
    let missing = || Error::Unauthenticated("no token: send `authorization: Bearer <token>`".into());
    let header = header.ok_or_else(missing)?;
    let text = header.to_str().map_err(|_| Error::Unauthenticated("the authorization header is not text".into()))?;
    let (scheme, token) = text
        .split_once(' ')
        .ok_or_else(|| Error::Unauthenticated("the authorization header must be `Bearer <token>`".into()))?;
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Error::Unauthenticated("the authorization header must be `Bearer <token>`".into()));
    }
    Ok(token.trim())
}

fn peer(request: &Request<Body>) -> Option<std::net::SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<TcpConnectInfo>()
        .and_then(TcpConnectInfo::remote_addr)
        .or_else(|| extensions.get::<TlsConnectInfo<TcpConnectInfo>>().and_then(|info| info.get_ref().remote_addr()))
}
