//! The queue subsystem's HTTP surface: the `/api/v1/queues` and `/api/v1/jobs` routes.

use axum::extract::DefaultBodyLimit;
use keel_queue::Queues;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::routes::queues as api;

/// The `/queues/…` and `/jobs/…` routes (to be served under `/api/v1`).
pub fn routes(queues: Queues) -> OpenApiRouter {
    // A bulk add carries up to 10,000 payloads; JSON framing on top.
    let max_payload = usize::try_from(queues.config().max_payload.bytes()).unwrap_or(usize::MAX);
    let body_limit = max_payload
        .saturating_mul(api::MAX_BULK)
        .min(256 * 1024 * 1024)
        .max(max_payload + 64 * 1024);
    OpenApiRouter::new()
        .routes(routes!(api::add_jobs))
        .routes(routes!(api::fetch_jobs))
        .routes(routes!(api::complete_job))
        .routes(routes!(api::complete_many))
        .routes(routes!(api::fail_job))
        .routes(routes!(api::heartbeat))
        .routes(routes!(api::queue_info))
        .routes(routes!(api::get_job, api::cancel_job))
        .routes(routes!(api::pause))
        .routes(routes!(api::resume))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(queues)
}
