//! The coordinator's Prometheus metrics: what this process counted (claims,
//! attempts ended, retries, lost leases, RPC latency) kept in memory, and
//! what the whole fleet is now (tasks by state and agent, workers, the event
//! log), read from PostgreSQL at each scrape with bounded statements
//! (`db::metrics`). [`http`] serves them on `http.listen`; [`rpc`] times
//! every RPC. Names and labels are listed in `docs/metrics.md`.

pub(crate) mod http;
pub(crate) mod rpc;

use std::collections::{BTreeMap, BTreeSet};

use hive_shared::metrics::{Counter, FAST_SECONDS, Histogram, Page, SLOW_SECONDS};
use sqlx::PgPool;

use crate::db;
use crate::db::metrics::AgentWorkers;
use crate::status::{AttemptOutcome, TaskStatus};
use crate::tasks::retry::{FailureClass, Stop};

/// What this coordinator counted since it started.
#[derive(Debug)]
pub(crate) struct Metrics {
    claimed: Counter,
    queue_wait: Histogram,
    attempts_ended: Counter,
    failures: Counter,
    attempt_duration: Histogram,
    retries: Counter,
    dead: Counter,
    leases_lost: Counter,
    rpc_duration: Histogram,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            claimed: Counter::new("hive_tasks_claimed_total", "Attempts started: tasks handed to workers.", &["agent"]),
            queue_wait: Histogram::new(
                "hive_queue_wait_seconds",
                "How long each claimed task waited since it could first be claimed (submission, or the end of its backoff).",
                &["agent"],
                SLOW_SECONDS,
            ),
            attempts_ended: Counter::new(
                "hive_attempts_ended_total",
                "Attempts that ended, by outcome.",
                &["agent", "outcome"],
            ),
            failures: Counter::new(
                "hive_attempt_failures_total",
                "Attempts that ended without success, by why: transient, permanent, rate_limited, lost, deadline, released, cancelled.",
                &["agent", "class"],
            ),
            attempt_duration: Histogram::new(
                "hive_attempt_duration_seconds",
                "How long attempts ran, from claim to the report of their end.",
                &["agent", "outcome"],
                SLOW_SECONDS,
            ),
            retries: Counter::new(
                "hive_task_retries_total",
                "Tasks sent back to the queue to run again after a failure.",
                &["agent"],
            ),
            dead: Counter::new("hive_tasks_dead_total", "Tasks that entered the dead-letter queue.", &["agent"]),
            leases_lost: Counter::new(
                "hive_leases_lost_total",
                "Attempts whose lease ran out (their worker died or was cut off).",
                &["agent"],
            ),
            rpc_duration: Histogram::new(
                "hive_rpc_duration_seconds",
                "gRPC calls served, until the response began (a stream: until its first message), by method and status code.",
                &["method", "code"],
                FAST_SECONDS,
            ),
        }
    }
}

/// One attempt that ended, as its metrics see it.
#[derive(Debug, Clone)]
pub(crate) struct Ended {
    /// The agent it ran.
    pub agent: String,
    /// How it is recorded.
    pub outcome: AttemptOutcome,
    /// Why it stopped, when not a success.
    pub stop: Option<Stop>,
    /// Whether its task goes back to the queue to run again after a failure.
    pub retried: bool,
    /// Whether its task went to the dead-letter queue.
    pub dead: bool,
    /// How long it ran, seconds.
    pub seconds: Option<f64>,
}

impl Metrics {
    /// Counts tasks claimed for `agent` that waited `queued` seconds each.
    pub(crate) fn claimed(&self, agent: &str, queued_seconds: f64) {
        self.claimed.add(&[agent], 1);
        self.queue_wait.observe(&[agent], queued_seconds);
    }

    /// Counts attempts that ended (after their transaction committed).
    pub(crate) fn ended(&self, attempts: &[Ended]) {
        for attempt in attempts {
            let agent = attempt.agent.as_str();
            let outcome = outcome_label(attempt.outcome);
            self.attempts_ended.add(&[agent, outcome], 1);
            if let Some(seconds) = attempt.seconds {
                self.attempt_duration.observe(&[agent, outcome], seconds);
            }
            if let Some(stop) = attempt.stop {
                self.failures.add(&[agent, class_label(stop)], 1);
                if matches!(stop, Stop::LeaseExpired(_)) {
                    self.leases_lost.add(&[agent], 1);
                }
            }
            if attempt.retried {
                self.retries.add(&[agent], 1);
            }
            if attempt.dead {
                self.dead.add(&[agent], 1);
            }
        }
    }

    /// Times one RPC.
    pub(crate) fn rpc(&self, method: &str, code: &str, seconds: f64) {
        self.rpc_duration.observe(&[method, code], seconds);
    }

    /// The page a scrape gets: this process's counts, then the fleet's
    /// state read now (three statements, none of them over the tasks).
    pub(crate) async fn page(&self, pool: &PgPool, hot_pool: &PgPool) -> sqlx::Result<String> {
        let totals = db::metrics::task_totals(pool).await?;
        let agents = db::metrics::workers_by_agent(pool).await?;
        let fleet = db::metrics::fleet(pool).await?;
        // Every agent seen gets every status and both worker states, 0 when
        // none: a series that appears at its first task, or vanishes with its
        // last worker, would hide that change from rate() and alerts.
        let known: BTreeSet<&str> =
            totals.iter().map(|row| row.agent.as_str()).chain(agents.iter().map(|row| row.agent.as_str())).collect();
        let statuses = TaskStatus::ALL.map(|status| status.to_string());
        let mut tasks: BTreeMap<(&str, &str), f64> =
            known.iter().flat_map(|agent| statuses.iter().map(|status| ((*agent, status.as_str()), 0.0))).collect();
        for row in &totals {
            tasks.insert((row.agent.as_str(), row.status.as_str()), row.tasks as f64);
        }
        let mut workers: BTreeMap<&str, &AgentWorkers> = BTreeMap::new();
        for row in &agents {
            workers.insert(row.agent.as_str(), row);
        }
        let mut page = Page::new();
        page.gauge_rows(
            "hive_tasks",
            "Tasks by the agent their next attempt runs and by status (dead: the dead-letter queue).",
            &["agent", "status"],
            tasks.iter().map(|((agent, status), count)| (vec![*agent, *status], *count)),
        );
        let oldest: BTreeMap<&str, f64> =
            totals.iter().filter_map(|row| Some((row.agent.as_str(), row.oldest_ready_seconds?))).collect();
        page.gauge_rows(
            "hive_oldest_ready_task_age_seconds",
            "Per agent, how long its oldest ready task has been claimable (0 when none is).",
            &["agent"],
            known.iter().map(|agent| (vec![*agent], oldest.get(agent).copied().unwrap_or(0.0))),
        );
        let offered = |agent: &str| {
            workers
                .get(agent)
                .map_or((0.0, 0.0, 0.0), |row| (row.live as f64, row.draining as f64, row.free_slots as f64))
        };
        page.gauge_rows(
            "hive_workers",
            "Live workers offering each agent, taking tasks (live) or draining.",
            &["agent", "state"],
            known.iter().flat_map(|agent| {
                let (live, draining, _) = offered(agent);
                [(vec![*agent, "live"], live), (vec![*agent, "draining"], draining)]
            }),
        );
        page.gauge_rows(
            "hive_worker_free_slots",
            "Free slots of the live workers offering each agent and taking tasks.",
            &["agent"],
            known.iter().map(|agent| (vec![*agent], offered(agent).2)),
        );
        page.gauge_rows(
            "hive_fleet_workers",
            "Live workers in all, taking tasks (live) or draining.",
            &["state"],
            [(vec!["live"], fleet.live_workers as f64), (vec!["draining"], fleet.draining_workers as f64)],
        );
        page.gauge_value(
            "hive_heartbeat_age_max_seconds",
            "Seconds since the live worker heard from least recently last beat (as recorded).",
            fleet.heartbeat_age_max_seconds,
        );
        page.gauge_value("hive_event_log_head", "The newest event's number.", fleet.event_head as f64);
        page.gauge_value(
            "hive_event_log_lag_seconds",
            "How long the oldest event not numbered yet has waited (0 when every event is numbered).",
            fleet.event_lag_seconds,
        );
        pool_gauges(&mut page, pool, hot_pool);
        page.counter(&self.claimed);
        page.histogram(&self.queue_wait);
        page.counter(&self.attempts_ended);
        page.counter(&self.failures);
        page.histogram(&self.attempt_duration);
        page.counter(&self.retries);
        page.counter(&self.dead);
        page.counter(&self.leases_lost);
        page.histogram(&self.rpc_duration);
        Ok(page.finish())
    }
}

/// Connections of this coordinator's two pools, in use and idle.
fn pool_gauges(page: &mut Page, pool: &PgPool, hot_pool: &PgPool) {
    let rows = [("main", pool), ("hot", hot_pool)].into_iter().flat_map(|(name, pool)| {
        let idle = pool.num_idle() as f64;
        let open = f64::from(pool.size());
        [(vec![name, "used"], open - idle), (vec![name, "idle"], idle)]
    });
    page.gauge_rows(
        "hive_db_connections",
        "This coordinator's PostgreSQL connections by pool (hot: the workers' hot path) and state.",
        &["pool", "state"],
        rows,
    );
    let limits = [("main", pool), ("hot", hot_pool)]
        .into_iter()
        .map(|(name, pool)| (vec![name], f64::from(pool.options().get_max_connections())));
    page.gauge_rows("hive_db_connections_max", "Most connections each pool opens.", &["pool"], limits);
}

fn outcome_label(outcome: AttemptOutcome) -> &'static str {
    match outcome {
        AttemptOutcome::Running => "running",
        AttemptOutcome::Succeeded => "succeeded",
        AttemptOutcome::Failed => "failed",
        AttemptOutcome::Lost => "lost",
        AttemptOutcome::Cancelled => "cancelled",
        AttemptOutcome::Released => "released",
    }
}

fn class_label(stop: Stop) -> &'static str {
    match stop {
        Stop::Failed(FailureClass::Transient) => "transient",
        Stop::Failed(FailureClass::Permanent) => "permanent",
        Stop::RateLimited(_) => "rate_limited",
        Stop::LeaseExpired(_) => "lost",
        Stop::DeadlinePassed => "deadline",
        Stop::Interrupted => "released",
        Stop::Cancelled => "cancelled",
    }
}
