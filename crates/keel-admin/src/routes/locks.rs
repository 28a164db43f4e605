//! `/api/v1/locks/{name}`: named locks with fencing tokens (`worker`). In Redis when keel has
//! one (shared by every instance), otherwise in this process.

use std::time::Duration;

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use keel_core::{HumanDuration, Problem};
use keel_redis::LockError;
use serde::Deserialize;

use crate::auth::{Authorized, WorkerRole};
use crate::coordination_api::Coordination;
use crate::json::ApiJson;

/// The shortest lease.
const MIN_TTL: Duration = Duration::from_millis(100);
/// The longest lease: a holder extends rather than taking a lock for days.
const MAX_TTL: Duration = Duration::from_secs(24 * 3600);
/// The longest wait for a held lock in one request.
const MAX_WAIT: Duration = Duration::from_secs(60);

/// How long to hold the lock, and how long to wait while someone else holds it.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct AcquireBody {
    /// The lease (100ms to 24h; default 30s).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    ttl: Option<HumanDuration>,
    /// How long to wait for a held lock (at most 60s; default 0: answer at once).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    wait: Option<HumanDuration>,
}

/// A lease to extend.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ExtendBody {
    /// The token `acquire` returned.
    token: String,
    /// The new lease from now (100ms to 24h; default 30s).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    ttl: Option<HumanDuration>,
}

/// The token of a lease to release, in the query or in a JSON body.
#[derive(Debug, Default, Deserialize, utoipa::ToSchema, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ReleaseBody {
    /// The token `acquire` returned.
    token: Option<String>,
}

fn ttl(given: Option<HumanDuration>) -> Result<Duration, Problem> {
    let ttl = given.map_or(Duration::from_secs(30), HumanDuration::get);
    if !(MIN_TTL..=MAX_TTL).contains(&ttl) {
        return Err(Problem::bad_request(format!(
            "ttl must be between 100ms and 24h (got {})",
            humantime_like(ttl)
        )));
    }
    Ok(ttl)
}

fn humantime_like(d: Duration) -> String {
    HumanDuration::from_millis(ms(d)).to_string()
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

fn problem(e: LockError) -> Problem {
    match e {
        LockError::InvalidName(reason) => Problem::bad_request(reason),
        LockError::Held { expires_in, .. } => {
            let expires_ms = ms(expires_in);
            Problem::new(StatusCode::CONFLICT, "lock-held", "Lock held")
                .with_detail(e.to_string())
                .with_extension("expires_in_ms", expires_ms)
        }
        LockError::NotHolder(_) => Problem::new(
            StatusCode::CONFLICT,
            "not-lock-holder",
            "Not the lock holder",
        )
        .with_detail(e.to_string()),
        LockError::Backend(e) => {
            tracing::warn!(error = %e, "lock operation failed");
            Problem::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "locks-unavailable",
                "Locks unavailable",
            )
            .with_detail("Redis, where locks are kept, cannot be reached; try again shortly")
        }
    }
}

/// A taken lock.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Granted {
    /// The lock.
    name: String,
    /// Proof of ownership: `extend` and `release` need it.
    token: String,
    /// Grows by one with every acquisition of the name: pass it to what the lock protects,
    /// which refuses numbers lower than the highest it has seen.
    fencing: u64,
    /// The lease, from now.
    ttl_ms: u64,
}

/// Takes the lock `name`: 200 with a token and a fencing number (which grows with every
/// acquisition of the name), or 409 while someone else holds it (after `wait`).
#[utoipa::path(post, path = "/locks/{name}", tag = "locks", security(("bearer" = [])),
    params(("name" = String, Path, description = "1–256 letters, digits and -_.:/@")),
    request_body(content = AcquireBody, description = "optional"),
    responses((status = 200, body = Granted), (status = 400, body = Problem), (status = 409, body = Problem),
        (status = 503, body = Problem)))]
pub(crate) async fn acquire(
    _: Authorized<WorkerRole>,
    State(state): State<Coordination>,
    Path(name): Path<String>,
    body: Option<ApiJson<AcquireBody>>,
) -> Result<Json<Granted>, Problem> {
    let body = body.map(|ApiJson(b)| b).unwrap_or_default();
    let ttl = ttl(body.ttl)?;
    let wait = body.wait.map_or(Duration::ZERO, HumanDuration::get);
    if wait > MAX_WAIT {
        return Err(Problem::bad_request(format!(
            "wait must be at most 60s (got {})",
            humantime_like(wait)
        )));
    }
    let lease = state
        .locks
        .acquire(&name, ttl, wait)
        .await
        .map_err(problem)?;
    Ok(Json(Granted {
        name: lease.name,
        token: lease.token,
        fencing: lease.fencing,
        ttl_ms: ms(lease.ttl),
    }))
}

/// The new lease's length.
#[derive(Debug, serde::Serialize, utoipa::ToSchema)]
pub(crate) struct Extended {
    ttl_ms: u64,
}

/// Extends a held lock's lease; 409 when the token does not hold it (any more).
#[utoipa::path(post, path = "/locks/{name}/extend", tag = "locks", security(("bearer" = [])),
    params(("name" = String, Path, description = "the lock")), request_body = ExtendBody,
    responses((status = 200, body = Extended), (status = 400, body = Problem), (status = 409, body = Problem),
        (status = 503, body = Problem)))]
pub(crate) async fn extend(
    _: Authorized<WorkerRole>,
    State(state): State<Coordination>,
    Path(name): Path<String>,
    ApiJson(body): ApiJson<ExtendBody>,
) -> Result<Json<Extended>, Problem> {
    let ttl = ttl(body.ttl)?;
    state
        .locks
        .extend(&name, &body.token, ttl)
        .await
        .map_err(problem)?;
    Ok(Json(Extended { ttl_ms: ms(ttl) }))
}

/// Releases a held lock: 204, or 409 when the token does not hold it (any more). The token
/// comes as `?token=` or as `{"token": …}`.
#[utoipa::path(delete, path = "/locks/{name}", tag = "locks", security(("bearer" = [])),
    params(("name" = String, Path, description = "the lock"), ReleaseBody),
    request_body(content = ReleaseBody, description = "optional, instead of ?token="),
    responses((status = 204), (status = 400, body = Problem), (status = 409, body = Problem),
        (status = 503, body = Problem)))]
pub(crate) async fn release(
    _: Authorized<WorkerRole>,
    State(state): State<Coordination>,
    Path(name): Path<String>,
    Query(query): Query<ReleaseBody>,
    body: Option<ApiJson<ReleaseBody>>,
) -> Result<StatusCode, Problem> {
    let token = query
        .token
        .or_else(|| body.and_then(|ApiJson(b)| b.token))
        .ok_or_else(|| {
            Problem::bad_request("give the lock's token as ?token= or {\"token\": \"…\"}")
        })?;
    state.locks.release(&name, &token).await.map_err(problem)?;
    Ok(StatusCode::NO_CONTENT)
}
