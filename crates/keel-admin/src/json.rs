//! A JSON extractor whose rejections are problem+json with a useful `detail`, and a JSON
//! response written into a buffer sized up front.

use axum::body::Bytes;
use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, OptionalFromRequest, Request};
use axum::http::header::CONTENT_TYPE;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use keel_core::Problem;
use serde::Serialize;
use serde::de::DeserializeOwned;

/// Like [`axum::Json`], but a missing content type, an oversized body or malformed JSON becomes
/// a problem+json response (415, 413, 400/422) that says what to fix.
#[derive(Debug, Clone, Copy, Default)]
pub struct ApiJson<T>(pub T);

impl<T, S> FromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        if !is_json(req.headers()) {
            return Err(Problem::status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
                .with_detail("send the body as JSON with `Content-Type: application/json`"));
        }
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| Problem::status(e.status()).with_detail(e.body_text()))?;
        parse(&body).map(Self)
    }
}

/// An optional body: a request without one gives `None`; one with a body must send JSON.
impl<T, S> OptionalFromRequest<S> for ApiJson<T>
where
    T: DeserializeOwned,
    S: Send + Sync,
{
    type Rejection = Problem;

    async fn from_request(req: Request, state: &S) -> Result<Option<Self>, Self::Rejection> {
        let json = is_json(req.headers());
        let body = Bytes::from_request(req, state)
            .await
            .map_err(|e| Problem::status(e.status()).with_detail(e.body_text()))?;
        if body.is_empty() {
            return Ok(None);
        }
        if !json {
            return Err(Problem::status(StatusCode::UNSUPPORTED_MEDIA_TYPE)
                .with_detail("send the body as JSON with `Content-Type: application/json`"));
        }
        parse(&body).map(|value| Some(Self(value)))
    }
}

/// `value` as an `application/json` response, written into a buffer of `capacity` bytes to
/// begin with. For large replies on hot paths (a fetch of many jobs): `axum::Json` starts from
/// 128 bytes and writes through `BytesMut`'s `io::Write` adapter, which costs a fetch's reply
/// several regrowths and a capacity check per string piece.
pub(crate) fn sized_json<T: Serialize>(value: &T, capacity: usize) -> Response {
    let mut body = Vec::with_capacity(capacity);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => (
            [(CONTENT_TYPE, HeaderValue::from_static("application/json"))],
            body,
        )
            .into_response(),
        // Serializing our own reply types cannot fail (no maps with non-string keys).
        Err(e) => Problem::status(StatusCode::INTERNAL_SERVER_ERROR)
            .with_detail(format!("writing the reply: {e}"))
            .into_response(),
    }
}

/// The plain parse first (axum's own tracks the path of every value, which costs on large
/// bodies); only a body that fails is parsed again to say where it is wrong.
fn parse<T: DeserializeOwned>(body: &Bytes) -> Result<T, Problem> {
    match serde_json::from_slice(body) {
        Ok(value) => Ok(value),
        Err(_) => match axum::Json::<T>::from_bytes(body) {
            Ok(axum::Json(value)) => Ok(value),
            Err(rejection) => Err(rejection_problem(&rejection)),
        },
    }
}

/// `application/json` or `application/*+json`, as axum's `Json` accepts.
fn is_json(headers: &HeaderMap) -> bool {
    let Some(content_type) = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let essence = content_type.split(';').next().unwrap_or_default().trim();
    let Some((kind, subtype)) = essence.split_once('/') else {
        return false;
    };
    kind.eq_ignore_ascii_case("application")
        && (subtype.eq_ignore_ascii_case("json")
            || subtype.len() > 5 && subtype[subtype.len() - 5..].eq_ignore_ascii_case("+json"))
}

fn rejection_problem(rejection: &JsonRejection) -> Problem {
    let status = rejection.status();
    let detail = match rejection {
        JsonRejection::MissingJsonContentType(_) => {
            "send the body as JSON with `Content-Type: application/json`".to_owned()
        }
        JsonRejection::JsonSyntaxError(e) => format!("malformed JSON: {}", source_text(e)),
        JsonRejection::JsonDataError(e) => format!("invalid JSON value: {}", source_text(e)),
        other => other.body_text(),
    };
    Problem::status(status).with_detail(detail)
}

/// The innermost error message (serde's, with line and column), not axum's wrapper text.
fn source_text(e: &dyn std::error::Error) -> String {
    let mut current: &dyn std::error::Error = e;
    while let Some(next) = current.source() {
        current = next;
    }
    current.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised_as_axum_does() {
        let headers = |value: &str| {
            let mut h = HeaderMap::new();
            h.insert(CONTENT_TYPE, value.parse().unwrap());
            h
        };
        for ok in [
            "application/json",
            "application/json; charset=utf-8",
            "Application/JSON",
            "application/problem+json",
        ] {
            assert!(is_json(&headers(ok)), "{ok}");
        }
        for no in [
            "text/json",
            "application/jsonx",
            "application/+json",
            "text/plain",
        ] {
            assert!(!is_json(&headers(no)), "{no}");
        }
        assert!(!is_json(&HeaderMap::new()));
    }
}
