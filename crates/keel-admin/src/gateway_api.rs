//! The gateway's HTTP surface under `/api/v1/gateway`: purge and warm its response cache.

use keel_gateway::Gateway;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::routes::gateway as api;

/// The `/gateway/…` routes (to be served under `/api/v1`); with `None` they answer 404.
pub fn routes(gateway: Option<Gateway>) -> OpenApiRouter {
    OpenApiRouter::new()
        .routes(routes!(api::purge))
        .routes(routes!(api::warm))
        .with_state(gateway)
}
