//! Rate limits and the circuit breaker through the gateway, on a mock clock.

mod support;

use std::time::Duration;

use keel_core::HumanDuration;
use keel_gateway::{
    BreakerPolicy, CachePolicy, GatewayConfig, RateLimitPolicy, RoutePolicy, RouteRule,
};
use reqwest::StatusCode;
use support::{App, Running, client, gateway_on_mock_clock};

const ADMIN: &str = "admin-token-0123456789";
const ALICE: &str = "user-token-0123456789abc";

fn limited(policy: RateLimitPolicy) -> impl FnOnce(&mut GatewayConfig) {
    move |c| {
        c.routes = vec![RouteRule {
            name: Some("api".into()),
            prefix: Some("/r/".into()),
            policy: RoutePolicy {
                rate_limit: Some(policy),
                ..RoutePolicy::default()
            },
            ..RouteRule::default()
        }]
    }
}

fn two_per_10s() -> RateLimitPolicy {
    RateLimitPolicy {
        rate: 2,
        per: HumanDuration::from_secs(10),
        ..RateLimitPolicy::default()
    }
}

async fn get(gw: &Running, path: &str, token: Option<&str>) -> reqwest::Response {
    let mut request = client().get(gw.url(path));
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    request.send().await.unwrap()
}

#[tokio::test]
async fn over_the_limit_is_429_with_the_headers_to_back_off() {
    let app = App::start().await;
    let gw = gateway_on_mock_clock(&app.url(), limited(two_per_10s())).await;
    let first = get(&gw, "/r/a", None).await;
    assert_eq!(first.status(), StatusCode::OK);
    let h = first.headers();
    assert_eq!(h["ratelimit-policy"], "\"api\";q=2;w=10");
    assert_eq!(h["ratelimit"], "\"api\";r=1;t=5");
    assert_eq!(h["x-ratelimit-limit"], "2");
    assert_eq!(h["x-ratelimit-remaining"], "1");
    assert_eq!(h["x-ratelimit-reset"], "5");
    assert_eq!(get(&gw, "/r/b", None).await.status(), StatusCode::OK);
    let refused = get(&gw, "/r/c", None).await;
    assert_eq!(refused.status(), StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(refused.headers()["retry-after"], "5");
    assert_eq!(refused.headers()["x-ratelimit-remaining"], "0");
    assert_eq!(
        refused.headers()["content-type"],
        "application/problem+json"
    );
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:keel:problem:rate-limited");
    assert!(
        problem["detail"].as_str().unwrap().contains("retry in 5s"),
        "{problem}"
    );
    assert_eq!(app.hits(), 2, "the refused request never reached the app");
    // Other routes are not limited.
    let other = client().get(gw.url("/echo")).send().await.unwrap();
    assert!(!other.headers().contains_key("x-ratelimit-limit"));
    gw.clock.advance(Duration::from_secs(5));
    assert_eq!(get(&gw, "/r/d", None).await.status(), StatusCode::OK);
}

#[tokio::test]
async fn listed_roles_bypass_and_users_have_their_own_budgets() {
    let app = App::start().await;
    let gw = gateway_on_mock_clock(
        &app.url(),
        limited(RateLimitPolicy {
            key: "user".into(),
            bypass_roles: vec!["admin".into()],
            ..two_per_10s()
        }),
    )
    .await;
    for _ in 0..5 {
        let r = get(&gw, "/r/x", Some(ADMIN)).await;
        assert_eq!(r.status(), StatusCode::OK);
        assert!(!r.headers().contains_key("x-ratelimit-limit"), "bypassed");
    }
    assert_eq!(get(&gw, "/r/x", Some(ALICE)).await.status(), StatusCode::OK);
    assert_eq!(get(&gw, "/r/x", Some(ALICE)).await.status(), StatusCode::OK);
    assert_eq!(
        get(&gw, "/r/x", Some(ALICE)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Anonymous requests (and unverifiable credentials) count against the address instead.
    assert_eq!(get(&gw, "/r/x", None).await.status(), StatusCode::OK);
    assert_eq!(
        get(&gw, "/r/x", Some("forged-token-0000000000"))
            .await
            .status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&gw, "/r/x", None).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

#[tokio::test]
async fn clients_behind_a_trusted_proxy_are_told_apart() {
    let app = App::start().await;
    let gw = gateway_on_mock_clock(&app.url(), |c| {
        limited(two_per_10s())(c);
        c.trusted_proxies = vec!["127.0.0.1".into()];
    })
    .await;
    let from = |ip: &'static str| {
        client()
            .get(gw.url("/r/p"))
            .header("x-forwarded-for", ip)
            .send()
    };
    assert_eq!(from("203.0.113.1").await.unwrap().status(), StatusCode::OK);
    assert_eq!(from("203.0.113.1").await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        from("203.0.113.1").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(from("203.0.113.2").await.unwrap().status(), StatusCode::OK);
    // IPv6 clients share a budget per /64.
    assert_eq!(from("2001:db8::1").await.unwrap().status(), StatusCode::OK);
    assert_eq!(from("2001:db8::2").await.unwrap().status(), StatusCode::OK);
    assert_eq!(
        from("2001:db8::3").await.unwrap().status(),
        StatusCode::TOO_MANY_REQUESTS
    );
}

/// An HS256 token of the app, signed with `secret`.
fn app_jwt(secret: &str, claims: serde_json::Value) -> String {
    jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &jsonwebtoken::EncodingKey::from_secret(secret.as_bytes()),
    )
    .unwrap()
}

#[tokio::test]
async fn the_app_s_own_jwts_give_per_user_budgets_and_bypass() {
    const SECRET: &str = "the-app-s-own-jwt-secret-0123456789";
    let app = App::start().await;
    let gw = gateway_on_mock_clock(&app.url(), |c| {
        limited(RateLimitPolicy {
            rate: 1,
            key: "user".into(),
            bypass_roles: vec!["admin".into()],
            ..two_per_10s()
        })(c);
        c.jwt.secret = Some(keel_core::Secret::new(SECRET));
    })
    .await;
    let exp = 4_102_444_800u64; // 2100-01-01
    let alice = app_jwt(SECRET, serde_json::json!({"sub": "alice", "exp": exp}));
    let bob = app_jwt(SECRET, serde_json::json!({"sub": "bob", "exp": exp}));
    let boss = app_jwt(
        SECRET,
        serde_json::json!({"sub": "boss", "role": "admin", "exp": exp}),
    );
    let forged = app_jwt(
        "another-secret-entirely-0123456789",
        serde_json::json!({"sub": "alice", "exp": exp}),
    );
    assert_eq!(
        get(&gw, "/r/x", Some(&alice)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&gw, "/r/x", Some(&alice)).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    assert_eq!(get(&gw, "/r/x", Some(&bob)).await.status(), StatusCode::OK);
    for _ in 0..3 {
        assert_eq!(get(&gw, "/r/x", Some(&boss)).await.status(), StatusCode::OK);
    }
    // A token keel cannot verify counts against the address, not against alice.
    assert_eq!(
        get(&gw, "/r/x", Some(&forged)).await.status(),
        StatusCode::OK
    );
    assert_eq!(
        get(&gw, "/r/x", None).await.status(),
        StatusCode::TOO_MANY_REQUESTS
    );
    // Keel's own admin token still bypasses too.
    assert_eq!(get(&gw, "/r/x", Some(ADMIN)).await.status(), StatusCode::OK);
}

fn breaking(cache: Option<CachePolicy>) -> impl FnOnce(&mut GatewayConfig) {
    move |c| {
        c.routes = vec![RouteRule {
            name: Some("api".into()),
            prefix: Some("/r/".into()),
            policy: RoutePolicy {
                breaker: Some(BreakerPolicy {
                    window_calls: 4,
                    minimum_calls: 4,
                    failure_rate: 0.5,
                    open_for: HumanDuration::from_secs(30),
                    ..BreakerPolicy::default()
                }),
                cache,
                ..RoutePolicy::default()
            },
            ..RouteRule::default()
        }]
    }
}

#[tokio::test]
async fn the_breaker_goes_closed_open_half_open_closed() {
    let app = App::start().await;
    app.script(|s| s.status = 500);
    let gw = gateway_on_mock_clock(&app.url(), breaking(None)).await;
    for _ in 0..4 {
        assert_eq!(
            get(&gw, "/r/x", None).await.status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
    assert_eq!(gw.gateway.breakers()[0].state.as_str(), "open");
    let refused = get(&gw, "/r/x", None).await;
    assert_eq!(refused.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(refused.headers()["retry-after"], "30");
    let problem: serde_json::Value = refused.json().await.unwrap();
    assert_eq!(problem["type"], "urn:keel:problem:breaker-open");
    assert_eq!(app.hits(), 4, "no upstream call while open");
    // Other routes do not share this breaker.
    assert_eq!(
        client().get(gw.url("/echo")).send().await.unwrap().status(),
        StatusCode::OK
    );

    gw.clock.advance(Duration::from_secs(30));
    assert_eq!(gw.gateway.breakers()[0].state.as_str(), "half_open");
    // A failed trial opens it again.
    assert_eq!(
        get(&gw, "/r/x", None).await.status(),
        StatusCode::INTERNAL_SERVER_ERROR
    );
    assert_eq!(gw.gateway.breakers()[0].state.as_str(), "open");
    gw.clock.advance(Duration::from_secs(30));
    app.script(|s| s.status = 200);
    assert_eq!(get(&gw, "/r/x", None).await.status(), StatusCode::OK);
    let status = &gw.gateway.breakers()[0];
    assert_eq!(status.state.as_str(), "closed");
    assert_eq!(status.name, "api");
    assert_eq!(status.times_opened, 2);
    assert_eq!(get(&gw, "/r/x", None).await.status(), StatusCode::OK);
    assert_eq!(app.hits(), 7);
}

#[tokio::test]
async fn an_open_breaker_serves_stale_copies_when_it_may() {
    let app = App::start().await;
    app.script(|s| {
        s.body = "cached".into();
        s.headers = vec![("cache-control".into(), "max-age=10".into())];
    });
    let gw = gateway_on_mock_clock(
        &app.url(),
        breaking(Some(CachePolicy {
            stale_if_error: HumanDuration::from_secs(600),
            ..CachePolicy::default()
        })),
    )
    .await;
    assert_eq!(
        get(&gw, "/r/page", None).await.text().await.unwrap(),
        "cached"
    );
    // Connection failures count: the app goes away. With the one success before, three
    // failures of four calls open the breaker.
    app.stop();
    for i in 0..3 {
        let status = get(&gw, &format!("/r/other{i}"), None).await.status();
        assert_eq!(status, StatusCode::BAD_GATEWAY);
    }
    assert_eq!(gw.gateway.breakers()[0].state.as_str(), "open");
    gw.clock.advance(Duration::from_secs(11));
    let stale = get(&gw, "/r/page", None).await;
    assert_eq!(stale.headers()["x-cache"], "STALE");
    assert_eq!(stale.text().await.unwrap(), "cached");
    assert_eq!(
        get(&gw, "/r/never", None).await.status(),
        StatusCode::SERVICE_UNAVAILABLE
    );
}
