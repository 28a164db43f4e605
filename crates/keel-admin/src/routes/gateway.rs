//! `/api/v1/gateway/…`: the gateway's routes, slow requests and breakers (`viewer`), and
//! purging and warming its response cache (`worker`: they change what clients are served).
//! Without a gateway configured (`gateway.upstream` unset) they answer 404.

use axum::Json;
use axum::extract::{Query, State};
use futures_util::StreamExt;
use keel_cache::Glob;
use keel_core::Problem;
use keel_gateway::{Gateway, Purge};
use serde::{Deserialize, Serialize};

use crate::auth::{Authorized, ViewerRole, WorkerRole};
use crate::json::ApiJson;

/// Most paths in one warm request.
const MAX_WARM: usize = 1000;
/// Warm fetches in flight at once.
const WARM_CONCURRENCY: usize = 8;

fn gateway(state: &Option<Gateway>) -> Result<&Gateway, Problem> {
    state.as_ref().ok_or_else(|| {
        Problem::not_found("the gateway is not configured: set gateway.upstream (or --upstream)")
    })
}

/// What to purge: exactly one of `url`, `pattern` and `tag`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct PurgeBody {
    /// A path with query as clients request it, e.g. `/api/habits?page=2`: every variant of it.
    url: Option<String>,
    /// A glob over paths with query, e.g. `/api/habits*`.
    pattern: Option<String>,
    /// A tag the upstream gave responses (`Surrogate-Key` / `Cache-Tag`).
    tag: Option<String>,
    /// Required to purge with a pattern that matches everything.
    #[serde(default)]
    confirm: bool,
}

/// How many cached responses went.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Purged {
    purged: usize,
}

#[utoipa::path(post, path = "/gateway/purge", tag = "gateway", security(("bearer" = [])), request_body = PurgeBody,
    responses((status = 200, body = Purged), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn purge(
    _: Authorized<WorkerRole>,
    State(state): State<Option<Gateway>>,
    ApiJson(body): ApiJson<PurgeBody>,
) -> Result<Json<Purged>, Problem> {
    let gateway = gateway(&state)?.clone();
    let what = match (body.url, body.pattern, body.tag) {
        (Some(url), None, None) if url.starts_with('/') => Purge::Url(url),
        (Some(url), None, None) => {
            return Err(Problem::bad_request(format!(
                "url {url:?} must be a path starting with / (with its query, if any)"
            )));
        }
        (None, Some(pattern), None) => {
            if Glob::new(&pattern).matches_everything() && !body.confirm {
                return Err(Problem::bad_request(format!(
                    "pattern {pattern:?} matches every cached response; add \"confirm\": true to purge them all"
                )));
            }
            Purge::Pattern(pattern)
        }
        (None, None, Some(tag)) if !tag.is_empty() => Purge::Tag(tag),
        _ => {
            return Err(Problem::bad_request(
                "give exactly one of url, pattern and tag (non-empty)",
            ));
        }
    };
    // A pattern walks the keyspace: off the async threads.
    let purged = tokio::task::spawn_blocking(move || gateway.purge(&what))
        .await
        .map_err(|_| Problem::status(axum::http::StatusCode::INTERNAL_SERVER_ERROR))?;
    Ok(Json(Purged { purged }))
}

/// Paths to fetch through the cache.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct WarmBody {
    /// Paths with query, e.g. `["/api/habits", "/api/habits?page=2"]` (at most 1000).
    paths: Vec<String>,
}

/// One path's result: the status and cache outcome, or why it could not be fetched.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct WarmResult {
    path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    /// `MISS` (fetched and, if cacheable, stored), `HIT` (already cached), …
    #[serde(skip_serializing_if = "Option::is_none")]
    cache: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
}

/// Every path's result, in the order given.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Warmed {
    results: Vec<WarmResult>,
}

#[utoipa::path(post, path = "/gateway/warm", tag = "gateway", security(("bearer" = [])), request_body = WarmBody,
    responses((status = 200, body = Warmed), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn warm(
    _: Authorized<WorkerRole>,
    State(state): State<Option<Gateway>>,
    ApiJson(body): ApiJson<WarmBody>,
) -> Result<Json<Warmed>, Problem> {
    let gateway = gateway(&state)?;
    if body.paths.is_empty() || body.paths.len() > MAX_WARM {
        return Err(Problem::bad_request(format!(
            "paths: give 1 to {MAX_WARM} paths"
        )));
    }
    for (i, path) in body.paths.iter().enumerate() {
        if !path.starts_with('/') {
            return Err(Problem::bad_request(format!(
                "paths[{i}]: {path:?} must start with /"
            )));
        }
    }
    let results = futures_util::stream::iter(body.paths)
        .map(|path| async move {
            match gateway.warm(&path).await {
                Ok(w) => WarmResult {
                    path,
                    status: Some(w.status),
                    cache: Some(w.cache),
                    error: None,
                },
                Err(e) => WarmResult {
                    path,
                    status: None,
                    cache: None,
                    error: Some(e),
                },
            }
        })
        .buffered(WARM_CONCURRENCY)
        .collect()
        .await;
    Ok(Json(Warmed { results }))
}

/// Every route with its statistics.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Routes {
    /// The rules in order, then `default`: name, match, methods, policies, requests by status
    /// class, latency and upstream latency percentiles (ms, last one to two minutes), cache
    /// outcomes and hit ratio, bytes in/out/saved, rate-limited count, breaker.
    #[schema(value_type = Vec<Object>)]
    routes: Vec<keel_gateway::RouteStatus>,
}

#[utoipa::path(get, path = "/gateway/routes", tag = "gateway", security(("bearer" = [])),
    responses((status = 200, body = Routes), (status = 404, body = Problem)))]
pub(crate) async fn routes(
    _: Authorized<ViewerRole>,
    State(state): State<Option<Gateway>>,
) -> Result<Json<Routes>, Problem> {
    Ok(Json(Routes {
        routes: gateway(&state)?.routes(),
    }))
}

/// `?limit=` for the slow list.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
pub(crate) struct SlowQuery {
    /// Most entries (1–100, default 50).
    limit: Option<usize>,
}

/// The newest slow requests.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Slow {
    /// `gateway.slow_threshold` in milliseconds.
    threshold_ms: u64,
    /// Newest first: `at`, `route`, `method`, `path`, `status`, `duration_ms`, `upstream_ms`,
    /// `request_id`.
    #[schema(value_type = Vec<Object>)]
    requests: Vec<keel_gateway::SlowRequest>,
}

#[utoipa::path(get, path = "/gateway/slow", tag = "gateway", security(("bearer" = [])), params(SlowQuery),
    responses((status = 200, body = Slow), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn slow(
    _: Authorized<ViewerRole>,
    State(state): State<Option<Gateway>>,
    Query(query): Query<SlowQuery>,
) -> Result<Json<Slow>, Problem> {
    let gateway = gateway(&state)?;
    let limit = query.limit.unwrap_or(50);
    if !(1..=100).contains(&limit) {
        return Err(Problem::bad_request("limit: give 1 to 100"));
    }
    Ok(Json(Slow {
        threshold_ms: u64::try_from(gateway.slow_threshold().as_millis()).unwrap_or(u64::MAX),
        requests: gateway.slow(limit),
    }))
}

/// Every breaker toward the upstream.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct Breakers {
    /// `name`, `state` (`closed`, `open`, `half_open`), `open_for_seconds`, the window's
    /// `window_calls`/`window_failed`/`window_slow`, `times_opened`.
    #[schema(value_type = Vec<Object>)]
    breakers: Vec<keel_gateway::BreakerStatus>,
}

#[utoipa::path(get, path = "/gateway/breakers", tag = "gateway", security(("bearer" = [])),
    responses((status = 200, body = Breakers), (status = 404, body = Problem)))]
pub(crate) async fn breakers(
    _: Authorized<ViewerRole>,
    State(state): State<Option<Gateway>>,
) -> Result<Json<Breakers>, Problem> {
    Ok(Json(Breakers {
        breakers: gateway(&state)?.breakers(),
    }))
}
