//! A circuit breaker toward the upstream, for one route or shared by the routes that inherit
//! the default rule's: failures are connection errors, timeouts and 5xx answers.

use std::time::Duration;

use keel_core::Clock;
use keel_resilience::{BreakerConfig, BreakerState, Call, CircuitBreaker, RatePolicy, Window};
use serde::Serialize;

use crate::config::{BreakerPolicy, GatewayConfigError};

/// A named breaker.
pub(crate) struct RouteBreaker {
    /// The rule's name, or `default` for the shared one.
    pub(crate) name: String,
    pub(crate) breaker: CircuitBreaker,
}

impl std::fmt::Debug for RouteBreaker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouteBreaker")
            .field("name", &self.name)
            .finish()
    }
}

/// A breaker's state, for the API.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct BreakerStatus {
    /// The rule it belongs to (`default`: shared by the routes without their own).
    pub name: String,
    /// `closed`, `open` or `half_open`.
    pub state: BreakerState,
    /// Seconds until an open breaker lets trials through.
    pub open_for_seconds: f64,
    /// Calls, failed calls and slow calls in the current window.
    pub window_calls: u32,
    /// Failed calls in the window.
    pub window_failed: u32,
    /// Slow calls in the window.
    pub window_slow: u32,
    /// Times it has opened since keel started.
    pub times_opened: u64,
}

impl RouteBreaker {
    pub(crate) fn compile(
        name: &str,
        policy: &BreakerPolicy,
        clock: Clock,
        field: &dyn Fn(&str) -> String,
    ) -> Result<Self, GatewayConfigError> {
        let err = |f: &str, reason: &str| GatewayConfigError::new(field(f), reason);
        let rate_ok = |r: f64| r > 0.0 && r <= 1.0;
        if !rate_ok(policy.failure_rate) {
            return Err(err("breaker.failure_rate", "must be above 0 and at most 1"));
        }
        if !rate_ok(policy.slow_rate) {
            return Err(err("breaker.slow_rate", "must be above 0 and at most 1"));
        }
        if policy.window.is_none() && policy.window_calls == 0 {
            return Err(err(
                "breaker.window_calls",
                "must be at least 1 (or set `window`)",
            ));
        }
        if policy
            .window
            .is_some_and(|w| w.get() < Duration::from_secs(1))
        {
            return Err(err("breaker.window", "must be at least 1s"));
        }
        if policy.open_for.get().is_zero() {
            return Err(err("breaker.open_for", "must be greater than 0"));
        }
        if policy.half_open_probes == 0 {
            return Err(err("breaker.half_open_probes", "must be at least 1"));
        }
        let window = match policy.window {
            Some(period) => Window::Time(period.get()),
            None => Window::Calls(policy.window_calls),
        };
        let config = BreakerConfig {
            cool_down: policy.open_for.get(),
            rate: Some(RatePolicy {
                window,
                minimum_calls: policy.minimum_calls.max(1),
                failure_rate: policy.failure_rate,
                slow_call: policy.slow_call.map(|d| d.get()),
                slow_rate: policy.slow_rate,
            }),
            half_open_probes: policy.half_open_probes,
            ..BreakerConfig::default()
        };
        Ok(Self {
            name: name.to_owned(),
            breaker: CircuitBreaker::new(config, clock),
        })
    }

    /// Records one upstream call; logs a state change.
    pub(crate) fn record(&self, call: Call<&CircuitBreaker>, failed: bool, took: Duration) {
        if let Some(state) = call.finish(failed, took) {
            match state {
                BreakerState::Open => tracing::warn!(
                    breaker = %self.name,
                    open_for = ?self.breaker.config().cool_down,
                    "gateway breaker opened: the upstream is failing"
                ),
                other => {
                    tracing::info!(breaker = %self.name, state = other.as_str(), "gateway breaker changed")
                }
            }
        }
    }

    pub(crate) fn status(&self) -> BreakerStatus {
        let (calls, failed, slow) = self.breaker.window();
        BreakerStatus {
            name: self.name.clone(),
            state: self.breaker.state(),
            open_for_seconds: self.breaker.open_for().as_secs_f64(),
            window_calls: calls,
            window_failed: failed,
            window_slow: slow,
            times_opened: self.breaker.times_opened(),
        }
    }
}
