//! What the gateway counts per route, and the slow-request log.

mod support;

use keel_core::HumanDuration;
use keel_gateway::{RateLimitPolicy, RoutePolicy, RouteRule};
use support::{App, gateway_on_mock_clock};

#[tokio::test]
async fn routes_count_statuses_cache_outcomes_bytes_and_refusals() {
    let app = App::start().await;
    app.script(|s| {
        s.body = "x".repeat(3000);
        s.headers = vec![
            ("cache-control".into(), "max-age=60".into()),
            ("content-type".into(), "text/plain".into()),
        ];
    });
    let gw = gateway_on_mock_clock(&app.url(), |c| {
        c.slow_threshold = HumanDuration::from_secs(0);
        c.routes = vec![RouteRule {
            name: Some("limited".into()),
            prefix: Some("/echo".into()),
            policy: RoutePolicy {
                rate_limit: Some(RateLimitPolicy {
                    rate: 1,
                    per: HumanDuration::from_secs(60),
                    ..RateLimitPolicy::default()
                }),
                ..RoutePolicy::default()
            },
            ..RouteRule::default()
        }];
    })
    .await;
    let client = support::client();
    client
        .get(gw.url("/r/a"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    client
        .get(gw.url("/r/a"))
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let gz = client
        .get(gw.url("/r/a"))
        .header("accept-encoding", "gzip")
        .send()
        .await
        .unwrap();
    assert_eq!(gz.headers()["content-encoding"], "gzip");
    gz.bytes().await.unwrap();
    client
        .get(gw.url("/r/missing-app-route-404"))
        .send()
        .await
        .unwrap();
    client
        .post(gw.url("/echo"))
        .body("12345")
        .send()
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    let refused = client
        .post(gw.url("/echo"))
        .body("12345")
        .send()
        .await
        .unwrap();
    assert_eq!(refused.status(), 429);

    let routes = gw.gateway.routes();
    assert_eq!(routes.len(), 2);
    let limited = &routes[0];
    assert_eq!(limited.name, "limited");
    assert_eq!(limited.matches, "prefix /echo");
    assert_eq!(limited.rate_limit.as_deref(), Some("limited"));
    assert_eq!(limited.stats.requests.success, 1);
    assert_eq!(limited.stats.requests.client_error, 1);
    assert_eq!(limited.stats.rate_limited, 1);
    assert_eq!(limited.stats.bytes_in, 5, "the one body that went upstream");
    let default = &routes[1];
    assert_eq!(default.name, "default");
    let s = &default.stats;
    // /r/a: a miss, then hits as identity and as gzip (made from the stored copy); the other
    // /r/ path is a miss too (the scripted app answers every /r/ path).
    assert_eq!(s.cache.misses, 2);
    assert_eq!(s.cache.hits, 2);
    assert_eq!(s.requests.success, 4);
    assert!(s.bytes_out >= 2 * 3000, "{s:?}");
    assert!(s.bytes_saved_by_compression > 2500, "{s:?}");
    assert_eq!(s.latency_ms.count, 4);
    assert_eq!(s.upstream_ms.count, 2);
    assert!((s.cache_hit_ratio - 0.5).abs() < 1e-9);

    // With a zero threshold every request is slow: newest first, the query left out.
    let slow = gw.gateway.slow(3);
    assert_eq!(slow.len(), 3);
    assert_eq!(slow[0].status, 429);
    assert_eq!(slow[0].route, "limited");
    assert_eq!(slow[0].upstream_ms, None);
    assert!(slow[1].upstream_ms.is_some());
    assert!(!slow[0].request_id.is_empty());
}
