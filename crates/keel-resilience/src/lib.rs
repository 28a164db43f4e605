//! Resilience primitives, usable without the rest of keel.
//!
//! - [`CircuitBreaker`]: stops calls to a failing dependency for a cool-down, then lets one
//!   trial call through before closing again.
//! - [`RateLimiter`]: a keyed GCRA rate limiter (a steady rate with bursts, exact at any time
//!   scale).
//!
//! - [`RateLimitLayer`] and [`BreakerLayer`]: both as tower layers for HTTP services (an axum
//!   app can put them on its router without the rest of keel).
//!
//! Time comes from a [`keel_core::Clock`], so tests move it instead of sleeping.

mod breaker;
mod layers;
mod limiter;

pub use breaker::{BreakerConfig, BreakerState, Call, CircuitBreaker, RatePolicy, Window};
pub use layers::{Breaker, BreakerLayer, KeyFn, RateLimit, RateLimitLayer};
pub use limiter::{Decision, Quota, RateLimiter};
