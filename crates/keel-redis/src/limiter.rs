//! Rate limits shared by every keel instance: the GCRA of `keel-resilience`'s
//! [`RateLimiter`](keel_resilience::RateLimiter) with each key's theoretical arrival time (TAT)
//! in Redis.
//!
//! One decision is one script run: it reads the TAT, compares, and moves it, atomically, with
//! Redis's clock as the only clock (instances whose clocks disagree still share one budget).
//! The key expires when its TAT is reached, which is when it is back at a full burst.
//!
//! **Local fast path.** A refusal tells the instance the key's TAT. TATs only move forward
//! (every instance only ever pushes them later), so until then a request that the known TAT
//! already refuses is refused without asking Redis. Under a flood from one client, only the
//! first request after each refusal window costs a round trip.
//!
//! **When Redis is unreachable** (down, too slow, or its breaker open), a decision follows
//! [`FailureMode`]: admitted by default (fail open: an outage of Redis does not take the API
//! down with it) or refused (fail closed). Either is counted.

use std::collections::HashMap;
use std::hash::BuildHasher;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, Instant};

use keel_core::Clock;
use keel_core::sync::lock;
use keel_resilience::{Decision, Quota};
use serde::Serialize;

use crate::Redis;

/// What a decision is when Redis cannot be asked.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, serde::Deserialize, schemars::JsonSchema,
)]
#[serde(rename_all = "snake_case")]
pub enum FailureMode {
    /// Admit the request.
    #[default]
    Open,
    /// Refuse the request.
    Closed,
}

/// How long a fail-closed refusal asks the client to wait.
const CLOSED_RETRY: Duration = Duration::from_secs(1);
/// Keys remembered for the local fast path, at most (per limiter family).
const MAX_REMEMBERED: usize = 100_000;
const SHARDS: usize = 16;

/// Keys last seen over their limit, with their TAT as an instant of this process.
type Known = Mutex<HashMap<Box<str>, Instant, foldhash::fast::RandomState>>;

/// Arguments: interval and tolerance in microseconds, the cost. Returns `{1, ahead}` when
/// admitted (the new TAT's distance from now, µs) or `{0, current}` when refused (the TAT's
/// distance from now).
static GCRA: LazyLock<redis::Script> = LazyLock::new(|| {
    redis::Script::new(
        r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local tat = tonumber(redis.call('GET', KEYS[1]))
if not tat or tat < now then tat = now end
local ahead = tat - now + interval * cost
if ahead <= tolerance then
  redis.call('SET', KEYS[1], string.format('%d', now + ahead), 'PX', math.max(1, math.ceil(ahead / 1000)))
  return {1, ahead}
end
return {0, tat - now}
"#,
    )
});

/// Counters shared by the limiters of one [`SharedLimits`].
#[derive(Debug, Default)]
struct Counters {
    decisions: AtomicU64,
    local_refusals: AtomicU64,
    fail_open: AtomicU64,
    fail_closed: AtomicU64,
}

/// What the shared limiters decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SharedLimitStats {
    /// Decisions Redis made.
    pub decisions: u64,
    /// Requests refused locally: the key's known TAT already refused them.
    pub local_refusals: u64,
    /// Requests admitted because Redis could not be asked.
    pub fail_open: u64,
    /// Requests refused because Redis could not be asked.
    pub fail_closed: u64,
}

/// Makes shared limiters: one Redis, one failure mode and one set of counters for all.
///
/// ```no_run
/// use std::time::Duration;
/// use keel_core::{Clock, Secret};
/// use keel_redis::{FailureMode, Redis, RedisOptions, SharedLimits};
/// use keel_resilience::Quota;
///
/// # async fn demo() -> Result<(), keel_redis::RedisError> {
/// let options = RedisOptions::new(Secret::new("redis://127.0.0.1:6379/0"));
/// let redis = Redis::connect(&options, Clock::system())?;
/// let limits = SharedLimits::new(redis, FailureMode::Open, Clock::system());
/// let quota = Quota { max: 100, per: Duration::from_secs(60), burst: 20 };
/// let limiter = limits.limiter("api", quota);
/// if !limiter.check("user:42", 1).await.allowed {
///     // 429: every instance sharing this Redis sees the same budget.
/// }
/// # Ok(()) }
/// ```
#[derive(Clone)]
pub struct SharedLimits {
    redis: Redis,
    failure: FailureMode,
    clock: Clock,
    counters: Arc<Counters>,
}

impl SharedLimits {
    /// Limiters on `redis`, deciding as `failure` says while Redis cannot be asked.
    pub fn new(redis: Redis, failure: FailureMode, clock: Clock) -> Self {
        Self {
            redis,
            failure,
            clock,
            counters: Arc::default(),
        }
    }

    /// A limiter granting `quota` per key, its keys under `<prefix>rl:<family>:`. Limiters
    /// with the same family (on any instance) share their keys' budgets.
    pub fn limiter(&self, family: &str, quota: Quota) -> SharedRateLimiter {
        SharedRateLimiter {
            limits: self.clone(),
            quota: Quota {
                max: quota.max.max(1),
                burst: quota.burst.max(1),
                ..quota
            },
            namespace: self.redis.key(&format!("rl:{family}:")),
            hasher: foldhash::fast::RandomState::default(),
            known: (0..SHARDS).map(|_| Mutex::default()).collect(),
        }
    }

    /// What the limiters decided so far.
    pub fn stats(&self) -> SharedLimitStats {
        let c = &self.counters;
        SharedLimitStats {
            decisions: c.decisions.load(Ordering::Relaxed),
            local_refusals: c.local_refusals.load(Ordering::Relaxed),
            fail_open: c.fail_open.load(Ordering::Relaxed),
            fail_closed: c.fail_closed.load(Ordering::Relaxed),
        }
    }

    /// The failure mode.
    pub fn failure_mode(&self) -> FailureMode {
        self.failure
    }
}

/// A rate limiter whose budgets live in Redis. See the module documentation.
pub struct SharedRateLimiter {
    limits: SharedLimits,
    quota: Quota,
    namespace: String,
    hasher: foldhash::fast::RandomState,
    known: Box<[Known]>,
}

impl SharedRateLimiter {
    /// The quota each key gets.
    pub fn quota(&self) -> Quota {
        self.quota
    }

    fn shard(&self, key: &str) -> &Known {
        &self.known[(self.hasher.hash_one(key) as usize) % SHARDS]
    }

    /// Asks to spend `cost` (at least 1) of `key`'s budget now.
    pub async fn check(&self, key: &str, cost: u32) -> Decision {
        let cost = cost.max(1);
        let counters = &self.limits.counters;
        let now = self.limits.clock.now();
        if let Some(decision) = self.refused_locally(key, cost, now) {
            counters.local_refusals.fetch_add(1, Ordering::Relaxed);
            return decision;
        }
        let redis = &self.limits.redis;
        let mut full_key = String::with_capacity(self.namespace.len() + key.len());
        full_key.push_str(&self.namespace);
        full_key.push_str(key);
        let answer: Result<(i64, i64), _> = redis
            .script(
                GCRA.key(full_key)
                    .arg(micros(self.quota.interval()))
                    .arg(micros(self.quota.tolerance()))
                    .arg(cost),
            )
            .await;
        match answer {
            Ok((admitted, distance)) => {
                counters.decisions.fetch_add(1, Ordering::Relaxed);
                let distance = Duration::from_micros(distance.max(0) as u64);
                if admitted == 1 {
                    // `distance` is the new TAT's; the decision wants the one before.
                    let current = distance.saturating_sub(self.quota.interval() * cost);
                    self.quota.decide(current, cost)
                } else {
                    self.remember(key, now + distance);
                    self.quota.decide(distance, cost)
                }
            }
            Err(e) => {
                tracing::debug!(error = %e, "shared rate limit undecided");
                match self.limits.failure {
                    FailureMode::Open => {
                        counters.fail_open.fetch_add(1, Ordering::Relaxed);
                        self.quota.decide(Duration::ZERO, 1)
                    }
                    FailureMode::Closed => {
                        counters.fail_closed.fetch_add(1, Ordering::Relaxed);
                        Decision {
                            allowed: false,
                            limit: self.quota.burst,
                            remaining: 0,
                            retry_after: CLOSED_RETRY,
                            reset_after: CLOSED_RETRY,
                        }
                    }
                }
            }
        }
    }

    /// The decision when the key's known TAT already refuses the request; `None` when Redis
    /// must decide.
    fn refused_locally(&self, key: &str, cost: u32, now: Instant) -> Option<Decision> {
        let mut known = lock(self.shard(key));
        let tat = *known.get(key)?;
        let current = tat.saturating_duration_since(now);
        if current + self.quota.interval() > self.quota.tolerance() {
            return Some(self.quota.decide(current, cost)).filter(|d| !d.allowed);
        }
        // Room again for at least one request: Redis decides from now on.
        known.remove(key);
        None
    }

    fn remember(&self, key: &str, tat: Instant) {
        let mut known = lock(self.shard(key));
        if known.len() >= MAX_REMEMBERED / SHARDS {
            let now = self.limits.clock.now();
            known.retain(|_, t| *t > now);
            if known.len() >= MAX_REMEMBERED / SHARDS {
                return;
            }
        }
        match known.get_mut(key) {
            Some(t) => *t = (*t).max(tat),
            None => {
                known.insert(key.into(), tat);
            }
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX)
}
