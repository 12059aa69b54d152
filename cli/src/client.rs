//! Connecting to the coordinator's AdminService, and turning a refused call
//! into an error a person can act on.

use std::time::Duration;

use anyhow::anyhow;
use hive_shared::client::Connect;
use hive_shared::pb;
use hive_shared::pb::admin_service_client::AdminServiceClient;
use tonic::transport::Channel;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};

/// The admin client.
pub(crate) type Admin = AdminServiceClient<Channel>;

/// Largest message sent or accepted.
const MAX_MESSAGE: usize = 64 * 1024 * 1024;

/// An admin client for the coordinator (connects on first use).
///
/// # Errors
/// A malformed URL, unreadable TLS files.
pub(crate) fn admin(connect: &Connect) -> anyhow::Result<Admin> {
    let channel = connect.endpoint()?.connect_lazy();
    Ok(AdminServiceClient::new(channel).max_decoding_message_size(MAX_MESSAGE).max_encoding_message_size(MAX_MESSAGE))
}

/// Largest page asked for when listing tasks.
const MAX_PAGE: usize = 1000;

/// Lists up to `limit` tasks matching `filter` (its page fields are
/// ignored), following pages until the limit or the last page.
///
/// # Errors
/// The first refused call.
pub(crate) async fn list_tasks(
    admin: &mut Admin,
    filter: pb::ListTasksRequest,
    limit: usize,
) -> Result<Vec<pb::Task>, tonic::Status> {
    let mut tasks: Vec<pb::Task> = Vec::new();
    let mut page_token = String::new();
    while tasks.len() < limit {
        let page_size = u32::try_from((limit - tasks.len()).min(MAX_PAGE)).expect("a page of at most 1000 fits u32");
        let request = pb::ListTasksRequest { page_size, page_token, ..filter.clone() };
        let page = admin.list_tasks(request).await?.into_inner();
        tasks.extend(page.tasks);
        if page.next_page_token.is_empty() {
            break;
        }
        page_token = page.next_page_token;
    }
    Ok(tasks)
}

/// Whether the coordinator answers its health check as serving workers;
/// `false` for any failure, including a malformed URL.
pub(crate) async fn serving(connect: &Connect) -> bool {
    let Ok(endpoint) = connect.endpoint() else {
        return false;
    };
    let Ok(channel) = endpoint.connect_timeout(Duration::from_secs(1)).connect().await else {
        return false;
    };
    let request = HealthCheckRequest { service: "hive.v1.WorkerService".into() };
    matches!(HealthClient::new(channel).check(request).await, Ok(response)
        if response.get_ref().status == i32::from(ServingStatus::Serving))
}

/// Describes a failed call: what was attempted, the code, and the coordinator's message.
pub(crate) fn refused(what: &str, url: &str, status: &tonic::Status) -> anyhow::Error {
    match status.code() {
        tonic::Code::Unavailable => anyhow!("{what}: cannot reach the coordinator at {url} ({})", status.message()),
        code => anyhow!("{what}: {code:?}: {}", status.message()),
    }
}
