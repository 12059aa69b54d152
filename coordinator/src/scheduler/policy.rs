//! Pure retry policy: what becomes of a failed attempt, and how long to wait
//! before the next one (exponential backoff with jitter, capped).

use std::time::Duration;

use crate::config::TaskDefaults;

/// Whether a failure is worth retrying.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureClass {
    /// Retry while attempts remain.
    Transient,
    /// Never retry.
    Permanent,
}

/// What happens to a task after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Queue it again after this delay.
    Retry(Duration),
    /// Send it to the dead-letter queue.
    Dead,
}

/// Decides the fate of a task whose attempt number `attempts` (from 1) failed.
/// `unit_random` is a uniform sample from [0, 1) that drives the jitter.
pub fn decide(
    policy: &TaskDefaults,
    class: FailureClass,
    attempts: u32,
    max_attempts: u32,
    unit_random: f64,
) -> Decision {
    if class == FailureClass::Permanent || attempts >= max_attempts {
        return Decision::Dead;
    }
    Decision::Retry(backoff(policy, attempts, unit_random))
}

/// Delay before the retry that follows failed attempt number `attempts` (from 1):
/// `initial × multiplier^(attempts-1)`, capped at `max`, then spread by ±jitter.
pub fn backoff(policy: &TaskDefaults, attempts: u32, unit_random: f64) -> Duration {
    let exponent = i32::try_from(attempts.saturating_sub(1)).unwrap_or(i32::MAX);
    let base = policy.backoff_initial.as_secs_f64() * policy.backoff_multiplier.powi(exponent);
    let capped = base.min(policy.backoff_max.as_secs_f64());
    let spread = 1.0 + policy.backoff_jitter * (2.0 * unit_random.clamp(0.0, 1.0) - 1.0);
    Duration::from_secs_f64((capped * spread).max(0.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seeds() -> TaskDefaults {
        TaskDefaults::default()
    }

    #[test]
    fn the_default_schedule_doubles_from_ten_seconds_and_caps_at_five_minutes() {
        let midpoint = 0.5; // no jitter
        let delays: Vec<u64> = (1..=7).map(|attempt| backoff(&seeds(), attempt, midpoint).as_secs()).collect();
        assert_eq!(delays, [10, 20, 40, 80, 160, 300, 300]);
    }

    #[test]
    fn jitter_stays_within_twenty_percent() {
        for sample in [0.0, 0.25, 0.5, 0.75, 0.999_999] {
            let delay = backoff(&seeds(), 1, sample).as_secs_f64();
            assert!((8.0..=12.0).contains(&delay), "{delay}");
        }
        assert!((backoff(&seeds(), 1, 0.0).as_secs_f64() - 8.0).abs() < 1e-9);
    }

    #[test]
    fn decisions_follow_class_and_remaining_attempts() {
        let table = [
            (FailureClass::Transient, 1, 4, true),
            (FailureClass::Transient, 3, 4, true),
            (FailureClass::Transient, 4, 4, false),
            (FailureClass::Permanent, 1, 4, false),
            (FailureClass::Transient, 1, 1, false),
        ];
        for (class, attempts, max, retried) in table {
            let decision = decide(&seeds(), class, attempts, max, 0.5);
            assert_eq!(matches!(decision, Decision::Retry(_)), retried, "{class:?} {attempts}/{max}");
        }
    }

    #[test]
    fn a_huge_attempt_number_does_not_overflow() {
        assert_eq!(backoff(&seeds(), u32::MAX, 0.5), Duration::from_secs(300));
    }
}
