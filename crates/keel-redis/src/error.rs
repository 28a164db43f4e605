//! What can go wrong talking to Redis. Messages name the kind of failure, never the URL (which
//! may carry a password).

use std::time::Duration;

/// A failed Redis operation.
#[derive(Debug, thiserror::Error)]
pub enum RedisError {
    /// The URL could not be used (bad syntax, or a scheme this build does not speak).
    #[error("invalid Redis URL: {0}")]
    InvalidUrl(String),
    /// The TLS set-up cannot be used (an unreadable certificate file, a certificate without
    /// its key).
    #[error("Redis TLS: {0}")]
    Tls(String),
    /// Redis did not answer within the command timeout.
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
    /// Recent commands kept failing, so keel stops calling Redis for a while.
    #[error("Redis is unavailable (circuit open; next try in {0:?})")]
    Unavailable(Duration),
    /// The connection failed (refused, dropped, reset).
    #[error("Redis connection failed: {0}")]
    Connection(String),
    /// Redis answered with an error (a script error, a wrong type).
    #[error("Redis answered with an error: {0}")]
    Server(String),
}

impl RedisError {
    /// Whether the failure says Redis (or the way to it) is unhealthy, as opposed to Redis
    /// refusing one command.
    pub fn is_outage(&self) -> bool {
        matches!(
            self,
            Self::Timeout(_) | Self::Unavailable(_) | Self::Connection(_)
        )
    }
}

impl RedisError {
    /// Whether Redis refused a write as a replica (`READONLY`): a master demoted by a
    /// failover.
    pub fn is_readonly(&self) -> bool {
        matches!(self, Self::Server(message) if message.starts_with("READONLY"))
    }
}

impl From<redis::RedisError> for RedisError {
    fn from(e: redis::RedisError) -> Self {
        if e.is_timeout() {
            // The connection's own response timeout; the duration is the configured one, which
            // the caller knows better, so it is left out.
            Self::Timeout(Duration::ZERO)
        } else if e.is_connection_refusal() {
            Self::Connection("connection refused".to_owned())
        } else if e.is_connection_dropped() || e.is_io_error() || e.is_unrecoverable_error() {
            Self::Connection(describe(&e))
        } else {
            Self::Server(describe(&e))
        }
    }
}

/// The error's kind and server message, without connection details.
fn describe(e: &redis::RedisError) -> String {
    match (e.code(), e.detail()) {
        (Some(code), Some(detail)) => format!("{code} {detail}"),
        (Some(code), None) => code.to_owned(),
        _ => format!("{:?}", e.kind()),
    }
}
