//! Resilience primitives, usable without the rest of keel.
//!
//! - [`CircuitBreaker`]: stops calls to a failing dependency for a cool-down, then lets one
//!   trial call through before closing again. Time comes from a [`keel_core::Clock`].

mod breaker;

pub use breaker::{BreakerConfig, BreakerState, CircuitBreaker};
