//! keel's HTTP gateway: a reverse proxy placed in front of one app, in any language.
//!
//! # Layout
//! - [`GatewayConfig`]: the `[gateway]` section and its route rules (`[[gateway.routes]]`),
//!   validated with errors naming the rule's index and field.
//! - [`Gateway`]: builds the proxy from the config and serves it on its own listener
//!   (HTTP/1.1 keep-alive, HTTP/2 with prior knowledge, graceful shutdown).
//! - Inside: `routes` (the compiled rules: prefix, glob or regex matchers, methods, and each
//!   rule's policies resolved against the default rule), `proxy` (one request: limits,
//!   header rewriting, streaming to and from the upstream), `upstream` (the pooled client and
//!   its timeouts), `forwarded` (hop-by-hop headers, `X-Forwarded-*`, trusted proxies),
//!   `upgrade` (WebSocket passthrough), `body` (the watched response body), `request_id`,
//!   `cache` (the response cache in the keel cache engine: Cache-Control, keys and Vary,
//!   stored responses, request coalescing; the flow itself is `proxy::cached`),
//!   [`GatewayError`] (what the gateway answers itself, as problem+json).
//!
//! See `docs/gateway.md` for configuration and behaviour.

mod body;
mod breaker;
mod cache;
mod compress;
mod config;
mod error;
mod forwarded;
mod gateway;
mod pool;
mod proxy;
mod ratelimit;
mod request_id;
mod routes;
mod stats;
mod upgrade;
mod upstream;

pub use breaker::BreakerStatus;
pub use config::{
    BreakerPolicy, CachePolicy, CompressPolicy, GatewayConfig, GatewayConfigError, RateLimitPolicy,
    RoutePolicy, RouteRule,
};
pub use error::{ErrorSource, GatewayError};
pub use gateway::{Gateway, Limits, Purge, RouteStatus, Sharing, Warmed};
pub use stats::{CacheCounts, Percentiles, SlowRequest, StatsSnapshot, StatusClasses};
