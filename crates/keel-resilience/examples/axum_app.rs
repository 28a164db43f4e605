//! An axum app using keel's rate limiter and circuit breaker without the rest of keel:
//! 5 requests per second per client (bursts of 10) on the whole router, and a breaker in front
//! of a route whose backend fails.
//!
//! `cargo run -p keel-resilience --example axum_app`, then `curl -i localhost:3000/` a few times.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::routing::get;
use keel_core::Clock;
use keel_resilience::{
    BreakerConfig, BreakerLayer, CircuitBreaker, KeyFn, Quota, RateLimitLayer, RateLimiter,
};

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let clock = Clock::system();
    let quota = Quota {
        max: 5,
        per: Duration::from_secs(1),
        burst: 10,
    };
    let limiter = Arc::new(RateLimiter::new(quota, clock.clone()));
    // The client's key: its address as a proxy passed it, or one shared bucket.
    let key: KeyFn<axum::body::Body> = Arc::new(|request: &Request| {
        let forwarded = request.headers().get("x-forwarded-for");
        Some(
            forwarded
                .and_then(|v| v.to_str().ok())
                .unwrap_or("anonymous")
                .to_owned(),
        )
    });
    let breaker = Arc::new(CircuitBreaker::new(
        BreakerConfig {
            failure_threshold: 5,
            cool_down: Duration::from_secs(30),
            ..BreakerConfig::default()
        },
        clock,
    ));
    let app = Router::new()
        .route(
            "/report",
            get(|| async { (StatusCode::BAD_GATEWAY, "the backend is down") })
                .layer(BreakerLayer::new(breaker)),
        )
        .route("/", get(|| async { "hello" }))
        .layer(RateLimitLayer::new(limiter, key));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:3000").await?;
    axum::serve(listener, app).await
}
