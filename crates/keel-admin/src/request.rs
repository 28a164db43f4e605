//! Per-request context: the request id, problem+json finishing, and logging.
//!
//! Every response leaves through [`request_context`], which
//! - takes `X-Request-Id` from the client when well-formed (1–128 of `A-Z a-z 0-9 - _ . :`) or
//!   generates one, runs the request inside a tracing span carrying it, and echoes it;
//! - turns any error response that is not yet problem+json (axum's 405, a 413 from the body
//!   limit, a 415) into one, and fills `instance` and `request_id` on every problem;
//! - logs 5xx responses with their detail and hides that detail from the client.

use std::sync::Arc;
use std::time::Instant;

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use keel_core::Problem;
use keel_core::problem::PROBLEM_JSON;
use tracing::Instrument;

/// The `X-Request-Id` header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// The id of the current request, in request extensions.
#[derive(Debug, Clone)]
pub struct RequestId(pub Arc<str>);

/// Whether a client-sent request id may be used as is.
pub fn is_well_formed(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

fn request_id_of(request: &Request) -> Arc<str> {
    request
        .headers()
        .get(&X_REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|id| is_well_formed(id))
        .map_or_else(
            || Arc::from(uuid::Uuid::new_v4().simple().to_string()),
            Arc::from,
        )
}

/// Middleware: request id, tracing span, problem+json finishing, 5xx logging.
pub async fn request_context(mut request: Request, next: Next) -> Response {
    let id = request_id_of(&request);
    request.extensions_mut().insert(RequestId(id.clone()));
    let path = request.uri().path().to_owned();
    let span =
        tracing::info_span!("request", request_id = %id, method = %request.method(), path = %path);
    let started = Instant::now();
    let response = next.run(request).instrument(span.clone()).await;
    let mut response = finish_problem(response, &path, &id)
        .instrument(span.clone())
        .await;
    let status = response.status();
    span.in_scope(|| {
        tracing::debug!(
            status = status.as_u16(),
            elapsed_us = started.elapsed().as_micros() as u64,
            "served"
        );
    });
    if let Ok(value) = HeaderValue::from_str(&id) {
        response.headers_mut().insert(X_REQUEST_ID.clone(), value);
    }
    response
}

const MAX_ERROR_TEXT: usize = 16 * 1024;

async fn finish_problem(response: Response, path: &str, id: &str) -> Response {
    let status = response.status();
    let existing = response.extensions().get::<Problem>().cloned();
    if existing.is_none() && !status.is_client_error() && !status.is_server_error() {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let mut problem = match existing {
        Some(p) => p,
        None => {
            let content_type = parts
                .headers
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("");
            if !(content_type.is_empty() || content_type.starts_with("text/plain")) {
                // A deliberate non-problem error body (e.g. `/ready`'s JSON): leave it as is.
                return Response::from_parts(parts, body);
            }
            let text = to_bytes(body, MAX_ERROR_TEXT).await.unwrap_or_default();
            let text = String::from_utf8_lossy(&text).trim().to_owned();
            let mut p = Problem::status(status);
            p.detail = Some(if text.is_empty() {
                default_detail(status)
            } else {
                text
            });
            p
        }
    };
    if status.is_server_error() {
        tracing::error!(
            status = status.as_u16(),
            detail = problem.detail.as_deref().unwrap_or(""),
            "server error"
        );
        problem.detail = Some(format!(
            "keel could not complete this request; the error is logged under request id {id}"
        ));
    }
    problem.instance = Some(path.to_owned());
    problem
        .extensions
        .insert("request_id".to_owned(), id.into());
    let bytes = serde_json::to_vec(&problem).unwrap_or_default();
    parts
        .headers
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(PROBLEM_JSON));
    parts.headers.remove(header::CONTENT_LENGTH);
    parts.extensions.insert(problem);
    Response::from_parts(parts, Body::from(bytes))
}

fn default_detail(status: StatusCode) -> String {
    match status {
        StatusCode::NOT_FOUND => {
            "no such endpoint; see /api/v1/openapi.json for the API".to_owned()
        }
        StatusCode::METHOD_NOT_ALLOWED => {
            "this endpoint does not accept that method; the Allow header lists those it does"
                .to_owned()
        }
        StatusCode::PAYLOAD_TOO_LARGE => {
            "the request body is larger than this endpoint accepts".to_owned()
        }
        s => s.canonical_reason().unwrap_or("error").to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_id_shape() {
        assert!(is_well_formed("abc-123_x.y:z"));
        assert!(is_well_formed(&"a".repeat(128)));
        assert!(!is_well_formed(""));
        assert!(!is_well_formed(&"a".repeat(129)));
        assert!(!is_well_formed("has space"));
        assert!(!is_well_formed("newline\n"));
        assert!(!is_well_formed("ünï"));
    }
}
