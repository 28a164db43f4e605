//! keel's admin HTTP surface, as an axum [`Router`](axum::Router).
//!
//! # Endpoints
//! Public by default (`auth.public_health`, `auth.public_metrics`):
//! - `GET /alive` — liveness; checks nothing.
//! - `GET /ready` — readiness; 503 with the failing components, and 503 once shutdown begins.
//! - `GET /health` — short summary; `GET /health/detailed` — `application/health+json`.
//! - `GET /metrics` — Prometheus text exposition.
//!
//! Under `/api/v1`, always authenticated (`Authorization: Bearer …`):
//! - `GET /api/v1/system/metrics` — CPU, memory, load, process RSS, threads, fds.
//! - `GET /api/v1/system/info` — version, platform, data dir, effective config (secrets redacted).
//! - `GET /api/v1/system/history?window=15m|1h|6h|24h` — sampled history and the RSS trend.
//! - `GET /api/v1/stats` — system, health, HTTP and every registered subsystem's stats.
//! - `GET /api/v1/openapi.json` — the OpenAPI 3.1 document of all of the above.
//!
//! The cache, when mounted with [`cache_api::routes`]:
//! - `PUT|GET|HEAD|DELETE /api/v1/cache/keys/{key}` — one value (raw bytes, `Content-Type` kept).
//! - `POST /api/v1/cache/mget`, `POST /api/v1/cache/mset` — bulk reads and all-or-nothing writes.
//! - `GET /api/v1/cache/keys?pattern=&cursor=&limit=` — cursor-paged listing.
//! - `DELETE /api/v1/cache/keys?pattern=` — pattern delete; `DELETE /api/v1/cache/tags/{tag}`.
//! - `POST /api/v1/cache/reset` (admin), `GET /api/v1/cache/stats`.
//!
//! The job queue, when mounted with [`queue_api::routes`]:
//! - `POST /api/v1/queues/{q}/jobs` — add one job or many; `POST /api/v1/queues/{q}/fetch` —
//!   lease jobs (long-poll with `wait`); `POST /api/v1/jobs/{id}/complete|fail|heartbeat`.
//! - `GET /api/v1/queues/{q}`, `GET|DELETE /api/v1/queues/{q}/jobs/{id}`,
//!   `POST /api/v1/queues/{q}/pause|resume`.
//!
//! The gateway, when mounted with [`gateway_api::routes`]:
//! - `GET /api/v1/gateway/routes` — each route's policies and statistics.
//! - `GET /api/v1/gateway/slow` — the newest requests over `gateway.slow_threshold`.
//! - `GET /api/v1/gateway/breakers` — each breaker's state.
//! - `POST /api/v1/gateway/purge` — purge cached responses by `url`, `pattern` or `tag`.
//! - `POST /api/v1/gateway/warm` — fetch paths through the cache.
//!
//! Locks and rate limit checks, when mounted with [`coordination_api::routes`]:
//! - `POST /api/v1/locks/{name}` — take a lock (token + fencing number); `POST
//!   /api/v1/locks/{name}/extend`; `DELETE /api/v1/locks/{name}` — release.
//! - `POST /api/v1/ratelimit/check` — spend a key's budget under a quota.
//!
//! # Layout
//! - [`state`]: [`AdminState`], what the handlers share.
//! - [`router`]: assembles routes, auth gates and middleware.
//! - [`auth`]: the authentication middleware and the [`auth::Authorized`] role extractor.
//! - [`request`]: request ids, problem+json finishing, and access logging.
//! - [`http_metrics`]: per-route request counters and latency histograms.
//! - [`history`]: the background sampler behind `/api/v1/system/history`.
//! - [`cache_api`]: the cache routes, metrics, health check and stats section.
//! - [`cache_service`]: [`cache_service::CacheService`], the cache in memory or in two tiers.
//! - [`fast_path`]: answers authenticated cache reads ahead of the inner layers.
//! - [`queue_api`]: the job queue routes.
//! - [`gateway_api`]: the gateway's routes, metrics, health check and stats section.
//! - [`coordination_api`]: locks and rate limit checks, Redis's series and stats section.
//! - [`json`]: [`json::ApiJson`], a JSON extractor whose rejections are problem+json.
//! - `routes`: the handlers.

pub mod auth;
pub mod cache_api;
pub mod cache_service;
pub mod coordination_api;
pub mod fast_path;
pub mod gateway_api;
pub mod history;
pub mod http_metrics;
pub mod json;
pub mod queue_api;
pub mod request;
pub mod router;
mod routes;
pub mod state;

pub use router::{openapi, router};
pub use state::{AdminState, AdminStateBuilder, StatsSource};
