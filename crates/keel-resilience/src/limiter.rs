//! A keyed rate limiter using GCRA (the generic cell rate algorithm): per key, one timestamp —
//! the theoretical arrival time (TAT) of the next request at the steady rate. A request of cost
//! `c` is admitted when `max(TAT, now) + c × interval` is no further ahead of now than the
//! burst allows; admitting it moves the TAT there. No counters and no windows to reset: exact
//! at any time scale, and the same arithmetic a Redis script can run for many instances.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use keel_core::Clock;
use serde::Serialize;

/// Keys are spread over this many locks.
const SHARDS: usize = 64;

/// Some keys and their theoretical arrival times.
/// foldhash, not SipHash: keys are hashed twice per check (the shard, then the map), and a
/// per-process random seed still keeps them unpredictable.
type Shard = Mutex<HashMap<Box<str>, Instant, foldhash::fast::RandomState>>;

/// How much is allowed: on average `max` per `per`, with up to `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Quota {
    /// Requests per period (at least 1).
    pub max: u32,
    /// The period.
    pub per: Duration,
    /// Requests allowed back to back after a quiet spell (at least 1; commonly `max`).
    pub burst: u32,
}

impl Quota {
    /// The time one request uses up at the steady rate.
    pub fn interval(&self) -> Duration {
        self.per / self.max.max(1)
    }

    /// How far ahead of now the TAT may run: the burst's worth of intervals.
    pub fn tolerance(&self) -> Duration {
        self.interval() * self.burst.max(1)
    }

    /// The decision for a request of `cost` when the key's TAT is `current` ahead of now
    /// (zero for a key at a full burst): allowed when the new TAT stays within the tolerance.
    /// Shared by every backend, so they answer alike.
    pub fn decide(&self, current: Duration, cost: u32) -> Decision {
        let interval = self.interval();
        let tolerance = self.tolerance();
        let ahead = current + interval * cost.max(1);
        let remaining = |ahead: Duration| {
            let left = tolerance.saturating_sub(ahead);
            u32::try_from(left.as_nanos() / interval.as_nanos().max(1)).unwrap_or(u32::MAX)
        };
        if ahead <= tolerance {
            Decision {
                allowed: true,
                limit: self.burst,
                remaining: remaining(ahead),
                retry_after: Duration::ZERO,
                reset_after: ahead,
            }
        } else {
            Decision {
                allowed: false,
                limit: self.burst,
                remaining: remaining(current),
                retry_after: ahead - tolerance,
                reset_after: current,
            }
        }
    }
}

/// The answer to one request.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Decision {
    /// Whether the request may go ahead (its cost was taken).
    pub allowed: bool,
    /// The burst size: requests allowed back to back.
    pub limit: u32,
    /// Requests of cost 1 that would still be allowed right now.
    pub remaining: u32,
    /// When refused, how long until the same request would be allowed.
    pub retry_after: Duration,
    /// How long until the key is back to a full burst.
    pub reset_after: Duration,
}

/// A rate limiter over many keys (a client address, a user, an API key). Share it behind an
/// `Arc`; `check` takes `&self`.
pub struct RateLimiter {
    quota: Quota,
    clock: Clock,
    hasher: foldhash::fast::RandomState,
    shards: Box<[Shard]>,
}

impl RateLimiter {
    /// A limiter granting `quota` to each key.
    pub fn new(quota: Quota, clock: Clock) -> Self {
        Self {
            quota: Quota {
                max: quota.max.max(1),
                burst: quota.burst.max(1),
                ..quota
            },
            clock,
            hasher: foldhash::fast::RandomState::default(),
            shards: (0..SHARDS)
                .map(|_| Mutex::new(HashMap::with_hasher(Default::default())))
                .collect(),
        }
    }

    /// The quota each key gets.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    fn shard(&self, key: &str) -> &Shard {
        &self.shards[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Asks to spend `cost` (at least 1) of `key`'s quota now. A cost larger than the burst is
    /// never allowed.
    pub fn check(&self, key: &str, cost: u32) -> Decision {
        let cost = cost.max(1);
        let now = self.clock.now();
        let interval = self.quota.interval();
        let tolerance = self.quota.tolerance();
        let mut shard = self.shard(key).lock().unwrap_or_else(|e| e.into_inner());
        // One lookup; an existing key is updated in place (no allocation on the hot path).
        let slot = shard.get_mut(key);
        let tat = slot.as_deref().copied().filter(|&t| t > now).unwrap_or(now);
        let new_tat = tat + interval * cost;
        let ahead = new_tat - now;
        if ahead <= tolerance {
            match slot {
                Some(t) => *t = new_tat,
                None => {
                    shard.insert(key.into(), new_tat);
                }
            }
        }
        self.quota.decide(tat - now, cost)
    }

    /// Forgets keys back at a full burst (their state equals a fresh key's); returns how many
    /// are left. Run it now and then so memory follows the active keys, not all keys ever seen.
    pub fn forget_idle(&self) -> usize {
        let now = self.clock.now();
        self.shards
            .iter()
            .map(|shard| {
                let mut shard = shard.lock().unwrap_or_else(|e| e.into_inner());
                shard.retain(|_, tat| *tat > now);
                shard.len()
            })
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limiter(max: u32, per_ms: u64, burst: u32) -> (RateLimiter, keel_core::MockClock) {
        let (clock, time) = Clock::mock();
        let quota = Quota {
            max,
            per: Duration::from_millis(per_ms),
            burst,
        };
        (RateLimiter::new(quota, clock), time)
    }

    fn allowed(l: &RateLimiter, key: &str, n: usize) -> usize {
        (0..n).filter(|_| l.check(key, 1).allowed).count()
    }

    #[test]
    fn a_burst_then_the_steady_rate() {
        // 10 per second, bursts of 5: one request per 100 ms after the first five.
        let (l, time) = limiter(10, 1000, 5);
        assert_eq!(allowed(&l, "k", 8), 5);
        let refused = l.check("k", 1);
        assert!(!refused.allowed);
        assert_eq!(refused.retry_after, Duration::from_millis(100));
        assert_eq!(refused.reset_after, Duration::from_millis(500));
        time.advance(Duration::from_millis(99));
        assert!(!l.check("k", 1).allowed);
        time.advance(Duration::from_millis(1));
        assert!(l.check("k", 1).allowed);
        time.advance(Duration::from_secs(1));
        let fresh = l.check("k", 1);
        assert_eq!(
            (fresh.allowed, fresh.remaining),
            (true, 4),
            "a full burst again"
        );
    }

    #[test]
    fn over_any_window_no_more_than_the_rate_plus_the_burst() {
        let (l, time) = limiter(10, 1000, 10);
        let mut admitted = 0;
        for _ in 0..300 {
            admitted += allowed(&l, "k", 3);
            time.advance(Duration::from_millis(10));
        }
        // Steps at 0, 10, …, 2,990 ms: a burst of 10, then one more every 100 ms.
        assert_eq!(admitted, 10 + 29);
    }

    #[test]
    fn costs_keys_and_remaining() {
        let (l, _) = limiter(100, 1000, 10);
        let big = l.check("a", 4);
        assert_eq!((big.allowed, big.remaining), (true, 6));
        assert!(!l.check("a", 7).allowed, "more than remains");
        assert!(l.check("a", 6).allowed);
        assert!(
            !l.check("a", 11).allowed && !l.check("b", 11).allowed,
            "over the burst"
        );
        assert_eq!(l.check("b", 1).remaining, 9, "keys are separate");
    }

    #[test]
    fn idle_keys_are_forgotten() {
        let (l, time) = limiter(10, 1000, 10);
        l.check("a", 1);
        l.check("b", 5);
        time.advance(Duration::from_millis(100));
        assert_eq!(l.forget_idle(), 1, "a is back at a full burst");
        time.advance(Duration::from_millis(400));
        assert_eq!(l.forget_idle(), 0);
    }
}
