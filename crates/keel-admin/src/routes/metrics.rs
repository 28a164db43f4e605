//! `/metrics`: Prometheus text exposition.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::AdminState;

/// Every series in the Prometheus text format: process, build info, HTTP API, and whatever the
/// subsystems register.
#[utoipa::path(get, path = "/metrics", tag = "monitoring",
    responses((status = 200, description = "Prometheus text exposition format 0.0.4", body = String,
               content_type = "text/plain; version=0.0.4")))]
pub(crate) async fn metrics(State(state): State<AdminState>) -> Response {
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        )],
        state.metrics().encode(),
    )
        .into_response()
}
