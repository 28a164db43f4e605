//! A circuit breaker: closed (calls pass) → open (calls refused for `cool_down`) → half-open
//! (`half_open_probes` trial calls) → closed when they all succeed, open again when one fails.
//!
//! What opens it is either `failure_threshold` failures in a row (the default), or — with a
//! [`RatePolicy`] — the share of failed (or slow) calls among the recent ones: the last N calls
//! or the calls of the last T, once at least `minimum_calls` were made.

use std::collections::VecDeque;
use std::ops::Deref;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keel_core::Clock;
use serde::Serialize;

/// When a breaker opens and for how long.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BreakerConfig {
    /// Failures in a row that open the breaker (at least 1); not used with a `rate` policy.
    pub failure_threshold: u32,
    /// How long an open breaker refuses calls before it lets trials through.
    pub cool_down: Duration,
    /// Open on the failure (or slow-call) rate over a window of recent calls instead.
    pub rate: Option<RatePolicy>,
    /// Trial calls let through half-open, one after another or at once; all must succeed for
    /// the breaker to close (at least 1).
    pub half_open_probes: u32,
}

impl Default for BreakerConfig {
    fn default() -> Self {
        Self {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
            rate: None,
            half_open_probes: 1,
        }
    }
}

/// Opening on a rate: the share of failed or slow calls among the recent ones.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RatePolicy {
    /// Which calls count.
    pub window: Window,
    /// Fewer calls in the window never open the breaker.
    pub minimum_calls: u32,
    /// Share of failed calls (0–1] that opens the breaker.
    pub failure_rate: f64,
    /// A call taking at least this long is slow (whatever its outcome); `None` = none are.
    pub slow_call: Option<Duration>,
    /// Share of slow calls (0–1] that opens the breaker.
    pub slow_rate: f64,
}

/// The calls a rate is taken over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Window {
    /// The last N calls.
    Calls(u32),
    /// The calls of the last period (counted in one-second steps).
    Time(Duration),
}

/// Where a breaker is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum BreakerState {
    /// Calls pass.
    Closed,
    /// Calls are refused until the cool-down is over.
    Open,
    /// Trial calls may pass; their outcome decides.
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

/// A call a breaker let through (see [`CircuitBreaker::call`]).
#[must_use = "report the call with `finish`"]
pub struct Call<B: Deref<Target = CircuitBreaker>> {
    breaker: Option<B>,
}

impl<B: Deref<Target = CircuitBreaker>> Call<B> {
    /// Reports how the call went: whether it `failed`, and how long it took (slow calls count
    /// against a rate policy). Returns the new state when the call moved the breaker.
    pub fn finish(mut self, failed: bool, took: Duration) -> Option<BreakerState> {
        self.breaker.take()?.on_call(failed, took)
    }
}

impl<B: Deref<Target = CircuitBreaker>> Drop for Call<B> {
    fn drop(&mut self) {
        if let Some(breaker) = self.breaker.take()
            && breaker.trial_in_flight()
        {
            breaker.on_call(true, Duration::ZERO);
        }
    }
}

/// A circuit breaker. Share it behind an `Arc`; every method takes `&self`.
pub struct CircuitBreaker {
    config: BreakerConfig,
    clock: Clock,
    /// The time window counts seconds from here.
    origin: Instant,
    inner: Mutex<Inner>,
}

struct Inner {
    failures: u32,
    /// When the breaker opened; `None` while closed.
    opened_at: Option<Instant>,
    /// Half-open trials let through and not yet reported.
    trials_in_flight: u32,
    /// Half-open trials that succeeded.
    trials_passed: u32,
    /// Times the breaker opened.
    opened: u64,
    /// Recent calls, for a rate policy.
    window: Recent,
}

/// One call's outcome in the window.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    calls: u32,
    failed: u32,
    slow: u32,
}

/// Recent calls: one tally per call (count window) or per second (time window).
#[derive(Default)]
struct Recent {
    slots: VecDeque<(u64, Tally)>,
    total: Tally,
}

impl Recent {
    fn add(&mut self, window: Window, second: u64, call: Tally) {
        match window {
            Window::Calls(n) => {
                self.slots.push_back((second, call));
                while self.slots.len() > n.max(1) as usize {
                    self.drop_front();
                }
            }
            Window::Time(period) => {
                self.expire(period, second);
                match self.slots.back_mut() {
                    Some((s, t)) if *s == second => {
                        t.calls += call.calls;
                        t.failed += call.failed;
                        t.slow += call.slow;
                    }
                    _ => self.slots.push_back((second, call)),
                }
            }
        }
        self.total.calls += call.calls;
        self.total.failed += call.failed;
        self.total.slow += call.slow;
    }

    fn expire(&mut self, period: Duration, second: u64) {
        let span = period.as_secs().max(1);
        while self.slots.front().is_some_and(|(s, _)| *s + span <= second) {
            self.drop_front();
        }
    }

    fn drop_front(&mut self) {
        if let Some((_, t)) = self.slots.pop_front() {
            self.total.calls -= t.calls;
            self.total.failed -= t.failed;
            self.total.slow -= t.slow;
        }
    }

    fn clear(&mut self) {
        self.slots.clear();
        self.total = Tally::default();
    }
}

impl CircuitBreaker {
    /// A closed breaker.
    pub fn new(config: BreakerConfig, clock: Clock) -> Self {
        Self {
            config: BreakerConfig {
                failure_threshold: config.failure_threshold.max(1),
                half_open_probes: config.half_open_probes.max(1),
                ..config
            },
            origin: clock.now(),
            clock,
            inner: Mutex::new(Inner {
                failures: 0,
                opened_at: None,
                trials_in_flight: 0,
                trials_passed: 0,
                opened: 0,
                window: Recent::default(),
            }),
        }
    }

    /// The breaker's settings.
    pub fn config(&self) -> &BreakerConfig {
        &self.config
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
    /// [`on_call`](Self::on_call), [`on_success`](Self::on_success) or
    /// [`on_failure`](Self::on_failure)), or `Err` with how long until asking again makes sense.
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
            BreakerState::HalfOpen => {
                let probes = self.config.half_open_probes;
                if inner.trials_in_flight + inner.trials_passed >= probes {
                    Err(Duration::ZERO)
                } else {
                    inner.trials_in_flight += 1;
                    Ok(())
                }
            }
        }
    }

    /// Asks to make a call as [`try_acquire`](Self::try_acquire) does, returning a [`Call`]
    /// to report it with. A `Call` dropped without a report (its caller gave up: a request
    /// cancelled mid-flight) fails the breaker's half-open trial if it was one, so the breaker
    /// never waits forever for a trial that will not report. `breaker` is any handle on it
    /// (`&CircuitBreaker`, `Arc<CircuitBreaker>`).
    pub fn call<B: Deref<Target = CircuitBreaker>>(breaker: B) -> Result<Call<B>, Duration> {
        breaker.try_acquire()?;
        Ok(Call {
            breaker: Some(breaker),
        })
    }

    /// Reports a successful call: in a row-count breaker, closes it.
    pub fn on_success(&self) {
        self.on_call(false, Duration::ZERO);
    }

    /// Reports a failed call.
    pub fn on_failure(&self) {
        self.on_call(true, Duration::ZERO);
    }

    /// Reports a call that `failed` or not and took `took` (slow calls count against a rate
    /// policy). Returns the new state when the call moved the breaker.
    pub fn on_call(&self, failed: bool, took: Duration) -> Option<BreakerState> {
        let mut inner = self.lock();
        let before = self.state_of(&inner);
        let slow = self
            .config
            .rate
            .and_then(|r| r.slow_call)
            .is_some_and(|limit| took >= limit);
        if before == BreakerState::HalfOpen || inner.trials_in_flight > 0 {
            // A trial's outcome decides.
            inner.trials_in_flight = inner.trials_in_flight.saturating_sub(1);
            if failed || slow {
                self.open(&mut inner);
            } else {
                inner.trials_passed += 1;
                if inner.trials_passed >= self.config.half_open_probes {
                    self.close(&mut inner);
                }
            }
        } else if before == BreakerState::Closed {
            match self.config.rate {
                None if failed => {
                    inner.failures = inner.failures.saturating_add(1);
                    if inner.failures >= self.config.failure_threshold {
                        self.open(&mut inner);
                    }
                }
                None => inner.failures = 0,
                Some(rate) => {
                    inner.failures = if failed {
                        inner.failures.saturating_add(1)
                    } else {
                        0
                    };
                    let second = self.clock.now().duration_since(self.origin).as_secs();
                    let call = Tally {
                        calls: 1,
                        failed: u32::from(failed),
                        slow: u32::from(slow),
                    };
                    inner.window.add(rate.window, second, call);
                    if let Window::Time(period) = rate.window {
                        inner.window.expire(period, second);
                    }
                    let t = inner.window.total;
                    let share = |n: u32| f64::from(n) / f64::from(t.calls.max(1));
                    let tripped = t.calls >= rate.minimum_calls.max(1)
                        && (share(t.failed) >= rate.failure_rate
                            || (rate.slow_call.is_some() && share(t.slow) >= rate.slow_rate));
                    if tripped {
                        self.open(&mut inner);
                    }
                }
            }
        }
        // (An outcome reported while open, of a call let through before it opened, is ignored.)
        let after = self.state_of(&inner);
        (after != before).then_some(after)
    }

    fn open(&self, inner: &mut Inner) {
        inner.opened = inner.opened.saturating_add(1);
        inner.opened_at = Some(self.clock.now());
        inner.trials_in_flight = 0;
        inner.trials_passed = 0;
        inner.window.clear();
    }

    fn close(&self, inner: &mut Inner) {
        inner.failures = 0;
        inner.opened_at = None;
        inner.trials_in_flight = 0;
        inner.trials_passed = 0;
        inner.window.clear();
    }

    /// Whether a half-open trial call is in flight.
    pub fn trial_in_flight(&self) -> bool {
        self.lock().trials_in_flight > 0
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

    /// Calls, failures and slow calls in the rate window now.
    pub fn window(&self) -> (u32, u32, u32) {
        let t = self.lock().window.total;
        (t.calls, t.failed, t.slow)
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
            ..BreakerConfig::default()
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
    fn a_call_dropped_unreported_fails_a_trial_and_nothing_else() {
        let (b, time) = breaker();
        // Closed: an abandoned call changes nothing.
        drop(CircuitBreaker::call(&b).unwrap());
        b.on_failure();
        b.on_failure();
        assert_eq!(b.state(), BreakerState::Closed, "not counted as a failure");
        b.on_failure();
        assert_eq!(b.state(), BreakerState::Open);
        // Half-open: the trial's caller gives up; the breaker opens again instead of waiting
        // for a report forever.
        time.advance(Duration::from_secs(10));
        let trial = CircuitBreaker::call(&b).unwrap();
        assert_eq!(
            CircuitBreaker::call(&b).err(),
            Some(Duration::ZERO),
            "one trial at a time"
        );
        drop(trial);
        assert_eq!(b.state(), BreakerState::Open);
        time.advance(Duration::from_secs(10));
        let trial = CircuitBreaker::call(&b).unwrap();
        assert_eq!(
            trial.finish(false, Duration::ZERO),
            Some(BreakerState::Closed)
        );
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

    fn rate_breaker(window: Window) -> (CircuitBreaker, keel_core::MockClock) {
        let (clock, time) = Clock::mock();
        let config = BreakerConfig {
            cool_down: Duration::from_secs(10),
            rate: Some(RatePolicy {
                window,
                minimum_calls: 4,
                failure_rate: 0.5,
                slow_call: Some(Duration::from_secs(2)),
                slow_rate: 0.75,
            }),
            half_open_probes: 2,
            ..BreakerConfig::default()
        };
        (CircuitBreaker::new(config, clock), time)
    }

    #[test]
    fn a_count_window_opens_on_the_failure_rate_once_enough_calls_were_made() {
        let (b, _) = rate_breaker(Window::Calls(6));
        let ok = Duration::from_millis(10);
        assert_eq!(b.on_call(true, ok), None);
        assert_eq!(b.on_call(true, ok), None);
        assert_eq!(b.on_call(true, ok), None, "3 calls: under minimum_calls");
        assert_eq!(
            b.on_call(false, ok),
            Some(BreakerState::Open),
            "3 of 4 failed"
        );
        assert_eq!(b.window(), (0, 0, 0), "the window starts over");

        // Old calls leave a count window.
        let (b, _) = rate_breaker(Window::Calls(4));
        for failed in [true, false, false, false, false, false] {
            assert_eq!(b.on_call(failed, ok), None);
        }
        assert_eq!(b.window(), (4, 0, 0));
        assert_eq!(b.on_call(true, ok), None, "1 of 4");
        assert_eq!(b.on_call(true, ok), Some(BreakerState::Open), "2 of 4");
    }

    #[test]
    fn slow_calls_open_it_too() {
        let (b, _) = rate_breaker(Window::Calls(10));
        let slow = Duration::from_secs(3);
        for _ in 0..3 {
            assert_eq!(b.on_call(false, slow), None);
        }
        assert_eq!(b.on_call(false, slow), Some(BreakerState::Open));
    }

    #[test]
    fn a_time_window_forgets_calls_older_than_its_period() {
        let (b, time) = rate_breaker(Window::Time(Duration::from_secs(10)));
        let ok = Duration::ZERO;
        for _ in 0..3 {
            b.on_call(true, ok);
        }
        time.advance(Duration::from_secs(11));
        b.on_call(false, ok);
        assert_eq!(b.window(), (1, 0, 0), "the failures left the window");
        for _ in 0..3 {
            b.on_call(false, ok);
        }
        assert_eq!(b.on_call(true, ok), None, "1 of 5");
        assert_eq!(b.on_call(true, ok), None, "2 of 6");
        assert_eq!(b.on_call(true, ok), None, "3 of 7");
        assert_eq!(b.on_call(true, ok), Some(BreakerState::Open), "4 of 8");
    }

    #[test]
    fn half_open_needs_every_probe_to_succeed() {
        let (b, time) = rate_breaker(Window::Calls(4));
        for _ in 0..4 {
            b.on_call(true, Duration::ZERO);
        }
        assert_eq!(b.state(), BreakerState::Open);
        time.advance(Duration::from_secs(10));
        assert_eq!(b.try_acquire(), Ok(()));
        assert_eq!(b.try_acquire(), Ok(()));
        assert_eq!(b.try_acquire(), Err(Duration::ZERO), "two probes at most");
        assert_eq!(b.on_call(false, Duration::ZERO), None);
        assert_eq!(b.on_call(false, Duration::ZERO), Some(BreakerState::Closed));
        for _ in 0..4 {
            b.on_call(true, Duration::ZERO);
        }
        time.advance(Duration::from_secs(10));
        assert_eq!(b.try_acquire(), Ok(()));
        assert_eq!(b.on_call(true, Duration::ZERO), Some(BreakerState::Open));
        assert_eq!(b.times_opened(), 3);
    }
}
