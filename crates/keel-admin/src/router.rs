//! Assembles the admin router: routes, auth gates and middleware, and the OpenAPI document.
//!
//! Middleware, outermost first: [`request_context`] (request id, per-route metrics,
//! problem+json finishing, 5xx logging) → body size limit → per-group authentication.

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware::from_fn_with_state;
use keel_core::Problem;
use utoipa::openapi::security::{HttpAuthScheme, HttpBuilder, SecurityScheme};
use utoipa::openapi::{InfoBuilder, OpenApi};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use crate::AdminState;
use crate::auth::{Gate, authenticate};
use crate::fast_path::CacheReadFastPath;
use crate::request::{RequestContext, request_context};
use crate::routes::{health, metrics, openapi as openapi_route, stats, system};

/// How the router is put together.
pub struct RouterOptions {
    /// Largest request body accepted, bytes (413 beyond).
    pub body_limit: usize,
    /// More API routes to serve under `/api/v1` (authenticated; documented in the OpenAPI
    /// document). Subsystems (cache, queue, …) and embedding applications add theirs here.
    pub api: Vec<OpenApiRouter>,
    /// Answers cache reads ahead of the inner layers (see [`crate::fast_path`]).
    pub cache_fast_path: Option<CacheReadFastPath>,
}

/// The admin router, with the OpenAPI document of every route stored in the state.
pub fn router(state: AdminState, options: RouterOptions) -> Router {
    let (router, doc) = assemble(state.clone(), options.api);
    let json = doc.to_json().unwrap_or_else(|_| "{}".to_owned());
    let _ = state.openapi_json().set(json);
    router
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(options.body_limit))
        .layer(from_fn_with_state(
            RequestContext {
                metrics: state.http().clone(),
                fast_path: options.cache_fast_path,
            },
            request_context,
        ))
}

/// The OpenAPI document of the admin routes plus `api`.
pub fn openapi(state: AdminState, api: Vec<OpenApiRouter>) -> OpenApi {
    assemble(state, api).1
}

fn assemble(state: AdminState, extra: Vec<OpenApiRouter>) -> (Router, OpenApi) {
    let health_routes = OpenApiRouter::new()
        .routes(routes!(health::alive))
        .routes(routes!(health::ready))
        .routes(routes!(health::health))
        .routes(routes!(health::health_detailed))
        .layer(from_fn_with_state(
            (state.clone(), Gate::Health),
            authenticate,
        ))
        .with_state(state.clone());
    let metrics_routes = OpenApiRouter::new()
        .routes(routes!(metrics::metrics))
        .layer(from_fn_with_state(
            (state.clone(), Gate::Metrics),
            authenticate,
        ))
        .with_state(state.clone());
    let mut api = OpenApiRouter::new()
        .routes(routes!(system::system_metrics))
        .routes(routes!(system::system_info))
        .routes(routes!(system::system_history))
        .routes(routes!(stats::stats))
        .routes(routes!(openapi_route::openapi_json))
        .with_state(state.clone());
    for more in extra {
        api = api.merge(more);
    }
    let api = api.layer(from_fn_with_state(
        (state.clone(), Gate::Always),
        authenticate,
    ));
    let (router, mut doc) = OpenApiRouter::with_openapi(base_document(&state))
        .merge(health_routes)
        .merge(metrics_routes)
        .nest("/api/v1", api)
        .split_for_parts();
    doc.components
        .get_or_insert_with(Default::default)
        .add_security_scheme(
            "bearer",
            SecurityScheme::Http(
                HttpBuilder::new()
                    .scheme(HttpAuthScheme::Bearer)
                    .description(Some(
                        "An API token from config or the generated admin token, or a JWT.",
                    ))
                    .build(),
            ),
        );
    (router, doc)
}

fn base_document(state: &AdminState) -> OpenApi {
    let mut doc = OpenApi::default();
    doc.info = InfoBuilder::new()
        .title("keel")
        .version(state.build().version)
        .description(Some(
            "keel's admin API. Everything under /api/v1 needs `Authorization: Bearer <token>`. \
             Errors are application/problem+json (RFC 9457).",
        ))
        .build();
    doc
}

async fn not_found() -> Problem {
    Problem::not_found("no such endpoint; see /api/v1/openapi.json for the API")
}

#[cfg(test)]
mod tests;
