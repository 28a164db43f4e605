//! The HTTP API against the real server on 127.0.0.1:0: auth matrix, problem+json, request ids,
//! metrics, graceful shutdown.

mod support;

use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::{Algorithm, EncodingKey, Header, encode};
use keel_auth::{JwtAlgorithm, Role};
use keel_core::Secret;
use keel_test::{
    ADMIN_TOKEN, RedisServer, Sent, TestServer, VIEWER_TOKEN, WORKER_TOKEN, keys, problem,
};
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};

const JWT_SECRET: &str = "integration-test-secret-0123456789abcdef";

fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

async fn server() -> (TestServer, support::Gate) {
    let gate = support::Gate::default();
    let server = TestServer::start_with(
        |c| c.auth.jwt.secret = Some(Secret::new(JWT_SECRET)),
        vec![support::routes(gate.clone())],
    )
    .await;
    (server, gate)
}

#[tokio::test]
async fn auth_matrix() {
    let (server, _) = server().await;
    let c = server.client();
    let url = server.url("/api/v1/stats");

    let resp = c.get(&url).sent().await;
    assert_eq!(resp.headers()["www-authenticate"], "Bearer realm=\"keel\"");
    let (status, body) = problem(resp).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Authorization: Bearer")
    );

    let resp = c
        .get(&url)
        .bearer_auth("not-a-real-token-at-all")
        .sent()
        .await;
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_token\"")
    );
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);

    let resp = c
        .get(&url)
        .header("authorization", "Basic YWRtaW46YWRtaW4=")
        .sent()
        .await;
    assert!(
        resp.headers()["www-authenticate"]
            .to_str()
            .unwrap()
            .contains("error=\"invalid_request\"")
    );

    let expired = encode(
        &Header::default(),
        &json!({"sub": "u", "role": "admin", "exp": now() - 3600}),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let (status, body) = problem(c.get(&url).bearer_auth(&expired).sent().await).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(body["detail"], "token expired");

    // Every role may read.
    for token in [VIEWER_TOKEN, WORKER_TOKEN, ADMIN_TOKEN] {
        assert_eq!(
            c.get(&url).bearer_auth(token).sent().await.status(),
            StatusCode::OK
        );
    }
    // Worker operations: viewer is forbidden, worker and admin allowed.
    let echo = |role| {
        server
            .request(Method::POST, "/api/v1/test/echo", role)
            .json(&json!({"a": 1}))
    };
    let (status, body) = problem(echo(Role::Viewer).sent().await).await;
    assert_eq!(status, StatusCode::FORBIDDEN);
    assert_eq!(
        body["detail"],
        "this operation needs the worker role; your credential has viewer"
    );
    assert_eq!(echo(Role::Worker).sent().await.status(), StatusCode::OK);
    assert_eq!(echo(Role::Admin).sent().await.status(), StatusCode::OK);
    // Admin operations: only admin.
    for (role, want) in [(Role::Viewer, 403), (Role::Worker, 403), (Role::Admin, 204)] {
        let resp = server
            .request(Method::DELETE, "/api/v1/test/admin-only", role)
            .sent()
            .await;
        assert_eq!(resp.status().as_u16(), want, "{role}");
    }
    // A JWT's role claim is honoured the same way.
    let worker_jwt = encode(
        &Header::default(),
        &json!({"sub": "svc", "role": "worker", "exp": now() + 600}),
        &EncodingKey::from_secret(JWT_SECRET.as_bytes()),
    )
    .unwrap();
    let del = c
        .delete(server.url("/api/v1/test/admin-only"))
        .bearer_auth(&worker_jwt);
    assert_eq!(del.sent().await.status(), StatusCode::FORBIDDEN);
    let post = c
        .post(server.url("/api/v1/test/echo"))
        .bearer_auth(&worker_jwt)
        .json(&json!({}));
    assert_eq!(post.sent().await.status(), StatusCode::OK);
}

#[tokio::test]
async fn rs256_and_es256_jwts() {
    for (alg, jwt_alg, private, public) in [
        (
            Algorithm::RS256,
            JwtAlgorithm::RS256,
            keys::RSA_PRIVATE,
            keys::RSA_PUBLIC,
        ),
        (
            Algorithm::ES256,
            JwtAlgorithm::ES256,
            keys::EC_PRIVATE,
            keys::EC_PUBLIC,
        ),
    ] {
        let server = TestServer::start_with(
            |c| {
                c.auth.jwt.algorithm = jwt_alg;
                c.auth.jwt.public_key = Some(public.to_owned());
                c.auth.jwt.issuer = Some("https://id.test".into());
            },
            Vec::new(),
        )
        .await;
        let key = match alg {
            Algorithm::RS256 => EncodingKey::from_rsa_pem(private.as_bytes()).unwrap(),
            _ => EncodingKey::from_ec_pem(private.as_bytes()).unwrap(),
        };
        let claims =
            json!({"sub": "u", "role": "viewer", "iss": "https://id.test", "exp": now() + 60});
        let token = encode(&Header::new(alg), &claims, &key).unwrap();
        let ok = server.get_bearer("/api/v1/stats", &token).await;
        assert_eq!(ok.status(), StatusCode::OK, "{alg:?}");
        let claims = json!({"role": "viewer", "iss": "https://other.test", "exp": now() + 60});
        let wrong_iss = encode(&Header::new(alg), &claims, &key).unwrap();
        let resp = server.get_bearer("/api/v1/stats", &wrong_iss).await;
        assert_eq!(resp.status(), StatusCode::UNAUTHORIZED, "{alg:?}");
    }
}

#[tokio::test]
async fn errors_are_problem_json() {
    let (server, _) = server().await;
    let (status, body) = problem(server.get("/api/v1/nothing-here").sent().await).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(body["instance"], "/api/v1/nothing-here");

    let (status, _) = problem(
        server
            .request(Method::PUT, "/api/v1/stats", Role::Admin)
            .sent()
            .await,
    )
    .await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);

    let echo = || server.request(Method::POST, "/api/v1/test/echo", Role::Worker);
    let big = json!({"data": "x".repeat(2 * 1024 * 1024)});
    let (status, body) = problem(echo().json(&big).sent().await).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(!body["detail"].as_str().unwrap().is_empty());

    let (status, body) = problem(echo().body("{\"a\": 1}").sent().await).await;
    assert_eq!(status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("Content-Type: application/json")
    );

    let malformed = echo()
        .header("content-type", "application/json")
        .body("{\"a\": ");
    let (status, body) = problem(malformed.sent().await).await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    let detail = body["detail"].as_str().unwrap();
    assert!(
        detail.starts_with("malformed JSON") && detail.contains("line 1"),
        "{detail}"
    );
}

#[tokio::test]
async fn request_ids_are_echoed_or_generated() {
    let (server, _) = server().await;
    let resp = server
        .client()
        .get(server.url("/alive"))
        .header("x-request-id", "req-42.a:b")
        .sent()
        .await;
    assert_eq!(resp.headers()["x-request-id"], "req-42.a:b");
    let resp = server
        .client()
        .get(server.url("/alive"))
        .header("x-request-id", "bad id with spaces")
        .sent()
        .await;
    let generated = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    assert_eq!(generated.len(), 32);
    let resp = server.public("/nope").await;
    let id = resp.headers()["x-request-id"].to_str().unwrap().to_owned();
    let (_, body) = problem(resp).await;
    assert_eq!(body["request_id"], id);
}

#[tokio::test]
async fn metrics_are_prometheus_text_with_route_templates() {
    let (server, _) = server().await;
    for _ in 0..3 {
        server.public("/alive").await;
    }
    server.get("/api/v1/system/history?window=1h").sent().await;
    let resp = server.public("/metrics").await;
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain; version=0.0.4")
    );
    let text = resp.text().await.unwrap();
    assert!(
        text.contains(r#"keel_http_requests_total{method="GET",route="/alive",status="2xx"} 3"#),
        "{text}"
    );
    assert!(text.contains(r#"route="/api/v1/system/history""#));
    assert!(text.contains("keel_http_request_duration_seconds_bucket"));
    assert!(text.contains("keel_build_info{"));
    assert!(text.contains("process_resident_memory_bytes"));
}

#[tokio::test]
async fn system_endpoints_answer_and_hide_secrets() {
    let server = TestServer::start_with(
        |c| {
            c.redis.url = Some(Secret::new("redis://user:sup3rsecret@127.0.0.1:1/0"));
            c.health.check_timeout = keel_core::HumanDuration::from_millis(500);
        },
        Vec::new(),
    )
    .await;
    let info: Value = server
        .get("/api/v1/system/info")
        .sent()
        .await
        .json()
        .await
        .unwrap();
    let text = info.to_string();
    assert!(
        !text.contains("sup3rsecret") && !text.contains(ADMIN_TOKEN),
        "{text}"
    );
    assert_eq!(
        info["config"]["redis"]["url"],
        "redis://user:[redacted]@127.0.0.1:1/0"
    );

    let metrics: Value = server
        .get("/api/v1/system/metrics")
        .sent()
        .await
        .json()
        .await
        .unwrap();
    for field in [
        "cpu_system_percent",
        "memory_total_bytes",
        "load_average",
        "process_rss_bytes",
        "process_threads",
        "process_open_fds",
    ] {
        assert!(!metrics[field].is_null(), "{field}");
    }

    // Redis is configured but unreachable: a warning, not a failure, and still ready.
    let health: Value = server
        .public("/health/detailed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(health["checks"]["redis:connection"][0]["status"], "warn");
    assert_eq!(health["status"], "warn");
    assert!(!health.to_string().contains("sup3rsecret"));
    assert_eq!(server.public("/ready").await.status(), StatusCode::OK);

    let stats: Value = server
        .get("/api/v1/stats")
        .sent()
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(stats["health"]["checks"]["datadir:writable"], "pass");
}

#[tokio::test]
async fn redis_check_passes_against_a_real_redis() {
    let redis = RedisServer::start();
    let url = redis.url();
    let server = TestServer::start_with(|c| c.redis.url = Some(Secret::new(url)), Vec::new()).await;
    let health: Value = server
        .public("/health/detailed")
        .await
        .json()
        .await
        .unwrap();
    let check = &health["checks"]["redis:connection"][0];
    assert_eq!(check["status"], "pass", "{health}");
    assert_eq!(check["observedUnit"], "ms");

    // Redis goes away: the check warns, keel stays ready.
    drop(redis);
    let health: Value = server
        .public("/health/detailed")
        .await
        .json()
        .await
        .unwrap();
    assert_eq!(
        health["checks"]["redis:connection"][0]["status"], "warn",
        "{health}"
    );
    assert_eq!(server.public("/ready").await.status(), StatusCode::OK);
}

#[tokio::test]
async fn graceful_shutdown_flips_readiness_and_finishes_in_flight_requests() {
    let gate = support::Gate::default();
    let mut server = TestServer::start_with(
        |c| c.server.shutdown_delay = keel_core::HumanDuration::from_secs(2),
        vec![support::routes(gate.clone())],
    )
    .await;
    assert_eq!(server.public("/ready").await.status(), StatusCode::OK);

    let in_flight = tokio::spawn(server.get("/api/v1/test/slow").send());
    gate.entered.notified().await;
    server.begin_shutdown();
    server.state().shutdown().wait().await;

    let resp = server.public("/ready").await;
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(
        resp.json::<Value>().await.unwrap()["status"],
        "shutting_down"
    );

    gate.release.add_permits(1);
    let done = in_flight.await.unwrap().unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    assert_eq!(done.text().await.unwrap(), "finished");
    server.stop().await.unwrap();
}
