//! The `keel_redis_*` Prometheus series.

use keel_core::Metrics;
use keel_core::metrics::{Kind, PullCollector, SeriesDef};
use keel_resilience::BreakerState;

use crate::Redis;

/// Registers Redis's series: operations, errors, timeouts, refusals while the breaker is open,
/// reconnects, the breaker's state and the operation latency histogram.
pub fn register_metrics(metrics: &Metrics, redis: &Redis) {
    let counter = |name, help| SeriesDef {
        name,
        help,
        kind: Kind::Counter,
        labels: &[],
    };
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
