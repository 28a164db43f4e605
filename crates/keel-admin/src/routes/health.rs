//! `/alive`, `/ready`, `/health` and `/health/detailed`.

use std::collections::BTreeMap;
use std::time::SystemTime;

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use keel_core::HealthStatus;
use keel_core::health::HealthReport;
use serde::Serialize;
use serde_json::{Map, Value, json};

use crate::AdminState;

/// The media type of draft-inadarei-api-health-check documents.
pub(crate) const HEALTH_JSON: &str = "application/health+json";

/// Liveness: 200 while the process serves requests. Checks no dependency.
#[utoipa::path(get, path = "/alive", tag = "health",
    responses((status = 200, description = "The process is serving", body = Object, content_type = "application/json")))]
pub(crate) async fn alive() -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        r#"{"status":"alive"}"#,
    )
        .into_response()
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct ReadyBody {
    /// `ready`, `not_ready` or `shutting_down`.
    status: &'static str,
    /// The failing required checks, keyed `component:measurement`, with their output.
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    failing: BTreeMap<String, String>,
}

/// Readiness: 200 when every required component is ready; 503 with the failing components, or
/// 503 as soon as shutdown begins.
#[utoipa::path(get, path = "/ready", tag = "health",
    responses((status = 200, body = ReadyBody), (status = 503, body = ReadyBody)))]
pub(crate) async fn ready(State(state): State<AdminState>) -> Response {
    if state.shutdown().is_triggered() {
        let body = ReadyBody {
            status: "shutting_down",
            failing: BTreeMap::new(),
        };
        return (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response();
    }
    let report = state.health().run_readiness().await;
    let failing: BTreeMap<String, String> = report
        .failing_required()
        .map(|r| (r.spec.key(), r.outcome.output.clone().unwrap_or_default()))
        .collect();
    if failing.is_empty() {
        axum::Json(ReadyBody {
            status: "ready",
            failing,
        })
        .into_response()
    } else {
        (
            StatusCode::SERVICE_UNAVAILABLE,
            axum::Json(ReadyBody {
                status: "not_ready",
                failing,
            }),
        )
            .into_response()
    }
}

#[derive(Serialize, utoipa::ToSchema)]
pub(crate) struct HealthSummary {
    /// The worst status of all checks.
    status: HealthStatus,
    /// keel's version.
    version: &'static str,
    /// Seconds since this process started.
    uptime_seconds: u64,
    /// Each check's status, keyed `component:measurement`.
    checks: BTreeMap<String, HealthStatus>,
}

fn status_code(report: &HealthReport, shutting_down: bool) -> StatusCode {
    if shutting_down || report.status() == HealthStatus::Fail {
        StatusCode::SERVICE_UNAVAILABLE
    } else {
        StatusCode::OK
    }
}

/// A short health summary: overall status and each check's status. 503 when any check fails.
#[utoipa::path(get, path = "/health", tag = "health",
    responses((status = 200, body = HealthSummary), (status = 503, body = HealthSummary)))]
pub(crate) async fn health(State(state): State<AdminState>) -> Response {
    let report = state.health().run_all().await;
    let body = HealthSummary {
        status: report.status(),
        version: state.build().version,
        uptime_seconds: state.sampler().sample().process_uptime_seconds,
        checks: report
            .results
            .iter()
            .map(|r| (r.spec.key(), r.outcome.status))
            .collect(),
    };
    (
        status_code(&report, state.shutdown().is_triggered()),
        axum::Json(body),
    )
        .into_response()
}

/// Detailed health as `application/health+json` (draft-inadarei-api-health-check): `status`,
/// `version`, `releaseId`, `serviceId` and `checks` keyed `component:measurement`.
/// 503 when the status is `fail`.
#[utoipa::path(get, path = "/health/detailed", tag = "health",
    responses((status = 200, description = "pass or warn", body = Object, content_type = "application/health+json"),
              (status = 503, description = "fail", body = Object, content_type = "application/health+json")))]
pub(crate) async fn health_detailed(State(state): State<AdminState>) -> Response {
    let report = state.health().run_all().await;
    let mut checks: Map<String, Value> = Map::new();
    for r in &report.results {
        let mut entry = serde_json::to_value(&r.outcome).unwrap_or_default();
        if let Value::Object(obj) = &mut entry {
            obj.insert("componentId".into(), json!(r.spec.component));
            obj.insert("componentType".into(), json!(r.spec.component_type));
            obj.insert("time".into(), json!(rfc3339(r.time)));
        }
        match checks
            .entry(r.spec.key())
            .or_insert_with(|| Value::Array(Vec::new()))
        {
            Value::Array(items) => items.push(entry),
            _ => unreachable!("entries are always arrays"),
        }
    }
    let shutting_down = state.shutdown().is_triggered();
    let status = if shutting_down {
        HealthStatus::Fail
    } else {
        report.status()
    };
    let mut body = json!({
        "status": status,
        "version": state.build().version.split('.').next().unwrap_or("0"),
        "releaseId": format!("{}+{}", state.build().version, state.build().commit),
        "serviceId": state.service_id(),
        "description": "keel performance-and-scalability layer",
        "checks": checks,
    });
    if shutting_down {
        body["output"] = json!("shutting down");
    }
    (
        status_code(&report, shutting_down),
        [(header::CONTENT_TYPE, HeaderValue::from_static(HEALTH_JSON))],
        body.to_string(),
    )
        .into_response()
}

pub(crate) fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}
