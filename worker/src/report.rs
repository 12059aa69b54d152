//! Reporting outcomes: a single task drains queued reports into one Complete
//! and one Fail call, retries them until the coordinator acknowledges, and
//! releases each attempt once its outcome is settled.

use std::time::Duration;

use hive_shared::ids::AttemptId;
use hive_shared::pb;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tonic::Code;
use tracing::{debug, error, warn};

use crate::connection::{self, Client};
use crate::held::Held;
use crate::outcome::{self, Ids, Report};

/// Most outcomes sent in one call.
const MAX_BATCH: usize = 512;

/// Reports until every sender is gone and the queue is empty, or `abandon`.
pub(crate) async fn run(
    client: Client,
    worker_id: String,
    mut queue: mpsc::Receiver<Report>,
    held: Held,
    retry_delay_max: Duration,
    abandon: CancellationToken,
) {
    loop {
        let first = tokio::select! {
            report = queue.recv() => report,
            () = abandon.cancelled() => return,
        };
        let Some(first) = first else { return };
        // Attempts that are ready to run queue their outcomes first: sent at
        // once, the first outcome of a fresh batch of tasks went alone (a
        // Complete of one task, then one of hundreds).
        tokio::task::yield_now().await;
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match queue.try_recv() {
                Ok(report) => batch.push(report),
                Err(_) => break,
            }
        }
        let (completions, failures): (Vec<_>, Vec<_>) =
            batch.into_iter().partition(|report| matches!(report, Report::Complete(_)));
        let reporter =
            Reporter { client: &client, worker_id: &worker_id, held: &held, retry_delay_max, abandon: &abandon };
        let refused = reporter.complete(completions.into_iter().filter_map(as_completion).collect()).await;
        let failures: Vec<pb::Failure> = failures.into_iter().filter_map(as_failure).chain(refused).collect();
        reporter.fail(failures).await;
    }
}

/// Whether the coordinator refused a batch for something in it (a bad
/// result, or one it could not store): sent one by one, the others go through.
fn is_refusal(code: Code) -> bool {
    matches!(code, Code::InvalidArgument | Code::Internal | Code::Unknown)
}

fn as_completion(report: Report) -> Option<pb::Completion> {
    match report {
        Report::Complete(completion) => Some(completion),
        Report::Fail(_) => None,
    }
}

fn as_failure(report: Report) -> Option<pb::Failure> {
    match report {
        Report::Fail(failure) => Some(failure),
        Report::Complete(_) => None,
    }
}

struct Reporter<'a> {
    client: &'a Client,
    worker_id: &'a str,
    held: &'a Held,
    retry_delay_max: Duration,
    abandon: &'a CancellationToken,
}

impl Reporter<'_> {
    /// Sends completions; returns failures for results the coordinator refused as invalid.
    async fn complete(&self, completions: Vec<pb::Completion>) -> Vec<pb::Failure> {
        if completions.is_empty() {
            return Vec::new();
        }
        let result = connection::retry("complete", self.retry_delay_max, self.abandon, || {
            let mut client = self.client.clone();
            let request =
                pb::CompleteRequest { worker_id: self.worker_id.to_owned(), completions: completions.clone() };
            async move { client.complete(request).await }
        })
        .await;
        match result {
            Ok(response) => {
                self.settle(response.acks);
                Vec::new()
            }
            Err(status) if is_refusal(status.code()) && completions.len() > 1 => {
                // One bad result must not sink the others: send them one by one.
                let mut refused = Vec::new();
                for completion in completions {
                    refused.extend(Box::pin(self.complete(vec![completion])).await);
                }
                refused
            }
            Err(status) if status.code() == Code::InvalidArgument => completions
                .into_iter()
                .filter_map(|completion| {
                    let ids = Ids { task_id: completion.task_id, attempt_id: completion.attempt_id };
                    let problem = format!("the coordinator refused the result: {}", status.message());
                    let failure = as_failure(outcome::failure(&ids, pb::FailureClass::Permanent, problem, None))?;
                    // The agent ran and spent what it spent: its session and usage stay with the attempt.
                    Some(pb::Failure { session_id: completion.session_id, usage: completion.usage, ..failure })
                })
                .collect(),
            Err(status) => {
                self.give_up(completions.iter().map(|completion| completion.attempt_id.as_str()), &status);
                Vec::new()
            }
        }
    }

    async fn fail(&self, failures: Vec<pb::Failure>) {
        if failures.is_empty() {
            return;
        }
        let result = connection::retry("fail", self.retry_delay_max, self.abandon, || {
            let mut client = self.client.clone();
            let request = pb::FailRequest { worker_id: self.worker_id.to_owned(), failures: failures.clone() };
            async move { client.fail(request).await }
        })
        .await;
        match result {
            Ok(response) => self.settle(response.acks),
            Err(status) => self.give_up(failures.iter().map(|failure| failure.attempt_id.as_str()), &status),
        }
    }

    fn settle(&self, acks: Vec<pb::Ack>) {
        for ack in acks {
            match ack.status() {
                pb::AckStatus::Recorded | pb::AckStatus::AlreadyRecorded => {
                    debug!(attempt_id = %ack.attempt_id, "outcome recorded")
                }
                pb::AckStatus::LeaseLost | pb::AckStatus::Unspecified => {
                    warn!(attempt_id = %ack.attempt_id, reason = %ack.message, "outcome refused: this worker no longer holds the attempt; result dropped");
                }
            }
            if let Ok(attempt) = AttemptId::parse(&ack.attempt_id) {
                self.held.release(attempt);
            }
        }
    }

    fn give_up<'b>(&self, attempts: impl Iterator<Item = &'b str>, status: &tonic::Status) {
        for attempt in attempts {
            error!(attempt_id = attempt, code = ?status.code(), message = status.message(), "could not report an outcome; its lease will expire and the task will be retried");
            if let Ok(attempt) = AttemptId::parse(attempt) {
                self.held.release(attempt);
            }
        }
    }
}
