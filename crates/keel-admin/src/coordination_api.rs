//! What keel instances coordinate through: locks (`/api/v1/locks/{name}`) and rate limit
//! checks (`POST /api/v1/ratelimit/check`); with Redis, also the `keel_redis_*` and
//! `keel_ratelimit_*` series and a `redis` section in `/api/v1/stats`.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::http::StatusCode;
use keel_core::Problem;
use keel_core::sync::lock;
use keel_redis::{Limiter, Limits, Locks, Redis, SharedLimits};
use keel_resilience::Quota;
use serde_json::json;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::routes::{locks, ratelimit};

/// Distinct quotas `POST /ratelimit/check` keeps limiters for, at most.
const MAX_QUOTAS: usize = 1024;
/// A local limiter forgets idle keys once per this many checks.
const FORGET_EVERY: u64 = 4096;

/// The state of the lock and rate limit routes. Cheap to clone.
#[derive(Clone)]
pub struct Coordination {
    pub(crate) locks: Arc<Locks>,
    pub(crate) limits: Arc<ApiLimits>,
}

impl Coordination {
    /// Locks in `locks`, rate limit budgets in `limits`.
    pub fn new(locks: Locks, limits: Limits) -> Self {
        Self {
            locks: Arc::new(locks),
            limits: Arc::new(ApiLimits {
                limits,
                limiters: Mutex::default(),
                checks: AtomicU64::new(0),
            }),
        }
    }
}

/// One limiter per quota asked for.
pub(crate) struct ApiLimits {
    limits: Limits,
    limiters: Mutex<HashMap<(u32, Duration, u32), Arc<Limiter>>>,
    checks: AtomicU64,
}

impl ApiLimits {
    /// The limiter for `quota`, made on first use.
    pub(crate) fn limiter(&self, quota: Quota) -> Result<Arc<Limiter>, Problem> {
        let id = (quota.max, quota.per, quota.burst);
        let limiter = {
            let mut limiters = lock(&self.limiters);
            match limiters.get(&id) {
                Some(l) => l.clone(),
                None => {
                    if limiters.len() >= MAX_QUOTAS {
                        // Limiters whose keys are all back at a full burst hold nothing a new
                        // one would not (Redis-backed ones hold nothing at all): make room.
                        limiters.retain(|_, l| l.forget_idle() > 0);
                    }
                    if limiters.len() >= MAX_QUOTAS {
                        return Err(Problem::new(
                            StatusCode::UNPROCESSABLE_ENTITY,
                            "too-many-quotas",
                            "Too many quotas",
                        )
                        .with_detail(format!(
                            "keel keeps at most {MAX_QUOTAS} distinct (rate, per, burst) quotas in use at once; use fewer"
                        )));
                    }
                    let family = format!(
                        "api:{}-{}-{}",
                        quota.max,
                        quota.per.as_millis(),
                        quota.burst
                    );
                    let l = Arc::new(self.limits.limiter(&family, quota));
                    limiters.insert(id, l.clone());
                    l
                }
            }
        };
        if self.checks.fetch_add(1, Ordering::Relaxed) % FORGET_EVERY == FORGET_EVERY - 1 {
            let all: Vec<_> = lock(&self.limiters).values().cloned().collect();
            for l in all {
                l.forget_idle();
            }
        }
        Ok(limiter)
    }
}

/// The `/locks/…` and `/ratelimit/check` routes (to be served under `/api/v1`).
pub fn routes(coordination: Coordination) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(locks::acquire, locks::release))
        .routes(routes!(locks::extend))
        .routes(routes!(ratelimit::check))
        .with_state(coordination)
}

/// Registers Redis's series and stats section, and the shared rate limits' series.
pub fn observe_redis(state: &AdminState, redis: &Redis, shared: &SharedLimits) {
    keel_redis::register_metrics(state.metrics(), redis, shared);
    let (redis, limits) = (redis.clone(), shared.clone());
    state.register_stats("redis", move || {
        let (redis, limits) = (redis.clone(), limits.clone());
        async move {
            json!({
                "connection": redis.stats(),
                "rate_limits": {
                    "on_outage": limits.failure_mode(),
                    "decisions": limits.stats(),
                },
            })
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_core::Clock;

    #[tokio::test]
    async fn quotas_in_use_are_bounded_and_idle_ones_make_room() {
        let (clock, time) = Clock::mock();
        let limits = Coordination::new(Locks::in_memory(clock.clone()), Limits::Local(clock))
            .limits
            .clone();
        let quota = |n: u32| Quota {
            max: n,
            per: Duration::from_secs(1),
            burst: n,
        };
        for n in 1..=MAX_QUOTAS as u32 {
            let limiter = limits.limiter(quota(n)).unwrap();
            assert!(limiter.check("k", 1).await.allowed);
        }
        let refused = limits
            .limiter(quota(5000))
            .err()
            .expect("every quota is in use");
        assert_eq!(refused.status, 422);
        // A second later every key is back at a full burst: the idle limiters make room.
        time.advance(Duration::from_secs(1));
        assert!(limits.limiter(quota(5000)).is_ok());
        assert!(
            limits.limiter(quota(1)).is_ok(),
            "and come back when asked for"
        );
    }
}
