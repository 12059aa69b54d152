//! Finds attempts whose lease ran out (their worker died or was cut off) or
//! whose deadline passed (the task ran far past its time limit), and settles
//! them like a reported failure: retried, dead-lettered, or — for tasks being
//! cancelled — cancelled; and marks workers that left (`worker.gone`,
//! `worker.lost`). Rows are taken with `skip locked`, so reapers on
//! several coordinators never double-reap.
//!
//! A lease that ran out while this coordinator could not reach the database,
//! or before it had been up for a full lease, may have run out only because
//! its worker's beats had nowhere to go. So the reaper reaps only once it has
//! reached the database without a gap for a full lease ([`Contact`]): every
//! worker that is alive has beaten again by then and its leases hold.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use tracing::{error, info, instrument};

use crate::config::{LeaseConfig, TaskDefaults};
use crate::db;
use crate::metrics::Metrics;
use crate::status::TaskStatus;
use crate::tasks::report;
use crate::tasks::retry::{Allowance, Stop};

/// Most tasks settled per transaction.
const BATCH: i64 = 500;

/// Reaps every `leases.reap_interval` until `cancel`, once in [`Contact`].
#[instrument(skip_all, name = "lease_reaper")]
pub(crate) async fn run(
    pool: PgPool,
    defaults: TaskDefaults,
    leases: LeaseConfig,
    metrics: Arc<Metrics>,
    cancel: CancellationToken,
) {
    let contact = Mutex::new(Contact::new(Instant::now(), &leases));
    let contact = &contact;
    super::every(leases.reap_interval, &cancel, || async {
        if let Err(err) = pass(&pool, &defaults, &leases, &metrics, contact).await {
            // Only a lost database restarts the wait; a statement that
            // failed (a deadlock, say) says nothing about workers' beats.
            if db::unreachable(&err) {
                lock(contact).lost();
            }
            error!(error = %err, "lease reaper pass failed; retrying next tick");
        }
    })
    .await;
}

/// One pass: reaps if the database has been reachable for a full lease.
async fn pass(
    pool: &PgPool,
    defaults: &TaskDefaults,
    leases: &LeaseConfig,
    metrics: &Metrics,
    contact: &Mutex<Contact>,
) -> Result<(), sqlx::Error> {
    pool.acquire().await?;
    let reap = lock(contact).reached(Instant::now());
    if reap {
        reap_all(pool, defaults, metrics).await?;
        // Workers are judged gone or lost on the same condition: a full
        // lease of contact, in which every live worker's beats arrive.
        let quiet = leases.heartbeat_interval * 2;
        db::workers::mark_left(pool, db::seconds(leases.ttl), db::seconds(quiet)).await?;
        lock(contact).answered(Instant::now());
    }
    Ok(())
}

fn lock(contact: &Mutex<Contact>) -> MutexGuard<'_, Contact> {
    contact.lock().unwrap_or_else(PoisonError::into_inner)
}

/// How long the reaper has reached the database without a gap, and whether
/// that is long enough to trust that live workers' beats got through.
#[derive(Debug)]
pub(crate) struct Contact {
    /// Start of the current unbroken stretch.
    since: Instant,
    /// Last time the database answered; `None` after a failed pass.
    last: Option<Instant>,
    /// Longest silence between two answers that is not a gap: one reap
    /// interval plus one heartbeat interval.
    gap: Duration,
    /// How long a stretch must last: one lease.
    needed: Duration,
}

impl Contact {
    /// A stretch that starts at `now` (the coordinator's start).
    pub(crate) fn new(now: Instant, leases: &LeaseConfig) -> Self {
        Self { since: now, last: Some(now), gap: leases.reap_interval + leases.heartbeat_interval, needed: leases.ttl }
    }

    /// Records a failed pass: the stretch ends.
    pub(crate) fn lost(&mut self) {
        self.last = None;
    }

    /// Records an answer at `now` within a pass (a long reap is no gap).
    pub(crate) fn answered(&mut self, now: Instant) {
        self.last = Some(now);
    }

    /// Records the first answer of a pass at `now`; whether the stretch is long enough to reap.
    pub(crate) fn reached(&mut self, now: Instant) -> bool {
        let unbroken = self.last.is_some_and(|last| now.saturating_duration_since(last) <= self.gap);
        if !unbroken {
            info!(waiting = ?self.needed, "database reached after a gap; expired leases wait one lease for their workers to beat");
            self.since = now;
        }
        self.last = Some(now);
        now.saturating_duration_since(self.since) >= self.needed
    }
}

/// Reaps until nothing expired is left; returns how many attempts were settled.
///
/// # Errors
/// Database failures.
pub(crate) async fn reap_all(pool: &PgPool, defaults: &TaskDefaults, metrics: &Metrics) -> Result<usize, sqlx::Error> {
    let mut total = 0;
    loop {
        let mut tx = pool.begin().await?;
        let expired = db::leases::lock_expired(&mut tx, BATCH).await?;
        let mut fates = db::outcomes::Fates::default();
        let mut ended = Vec::new();
        for task in &expired {
            let (stop, mut error) = if task.lease_expired {
                let before = u32::try_from(task.losses).unwrap_or(0);
                let losses = Allowance { before, allowed: defaults.max_lost_attempts };
                (Stop::LeaseExpired(losses), String::from("lease expired: the worker stopped heart-beating"))
            } else {
                (
                    Stop::DeadlinePassed,
                    String::from("deadline passed: the attempt ran past its time limit and its worker did not stop it"),
                )
            };
            let fate = report::decide(defaults, task, stop);
            if let (Stop::LeaseExpired(losses), TaskStatus::Dead) = (stop, fate.status) {
                error.push_str(&format!(
                    "; the task has lost {} attempts with their workers (tasks.max_lost_attempts)",
                    losses.before.saturating_add(1)
                ));
            }
            info!(task_id = %task.id, attempt_id = %task.attempt_id, next = %fate.status, reason = error, "reaped");
            ended.push(report::ended(task, &fate, stop));
            report::push(&mut fates, task, fate, report::Ending::error(error));
        }
        report::settle(&mut tx, &fates).await?;
        tx.commit().await?;
        metrics.ended(&ended);
        total += expired.len();
        if expired.len() < BATCH as usize {
            return Ok(total);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leases() -> LeaseConfig {
        LeaseConfig {
            ttl: Duration::from_secs(30),
            heartbeat_interval: Duration::from_secs(5),
            reap_interval: Duration::from_secs(1),
            ..LeaseConfig::default()
        }
    }

    #[test]
    fn nothing_is_reaped_in_the_first_lease_after_start() {
        let start = Instant::now();
        let mut contact = Contact::new(start, &leases());
        for second in 0..30 {
            assert!(!contact.reached(start + Duration::from_secs(second)), "{second}");
        }
        assert!(contact.reached(start + Duration::from_secs(30)));
    }

    #[test]
    fn a_failed_pass_or_a_long_silence_restarts_the_wait() {
        let start = Instant::now();
        let at = |seconds: u64| start + Duration::from_secs(seconds);
        let mut contact = Contact::new(start, &leases());
        for second in 0..=40 {
            contact.reached(at(second));
        }
        assert!(contact.reached(at(41)));
        contact.lost();
        assert!(!contact.reached(at(42)), "the database came back: a lease to beat first");
        for second in 43..72 {
            assert!(!contact.reached(at(second)), "{second}");
        }
        assert!(contact.reached(at(72)));
        assert!(!contact.reached(at(80)), "eight silent seconds (a pass stuck waiting for a connection) are a gap");
        for second in 81..110 {
            assert!(!contact.reached(at(second)), "{second}");
        }
        assert!(contact.reached(at(110)));
    }
}
