//! `/api/v1/gateway/purge` and `/warm` on a real server with the gateway in front of a real app.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use keel_auth::Role;
use keel_test::{Sent, TestServer, problem};
use reqwest::Method;
use serde_json::{Value, json};

/// An app whose `/api/*` answers are cacheable for a minute; counts requests.
async fn start_app() -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let app = Router::new().route(
        "/api/{*rest}",
        get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async {
                (
                    [("cache-control", "max-age=60"), ("surrogate-key", "habits")],
                    "[1,2,3]",
                )
            }
        }),
    );
    let url = keel_test::serve_app(app).await;
    (url, count)
}

async fn x_cache(server: &TestServer, path: &str) -> String {
    let r = server.client().get(server.gateway_url(path)).sent().await;
    r.headers()["x-cache"].to_str().unwrap().to_owned()
}

#[tokio::test]
async fn purge_and_warm_through_the_api() {
    let (upstream, count) = start_app().await;
    let server = TestServer::start_with(|c| c.gateway.upstream = Some(upstream), Vec::new()).await;
    assert_eq!(x_cache(&server, "/api/habits").await, "MISS");
    assert_eq!(x_cache(&server, "/api/habits").await, "HIT");

    let purge = |body: Value, role: Role| {
        server
            .request(Method::POST, "/api/v1/gateway/purge", role)
            .json(&body)
            .send()
    };
    let r = purge(json!({"url": "/api/habits"}), Role::Viewer)
        .await
        .unwrap();
    assert_eq!(r.status(), 403);
    let r = purge(json!({"url": "/api/habits"}), Role::Worker)
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"purged": 1}));
    assert_eq!(x_cache(&server, "/api/habits").await, "MISS");

    for (body, says) in [
        (json!({"url": "/a", "tag": "x"}), "exactly one"),
        (json!({}), "exactly one"),
        (json!({"url": "api/habits"}), "must be a path"),
        (json!({"pattern": "*"}), "confirm"),
        (json!({"tag": ""}), "exactly one"),
    ] {
        let (status, p) = problem(purge(body.clone(), Role::Admin).await.unwrap()).await;
        assert_eq!(status, 400, "{body}");
        assert!(p["detail"].as_str().unwrap().contains(says), "{body}: {p}");
    }
    // A misspelt field is a JSON shape error (422), as everywhere in the API.
    for (body, says) in [(json!({"urls": "/a"}), "urls")] {
        let (status, p) = problem(purge(body.clone(), Role::Admin).await.unwrap()).await;
        assert_eq!(status, 422, "{body}");
        assert!(p["detail"].as_str().unwrap().contains(says), "{body}: {p}");
    }
    let r = purge(json!({"tag": "habits"}), Role::Admin).await.unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"purged": 1}));
    let r = purge(json!({"pattern": "*", "confirm": true}), Role::Admin)
        .await
        .unwrap();
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"purged": 0}));

    let warm = server
        .request(Method::POST, "/api/v1/gateway/warm", Role::Worker)
        .json(&json!({"paths": ["/api/a", "/api/b?x=1", "/api/a"]}))
        .sent()
        .await;
    assert_eq!(warm.status(), 200);
    let results = warm.json::<Value>().await.unwrap()["results"].clone();
    assert_eq!(
        results[0],
        json!({"path": "/api/a", "status": 200, "cache": "MISS"})
    );
    assert_eq!(results[1]["cache"], "MISS");
    assert_eq!(x_cache(&server, "/api/b?x=1").await, "HIT");
    let before = count.load(Ordering::SeqCst);
    assert_eq!(x_cache(&server, "/api/a").await, "HIT");
    assert_eq!(count.load(Ordering::SeqCst), before);

    let (status, p) = problem(
        server
            .request(Method::POST, "/api/v1/gateway/warm", Role::Worker)
            .json(&json!({"paths": ["nope"]}))
            .sent()
            .await,
    )
    .await;
    assert_eq!(status, 400);
    assert!(p["detail"].as_str().unwrap().starts_with("paths[0]"), "{p}");
}

#[tokio::test]
async fn without_a_gateway_the_routes_say_how_to_configure_one() {
    let server = TestServer::start().await;
    let (status, p) = problem(
        server
            .request(Method::POST, "/api/v1/gateway/purge", Role::Admin)
            .json(&json!({"url": "/x"}))
            .sent()
            .await,
    )
    .await;
    assert_eq!(status, 404);
    assert!(
        p["detail"].as_str().unwrap().contains("gateway.upstream"),
        "{p}"
    );
}

#[tokio::test]
async fn routes_slow_breakers_metrics_and_health() {
    let (upstream, _) = start_app().await;
    let server = TestServer::start_with(
        |c| {
            c.gateway.upstream = Some(upstream);
            c.gateway.slow_threshold = keel_core::HumanDuration::from_secs(0);
            c.gateway.default.breaker = Some(keel_gateway::BreakerPolicy::default());
        },
        Vec::new(),
    )
    .await;
    assert_eq!(x_cache(&server, "/api/one").await, "MISS");
    assert_eq!(x_cache(&server, "/api/one").await, "HIT");

    let routes: Value = server
        .get("/api/v1/gateway/routes")
        .sent()
        .await
        .json()
        .await
        .unwrap();
    let default = &routes["routes"][0];
    assert_eq!(default["name"], "default");
    assert_eq!(default["requests"]["2xx"], 2);
    assert_eq!(default["cache"]["hits"], 1);
    assert_eq!(default["cache_hit_ratio"], 0.5);
    assert_eq!(default["breaker"]["state"], "closed");
    assert!(default["latency_ms"]["p99"].as_f64().unwrap() > 0.0);

    let slow: Value = server
        .get("/api/v1/gateway/slow?limit=1")
        .sent()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(slow["threshold_ms"], 0);
    assert_eq!(slow["requests"].as_array().unwrap().len(), 1);
    assert_eq!(slow["requests"][0]["path"], "/api/one");
    let (status, _) = problem(server.get("/api/v1/gateway/slow?limit=0").sent().await).await;
    assert_eq!(status, 400);

    let breakers: Value = server
        .get("/api/v1/gateway/breakers")
        .sent()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(breakers["breakers"][0]["name"], "default");
    assert_eq!(breakers["breakers"][0]["state"], "closed");

    let metrics = server.public("/metrics").await.text().await.unwrap();
    for line in [
        "keel_gateway_requests_total{route=\"default\",class=\"2xx\"} 2",
        "keel_gateway_cache_total{route=\"default\",result=\"hit\"} 1",
        "keel_gateway_breaker_state{breaker=\"default\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} not in metrics");
    }
    assert!(
        metrics
            .contains("keel_gateway_request_duration_seconds{route=\"default\",quantile=\"0.99\"}")
    );

    let health: Value = server
        .public("/health/detailed")
        .await
        .json()
        .await
        .unwrap();
    let check = &health["checks"]["gateway:upstream"][0];
    assert_eq!(check["status"], "pass", "{health}");
    let stats: Value = server
        .get("/api/v1/stats")
        .sent()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["gateway"]["routes"][0]["name"], "default");
}
