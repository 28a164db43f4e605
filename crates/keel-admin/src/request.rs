//! Per-request context: the request id, problem+json finishing, and logging.
//!
//! Every response leaves through [`request_context`], which
//! - records the request in the per-route metrics ([`HttpMetrics`]);
//! - takes `X-Request-Id` from the client when well-formed (1–128 of `A-Z a-z 0-9 - _ . :`) or
//!   generates one, runs the request inside a tracing span carrying it, and echoes it;
//! - turns any error response that is not yet problem+json (axum's 405, a 413 from the body
//!   limit, a 415) into one, and fills `instance` and `request_id` on every problem;
//! - logs 5xx responses with their detail and hides that detail from the client.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Instant;

use axum::extract::{MatchedPath, State};

use axum::body::{Body, to_bytes};
use axum::extract::Request;
use axum::http::{HeaderName, HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::Response;
use keel_core::Problem;
use keel_core::problem::PROBLEM_JSON;
use tracing::Instrument;

use crate::fast_path::CacheReadFastPath;
use crate::http_metrics::HttpMetrics;

/// The `X-Request-Id` header.
pub static X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

/// Whether a client-sent request id may be used as is.
pub fn is_well_formed(id: &str) -> bool {
    (1..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
}

/// A new request id: 16 hex digits random per process, then a 16-hex-digit counter — unique
/// without asking the OS for randomness on every request.
fn generate_id() -> HeaderValue {
    static PREFIX: OnceLock<u64> = OnceLock::new();
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let prefix = *PREFIX.get_or_init(|| uuid::Uuid::new_v4().as_u64_pair().0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut text = [0u8; 32];
    for (i, byte) in text.iter_mut().enumerate() {
        let word = if i < 16 { prefix } else { n };
        *byte = HEX[((word >> (60 - 4 * (i % 16))) & 0xf) as usize];
    }
    HeaderValue::from_bytes(&text).expect("hex digits are a valid header value")
}

/// The client's `X-Request-Id` when well-formed (shared, not copied), else a new one.
fn request_id_of(request: &Request) -> HeaderValue {
    request
        .headers()
        .get(&X_REQUEST_ID)
        .filter(|v| v.to_str().is_ok_and(is_well_formed))
        .cloned()
        .unwrap_or_else(generate_id)
}

/// What [`request_context`] works with.
#[derive(Clone)]
pub struct RequestContext {
    /// Per-route request metrics.
    pub metrics: Arc<HttpMetrics>,
    /// Answers cache reads without the inner layers, when set.
    pub fast_path: Option<CacheReadFastPath>,
}

/// Middleware: request id, tracing span, per-route metrics, problem+json finishing, 5xx
/// logging. One middleware rather than several, since each layer costs a service clone per
/// request.
pub async fn request_context(
    State(context): State<RequestContext>,
    request: Request,
    next: Next,
) -> Response {
    let started = Instant::now();
    let id_header = request_id_of(&request);
    let id = id_header.to_str().unwrap_or_default();
    let method = request.method().clone();
    let route = request.extensions().get::<MatchedPath>().cloned();
    let uri = request.uri().clone();
    let fast = match &context.fast_path {
        Some(fast_path) => {
            fast_path
                .serve(request.method(), request.uri(), request.headers())
                .await
        }
        None => None,
    };
    let served_fast = fast.is_some();
    // Only the id on the span: every line logged for the request carries it, and formatting
    // more fields into each request's span costs measurably under load. A fast-path answer
    // logs nothing below debug level, so it skips the span.
    let span = if served_fast && !tracing::enabled!(tracing::Level::DEBUG) {
        tracing::Span::none()
    } else {
        tracing::info_span!("request", request_id = id)
    };
    let mut response = match fast {
        Some(response) => response,
        None => next.run(request).instrument(span.clone()).await,
    };
    if needs_finishing(&response) {
        response = finish_problem(response, uri.path(), id)
            .instrument(span.clone())
            .await;
    }
    let status = response.status();
    let elapsed = started.elapsed();
    let route = match &route {
        _ if served_fast => crate::fast_path::ROUTE,
        Some(matched) => matched.as_str(),
        None => "unmatched",
    };
    context
        .metrics
        .record(route, method.as_str(), status.as_u16(), elapsed);
    // Entering the span costs even when the event is filtered out: check the level first.
    if tracing::enabled!(tracing::Level::DEBUG) {
        span.in_scope(|| {
            tracing::debug!(
                method = %method,
                path = uri.path(),
                status = status.as_u16(),
                elapsed_us = elapsed.as_micros() as u64,
                "served"
            );
        });
    }
    response
        .headers_mut()
        .insert(X_REQUEST_ID.clone(), id_header);
    response
}

fn needs_finishing(response: &Response) -> bool {
    let status = response.status();
    status.is_client_error()
        || status.is_server_error()
        || response.extensions().get::<Problem>().is_some()
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
    fn generated_ids_are_distinct_and_well_formed() {
        let a = generate_id();
        let b = generate_id();
        let (a, b) = (a.to_str().unwrap(), b.to_str().unwrap());
        assert_ne!(a, b);
        assert_eq!(a.len(), 32);
        assert!(is_well_formed(a));
        assert_eq!(a[..16], b[..16], "same process, same prefix");
    }

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
