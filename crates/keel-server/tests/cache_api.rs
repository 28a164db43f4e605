//! `/api/v1/cache` against the real server: every endpoint, every bad-input case, roles.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use keel_auth::Role;
use keel_test::{Sent, TestServer};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

/// Asserts a problem+json response with `status` and returns its detail.
async fn problem(resp: reqwest::Response, status: StatusCode) -> String {
    let (got, body) = keel_test::problem(resp).await;
    assert_eq!(got, status);
    body["detail"].as_str().unwrap().to_owned()
}

fn put(s: &TestServer, path: &str) -> reqwest::RequestBuilder {
    s.request(Method::PUT, path, Role::Worker)
}

#[tokio::test]
async fn put_get_head_delete_one_key() {
    let s = TestServer::start().await;
    let resp = put(&s, "/api/v1/cache/keys/user:1?ttl=30s&tags=users,team:7")
        .header("content-type", "application/json")
        .body(r#"{"name":"ada"}"#)
        .sent()
        .await;
    assert_eq!(resp.status(), StatusCode::CREATED);
    let resp = put(&s, "/api/v1/cache/keys/user:1")
        .header("keel-ttl", "1m")
        .body("{}")
        .sent()
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    put(&s, "/api/v1/cache/keys/user:1?ttl=30s")
        .header("content-type", "application/json")
        .body(r#"{"name":"ada"}"#)
        .sent()
        .await;

    let resp = s
        .request(Method::GET, "/api/v1/cache/keys/user:1", Role::Viewer)
        .sent()
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let ttl: u64 = resp.headers()["keel-ttl-remaining"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((29..=30).contains(&ttl), "{ttl}");
    let etag = resp.headers()["etag"].to_str().unwrap().to_owned();
    assert!(etag.starts_with('"') && etag.ends_with('"'));
    assert_eq!(resp.text().await.unwrap(), r#"{"name":"ada"}"#);

    let resp = s
        .get("/api/v1/cache/keys/user:1")
        .header("if-none-match", &etag)
        .sent()
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_MODIFIED);
    assert_eq!(resp.headers()["etag"].to_str().unwrap(), etag);
    let resp = s
        .get("/api/v1/cache/keys/user:1")
        .header("if-none-match", "\"other\"")
        .sent()
        .await;
    assert_eq!(resp.status(), StatusCode::OK);

    let resp = s
        .request(Method::HEAD, "/api/v1/cache/keys/user:1", Role::Viewer)
        .sent()
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.headers()["content-type"], "application/json");
    assert!(resp.text().await.unwrap().is_empty());

    // Binary values and keys with slashes (percent-encoded) round-trip.
    let binary = vec![0u8, 159, 146, 150, 255];
    put(&s, "/api/v1/cache/keys/img%2F1.png")
        .header("content-type", "image/png")
        .body(binary.clone())
        .sent()
        .await;
    let resp = s.get("/api/v1/cache/keys/img%2F1.png").sent().await;
    assert_eq!(resp.headers()["content-type"], "image/png");
    assert_eq!(resp.bytes().await.unwrap().to_vec(), binary);

    let resp = s
        .request(Method::DELETE, "/api/v1/cache/keys/user:1", Role::Worker)
        .sent()
        .await;
    assert_eq!(resp.status(), StatusCode::NO_CONTENT);
    let detail = problem(
        s.get("/api/v1/cache/keys/user:1").sent().await,
        StatusCode::NOT_FOUND,
    )
    .await;
    assert!(detail.contains("user:1"), "{detail}");
    let resp = s
        .request(Method::DELETE, "/api/v1/cache/keys/user:1", Role::Worker)
        .sent()
        .await;
    assert_eq!(resp.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn mget_and_mset() {
    let s = TestServer::start().await;
    let entries = json!({"entries": [
        {"key": "a", "value": "hello", "ttl": "1m", "tags": ["t1"]},
        {"key": "b", "value": B64.encode([0xffu8, 0x00, 0x10]), "encoding": "base64", "ttl": 0},
        {"key": "c", "value": "{\"x\":1}", "content_type": "application/json", "ttl": 120},
    ]});
    let resp = s
        .request(Method::POST, "/api/v1/cache/mset", Role::Worker)
        .json(&entries)
        .sent()
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body, json!({"written": 3, "created": 3, "replaced": 0}));

    let resp = s
        .request(Method::POST, "/api/v1/cache/mget", Role::Viewer)
        .json(&json!({"keys": ["a", "b", "c", "missing"]}))
        .sent()
        .await;
    let body: Value = resp.json().await.unwrap();
    let values = body["values"].as_array().unwrap();
    assert_eq!(values[0]["value"], "hello");
    assert_eq!(values[0]["encoding"], "utf8");
    assert!(values[0]["ttl_remaining_ms"].as_u64().unwrap() <= 60_000);
    assert_eq!(values[1]["encoding"], "base64");
    assert_eq!(
        B64.decode(values[1]["value"].as_str().unwrap()).unwrap(),
        vec![0xff, 0x00, 0x10]
    );
    assert!(values[1]["ttl_remaining_ms"].is_null());
    assert_eq!(values[2]["content_type"], "application/json");
    assert!(values[3].is_null());
}

#[tokio::test]
async fn listing_pages_and_pattern_and_tag_deletes() {
    let s = TestServer::start().await;
    let entries: Vec<Value> = (0..25)
        .map(|i| json!({"key": format!("user:123:{i:02}"), "value": "v", "tags": if i % 5 == 0 { vec!["fifth"] } else { vec![] }}))
        .chain((0..5).map(|i| json!({"key": format!("post:{i}"), "value": "v"})))
        .collect();
    s.request(Method::POST, "/api/v1/cache/mset", Role::Worker)
        .json(&json!({"entries": entries}))
        .sent()
        .await;

    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let mut url = "/api/v1/cache/keys?pattern=user:*&limit=10".to_owned();
        if let Some(c) = &cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let page: Value = s
            .request(Method::GET, &url, Role::Viewer)
            .sent()
            .await
            .json()
            .await
            .unwrap();
        for k in page["keys"].as_array().unwrap() {
            assert_eq!(k["size"], 1);
            assert!(k["ttl_remaining_ms"].as_u64().unwrap() > 0);
            seen.push(k["key"].as_str().unwrap().to_owned());
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen.len(), 25);

    let body: Value = s
        .request(Method::DELETE, "/api/v1/cache/tags/fifth", Role::Worker)
        .sent()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["deleted"], 5);
    let body: Value = s
        .request(
            Method::DELETE,
            "/api/v1/cache/keys?pattern=user:123:*",
            Role::Worker,
        )
        .sent()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["deleted"], 20);

    let detail = problem(
        s.request(Method::DELETE, "/api/v1/cache/keys?pattern=*", Role::Admin)
            .sent()
            .await,
        StatusCode::BAD_REQUEST,
    )
    .await;
    assert!(detail.contains("confirm=true"), "{detail}");
    let body: Value = s
        .request(
            Method::DELETE,
            "/api/v1/cache/keys?pattern=*&confirm=true",
            Role::Worker,
        )
        .sent()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["deleted"], 5);

    put(&s, "/api/v1/cache/keys/x").body("1").sent().await;
    let body: Value = s
        .request(Method::POST, "/api/v1/cache/reset", Role::Admin)
        .sent()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(body["deleted"], 1);
}

#[tokio::test]
async fn stats_metrics_and_health_report_the_cache() {
    let s = TestServer::start().await;
    put(&s, "/api/v1/cache/keys/k").body("v").sent().await;
    s.get("/api/v1/cache/keys/k").sent().await;
    s.get("/api/v1/cache/keys/nope").sent().await;
    let stats: Value = s
        .get("/api/v1/cache/stats")
        .sent()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            stats["hits"].as_u64(),
            stats["misses"].as_u64(),
            stats["entries"].as_u64()
        ),
        (Some(1), Some(1), Some(1))
    );
    assert_eq!(stats["hit_ratio"], 0.5);
    assert_eq!(stats["max_memory"], 256 * 1024 * 1024);

    let all: Value = s.get("/api/v1/stats").sent().await.json().await.unwrap();
    assert_eq!(all["cache"]["hits"], 1);
    let metrics = s.public("/metrics").await.text().await.unwrap();
    assert!(metrics.contains("keel_cache_hits_total 1"), "{metrics}");
    assert!(metrics.contains("keel_cache_evictions_total{cause=\"size\"} 0"));
    assert!(metrics.contains("keel_cache_bytes{kind=\"max\"} 268435456"));
    let health: Value = s.public("/health/detailed").await.json().await.unwrap();
    assert_eq!(health["checks"]["cache:memory"][0]["status"], "pass");
}

#[tokio::test]
async fn bad_input_gets_problems_that_say_what_to_fix_and_writes_nothing() {
    let s = TestServer::start_with(
        |c| c.cache.max_value_size = keel_core::ByteSize(1024),
        Vec::new(),
    )
    .await;
    let long_key = "k".repeat(513);
    let cases: Vec<(reqwest::RequestBuilder, StatusCode, &str)> = vec![
        (put(&s, &format!("/api/v1/cache/keys/{long_key}")).body("v"), StatusCode::BAD_REQUEST, "512-byte limit"),
        (put(&s, "/api/v1/cache/keys/a%0Ab").body("v"), StatusCode::BAD_REQUEST, "control character"),
        (put(&s, "/api/v1/cache/keys/k?ttl=soon").body("v"), StatusCode::BAD_REQUEST, "invalid duration"),
        (put(&s, "/api/v1/cache/keys/k").header("keel-ttl", "-5s").body("v"), StatusCode::BAD_REQUEST, "Keel-TTL"),
        (put(&s, "/api/v1/cache/keys/k?tags=,").body("v"), StatusCode::CREATED, ""),
        (put(&s, "/api/v1/cache/keys/big").body(vec![0u8; 1025]), StatusCode::PAYLOAD_TOO_LARGE, "max_value_size"),
        (s.request(Method::POST, "/api/v1/cache/mset", Role::Worker).json(&json!({"entries": [{"key": "ok", "value": "1"}, {"key": "bad", "value": "%%%", "encoding": "base64"}]})), StatusCode::BAD_REQUEST, "entries[1].value: not valid base64"),
        (s.request(Method::POST, "/api/v1/cache/mset", Role::Worker).json(&json!({"entries": [{"key": "ok", "value": "1"}, {"key": "", "value": "1"}]})), StatusCode::BAD_REQUEST, "entries[1]: invalid key"),
        (s.request(Method::POST, "/api/v1/cache/mset", Role::Worker).json(&json!({"entries": [{"key": "ok", "value": "1", "ttl": "later"}]})), StatusCode::BAD_REQUEST, "entries[0].ttl"),
        (s.request(Method::POST, "/api/v1/cache/mset", Role::Worker).json(&json!({"entries": [{"key": "ok", "value": "1", "encoding": "hex"}]})), StatusCode::BAD_REQUEST, "entries[0].encoding"),
        (s.request(Method::POST, "/api/v1/cache/mset", Role::Worker).json(&json!({"entries": [{"key": "ok", "value": "x".repeat(1025)}]})), StatusCode::PAYLOAD_TOO_LARGE, "entries[0]"),
        (s.request(Method::POST, "/api/v1/cache/mset", Role::Worker).json(&json!({"entries": [{"key": "ok", "value": "1", "tags": ["a,b"]}]})), StatusCode::BAD_REQUEST, "comma"),
        (s.request(Method::POST, "/api/v1/cache/mset", Role::Worker).json(&json!({"items": []})), StatusCode::UNPROCESSABLE_ENTITY, "unknown field"),
        (s.request(Method::POST, "/api/v1/cache/mget", Role::Viewer).json(&json!({"keys": [""]})), StatusCode::BAD_REQUEST, "keys[0]"),
        (s.request(Method::POST, "/api/v1/cache/mget", Role::Viewer).json(&json!({"keys": vec!["k"; 1001]})), StatusCode::BAD_REQUEST, "keys: at most 1000"),
        (s.request(Method::GET, "/api/v1/cache/keys?limit=0", Role::Viewer), StatusCode::BAD_REQUEST, "limit"),
        (s.request(Method::GET, "/api/v1/cache/keys?cursor=!!", Role::Viewer), StatusCode::BAD_REQUEST, "cursor"),
        (s.request(Method::DELETE, "/api/v1/cache/keys", Role::Worker), StatusCode::BAD_REQUEST, "pattern: required"),
        (s.request(Method::DELETE, "/api/v1/cache/tags/a,b", Role::Worker), StatusCode::BAD_REQUEST, "comma"),
    ];
    for (request, status, needle) in cases {
        let resp = request.sent().await;
        if status.is_success() {
            assert_eq!(resp.status(), status);
            continue;
        }
        let detail = problem(resp, status).await;
        assert!(detail.contains(needle), "expected {needle:?} in {detail:?}");
    }
    for key in ["ok", "big"] {
        let resp = s.get(&format!("/api/v1/cache/keys/{key}")).sent().await;
        assert_eq!(
            resp.status(),
            StatusCode::NOT_FOUND,
            "{key} must not have been written"
        );
    }
}

#[tokio::test]
async fn roles_gate_reads_writes_and_reset() {
    let s = TestServer::start().await;
    let viewer_put = s
        .request(Method::PUT, "/api/v1/cache/keys/k", Role::Viewer)
        .body("v")
        .sent()
        .await;
    assert_eq!(viewer_put.status(), StatusCode::FORBIDDEN);
    for (method, path) in [
        (Method::DELETE, "/api/v1/cache/keys/k"),
        (Method::DELETE, "/api/v1/cache/keys?pattern=k*"),
        (Method::DELETE, "/api/v1/cache/tags/t"),
        (Method::POST, "/api/v1/cache/mset"),
    ] {
        let resp = s
            .request(method.clone(), path, Role::Viewer)
            .json(&json!({"entries": []}))
            .sent()
            .await;
        assert_eq!(resp.status(), StatusCode::FORBIDDEN, "{method} {path}");
    }
    let reset = s
        .request(Method::POST, "/api/v1/cache/reset", Role::Worker)
        .sent()
        .await;
    assert_eq!(reset.status(), StatusCode::FORBIDDEN);
    let anonymous = s.client().get(s.url("/api/v1/cache/stats")).sent().await;
    assert_eq!(anonymous.status(), StatusCode::UNAUTHORIZED);
    let stats = s
        .request(Method::GET, "/api/v1/cache/stats", Role::Viewer)
        .sent()
        .await;
    assert_eq!(stats.status(), StatusCode::OK);
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document() {
    let s = TestServer::start().await;
    let doc: Value = s
        .get("/api/v1/openapi.json")
        .sent()
        .await
        .json()
        .await
        .unwrap();
    let paths = doc["paths"].as_object().unwrap();
    let expected: &[(&str, &[&str])] = &[
        ("/alive", &["get"]),
        ("/ready", &["get"]),
        ("/health", &["get"]),
        ("/health/detailed", &["get"]),
        ("/metrics", &["get"]),
        ("/api/v1/system/metrics", &["get"]),
        ("/api/v1/system/info", &["get"]),
        ("/api/v1/system/history", &["get"]),
        ("/api/v1/stats", &["get"]),
        ("/api/v1/openapi.json", &["get"]),
        ("/api/v1/cache/keys/{key}", &["put", "get", "delete"]),
        ("/api/v1/cache/keys", &["get", "delete"]),
        ("/api/v1/cache/mget", &["post"]),
        ("/api/v1/cache/mset", &["post"]),
        ("/api/v1/cache/tags/{tag}", &["delete"]),
        ("/api/v1/cache/reset", &["post"]),
        ("/api/v1/cache/stats", &["get"]),
        ("/api/v1/queues/{queue}/jobs", &["post", "get", "delete"]),
        ("/api/v1/queues/{queue}/retry-failed", &["post"]),
        ("/api/v1/queues/{queue}/fetch", &["post"]),
        ("/api/v1/jobs/{id}/complete", &["post"]),
        ("/api/v1/jobs/complete", &["post"]),
        ("/api/v1/jobs/{id}/fail", &["post"]),
        ("/api/v1/jobs/fail", &["post"]),
        ("/api/v1/jobs/{id}/heartbeat", &["post"]),
        ("/api/v1/jobs/{id}/progress", &["post"]),
        ("/api/v1/queues/{queue}/jobs/{id}/promote", &["post"]),
        ("/api/v1/queues/{queue}/jobs/{id}/retry", &["post"]),
        ("/api/v1/queues/{queue}", &["get", "delete"]),
        ("/api/v1/queues", &["get"]),
        ("/api/v1/queues/{queue}/jobs/{id}", &["get", "delete"]),
        ("/api/v1/queues/{queue}/pause", &["post"]),
        ("/api/v1/queues/{queue}/resume", &["post"]),
        ("/api/v1/queues/{queue}/schedules", &["post", "get"]),
        ("/api/v1/queues/{queue}/schedules/{name}", &["delete"]),
        ("/api/v1/events", &["get"]),
        ("/api/v1/gateway/routes", &["get"]),
        ("/api/v1/gateway/slow", &["get"]),
        ("/api/v1/gateway/breakers", &["get"]),
        ("/api/v1/gateway/purge", &["post"]),
        ("/api/v1/gateway/warm", &["post"]),
        ("/api/v1/locks/{name}", &["post", "delete"]),
        ("/api/v1/locks/{name}/extend", &["post"]),
        ("/api/v1/ratelimit/check", &["post"]),
    ];
    for (path, methods) in expected {
        let item = paths
            .get(*path)
            .unwrap_or_else(|| panic!("{path} missing from OpenAPI"));
        for m in *methods {
            assert!(item.get(*m).is_some(), "{m} {path} missing from OpenAPI");
        }
    }
    assert_eq!(
        paths.len(),
        expected.len(),
        "OpenAPI has a path this test does not know: {:?}",
        paths.keys().collect::<Vec<_>>()
    );
}

/// Reads of plain keys are answered ahead of the router (see keel_admin::fast_path); a key
/// written with percent-escapes takes the normal route. Both must answer alike.
#[tokio::test]
async fn fast_and_routed_reads_answer_alike() {
    let s = TestServer::start().await;
    put(&s, "/api/v1/cache/keys/plain?ttl=1m")
        .header("content-type", "text/plain")
        .body("value")
        .sent()
        .await;
    let fast = s.get("/api/v1/cache/keys/plain").sent().await;
    let routed = s.get("/api/v1/cache/keys/pl%61in").sent().await;
    let names = |r: &reqwest::Response| {
        let mut n: Vec<String> = r.headers().keys().map(|k| k.to_string()).collect();
        n.retain(|k| k != "date");
        n.sort();
        n
    };
    assert_eq!(names(&fast), names(&routed));
    for header in ["etag", "content-type", "keel-ttl-remaining"] {
        assert_eq!(fast.headers()[header], routed.headers()[header], "{header}");
    }
    assert_ne!(
        fast.headers()["x-request-id"],
        routed.headers()["x-request-id"]
    );
    assert_eq!(fast.text().await.unwrap(), routed.text().await.unwrap());

    // A miss is the same problem either way, finished with the request's instance.
    let (status, body) = keel_test::problem(s.get("/api/v1/cache/keys/nope").sent().await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["instance"], "/api/v1/cache/keys/nope");
    let (_, routed_body) =
        keel_test::problem(s.get("/api/v1/cache/keys/n%6Fpe").sent().await).await;
    assert_eq!(body["detail"], routed_body["detail"]);

    // Bad or missing credentials never take the shortcut.
    let resp = s.get_bearer("/api/v1/cache/keys/plain", "wrong").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = s.public("/api/v1/cache/keys/plain").await;
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    // Both are counted under the route template.
    let metrics = s.get("/metrics").sent().await.text().await.unwrap();
    let reads = metrics
        .lines()
        .find(|l| {
            l.starts_with("keel_http_requests_total")
                && l.contains("route=\"/api/v1/cache/keys/{key}\"")
                && l.contains("method=\"GET\"")
                && l.contains("status=\"2xx\"")
        })
        .unwrap_or_else(|| panic!("no read counter in {metrics}"));
    assert!(reads.ends_with(" 2"), "{reads}");
}
