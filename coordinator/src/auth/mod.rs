//! Who is calling, and whether they may. Every RPC passes [`layer`], which
//! reads the bearer token, names the caller ([`book`]) and checks the one
//! table of [`rules`]; the handler then finds the [`Caller`] in the
//! request's extensions and checks ownership ([`ownership`]).
//!
//! With no `auth.admin_token_file`, auth is off: every caller is the
//! anonymous admin, and the coordinator serves only loopback addresses
//! unless told `--insecure`.

pub(crate) mod book;
pub(crate) mod layer;
pub(crate) mod ownership;
pub(crate) mod rules;
pub(crate) mod tokens;

use std::net::SocketAddr;

use hive_shared::config::Secret;
use hive_shared::tokens::Role;
use uuid::Uuid;

use crate::error::{Error, Result};

/// The name callers have when auth is off.
pub(crate) const ANONYMOUS: &str = "anonymous";

/// The authenticated caller of one RPC.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    /// Token name (`admin` for the file's token, `attempt <id>` for an agent).
    pub name: String,
    /// What it may do.
    pub role: Role,
    /// For an agent: the attempt its token is for.
    pub attempt: Option<Uuid>,
    /// Where the call came from.
    pub peer: Option<SocketAddr>,
    /// Whether auth is on (when off, ownership is not checked).
    pub authenticated: bool,
    /// The token presented, so a stream can check it again while it lives.
    pub credential: Option<Secret<String>>,
}

impl Caller {
    /// A caller holding the named token `name` of `role`.
    pub(crate) fn named(name: &str, role: Role) -> Self {
        Self { name: name.to_owned(), role, attempt: None, peer: None, authenticated: true, credential: None }
    }

    /// The agent of `attempt`.
    pub(crate) fn agent(attempt: Uuid) -> Self {
        Self {
            name: format!("attempt {attempt}"),
            role: Role::Agent,
            attempt: Some(attempt),
            peer: None,
            authenticated: true,
            credential: None,
        }
    }

    /// Everyone, when auth is off.
    pub(crate) fn anonymous() -> Self {
        Self {
            name: ANONYMOUS.to_owned(),
            role: Role::Admin,
            attempt: None,
            peer: None,
            authenticated: false,
            credential: None,
        }
    }

    /// The caller of `request`, which the auth layer put there.
    ///
    /// # Errors
    /// [`Error::Unauthenticated`] for a request that did not pass the layer.
    pub(crate) fn of<T>(request: &tonic::Request<T>) -> Result<Self> {
        request
            .extensions()
            .get::<Self>()
            .cloned()
            .ok_or_else(|| Error::Unauthenticated("the call carries no identity".into()))
    }

    /// Whether the caller is a submitter, limited to its own swarms.
    pub(crate) fn limited_to_own_swarms(&self) -> bool {
        self.authenticated && self.role == Role::Submitter
    }

    /// Whether the caller is a worker, limited to workers it registered.
    pub(crate) fn limited_to_own_workers(&self) -> bool {
        self.authenticated && self.role == Role::Worker
    }

    /// The name stored as a record's owner: `None` when auth is off.
    pub(crate) fn owner_name(&self) -> Option<&str> {
        self.authenticated.then_some(self.name.as_str())
    }
}
