//! One rate limiter type whatever holds the budgets: this process ([`RateLimiter`]) or Redis
//! ([`SharedRateLimiter`]), so the gateway and the API choose once, at start-up.

use keel_core::Clock;
use keel_resilience::{Decision, Quota, RateLimiter};

use crate::{SharedLimits, SharedRateLimiter};

/// Where budgets live.
#[derive(Clone)]
pub enum Limits {
    /// In this process: each instance has its own budgets.
    Local(Clock),
    /// In Redis: every instance spends the same budgets.
    Shared(SharedLimits),
}

impl Limits {
    /// A limiter granting `quota` per key; with [`Limits::Shared`], limiters of the same
    /// `family` share their keys' budgets across instances.
    pub fn limiter(&self, family: &str, quota: Quota) -> Limiter {
        match self {
            Self::Local(clock) => Limiter::Local(RateLimiter::new(quota, clock.clone())),
            Self::Shared(shared) => Limiter::Shared(shared.limiter(family, quota)),
        }
    }

    /// `local` or `redis`.
    pub fn backend(&self) -> &'static str {
        match self {
            Self::Local(_) => "local",
            Self::Shared(_) => "redis",
        }
    }
}

/// A rate limiter over many keys, in this process or in Redis.
pub enum Limiter {
    /// Budgets in this process.
    Local(RateLimiter),
    /// Budgets in Redis.
    Shared(SharedRateLimiter),
}

impl Limiter {
    /// Asks to spend `cost` (at least 1) of `key`'s budget now.
    pub async fn check(&self, key: &str, cost: u32) -> Decision {
        match self {
            Self::Local(l) => l.check(key, cost),
            Self::Shared(l) => l.check(key, cost).await,
        }
    }

    /// The quota each key gets.
    pub fn quota(&self) -> Quota {
        match self {
            Self::Local(l) => l.quota(),
            Self::Shared(l) => l.quota(),
        }
    }

    /// Forgets idle keys of a local limiter (Redis expires its keys by itself); returns how many
    /// keys it still keeps.
    pub fn forget_idle(&self) -> usize {
        match self {
            Self::Local(l) => l.forget_idle(),
            Self::Shared(_) => 0,
        }
    }
}
