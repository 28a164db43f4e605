//! Why the gateway answered a request itself instead of with the upstream's response.

use std::time::Duration;

use axum::response::{IntoResponse, Response};
use http::StatusCode;
use keel_core::Problem;

/// Which side of the proxy an error came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorSource {
    /// The client: its request broke a limit.
    Downstream,
    /// The upstream app: unreachable, too slow, or it broke the connection.
    Upstream,
    /// The gateway itself: a route's capacity is used up.
    Internal,
}

/// A request the gateway answers with a problem+json response.
#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
    /// The request body is larger than the route's `max_body`.
    #[error("the request body is larger than the {limit}-byte limit of this route")]
    BodyTooLarge {
        /// The limit in bytes.
        limit: u64,
    },
    /// The route's `max_concurrent` requests are already in flight.
    #[error("route {route} already has its maximum of {max} requests in flight; retry shortly")]
    Overloaded {
        /// The route's name.
        route: String,
        /// Its cap.
        max: usize,
    },
    /// The client is over the route's rate limit.
    #[error("too many requests: over the rate limit of this route; retry in {}s", crate::ratelimit::seconds_up(*retry_after))]
    RateLimited {
        /// When the same request would be allowed.
        retry_after: Duration,
    },
    /// The breaker toward the upstream is open (and no stale copy could be served).
    #[error("the upstream is failing and its breaker {name} is open; retry in {}s", crate::ratelimit::seconds_up(*retry_after))]
    BreakerOpen {
        /// The breaker's name.
        name: String,
        /// When it lets trials through.
        retry_after: Duration,
    },
    /// No connection to the upstream could be made.
    #[error("the upstream cannot be reached: {0}")]
    Connect(String),
    /// The upstream did not accept a connection in time.
    #[error("the upstream did not accept a connection within {0:?}")]
    ConnectTimeout(Duration),
    /// The upstream did not answer in time.
    #[error("the upstream did not answer within {0:?}")]
    Timeout(Duration),
    /// The upstream broke the exchange (closed the connection, sent an invalid response).
    #[error("the upstream failed: {0}")]
    Upstream(String),
}

impl GatewayError {
    /// Which side it came from.
    pub fn source(&self) -> ErrorSource {
        match self {
            Self::BodyTooLarge { .. } | Self::RateLimited { .. } => ErrorSource::Downstream,
            Self::Overloaded { .. } | Self::BreakerOpen { .. } => ErrorSource::Internal,
            Self::Connect(_) | Self::ConnectTimeout(_) | Self::Timeout(_) | Self::Upstream(_) => {
                ErrorSource::Upstream
            }
        }
    }

    /// Whether the client may send the same request again (after a pause).
    pub fn retryable(&self) -> bool {
        !matches!(self, Self::BodyTooLarge { .. })
    }

    /// The HTTP status the client gets.
    pub fn status(&self) -> StatusCode {
        match self {
            Self::BodyTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            Self::RateLimited { .. } => StatusCode::TOO_MANY_REQUESTS,
            Self::Overloaded { .. } | Self::BreakerOpen { .. } => StatusCode::SERVICE_UNAVAILABLE,
            Self::Connect(_) | Self::Upstream(_) => StatusCode::BAD_GATEWAY,
            Self::ConnectTimeout(_) | Self::Timeout(_) => StatusCode::GATEWAY_TIMEOUT,
        }
    }

    fn kind(&self) -> &'static str {
        match self {
            Self::BodyTooLarge { .. } => "body-too-large",
            Self::Overloaded { .. } => "route-overloaded",
            Self::RateLimited { .. } => "rate-limited",
            Self::BreakerOpen { .. } => "breaker-open",
            Self::Connect(_) => "upstream-unreachable",
            Self::ConnectTimeout(_) | Self::Timeout(_) => "upstream-timeout",
            Self::Upstream(_) => "upstream-failed",
        }
    }

    /// The problem+json response, tagged with the request id.
    pub fn to_problem(&self, request_id: &str) -> Response {
        let status = self.status();
        let title = status.canonical_reason().unwrap_or("Error");
        let mut response = Problem::new(status, self.kind(), title)
            .with_detail(self.to_string())
            .with_extension("request_id", request_id)
            .into_response();
        let retry_after = match self {
            Self::RateLimited { retry_after } | Self::BreakerOpen { retry_after, .. } => {
                Some(crate::ratelimit::seconds_up(*retry_after).max(1))
            }
            Self::Overloaded { .. } => Some(1),
            _ => None,
        };
        if let Some(seconds) = retry_after {
            response
                .headers_mut()
                .insert(http::header::RETRY_AFTER, http::HeaderValue::from(seconds));
        }
        response
    }
}
