//! The claim loop: whenever slots are free, long-poll Claim for as many tasks
//! as there are free slots, and start an attempt for each.

use std::sync::Arc;

use hive_shared::convert::duration;
use hive_shared::pb;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::attempt;
use crate::connection;
use crate::context::Context;

/// Claims until `stop`; attempts are spawned on `attempts`.
pub async fn run(context: Arc<Context>, attempts: TaskTracker, stop: CancellationToken) {
    let mut delays = connection::backoff();
    loop {
        let first = tokio::select! {
            permit = Arc::clone(&context.slots).acquire_owned() => permit,
            () = stop.cancelled() => return,
        };
        let Ok(first) = first else { return };
        let mut permits = vec![first];
        while let Ok(permit) = Arc::clone(&context.slots).try_acquire_owned() {
            permits.push(permit);
        }
        let request = pb::ClaimRequest {
            worker_id: context.worker_id.to_string(),
            max_tasks: u32::try_from(permits.len()).unwrap_or(u32::MAX),
            wait: Some(duration(context.config.claim_wait)),
        };
        let mut client = context.client.clone();
        let result = tokio::select! {
            result = client.claim(request) => result,
            () = stop.cancelled() => return,
        };
        match result {
            Ok(response) => {
                delays = connection::backoff();
                for assignment in response.into_inner().assignments {
                    attempts.spawn(attempt::run(Arc::clone(&context), assignment, permits.pop()));
                }
            }
            Err(status) => {
                drop(permits);
                if !context.recover("claim", &status, &mut delays, &stop).await {
                    return;
                }
            }
        }
    }
}
