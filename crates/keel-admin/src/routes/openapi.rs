//! `/api/v1/openapi.json`.

use axum::extract::State;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::AdminState;

/// The OpenAPI 3.1 document of keel's API, generated from the code.
#[utoipa::path(get, path = "/openapi.json", tag = "meta", security(("bearer" = [])),
    responses((status = 200, description = "OpenAPI 3.1 document", body = Object)))]
pub(crate) async fn openapi_json(State(state): State<AdminState>) -> Response {
    let doc = state
        .openapi_json()
        .get()
        .cloned()
        .unwrap_or_else(|| "{}".to_owned());
    (
        [(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        )],
        doc,
    )
        .into_response()
}
