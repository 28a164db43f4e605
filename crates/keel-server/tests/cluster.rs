//! Two keel instances sharing a real Redis Cluster of three masters (`redis.cluster`): the
//! cache, job queues, locks and rate limits behave as on one Redis.

use std::time::{Duration, Instant};

use keel_auth::Role;
use keel_core::{HumanDuration, Secret};
use keel_test::{RedisCluster, Sent, TestServer, problem};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

async fn instance(cluster: &RedisCluster) -> TestServer {
    let (url, nodes) = (cluster.url(), cluster.addresses());
    TestServer::start_with(
        move |c| {
            c.redis.url = Some(Secret::new(url));
            c.redis.cluster = nodes;
            c.queue.backend = keel_queue::QueueBackend::Redis;
            c.queue.stall_check_interval = HumanDuration::from_millis(50);
        },
        Vec::new(),
    )
    .await
}

async fn post(server: &TestServer, path: &str, body: Value) -> reqwest::Response {
    server.post_as(Role::Worker, path, &body).await
}

async fn status_of(server: &TestServer, path: &str) -> StatusCode {
    server
        .request(Method::GET, path, Role::Viewer)
        .sent()
        .await
        .status()
}

#[tokio::test]
async fn two_instances_share_cache_queues_locks_and_limits_through_a_cluster() {
    let cluster = RedisCluster::start(3);
    let (a, b) = (instance(&cluster).await, instance(&cluster).await);
    let health: Value = a.public("/health/detailed").await.json().await.unwrap();
    let check = &health["checks"]["redis:connection"][0];
    assert_eq!(check["status"], "pass", "{health}");
    assert_eq!(b.get("/ready").sent().await.status(), 200);

    // The cache: written on A with a tag, read on B, invalidated by tag on B, gone on A.
    for i in 0..20 {
        let r = a
            .request(
                Method::PUT,
                &format!("/api/v1/cache/keys/user:{i}?tags=users"),
                Role::Worker,
            )
            .body(format!("v{i}"))
            .sent()
            .await;
        assert_eq!(r.status(), StatusCode::CREATED);
    }
    assert_eq!(status_of(&a, "/api/v1/cache/keys/user:3").await, 200);
    let r = b
        .request(Method::GET, "/api/v1/cache/keys/user:3", Role::Viewer)
        .sent()
        .await;
    assert_eq!(r.text().await.unwrap(), "v3");
    let r = b
        .request(Method::DELETE, "/api/v1/cache/tags/users", Role::Worker)
        .sent()
        .await;
    let deleted: Value = r.json().await.unwrap();
    assert_eq!(deleted["deleted"], 20);
    let deadline = Instant::now() + Duration::from_secs(5);
    while status_of(&a, "/api/v1/cache/keys/user:3").await != 404 {
        assert!(
            Instant::now() < deadline,
            "A still serves an invalidated entry"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Jobs added on A in three queues, worked on B.
    for queue in ["mail", "images", "reports"] {
        let jobs: Vec<Value> = (0..4).map(|i| json!({"name": "n", "payload": i})).collect();
        let r = post(
            &a,
            &format!("/api/v1/queues/{queue}/jobs"),
            json!({"jobs": jobs}),
        )
        .await;
        assert_eq!(r.status(), StatusCode::CREATED);
        let fetched: Value = post(
            &b,
            &format!("/api/v1/queues/{queue}/fetch"),
            json!({"max": 10, "lease": "30s", "worker": "b-1"}),
        )
        .await
        .json()
        .await
        .unwrap();
        let report: Vec<Value> = fetched["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|j| json!({"id": j["id"], "token": j["token"], "result": null}))
            .collect();
        assert_eq!(report.len(), 4, "{fetched}");
        let r = post(&b, "/api/v1/jobs/complete", json!({"jobs": report})).await;
        assert_eq!(r.status(), 200);
        let info: Value = a
            .request(
                Method::GET,
                &format!("/api/v1/queues/{queue}"),
                Role::Viewer,
            )
            .sent()
            .await
            .json()
            .await
            .unwrap();
        assert_eq!(info["counts"]["completed"], 4, "{info}");
    }

    // A lock taken on A is held for B; a limit is shared.
    let r = post(&a, "/api/v1/locks/nightly", json!({"ttl": "30s"})).await;
    assert_eq!(r.status(), 200);
    let (status, p) = problem(post(&b, "/api/v1/locks/nightly", json!({})).await).await;
    assert_eq!(
        (status.as_u16(), p["type"].as_str()),
        (409, Some("urn:keel:problem:lock-held"))
    );
    let body = json!({"key": "client-9", "rate": 3, "burst": 3, "per": "1h"});
    let mut allowed = 0;
    for server in [&a, &b, &a, &b, &a, &b] {
        let answer: Value = post(server, "/api/v1/ratelimit/check", body.clone())
            .await
            .json()
            .await
            .unwrap();
        allowed += usize::from(answer["allowed"] == true);
    }
    assert_eq!(allowed, 3);
}
