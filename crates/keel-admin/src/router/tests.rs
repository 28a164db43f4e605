//! Handler tests through `oneshot`, without a listener.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{Request, StatusCode, header};
use http_body_util::BodyExt;
use keel_auth::{AuthConfig, Authenticator, Role, TokenConfig};
use keel_core::health::CheckSpec;
use keel_core::{CheckOutcome, Clock, HealthRegistry, Metrics, Secret, Shutdown};
use serde_json::Value;
use tower::ServiceExt;

use super::*;
use crate::AdminStateBuilder;

const ADMIN: &str = "admin-token-for-tests";
const VIEWER: &str = "viewer-token-for-tests";

fn state_with(public_health: bool) -> AdminState {
    let mut auth = AuthConfig::default();
    auth.public_health = public_health;
    auth.tokens = vec![
        TokenConfig {
            name: "a".into(),
            token: Secret::new(ADMIN),
            role: Role::Admin,
        },
        TokenConfig {
            name: "v".into(),
            token: Secret::new(VIEWER),
            role: Role::Viewer,
        },
    ];
    AdminStateBuilder {
        health: HealthRegistry::new(Duration::from_secs(2)),
        metrics: Metrics::new(&keel_core::BuildInfo::current()),
        authenticator: Arc::new(Authenticator::new(&auth, None).unwrap()),
        public_health: auth.public_health,
        public_metrics: auth.public_metrics,
        sample_interval: Duration::from_secs(10),
        history_retention: Duration::from_secs(86_400),
        shutdown: Shutdown::new(),
        clock: Clock::system(),
        service_id: "test".into(),
        data_dir: "/tmp".into(),
        effective_config: serde_json::json!({"redis": {"password": "[redacted]"}}),
    }
    .build()
}

fn app(state: &AdminState) -> Router {
    router(
        state.clone(),
        RouterOptions {
            body_limit: 1024,
            api: Vec::new(),
            cache_fast_path: None,
        },
    )
}

async fn call(
    app: &Router,
    method: &str,
    uri: &str,
    token: Option<&str>,
) -> (StatusCode, Value, axum::http::HeaderMap) {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(t) = token {
        req = req.header(header::AUTHORIZATION, format!("Bearer {t}"));
    }
    let resp = app
        .clone()
        .oneshot(req.body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let bytes = resp.into_body().collect().await.unwrap().to_bytes();
    let value = serde_json::from_slice(&bytes)
        .unwrap_or(Value::String(String::from_utf8_lossy(&bytes).into()));
    (status, value, headers)
}

#[tokio::test]
async fn every_route_is_in_the_openapi_document() {
    let state = state_with(true);
    let app = app(&state);
    let (status, doc, _) = call(&app, "GET", "/api/v1/openapi.json", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::OK);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3.1"));
    let paths: Vec<&str> = doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .map(String::as_str)
        .collect();
    let expected = [
        "/alive",
        "/ready",
        "/health",
        "/health/detailed",
        "/metrics",
        "/api/v1/system/metrics",
        "/api/v1/system/info",
        "/api/v1/system/history",
        "/api/v1/stats",
        "/api/v1/openapi.json",
    ];
    for path in expected {
        assert!(
            paths.contains(&path),
            "{path} missing from OpenAPI paths {paths:?}"
        );
        let (status, _, _) = call(&app, "GET", path, Some(ADMIN)).await;
        assert!(status.is_success(), "{path} answered {status}");
    }
    assert_eq!(
        paths.len(),
        expected.len(),
        "a documented path is not in this test's list: {paths:?}"
    );
}

#[tokio::test]
async fn readiness_follows_required_checks_and_shutdown() {
    let state = state_with(true);
    let app = app(&state);
    let (status, body, _) = call(&app, "GET", "/ready", None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::OK, Some("ready"))
    );

    state.health().register(
        CheckSpec::new("disk", "writable", "datastore").required(),
        || async { CheckOutcome::fail("read-only file system") },
    );
    let (status, body, headers) = call(&app, "GET", "/ready", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["failing"]["disk:writable"], "read-only file system");
    assert_eq!(headers[header::CONTENT_TYPE], "application/json");

    state.health().register(
        CheckSpec::new("disk", "writable", "datastore").required(),
        || async { CheckOutcome::pass() },
    );
    assert_eq!(call(&app, "GET", "/ready", None).await.0, StatusCode::OK);
    state.shutdown().trigger();
    let (status, body, _) = call(&app, "GET", "/ready", None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("shutting_down"))
    );
    assert_eq!(call(&app, "GET", "/alive", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn detailed_health_is_health_json() {
    let state = state_with(true);
    state.health().register(
        CheckSpec::new("memory", "utilization", "system"),
        || async { CheckOutcome::warn("high").observed(93.5, "percent") },
    );
    let app = app(&state);
    let (status, body, headers) = call(&app, "GET", "/health/detailed", None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(headers[header::CONTENT_TYPE], "application/health+json");
    assert_eq!(body["status"], "warn");
    assert_eq!(body["serviceId"], "test");
    assert!(body["releaseId"].as_str().unwrap().contains('+'));
    let check = &body["checks"]["memory:utilization"][0];
    assert_eq!(check["componentId"], "memory");
    assert_eq!(check["componentType"], "system");
    assert_eq!(check["observedValue"], 93.5);
    assert_eq!(check["observedUnit"], "percent");
    assert_eq!(check["status"], "warn");
    assert!(check["time"].as_str().unwrap().ends_with('Z'));

    state
        .health()
        .register(CheckSpec::new("store", "writable", "datastore"), || async {
            CheckOutcome::fail("gone")
        });
    let (status, body, _) = call(&app, "GET", "/health/detailed", None).await;
    assert_eq!(
        (status, body["status"].as_str()),
        (StatusCode::SERVICE_UNAVAILABLE, Some("fail"))
    );
    let (status, body, _) = call(&app, "GET", "/health", None).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE);
    assert_eq!(body["checks"]["store:writable"], "fail");
}

#[tokio::test]
async fn health_can_be_made_private() {
    let state = state_with(false);
    let app = app(&state);
    let (status, body, headers) = call(&app, "GET", "/health", None).await;
    assert_eq!(status, StatusCode::UNAUTHORIZED);
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert!(
        headers[header::WWW_AUTHENTICATE]
            .to_str()
            .unwrap()
            .starts_with("Bearer realm=\"keel\"")
    );
    assert_eq!(body["instance"], "/health");
    assert_eq!(
        call(&app, "GET", "/health", Some(VIEWER)).await.0,
        StatusCode::OK
    );
    // /metrics stays public unless its own switch is off.
    assert_eq!(call(&app, "GET", "/metrics", None).await.0, StatusCode::OK);
}

#[tokio::test]
async fn errors_are_problems_with_request_ids() {
    let state = state_with(true);
    let app = app(&state);
    let (status, body, headers) = call(&app, "GET", "/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(headers[header::CONTENT_TYPE], "application/problem+json");
    assert_eq!(body["status"], 404);
    assert_eq!(body["instance"], "/nope");
    assert_eq!(
        body["request_id"],
        headers["x-request-id"].to_str().unwrap()
    );

    let (status, body, headers) = call(&app, "DELETE", "/alive", None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert_eq!(body["title"], "Method Not Allowed");
    assert!(headers.contains_key(header::ALLOW));

    let (status, body, _) = call(
        &app,
        "GET",
        "/api/v1/system/history?window=2d",
        Some(VIEWER),
    )
    .await;
    assert_eq!(status, StatusCode::BAD_REQUEST);
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("15m, 1h, 6h, 24h")
    );
}

#[tokio::test]
async fn system_info_redacts_and_history_has_a_sample() {
    let state = state_with(true);
    let app = app(&state);
    let (status, body, _) = call(&app, "GET", "/api/v1/system/info", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["config"]["redis"]["password"], "[redacted]");
    assert!(body["cpu_count"].as_u64().unwrap() >= 1);
    assert!(!body.to_string().contains(ADMIN));

    crate::history::record_sample(&state);
    let (status, body, _) = call(
        &app,
        "GET",
        "/api/v1/system/history?window=1h",
        Some(VIEWER),
    )
    .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["samples"].as_array().unwrap().len(), 1);
    assert!(body["samples"][0]["rss_bytes"].as_u64().unwrap() > 0);
    assert!(body["rss_trend_bytes_per_hour"].is_null());
}

#[tokio::test]
async fn stats_include_registered_sources() {
    let state = state_with(true);
    state.register_stats("widgets", || async { serde_json::json!({"count": 3}) });
    let app = app(&state);
    let (status, body, _) = call(&app, "GET", "/api/v1/stats", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(body["widgets"]["count"], 3);
    assert!(body["system"]["memory_total_bytes"].as_u64().unwrap() > 0);
    assert_eq!(body["health"]["status"], "pass");
}

#[tokio::test]
async fn server_errors_hide_their_detail_and_name_the_request_id() {
    use utoipa_axum::router::OpenApiRouter;
    use utoipa_axum::routes;

    #[utoipa::path(get, path = "/boom", responses((status = 500)))]
    async fn boom() -> Problem {
        Problem::status(StatusCode::INTERNAL_SERVER_ERROR).with_detail("db password is hunter2")
    }

    let state = state_with(true);
    let extra = OpenApiRouter::new().routes(routes!(boom));
    let app = router(
        state.clone(),
        RouterOptions {
            body_limit: 1024,
            api: vec![extra],
            cache_fast_path: None,
        },
    );
    let (status, body, headers) = call(&app, "GET", "/api/v1/boom", Some(VIEWER)).await;
    assert_eq!(status, StatusCode::INTERNAL_SERVER_ERROR);
    let detail = body["detail"].as_str().unwrap();
    assert!(!detail.contains("hunter2"), "{detail}");
    assert!(
        detail.contains(headers["x-request-id"].to_str().unwrap()),
        "{detail}"
    );
}
