//! Routes only these tests mount, to exercise the API conventions (roles, JSON bodies,
//! in-flight requests) through the real server.

#![allow(dead_code, unreachable_pub)]

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use keel_admin::auth::{AdminRole, Authorized, WorkerRole};
use keel_admin::json::ApiJson;
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

#[utoipa::path(post, path = "/test/echo", responses((status = 200)))]
async fn echo(_: Authorized<WorkerRole>, ApiJson(body): ApiJson<Value>) -> Json<Value> {
    Json(body)
}

#[utoipa::path(delete, path = "/test/admin-only", responses((status = 204)))]
async fn admin_only(_: Authorized<AdminRole>) -> axum::http::StatusCode {
    axum::http::StatusCode::NO_CONTENT
}

/// Lets a test hold a request in flight: the handler signals `entered`, then waits for `release`.
#[derive(Clone)]
pub struct Gate {
    pub entered: Arc<Notify>,
    pub release: Arc<Semaphore>,
}

impl Default for Gate {
    fn default() -> Self {
        Self {
            entered: Arc::default(),
            release: Arc::new(Semaphore::new(0)),
        }
    }
}

#[utoipa::path(get, path = "/test/slow", responses((status = 200)))]
async fn slow(State(gate): State<Gate>) -> &'static str {
    gate.entered.notify_one();
    let _permit = gate.release.acquire().await;
    "finished"
}

pub fn routes(gate: Gate) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(echo))
        .routes(routes!(admin_only))
        .routes(routes!(slow))
        .with_state(gate)
}
