//! Connecting to the coordinator's AdminService, and turning a refused call
//! into an error a person can act on.

use std::time::Duration;

use anyhow::anyhow;
use hive_shared::pb::admin_service_client::AdminServiceClient;
use tonic::transport::{Channel, Endpoint};

/// The admin client.
pub type Admin = AdminServiceClient<Channel>;

/// Largest message sent or accepted.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// A client for the coordinator at `url` (connects on first use).
///
/// # Errors
/// A malformed URL.
pub fn admin(url: &str) -> anyhow::Result<Admin> {
    let channel = Endpoint::from_shared(url.to_owned())
        .map_err(|err| anyhow!("bad coordinator URL `{url}`: {err}"))?
        .connect_timeout(Duration::from_secs(5))
        .connect_lazy();
    Ok(AdminServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE))
}

/// Describes a failed call: what was attempted, the code, and the coordinator's message.
pub fn refused(what: &str, url: &str, status: &tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unavailable => anyhow!("{what}: cannot reach the coordinator at {url} ({})", status.message()),
        code => anyhow!("{what}: {code:?}: {}", status.message()),
    }
}
