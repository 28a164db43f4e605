//! A JSON extractor whose rejections are problem+json with a useful `detail`.

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Request};
use keel_core::Problem;
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
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(value)) => Ok(Self(value)),
            Err(rejection) => Err(rejection_problem(&rejection)),
        }
    }
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
