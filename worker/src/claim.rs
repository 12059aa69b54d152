//! The claim loop: whenever slots are free and the host is under its admission
//! limits, long-poll Claim for as many tasks as there are free slots (for the
//! agents whose memory estimate fits), and start an attempt for each. A
//! prefetching worker also refills its local queue before it runs dry.

use std::sync::Arc;
use std::time::Duration;

use hive_shared::convert::duration;
use hive_shared::{pb, tracked};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::attempt::{self, Start};
use crate::connection;
use crate::context::{Context, Queued};
use crate::outcome::{self, Ids};

/// How often a host over its admission limits looks again.
const ADMISSION_RECHECK: Duration = Duration::from_secs(1);

/// How long a claim already in flight when draining starts may take to answer.
const IN_FLIGHT_GRACE: Duration = Duration::from_secs(1);

/// Claims until `stop`; attempts are spawned on `attempts`.
pub(crate) async fn run(context: Arc<Context>, attempts: TaskTracker, stop: CancellationToken) {
    let mut delays = connection::backoff(context.retry_delay_max);
    let mut queued = context.queued.subscribe();
    // A prefetching worker refills its queue once it is down to its refill
    // mark, without slots and without waiting. A refill that finds nothing
    // leaves the next claim to the empty queue (with slots, long-polling).
    // The count wakes this loop only at the mark and at zero (`Queued`).
    let prefetch = usize::try_from(context.config.prefetch).unwrap_or(usize::MAX);
    let refill_below = context.refill_mark();
    let mut dry = false;
    loop {
        // Prefetched tasks first: a claim long-polling on slots they wait for
        // would hold them back for up to `claim_wait`.
        let mark = if dry { 0 } else { refill_below };
        tokio::select! {
            idle = queued.wait_for(|count| *count <= mark) => if idle.is_err() { return },
            () = stop.cancelled() => return,
        }
        if stop.is_cancelled() {
            return;
        }
        let waiting = *queued.borrow();
        if waiting > 0 {
            match refill(&context, &attempts, prefetch.saturating_sub(waiting), &stop).await {
                None => return,
                Some(Ok(got)) => {
                    delays = connection::backoff(context.retry_delay_max);
                    dry = got == 0;
                }
                Some(Err(status)) => {
                    dry = true;
                    if !context.recover("claim", &status, &mut delays, &stop).await {
                        return;
                    }
                }
            }
            continue;
        }
        dry = false;
        let first = tokio::select! {
            permit = Arc::clone(&context.slots).acquire_owned() => permit,
            () = stop.cancelled() => return,
        };
        let Ok(first) = first else { return };
        let mut permits = vec![first];
        while let Ok(permit) = Arc::clone(&context.slots).try_acquire_owned() {
            permits.push(permit);
        }
        let Some(agents) = claimable_agents(&context) else {
            drop(permits);
            if !connection::pause(ADMISSION_RECHECK, &stop).await {
                return;
            }
            continue;
        };
        let request = pb::ClaimRequest {
            worker_id: context.worker_id.to_string(),
            max_tasks: u32::try_from(permits.len()).unwrap_or(u32::MAX).saturating_add(context.config.prefetch),
            wait: Some(duration(context.config.claim_wait)),
            agents,
        };
        context.claiming.store(permits.len(), std::sync::atomic::Ordering::Relaxed);
        let answer = call(&context, request, &stop).await;
        context.claiming.store(0, std::sync::atomic::Ordering::Relaxed);
        match answer {
            None => return,
            Some(Ok(assignments)) => {
                delays = connection::backoff(context.retry_delay_max);
                for assignment in assignments {
                    let start = match permits.pop() {
                        Some(slot) => Start::Slot(slot),
                        None => Start::Queued(Queued::new(&context)),
                    };
                    tracked::spawn(&attempts, "attempt", attempt::run(Arc::clone(&context), assignment, start));
                }
            }
            Some(Err(status)) => {
                drop(permits);
                if !context.recover("claim", &status, &mut delays, &stop).await {
                    return;
                }
            }
        }
    }
}

/// Claims up to `want` tasks for the local queue, without slots and without
/// waiting: how many came (none while the host is over its admission
/// limits), or `None` once `stop` is cancelled.
async fn refill(
    context: &Arc<Context>,
    attempts: &TaskTracker,
    want: usize,
    stop: &CancellationToken,
) -> Option<Result<usize, tonic::Status>> {
    let Some(agents) = claimable_agents(context) else { return Some(Ok(0)) };
    let request = pb::ClaimRequest {
        worker_id: context.worker_id.to_string(),
        max_tasks: u32::try_from(want).unwrap_or(u32::MAX),
        wait: Some(duration(Duration::ZERO)),
        agents,
    };
    let assignments = match call(context, request, stop).await? {
        Ok(assignments) => assignments,
        Err(status) => return Some(Err(status)),
    };
    let got = assignments.len();
    for assignment in assignments {
        let start = Start::Queued(Queued::new(context));
        tracked::spawn(attempts, "attempt", attempt::run(Arc::clone(context), assignment, start));
    }
    Some(Ok(got))
}

/// The agents a claim may ask for now (empty: every agent), or `None` while
/// the host is over its admission limits.
fn claimable_agents(context: &Context) -> Option<Vec<String>> {
    match context.admissible_agents() {
        None => Some(Vec::new()),
        Some(agents) if agents.is_empty() => None,
        Some(agents) => Some(agents),
    }
}

/// Sends one Claim. `None` once `stop` is cancelled: whatever arrived
/// meanwhile has been handed back.
async fn call(
    context: &Context,
    request: pb::ClaimRequest,
    stop: &CancellationToken,
) -> Option<Result<Vec<pb::Assignment>, tonic::Status>> {
    let mut client = context.client.clone();
    let call = client.claim(request);
    tokio::pin!(call);
    let result = tokio::select! {
        result = &mut call => result,
        // The claim may have committed with its reply on the way: give it a
        // moment, so the tasks can be handed back rather than left leased.
        () = stop.cancelled() => match tokio::time::timeout(IN_FLIGHT_GRACE, &mut call).await {
            Ok(result) => result,
            Err(_) => return None,
        },
    };
    match result {
        Ok(response) if stop.is_cancelled() => {
            hand_back(context, response.into_inner().assignments).await;
            None
        }
        Ok(response) => Some(Ok(response.into_inner().assignments)),
        Err(status) => Some(Err(status)),
    }
}

/// Hands back tasks that arrived as draining began, without running them.
async fn hand_back(context: &Context, assignments: Vec<pb::Assignment>) {
    for assignment in assignments {
        let (Ok(_), Ok(attempt)) = (
            hive_shared::ids::TaskId::parse(&assignment.task_id),
            hive_shared::ids::AttemptId::parse(&assignment.attempt_id),
        ) else {
            continue;
        };
        context.held.hold(attempt);
        let ids = Ids { task_id: assignment.task_id, attempt_id: assignment.attempt_id };
        let problem = "the worker began draining as the task arrived; handed back unstarted".to_owned();
        let report = outcome::failure(&ids, pb::FailureClass::Interrupted, problem, None);
        if context.reports.send(report).await.is_err() {
            context.held.release(attempt);
        }
    }
}
