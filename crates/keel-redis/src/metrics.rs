//! The `keel_redis_*` and `keel_ratelimit_*` Prometheus series.

use keel_core::Metrics;
use keel_core::metrics::{Kind, PullCollector, SeriesDef};
use keel_resilience::BreakerState;

use crate::{Redis, SharedLimits};

/// An unlabelled counter.
fn counter(name: &'static str, help: &'static str) -> SeriesDef {
    SeriesDef {
        name,
        help,
        kind: Kind::Counter,
        labels: &[],
    }
}

/// Registers Redis's series (operations, errors, timeouts, refusals while the breaker is open,
/// reconnects, the breaker's state, the operation latency histogram) and the shared rate
/// limits' (decisions in Redis, local refusals, checks Redis could not answer).
pub fn register_metrics(metrics: &Metrics, redis: &Redis, limits: &SharedLimits) {
    register_limit_metrics(metrics, limits);
    let defs = vec![
        counter("keel_redis_commands_total", "Redis operations sent."),
        counter(
            "keel_redis_errors_total",
            "Redis operations that failed (timeouts, connection failures, error replies).",
        ),
        counter(
            "keel_redis_timeouts_total",
            "Redis operations that timed out.",
        ),
        counter(
            "keel_redis_refused_total",
            "Redis operations not sent because the breaker around Redis was open.",
        ),
        counter(
            "keel_redis_reconnects_total",
            "Times Redis answered again after an outage.",
        ),
        SeriesDef {
            name: "keel_redis_breaker_state",
            help: "The breaker around Redis: 0 closed, 1 open, 2 half-open.",
            kind: Kind::Gauge,
            labels: &[],
        },
    ];
    let handle = redis.clone();
    metrics.register(PullCollector::new(defs, move || {
        let s = handle.stats();
        let breaker = match s.breaker {
            BreakerState::Closed => 0.0,
            BreakerState::Open => 1.0,
            BreakerState::HalfOpen => 2.0,
        };
        [
            s.commands as f64,
            s.errors as f64,
            s.timeouts as f64,
            s.refused as f64,
            s.reconnects as f64,
            breaker,
        ]
        .into_iter()
        .enumerate()
        .map(|(i, v)| (i, Vec::new(), v))
        .collect()
    }));
    metrics.register(redis.latency());
}

fn register_limit_metrics(metrics: &Metrics, limits: &SharedLimits) {
    let defs = vec![
        counter(
            "keel_ratelimit_redis_decisions_total",
            "Shared rate limit decisions made in Redis.",
        ),
        counter(
            "keel_ratelimit_local_refusals_total",
            "Requests refused without asking Redis: the key was known to be over its limit.",
        ),
        SeriesDef {
            name: "keel_ratelimit_undecided_total",
            help: "Shared rate limit checks Redis could not answer, by what was done (admitted: fail open; refused: fail closed).",
            kind: Kind::Counter,
            labels: &["outcome"],
        },
    ];
    let limits = limits.clone();
    metrics.register(PullCollector::new(defs, move || {
        let s = limits.stats();
        vec![
            (0, vec![], s.decisions as f64),
            (1, vec![], s.local_refusals as f64),
            (2, vec!["admitted".to_owned()], s.fail_open as f64),
            (2, vec!["refused".to_owned()], s.fail_closed as f64),
        ]
    }));
}
