//! Several keel instances sharing one real Redis: rate limits (API and gateway) and locks are
//! the same on every instance; without Redis, one instance keeps them in memory.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::Router;
use axum::routing::get;
use keel_auth::Role;
use keel_core::Secret;
use keel_test::{RedisServer, Sent, TestServer, problem};
use reqwest::Method;
use serde_json::{Value, json};

async fn instance(redis: &RedisServer, upstream: Option<&str>) -> TestServer {
    let (url, upstream) = (redis.url(), upstream.map(str::to_owned));
    TestServer::start_with(
        move |c| {
            c.redis.url = Some(Secret::new(url));
            if let Some(upstream) = upstream {
                c.gateway.upstream = Some(upstream);
                c.gateway.default.cache = Some(keel_gateway::CachePolicy {
                    enabled: false,
                    ..Default::default()
                });
                c.gateway.default.rate_limit = Some(keel_gateway::RateLimitPolicy {
                    rate: 4,
                    per: keel_core::HumanDuration::from_secs(3600),
                    ..Default::default()
                });
            }
        },
        Vec::new(),
    )
    .await
}

/// A worker's `PUT` of a raw body.
async fn put(server: &TestServer, path: &str, body: &'static str) -> reqwest::Response {
    server
        .request(Method::PUT, path, Role::Worker)
        .body(body)
        .sent()
        .await
}

async fn post(server: &TestServer, path: &str, body: Value) -> reqwest::Response {
    server.post_as(Role::Worker, path, &body).await
}

#[tokio::test]
async fn a_rate_limit_checked_on_two_instances_admits_its_burst_in_total() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis, None).await, instance(&redis, None).await);
    let body = json!({"key": "user:42", "rate": 5, "per": "1h"});
    let mut admitted = 0;
    for i in 0..20 {
        let server = if i % 2 == 0 { &a } else { &b };
        let r = post(server, "/api/v1/ratelimit/check", body.clone()).await;
        assert_eq!(r.status(), 200);
        let answer: Value = r.json().await.unwrap();
        if answer["allowed"] == true {
            admitted += 1;
        } else {
            assert_eq!(answer["remaining"], 0);
            assert!(
                answer["retry_after_ms"].as_u64().unwrap() > 600_000,
                "{answer}"
            );
        }
    }
    assert_eq!(admitted, 5);

    // Another quota is another budget for the same key.
    let r = post(
        &b,
        "/api/v1/ratelimit/check",
        json!({"key": "user:42", "rate": 100, "cost": 10}),
    )
    .await;
    let answer: Value = r.json().await.unwrap();
    assert_eq!(
        (answer["allowed"].clone(), answer["remaining"].clone()),
        (json!(true), json!(90))
    );

    // The decisions show in the metrics and the stats.
    let metrics = a.get("/metrics").sent().await.text().await.unwrap();
    assert!(
        metrics.contains("keel_ratelimit_redis_decisions_total"),
        "{metrics}"
    );
    assert!(metrics.contains("keel_redis_command_duration_seconds_bucket"));
    let stats: Value = a.get("/api/v1/stats").sent().await.json().await.unwrap();
    assert_eq!(stats["redis"]["connection"]["breaker"], "closed", "{stats}");
    assert_eq!(stats["redis"]["rate_limits"]["on_outage"], "open");
}

#[tokio::test]
async fn a_lock_taken_on_one_instance_is_held_on_the_other() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis, None).await, instance(&redis, None).await);
    let r = post(&a, "/api/v1/locks/nightly-report", json!({"ttl": "30s"})).await;
    assert_eq!(r.status(), 200);
    let lease: Value = r.json().await.unwrap();
    assert_eq!(lease["fencing"], 1);
    assert_eq!(lease["ttl_ms"], 30_000);
    let token = lease["token"].as_str().unwrap().to_owned();

    let r = post(&b, "/api/v1/locks/nightly-report", json!({})).await;
    let (status, p) = problem(r).await;
    assert_eq!(status, 409);
    assert_eq!(p["type"], "urn:keel:problem:lock-held");
    assert!(p["expires_in_ms"].as_u64().unwrap() > 25_000, "{p}");

    let r = post(
        &b,
        "/api/v1/locks/nightly-report/extend",
        json!({"token": "someone-else"}),
    )
    .await;
    let (status, p) = problem(r).await;
    assert_eq!(
        (status.as_u16(), p["type"].as_str()),
        (409, Some("urn:keel:problem:not-lock-holder"))
    );
    let r = post(
        &b,
        "/api/v1/locks/nightly-report/extend",
        json!({"token": token, "ttl": "1m"}),
    )
    .await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"ttl_ms": 60_000}));

    // B waits while A releases it.
    let waiting = tokio::spawn({
        let request = b
            .request(Method::POST, "/api/v1/locks/nightly-report", Role::Worker)
            .json(&json!({"wait": "10s"}));
        async move { request.send().await.unwrap().json::<Value>().await.unwrap() }
    });
    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    let r = a
        .request(
            Method::DELETE,
            &format!("/api/v1/locks/nightly-report?token={token}"),
            Role::Worker,
        )
        .sent()
        .await;
    assert_eq!(r.status(), 204);
    let second = waiting.await.unwrap();
    assert_eq!(second["fencing"], 2, "{second}");
    let r = a
        .request(Method::DELETE, "/api/v1/locks/nightly-report", Role::Worker)
        .json(&json!({"token": token}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409, "the old token holds nothing");
}

/// An app that answers every path; counts requests.
async fn start_app() -> (String, Arc<AtomicUsize>) {
    let count = Arc::new(AtomicUsize::new(0));
    let counted = count.clone();
    let app = Router::new().route(
        "/{*rest}",
        get(move || {
            counted.fetch_add(1, Ordering::SeqCst);
            async { "ok" }
        }),
    );
    let url = keel_test::serve_app(app).await;
    (url, count)
}

#[tokio::test]
async fn the_gateways_of_two_instances_share_one_rate_limit() {
    let redis = RedisServer::start();
    let (upstream, count) = start_app().await;
    let a = instance(&redis, Some(&upstream)).await;
    let b = instance(&redis, Some(&upstream)).await;
    let mut statuses = Vec::new();
    for i in 0..12 {
        let server = if i % 2 == 0 { &a } else { &b };
        let r = server
            .client()
            .get(server.gateway_url("/api/x"))
            .sent()
            .await;
        statuses.push(r.status().as_u16());
    }
    assert_eq!(
        statuses.iter().filter(|s| **s == 200).count(),
        4,
        "{statuses:?}"
    );
    assert_eq!(
        statuses.iter().filter(|s| **s == 429).count(),
        8,
        "{statuses:?}"
    );
    assert_eq!(
        count.load(Ordering::SeqCst),
        4,
        "refused requests never reach the app"
    );
}

#[tokio::test]
async fn locks_and_limits_work_without_redis_and_bad_input_is_explained() {
    let server = TestServer::start().await;
    let r = post(&server, "/api/v1/locks/solo", json!({"ttl": "5s"})).await;
    let lease: Value = r.json().await.unwrap();
    assert_eq!(lease["fencing"], 1);
    let held = post(&server, "/api/v1/locks/solo", json!({})).await;
    assert_eq!(held.status(), 409);
    // A body is optional when taking a lock.
    let r = server
        .request(Method::POST, "/api/v1/locks/other", Role::Worker)
        .sent()
        .await;
    assert_eq!(r.json::<Value>().await.unwrap()["ttl_ms"], 30_000);

    for (path, body, says) in [
        (
            "/api/v1/locks/a%20b",
            json!({}),
            "not allowed in a lock name",
        ),
        (
            "/api/v1/locks/x",
            json!({"ttl": "10ms"}),
            "ttl must be between 100ms and 24h",
        ),
        (
            "/api/v1/locks/x",
            json!({"ttl": "2d"}),
            "ttl must be between 100ms and 24h",
        ),
        (
            "/api/v1/locks/x",
            json!({"wait": "2m"}),
            "wait must be at most 60s",
        ),
        ("/api/v1/locks/x", json!({"ttl": "soon"}), "ttl"),
        ("/api/v1/locks/x/extend", json!({}), "token"),
        (
            "/api/v1/ratelimit/check",
            json!({"key": "", "rate": 1}),
            "key must have 1 to 512 bytes",
        ),
        (
            "/api/v1/ratelimit/check",
            json!({"key": "k", "rate": 0}),
            "rate must be at least 1",
        ),
        (
            "/api/v1/ratelimit/check",
            json!({"key": "k", "rate": 1, "per": "0s"}),
            "per must be between",
        ),
        (
            "/api/v1/ratelimit/check",
            json!({"key": "k", "rate": 1, "burst": 0}),
            "burst must be at least 1",
        ),
        (
            "/api/v1/ratelimit/check",
            json!({"key": "k", "rate": 1, "cost": 0}),
            "cost must be at least 1",
        ),
        (
            "/api/v1/ratelimit/check",
            json!({"key": "k\u{7}", "rate": 1}),
            "control characters",
        ),
        (
            "/api/v1/ratelimit/check",
            json!({"key": "k", "rate": 1, "extra": 1}),
            "unknown field",
        ),
    ] {
        let (status, p) = problem(post(&server, path, body.clone()).await).await;
        assert!(status == 400 || status == 422, "{path} {body}: {status}");
        let detail = p["detail"].as_str().unwrap_or_default();
        assert!(detail.contains(says), "{path} {body}: {detail}");
    }
    let r = server
        .request(Method::DELETE, "/api/v1/locks/solo", Role::Worker)
        .sent()
        .await;
    let (status, p) = problem(r).await;
    assert_eq!(status, 400);
    assert!(p["detail"].as_str().unwrap().contains("?token="), "{p}");

    // Viewers may not take locks or spend budgets.
    for path in ["/api/v1/locks/solo", "/api/v1/ratelimit/check"] {
        let r = server
            .request(Method::POST, path, Role::Viewer)
            .json(&json!({"key": "k", "rate": 1}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 403, "{path}");
    }
}

#[tokio::test]
async fn a_cache_delete_on_one_instance_is_not_served_by_another_after_l1_staleness() {
    let redis = RedisServer::start();
    let (a, b) = (instance(&redis, None).await, instance(&redis, None).await);
    for server in [&a, &b] {
        wait_subscribed(server).await;
    }
    let key = "/api/v1/cache/keys/profile:7";
    let r = a
        .request(Method::PUT, &format!("{key}?ttl=10m"), Role::Worker)
        .header("content-type", "application/json")
        .body(r#"{"name":"ada"}"#)
        .sent()
        .await;
    assert_eq!(r.status(), 201);
    // B hears of the write first: an L2 read overtaken by an invalidation is not kept in
    // memory, and the statistics below count memory hits.
    wait_for_cache(&b, "B hears of the write", |s| {
        s["invalidation"]["received"].as_u64() >= Some(1)
    })
    .await;
    for _ in 0..2 {
        let r = b.get(key).sent().await;
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        assert_eq!(r.text().await.unwrap(), r#"{"name":"ada"}"#);
    }
    let stats = cache_stats(&b).await;
    assert_eq!(
        (stats["l2"]["hits"].as_u64(), stats["l1_hits"].as_u64()),
        (Some(1), Some(1)),
        "{stats}"
    );

    let deleted_at = std::time::Instant::now();
    assert_eq!(
        a.request(Method::DELETE, key, Role::Worker)
            .sent()
            .await
            .status(),
        204
    );
    while b.get(key).sent().await.status() == 200 {
        tokio::time::sleep(std::time::Duration::from_millis(1)).await;
    }
    let stale_for = deleted_at.elapsed();
    assert!(
        stale_for <= std::time::Duration::from_millis(100),
        "served for {stale_for:?} after the delete"
    );

    // Cluster statistics sum both instances.
    let cluster: Value = a
        .get("/api/v1/cache/stats?scope=cluster")
        .sent()
        .await
        .json()
        .await
        .unwrap();
    assert!(cluster["instances"].as_u64().unwrap() >= 1, "{cluster}");
    let (status, p) = problem(b.get("/api/v1/cache/stats?scope=everything").sent().await).await;
    assert_eq!(status, 400, "{p}");
}

async fn cache_stats(server: &TestServer) -> Value {
    let r = server.get("/api/v1/cache/stats").sent().await;
    r.json().await.unwrap()
}

/// Waits (bounded) until the instance's cache statistics say `done`.
async fn wait_for_cache(server: &TestServer, what: &str, done: impl Fn(&Value) -> bool) {
    for _ in 0..500 {
        if done(&cache_stats(server).await) {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("waited in vain: {what}");
}

/// Waits (bounded) until the instance receives cache invalidations.
async fn wait_subscribed(server: &TestServer) {
    wait_for_cache(server, "subscribed to invalidations", |s| {
        s["invalidation"]["subscribed"] == true
    })
    .await;
}

async fn redis_health(server: &TestServer) -> String {
    let health: Value = server
        .public("/health/detailed")
        .await
        .json()
        .await
        .unwrap();
    health["checks"]["redis:connection"][0]["status"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

/// An app whose `/cached/*` answers may be cached for a minute.
async fn start_cacheable_app() -> String {
    let app = Router::new().route(
        "/cached/{*rest}",
        get(|| async { ([("cache-control", "public, max-age=60")], "cached body") }),
    );
    keel_test::serve_app(app).await
}

#[tokio::test]
async fn killing_redis_under_load_fails_no_cached_request_and_keel_recovers_by_itself() {
    let mut redis = RedisServer::start();
    let upstream = start_cacheable_app().await;
    let url = redis.url();
    let server = Arc::new(
        TestServer::start_with(
            move |c| {
                c.redis.url = Some(Secret::new(url));
                c.gateway.upstream = Some(upstream);
            },
            Vec::new(),
        )
        .await,
    );
    wait_subscribed(&server).await;
    let key = "/api/v1/cache/keys/hot";
    let r = put(&server, &format!("{key}?ttl=10m"), "hot value").await;
    assert_eq!(r.status(), 201);
    assert_eq!(redis_health(&server).await, "pass");

    // Steady load on a cached API key and a cached gateway route while Redis dies.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let load: Vec<_> = (0..4)
        .map(|i| {
            let (server, stop) = (server.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut ok, mut failed) = (0u32, Vec::new());
                while !stop.load(Ordering::Relaxed) {
                    let r = if i % 2 == 0 {
                        server.get(key).send().await
                    } else {
                        server
                            .client()
                            .get(server.gateway_url("/cached/list"))
                            .send()
                            .await
                    };
                    match r {
                        Ok(r) if r.status() == 200 => ok += 1,
                        Ok(r) => failed.push(r.status().to_string()),
                        Err(e) => failed.push(e.to_string()),
                    }
                }
                (ok, failed)
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    redis.kill();
    let mut health = String::new();
    for _ in 0..100 {
        health = redis_health(&server).await;
        if health == "warn" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert_eq!(health, "warn", "health warns while Redis is down");
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    // Writes and deletes go on in memory, without a 5xx.
    let r = put(&server, "/api/v1/cache/keys/while-down", "x").await;
    assert_eq!(r.status(), 201);
    assert_eq!(
        server
            .get("/api/v1/cache/keys/never-there")
            .sent()
            .await
            .status(),
        404
    );

    // No request of the load failed while Redis was down.
    stop.store(true, Ordering::Relaxed);
    let mut served = 0;
    for task in load {
        let (ok, failed) = task.await.unwrap();
        assert!(failed.is_empty(), "failed requests: {failed:?}");
        served += ok;
    }
    assert!(served > 100, "the load ran: {served} requests");

    // Redis comes back (empty: this one keeps nothing on disk): keel reconnects on its own
    // within 5 s.
    redis.restart();
    let restarted = std::time::Instant::now();
    while redis_health(&server).await != "pass" {
        assert!(
            restarted.elapsed() < std::time::Duration::from_secs(5),
            "not recovered after 5 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    wait_subscribed(&server).await;
    // Redis takes writes again.
    let r = put(&server, "/api/v1/cache/keys/after", "y").await;
    assert_eq!(r.status(), 201);
    let stats = cache_stats(&server).await;
    assert!(stats["l2"]["writes"].as_u64().unwrap() >= 2, "{stats}");
}

#[tokio::test]
async fn a_stalled_redis_times_out_cleanly_opens_its_breaker_and_memory_keeps_serving() {
    let redis = RedisServer::start();
    let url = redis.url();
    let server = TestServer::start_with(
        move |c| {
            c.redis.url = Some(Secret::new(url));
            c.redis.command_timeout = keel_core::HumanDuration::from_millis(100);
        },
        Vec::new(),
    )
    .await;
    wait_subscribed(&server).await;
    let r = put(&server, "/api/v1/cache/keys/warm?ttl=10m", "w").await;
    assert_eq!(r.status(), 201);

    redis.pause();
    // Misses wait for Redis no longer than the command timeout, then answer 404; after a few
    // the breaker opens and they answer at once.
    for i in 0..8 {
        let r = server
            .get(&format!("/api/v1/cache/keys/cold-{i}"))
            .sent()
            .await;
        assert_eq!(r.status(), 404);
    }
    let stats: Value = server
        .get("/api/v1/stats")
        .sent()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["redis"]["connection"]["breaker"], "open", "{stats}");
    assert!(stats["redis"]["connection"]["timeouts"].as_u64().unwrap() >= 1);
    // What memory holds is still served.
    let r = server.get("/api/v1/cache/keys/warm").sent().await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.text().await.unwrap(), "w");
    redis.resume();
}

#[tokio::test]
async fn a_gateway_purge_on_one_instance_reaches_the_other() {
    let redis = RedisServer::start();
    let upstream = start_cacheable_app().await;
    let start = |url: String, upstream: String| {
        TestServer::start_with(
            move |c| {
                c.redis.url = Some(Secret::new(url));
                c.gateway.upstream = Some(upstream);
            },
            Vec::new(),
        )
    };
    let a = start(redis.url(), upstream.clone()).await;
    let b = start(redis.url(), upstream).await;
    for server in [&a, &b] {
        wait_subscribed(server).await;
    }
    let x_cache = |server: &TestServer, path: &str| {
        let request = server.client().get(server.gateway_url(path));
        async move {
            let r = request.send().await.unwrap();
            r.headers()["x-cache"].to_str().unwrap().to_owned()
        }
    };
    for path in ["/cached/list", "/cached/other"] {
        for server in [&a, &b] {
            assert_eq!(x_cache(server, path).await, "MISS");
            assert_eq!(x_cache(server, path).await, "HIT");
        }
    }
    let received = |s: &Value| s["invalidation"]["received"].as_u64().unwrap();
    let before = received(&cache_stats(&b).await);
    let r = post(&a, "/api/v1/gateway/purge", json!({"url": "/cached/list"})).await;
    assert_eq!(r.json::<Value>().await.unwrap(), json!({"purged": 1}));
    // A URL purge sends two broadcasts (the URL, and the pattern of its variants), which may
    // arrive in either order.
    wait_for_cache(&b, "B hears of the purge", |s| received(s) >= before + 2).await;
    assert_eq!(
        x_cache(&b, "/cached/list").await,
        "MISS",
        "B dropped its copy"
    );
    assert_eq!(
        x_cache(&b, "/cached/other").await,
        "HIT",
        "and only that one"
    );
}

#[tokio::test]
async fn keel_reaches_redis_over_tls() {
    let redis = RedisServer::start_tls(true);
    let tls = redis.tls().unwrap();
    let (url, ca, cert, key) = (
        redis.url(),
        tls.path("ca.crt"),
        tls.path("client.crt"),
        tls.path("client.key"),
    );
    let server = TestServer::start_with(
        move |c| {
            c.redis.url = Some(Secret::new(url));
            c.redis.tls_ca_file = Some(ca);
            c.redis.tls_cert_file = Some(cert);
            c.redis.tls_key_file = Some(key);
        },
        Vec::new(),
    )
    .await;
    assert_eq!(redis_health(&server).await, "pass");
    wait_subscribed(&server).await;
    let r = post(&server, "/api/v1/locks/tls", json!({})).await;
    assert_eq!(r.status(), 200);

    // A client certificate without its key is a config error naming the field.
    let mut config = keel_server::config::Config::default();
    config.redis.url = Some(Secret::new(redis.url()));
    config.redis.tls_cert_file = Some(tls.path("client.crt"));
    let e = config.validate().unwrap_err().to_string();
    assert!(e.starts_with("redis.tls_key_file"), "{e}");
}

#[tokio::test]
async fn shared_rate_limits_fail_open_while_redis_is_down_and_count_it() {
    let mut redis = RedisServer::start();
    let (upstream, count) = start_app().await;
    let server = instance(&redis, Some(&upstream)).await;
    let get = |server: &TestServer| server.client().get(server.gateway_url("/api/x")).send();
    assert_eq!(get(&server).await.unwrap().status(), 200);
    redis.kill();
    // The limit (4 an hour) is not enforced while Redis cannot be asked: requests pass.
    for _ in 0..6 {
        assert_eq!(get(&server).await.unwrap().status(), 200);
    }
    assert_eq!(count.load(Ordering::SeqCst), 7);
    let metrics = server.get("/metrics").sent().await.text().await.unwrap();
    let admitted = metrics
        .lines()
        .find(|l| l.starts_with("keel_ratelimit_undecided_total{outcome=\"admitted\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_default();
    assert!(admitted >= 6.0, "{metrics}");
}
