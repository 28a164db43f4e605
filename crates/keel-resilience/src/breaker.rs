//! A circuit breaker: closed (calls pass) → open after `failure_threshold` failures in a row
//! (calls refused for `cool_down`) → half-open (one trial call at a time) → closed on its
//! success, open again on its failure.

use std::sync::Mutex;
use std::time::{Duration, Instant};

use keel_core::Clock;
use serde::Serialize;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker (at least 1).
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before it lets a trial through.
    pub cool_down: Duration,
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are refused until the cool-down is over.
    Open,
    /// One trial call may pass; its outcome decides.
    HalfOpen,
}

impl BreakerState {
    /// `closed`, `open` or `half_open`.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Closed => "closed",
            Self::Open => "open",
            Self::HalfOpen => "half_open",
        }
    }
}

/// A circuit breaker. Share it behind an `Arc`; every method takes `&self`.
pub struct CircuitBreaker {
    config: BreakerConfig,
    clock: Clock,
    inner: Mutex<Inner>,
}

struct Inner {
    failures: u32,
    /// When the breaker opened; `None` while closed.
    opened_at: Option<Instant>,
    /// A half-open trial call is in flight.
    trial: bool,
    /// Times the breaker opened.
    opened: u64,
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig, clock: Clock) -> Self {
        Self {
            config: BreakerConfig {
                failure_threshold: config.failure_threshold.max(1),
                ..config
            },
            clock,
            inner: Mutex::new(Inner {
                failures: 0,
                opened_at: None,
                trial: false,
                opened: 0,
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where the breaker is now.
    pub fn state(&self) -> BreakerState {
        let inner = self.lock();
        self.state_of(&inner)
    }

    fn state_of(&self, inner: &Inner) -> BreakerState {
        match inner.opened_at {
            None => BreakerState::Closed,
            Some(at) if self.clock.now().duration_since(at) < self.config.cool_down => {
                BreakerState::Open
            }
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Asks to make a call: `Ok` when it may go ahead (then report it with
    /// [`on_success`](Self::on_success) or [`on_failure`](Self::on_failure)), or `Err` with how
    /// long until asking again makes sense.
    pub fn try_acquire(&self) -> Result<(), Duration> {
        let mut inner = self.lock();
        match self.state_of(&inner) {
            BreakerState::Closed => Ok(()),
            BreakerState::Open => {
                let since = inner
                    .opened_at
                    .map_or(Duration::ZERO, |at| self.clock.now().duration_since(at));
                Err(self.config.cool_down.saturating_sub(since))
            }
            BreakerState::HalfOpen if inner.trial => Err(Duration::ZERO),
            BreakerState::HalfOpen => {
                inner.trial = true;
                Ok(())
            }
        }
    }

    /// Reports a successful call: closes the breaker.
    pub fn on_success(&self) {
        let mut inner = self.lock();
        inner.failures = 0;
        inner.opened_at = None;
        inner.trial = false;
    }

    /// Reports a failed call: opens the breaker at the threshold, or again after a trial.
    pub fn on_failure(&self) {
        let mut inner = self.lock();
        inner.failures = inner.failures.saturating_add(1);
        let was_trial = std::mem::take(&mut inner.trial);
        if was_trial || inner.failures >= self.config.failure_threshold {
            if inner.opened_at.is_none() || was_trial {
                inner.opened = inner.opened.saturating_add(1);
            }
            inner.opened_at = Some(self.clock.now());
        }
    }

    /// Whether a half-open trial call is in flight.
    pub fn trial_in_flight(&self) -> bool {
        self.lock().trial
    }

    /// How long the breaker stays open (zero unless open).
    pub fn open_for(&self) -> Duration {
        let inner = self.lock();
        match (self.state_of(&inner), inner.opened_at) {
            (BreakerState::Open, Some(at)) => self
                .config
                .cool_down
                .saturating_sub(self.clock.now().duration_since(at)),
            _ => Duration::ZERO,
        }
    }

    /// Failures in a row so far.
    pub fn failures(&self) -> u32 {
        self.lock().failures
    }

    /// Times the breaker has opened.
    pub fn times_opened(&self) -> u64 {
        self.lock().opened
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn breaker() -> (CircuitBreaker, keel_core::MockClock) {
        let (clock, time) = Clock::mock();
        let config = BreakerConfig {
            failure_threshold: 3,
            cool_down: Duration::from_secs(10),
        };
        (CircuitBreaker::new(config, clock), time)
    }

    #[test]
    fn opens_after_the_threshold_and_refuses_for_the_cool_down() {
        let (b, time) = breaker();
        for _ in 0..2 {
            assert_eq!(b.try_acquire(), Ok(()));
            b.on_failure();
        }
        assert_eq!(b.state(), BreakerState::Closed);
        b.on_failure();
        assert_eq!(b.state(), BreakerState::Open);
        assert_eq!(b.try_acquire(), Err(Duration::from_secs(10)));
        time.advance(Duration::from_secs(4));
        assert_eq!(b.try_acquire(), Err(Duration::from_secs(6)));
        assert_eq!(b.open_for(), Duration::from_secs(6));
        assert_eq!(b.times_opened(), 1);
    }

    #[test]
    fn a_success_resets_the_count() {
        let (b, _) = breaker();
        b.on_failure();
        b.on_failure();
        b.on_success();
        b.on_failure();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.failures(), 1);
    }

    #[test]
    fn half_open_lets_one_trial_through_and_its_outcome_decides() {
        let (b, time) = breaker();
        for _ in 0..3 {
            b.on_failure();
        }
        time.advance(Duration::from_secs(10));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        assert_eq!(b.try_acquire(), Ok(()));
        assert!(b.trial_in_flight());
        assert_eq!(b.try_acquire(), Err(Duration::ZERO), "one trial at a time");
        b.on_failure();
        assert_eq!(
            b.state(),
            BreakerState::Open,
            "the trial failed: open again"
        );
        assert_eq!(b.times_opened(), 2);
        time.advance(Duration::from_secs(10));
        assert_eq!(b.try_acquire(), Ok(()));
        b.on_success();
        assert_eq!(b.state(), BreakerState::Closed);
        assert_eq!(b.try_acquire(), Ok(()));
    }
}
