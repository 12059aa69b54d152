//! Pure retry policy: what becomes of a task when one of its attempts stops
//! without success (a reported failure, a hand-back, a cancel, a lost lease, a
//! passed deadline), and how long to wait before the next attempt
//! (exponential backoff with jitter, capped).

use std::time::Duration;

use crate::config::TaskDefaults;
use crate::status::{AttemptOutcome, TaskStatus};

/// Whether a failure is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum FailureClass {
    /// Retry while attempts remain.
    Transient,
    /// Never retry.
    Permanent,
}

/// How an attempt stopped without success.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    /// The worker reported a failure of this class.
    Failed(FailureClass),
    /// The worker handed the task back unfinished (drain or emergency stop).
    Interrupted,
    /// The agent's provider refused it (a rate limit): not the task's fault,
    /// within its allowance; its account cools down instead (see `cooldowns`).
    RateLimited(Allowance),
    /// The worker stopped the agent because the task was cancelled.
    Cancelled,
    /// The lease ran out: the worker died or was cut off.
    LeaseExpired(Allowance),
    /// The attempt ran past its deadline as the coordinator counts it.
    DeadlinePassed,
}

/// Attempts of one task that were not its failures: lost with their worker,
/// or refused by its provider for a rate limit. They do not count against
/// `max_attempts`; but a task whose attempts keep being lost (an agent that
/// kills its host) ends once it has lost `allowed`, and one refused more than
/// `allowed` times (a "rate limit" that is really the task's) has the next
/// refusal counted as a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Allowance {
    /// Such attempts before this one.
    pub before: u32,
    /// How many are allowed in all (`tasks.max_lost_attempts`, `tasks.max_refusals`).
    pub allowed: u32,
}

/// Backoff settings for one task: the defaults, with the task's own overrides.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Backoff {
    /// First delay.
    pub initial: Duration,
    /// Growth per failure.
    pub multiplier: f64,
    /// Largest delay.
    pub max: Duration,
    /// Spread, as a fraction.
    pub jitter: f64,
}

impl Backoff {
    /// The coordinator's defaults with a task's overrides applied.
    pub(crate) fn for_task(
        defaults: &TaskDefaults,
        initial_ms: Option<i64>,
        max_ms: Option<i64>,
        multiplier: Option<f64>,
    ) -> Self {
        let millis = |value: Option<i64>| value.and_then(|ms| u64::try_from(ms).ok()).map(Duration::from_millis);
        Self {
            initial: millis(initial_ms).unwrap_or(defaults.backoff_initial),
            multiplier: multiplier.unwrap_or(defaults.backoff_multiplier),
            max: millis(max_ms).unwrap_or(defaults.backoff_max),
            jitter: defaults.backoff_jitter,
        }
    }

    /// Delay before the retry that follows failure number `failures` (from 1):
    /// `initial × multiplier^(failures-1)`, capped at `max`, then spread by ±jitter.
    /// `unit_random` is a uniform sample from [0, 1).
    pub(crate) fn delay(&self, failures: u32, unit_random: f64) -> Duration {
        let exponent = i32::try_from(failures.saturating_sub(1)).unwrap_or(i32::MAX);
        let base = self.initial.as_secs_f64() * self.multiplier.powi(exponent);
        let capped = base.min(self.max.as_secs_f64());
        let spread = 1.0 + self.jitter * (2.0 * unit_random.clamp(0.0, 1.0) - 1.0);
        Duration::from_secs_f64((capped * spread).max(0.0))
    }
}

/// What happens to a task and its attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Fate {
    /// The task's next status.
    pub status: TaskStatus,
    /// How the attempt is recorded.
    pub outcome: AttemptOutcome,
    /// Whether the attempt counts against `max_attempts`.
    pub counted: bool,
    /// Delay before the task may be claimed again (for `Ready`).
    pub delay: Duration,
}

/// Decides the fate of a task (`Running` or `Cancelling`) whose attempt stopped
/// without success, after `failures` counted failures so far.
pub(crate) fn fate(
    backoff: &Backoff,
    status: TaskStatus,
    stop: Stop,
    failures: u32,
    max_attempts: u32,
    unit_random: f64,
) -> Fate {
    let settle = |status, outcome, counted, delay| Fate { status, outcome, counted, delay };
    if status == TaskStatus::Cancelling {
        let outcome =
            if matches!(stop, Stop::LeaseExpired(_)) { AttemptOutcome::Lost } else { AttemptOutcome::Cancelled };
        return settle(TaskStatus::Cancelled, outcome, false, Duration::ZERO);
    }
    match stop {
        Stop::Interrupted | Stop::Cancelled => {
            settle(TaskStatus::Ready, AttemptOutcome::Released, false, Duration::ZERO)
        }
        Stop::RateLimited(refusals) if refusals.before < refusals.allowed => {
            settle(TaskStatus::Ready, AttemptOutcome::Released, false, Duration::ZERO)
        }
        Stop::Failed(FailureClass::Permanent) => settle(TaskStatus::Dead, AttemptOutcome::Failed, true, Duration::ZERO),
        // The worker died, not the task: retried at once, and not counted.
        Stop::LeaseExpired(losses) if losses.before.saturating_add(1) >= losses.allowed => {
            settle(TaskStatus::Dead, AttemptOutcome::Lost, false, Duration::ZERO)
        }
        Stop::LeaseExpired(_) => settle(TaskStatus::Ready, AttemptOutcome::Lost, false, Duration::ZERO),
        Stop::Failed(FailureClass::Transient) | Stop::DeadlinePassed | Stop::RateLimited(_) => {
            let failures = failures.saturating_add(1);
            if failures >= max_attempts {
                return settle(TaskStatus::Dead, AttemptOutcome::Failed, true, Duration::ZERO);
            }
            settle(TaskStatus::Ready, AttemptOutcome::Failed, true, backoff.delay(failures, unit_random))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    const FIRST_LOSS: Stop = Stop::LeaseExpired(Allowance { before: 0, allowed: 3 });
    const THIRD_LOSS: Stop = Stop::LeaseExpired(Allowance { before: 2, allowed: 3 });

    fn seeds() -> Backoff {
        Backoff::for_task(&TaskDefaults::default(), None, None, None)
    }

    #[test]
    fn the_default_schedule_doubles_from_ten_seconds_and_caps_at_five_minutes() {
        let midpoint = 0.5; // no jitter
        let delays: Vec<u64> = (1..=7).map(|failure| seeds().delay(failure, midpoint).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for sample in [0.0, 0.25, 0.5, 0.75, 0.999_999] {
            let delay = seeds().delay(1, sample).as_secs_f64();
            assert!((8.0..=12.0).contains(&delay), "{delay}");
        }
        assert!((seeds().delay(1, 0.0).as_secs_f64() - 8.0).abs() < 1e-9);
    }

    #[test]
    fn task_overrides_replace_the_defaults() {
        let backoff = Backoff::for_task(&TaskDefaults::default(), Some(100), Some(1000), Some(3.0));
        let delays: Vec<u128> = (1..=4).map(|failure| backoff.delay(failure, 0.5).as_millis()).collect();
        assert_eq!(delays, [100, 300, 900, 1000]);
    }

    #[test]
    fn fates_follow_the_lifecycle_table() {
        use AttemptOutcome as O;
        use FailureClass::{Permanent, Transient};
        use TaskStatus as S;
        // (status, stop, failures so far, max attempts) -> (next status, outcome, counted)
        let table = [
            (S::Running, Stop::Failed(Transient), 0, 4, S::Ready, O::Failed, true),
            (S::Running, Stop::Failed(Transient), 3, 4, S::Dead, O::Failed, true),
            (S::Running, Stop::Failed(Permanent), 0, 4, S::Dead, O::Failed, true),
            (S::Running, FIRST_LOSS, 0, 4, S::Ready, O::Lost, false),
            (S::Running, FIRST_LOSS, 0, 1, S::Ready, O::Lost, false),
            (S::Running, THIRD_LOSS, 0, 4, S::Dead, O::Lost, false),
            (S::Running, Stop::DeadlinePassed, 1, 4, S::Ready, O::Failed, true),
            (S::Running, Stop::Interrupted, 3, 4, S::Ready, O::Released, false),
            (S::Running, Stop::RateLimited(Allowance { before: 19, allowed: 20 }), 3, 4, S::Ready, O::Released, false),
            (S::Running, Stop::RateLimited(Allowance { before: 20, allowed: 20 }), 0, 4, S::Ready, O::Failed, true),
            (S::Running, Stop::RateLimited(Allowance { before: 20, allowed: 20 }), 3, 4, S::Dead, O::Failed, true),
            (S::Running, Stop::Cancelled, 3, 4, S::Ready, O::Released, false),
            (S::Cancelling, Stop::Cancelled, 0, 4, S::Cancelled, O::Cancelled, false),
            (S::Cancelling, Stop::Failed(Transient), 0, 4, S::Cancelled, O::Cancelled, false),
            (S::Cancelling, Stop::Interrupted, 0, 4, S::Cancelled, O::Cancelled, false),
            (S::Cancelling, FIRST_LOSS, 0, 4, S::Cancelled, O::Lost, false),
        ];
        for (status, stop, failures, max, next, outcome, counted) in table {
            let got = fate(&seeds(), status, stop, failures, max, 0.5);
            assert_eq!(
                (got.status, got.outcome, got.counted),
                (next, outcome, counted),
                "{status} {stop:?} {failures}/{max}"
            );
        }
    }

    #[test]
    fn only_failures_back_off_and_a_lost_lease_is_retried_at_once() {
        let failed = fate(&seeds(), TaskStatus::Running, Stop::Failed(FailureClass::Transient), 0, 4, 0.5);
        assert_eq!(failed.delay, Duration::from_secs(10));
        let lost = fate(&seeds(), TaskStatus::Running, FIRST_LOSS, 3, 4, 0.5);
        assert_eq!(lost.delay, Duration::ZERO);
    }

    #[test]
    fn a_huge_failure_count_does_not_overflow() {
        assert_eq!(seeds().delay(u32::MAX, 0.5), Duration::from_secs(300));
        let got = fate(&seeds(), TaskStatus::Running, Stop::DeadlinePassed, u32::MAX, u32::MAX, 0.5);
        assert_eq!(got.status, TaskStatus::Dead);
        let losses = Allowance { before: u32::MAX, allowed: u32::MAX };
        assert_eq!(fate(&seeds(), TaskStatus::Running, Stop::LeaseExpired(losses), 0, 4, 0.5).status, TaskStatus::Dead);
    }

    fn any_stop() -> impl Strategy<Value = Stop> {
        prop_oneof![
            Just(Stop::Failed(FailureClass::Transient)),
            Just(Stop::Failed(FailureClass::Permanent)),
            Just(Stop::Interrupted),
            (0_u32..5, 1_u32..5).prop_map(|(before, allowed)| Stop::RateLimited(Allowance { before, allowed })),
            Just(Stop::Cancelled),
            (0_u32..5, 1_u32..5).prop_map(|(before, allowed)| Stop::LeaseExpired(Allowance { before, allowed })),
            Just(Stop::DeadlinePassed),
        ]
    }

    proptest! {
        #[test]
        fn delays_never_exceed_the_cap_plus_jitter(
            initial_ms in 1_i64..100_000, max_ms in 1_i64..1_000_000, multiplier in 1.0_f64..10.0,
            failures in 1_u32..200, sample in 0.0_f64..1.0,
        ) {
            let backoff = Backoff::for_task(&TaskDefaults::default(), Some(initial_ms), Some(max_ms), Some(multiplier));
            let delay = backoff.delay(failures, sample).as_secs_f64();
            let cap = (max_ms as f64 / 1000.0).min(initial_ms as f64 / 1000.0 * multiplier.powi(i32::try_from(failures - 1).unwrap()));
            prop_assert!(delay <= cap * 1.2 + 1e-6 && delay >= cap * 0.8 - 1e-6, "{delay} vs {cap}");
        }

        #[test]
        fn delays_grow_with_failures_without_jitter(failures in 1_u32..100) {
            prop_assert!(seeds().delay(failures, 0.5) <= seeds().delay(failures + 1, 0.5));
        }

        #[test]
        fn only_counted_stops_spend_the_budget_and_the_budget_is_final(
            running in any::<bool>(), stop in any_stop(), failures in 0_u32..10, max in 1_u32..10, sample in 0.0_f64..1.0,
        ) {
            let status = if running { TaskStatus::Running } else { TaskStatus::Cancelling };
            let got = fate(&seeds(), status, stop, failures, max, sample);
            // A cancelled task never comes back; a running one never becomes cancelled by a failure.
            prop_assert_eq!(got.status == TaskStatus::Cancelled, !running);
            // Hand-backs and cancels are never counted.
            let refused_within = matches!(stop, Stop::RateLimited(refusals) if refusals.before < refusals.allowed);
            if matches!(stop, Stop::Interrupted | Stop::Cancelled) || refused_within || !running {
                prop_assert!(!got.counted);
            }
            // A counted stop that leaves failures at or past the budget is final.
            if got.counted && failures + 1 >= max {
                prop_assert_eq!(got.status, TaskStatus::Dead);
            }
            // A lost attempt is never counted.
            if matches!(stop, Stop::LeaseExpired(_)) {
                prop_assert!(!got.counted);
            }
            // Only a permanent failure, a spent budget or too many losses kills.
            if got.status == TaskStatus::Dead {
                let spent_losses = matches!(stop, Stop::LeaseExpired(losses) if losses.before + 1 >= losses.allowed);
                prop_assert!(stop == Stop::Failed(FailureClass::Permanent) || failures + 1 >= max || spent_losses);
            }
            // Only retries wait.
            if got.status != TaskStatus::Ready {
                prop_assert_eq!(got.delay, Duration::ZERO);
            }
        }
    }
}
