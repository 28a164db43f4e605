//! The gateway's HTTP surface under `/api/v1/gateway` (routes, slow requests, breakers, purge,
//! warm), its Prometheus series, its `gateway:upstream` health check and its section of
//! `/api/v1/stats`.

use std::time::Duration;

use keel_core::CheckOutcome;
use keel_core::health::CheckSpec;
use keel_core::metrics::{Kind, PullCollector, PulledSample, SeriesDef};
use keel_gateway::Gateway;
use keel_resilience::BreakerState;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::routes::gateway as api;

/// The `/gateway/…` routes (to be served under `/api/v1`); with `None` they answer 404.
pub fn routes(gateway: Option<Gateway>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(api::routes))
        .routes(routes!(api::slow))
        .routes(routes!(api::breakers))
        .routes(routes!(api::purge))
        .routes(routes!(api::warm))
        .with_state(gateway)
}

/// Registers the gateway's metrics, health check and stats section with the admin state.
pub fn observe(state: &AdminState, gateway: &Gateway) {
    let def = |name, help, kind, labels| SeriesDef {
        name,
        help,
        kind,
        labels,
    };
    let defs = vec![
        def(
            "keel_gateway_requests_total",
            "Gateway responses by route and status class.",
            Kind::Counter,
            &["route", "class"],
        ),
        def(
            "keel_gateway_request_duration_seconds",
            "Time to the response headers by route, percentiles over the last one to two minutes.",
            Kind::Gauge,
            &["route", "quantile"],
        ),
        def(
            "keel_gateway_upstream_duration_seconds",
            "The upstream's time to its response headers by route, percentiles over the last one to two minutes.",
            Kind::Gauge,
            &["route", "quantile"],
        ),
        def(
            "keel_gateway_cache_total",
            "Cache outcomes by route (hit, miss, stale, revalidated, bypass).",
            Kind::Counter,
            &["route", "result"],
        ),
        def(
            "keel_gateway_bytes_total",
            "Body bytes by route and direction (in: to the upstream, out: to clients, saved: by compression).",
            Kind::Counter,
            &["route", "direction"],
        ),
        def(
            "keel_gateway_rate_limited_total",
            "Requests refused by a rate limit, by route.",
            Kind::Counter,
            &["route"],
        ),
        def(
            "keel_gateway_breaker_state",
            "Breaker state: 0 closed, 1 half-open, 2 open.",
            Kind::Gauge,
            &["breaker"],
        ),
        def(
            "keel_gateway_breaker_opened_total",
            "Times each breaker opened.",
            Kind::Counter,
            &["breaker"],
        ),
    ];
    let source = gateway.clone();
    state
        .metrics()
        .register(PullCollector::new(defs, move || samples(&source)));

    let upstream = gateway.clone();
    state.health().register(
        CheckSpec::new("gateway", "upstream", "component"),
        move || {
            let gateway = upstream.clone();
            async move { check_upstream(&gateway).await }
        },
    );

    let reported = gateway.clone();
    state.register_stats("gateway", move || {
        let routes = reported.routes();
        async move { serde_json::json!({ "routes": routes }) }
    });
}

fn samples(gateway: &Gateway) -> Vec<PulledSample> {
    let mut out = Vec::new();
    let l = |values: &[&str]| values.iter().map(|v| (*v).to_owned()).collect::<Vec<_>>();
    for route in gateway.routes() {
        let s = &route.stats;
        let name = route.name.as_str();
        for (class, n) in [
            ("1xx", s.requests.informational),
            ("2xx", s.requests.success),
            ("3xx", s.requests.redirect),
            ("4xx", s.requests.client_error),
            ("5xx", s.requests.server_error),
        ] {
            out.push((0, l(&[name, class]), n as f64));
        }
        for (series, p) in [(1, s.latency_ms), (2, s.upstream_ms)] {
            for (q, v) in [
                ("0.5", p.p50),
                ("0.9", p.p90),
                ("0.95", p.p95),
                ("0.99", p.p99),
            ] {
                out.push((series, l(&[name, q]), v / 1000.0));
            }
        }
        let c = s.cache;
        for (result, n) in [
            ("hit", c.hits),
            ("miss", c.misses),
            ("stale", c.stale),
            ("revalidated", c.revalidated),
            ("bypass", c.bypass),
        ] {
            out.push((3, l(&[name, result]), n as f64));
        }
        for (direction, n) in [
            ("in", s.bytes_in),
            ("out", s.bytes_out),
            ("saved", s.bytes_saved_by_compression),
        ] {
            out.push((4, l(&[name, direction]), n as f64));
        }
        out.push((5, l(&[name]), s.rate_limited as f64));
    }
    for breaker in gateway.breakers() {
        let state = match breaker.state {
            BreakerState::Closed => 0.0,
            BreakerState::HalfOpen => 1.0,
            BreakerState::Open => 2.0,
        };
        out.push((6, l(&[&breaker.name]), state));
        out.push((7, l(&[&breaker.name]), breaker.times_opened as f64));
    }
    out
}

/// `pass` when the upstream accepts a TCP connection (the latency observed); `warn` when it
/// does not, or when a breaker toward it is open — keel still serves cached copies then, so
/// readiness is not affected.
async fn check_upstream(gateway: &Gateway) -> CheckOutcome {
    let authority = gateway.upstream_authority();
    let started = std::time::Instant::now();
    let connected = tokio::time::timeout(
        Duration::from_secs(2),
        tokio::net::TcpStream::connect(&authority),
    )
    .await;
    let open: Vec<String> = gateway
        .breakers()
        .into_iter()
        .filter(|b| b.state == BreakerState::Open)
        .map(|b| b.name)
        .collect();
    let outcome = match connected {
        Ok(Ok(_)) if open.is_empty() => CheckOutcome::pass(),
        Ok(Ok(_)) => CheckOutcome::warn(format!("breaker open: {}", open.join(", "))),
        Ok(Err(e)) => {
            CheckOutcome::warn(format!("the upstream {authority} refuses connections: {e}"))
        }
        Err(_) => CheckOutcome::warn(format!(
            "the upstream {authority} did not accept a connection within 2s"
        )),
    };
    outcome.observed(started.elapsed().as_secs_f64() * 1000.0, "ms")
}
