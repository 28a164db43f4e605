//! `POST /api/v1/ratelimit/check`: an app asks keel whether a request of its own may go ahead
//! (`worker`). Budgets are in Redis when keel has one (shared by every instance), otherwise
//! in this process.

use std::time::Duration;

use axum::Json;
use axum::extract::State;
use keel_core::{HumanDuration, Problem};
use keel_resilience::Quota;
use serde::{Deserialize, Serialize};

use crate::auth::{Authorized, WorkerRole};
use crate::coordination_api::Coordination;
use crate::json::ApiJson;

/// The longest key, in bytes.
const MAX_KEY: usize = 512;

/// One request to spend budget on.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CheckBody {
    /// Whose budget: a user id, an API key, an address (1–512 bytes, no control characters).
    key: String,
    /// Requests allowed per `per` on average (at least 1).
    rate: u32,
    /// The period of `rate` (default 1s; 1ms to 1d).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    per: Option<HumanDuration>,
    /// Requests allowed back to back after a quiet spell (default: `rate`).
    #[serde(default)]
    burst: Option<u32>,
    /// What this request costs (default 1).
    #[serde(default)]
    cost: Option<u32>,
}

/// The decision, with what the client has left.
#[derive(Debug, Serialize, utoipa::ToSchema)]
pub(crate) struct CheckAnswer {
    /// Whether the request may go ahead (its cost was spent).
    allowed: bool,
    /// The burst: requests allowed back to back.
    limit: u32,
    /// Requests of cost 1 still allowed now.
    remaining: u32,
    /// When refused: how long until the same request would be allowed.
    retry_after_ms: u64,
    /// How long until the key is back at a full burst.
    reset_after_ms: u64,
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Spends `cost` of `key`'s budget under the quota `rate` per `per` with bursts of `burst`.
/// Answers 200 whether or not the request is allowed: `allowed` says which. A key's budget is
/// its own under each quota.
#[utoipa::path(post, path = "/ratelimit/check", tag = "ratelimit", security(("bearer" = [])),
    request_body = CheckBody,
    responses((status = 200, body = CheckAnswer), (status = 400, body = Problem), (status = 422, body = Problem)))]
pub(crate) async fn check(
    _: Authorized<WorkerRole>,
    State(state): State<Coordination>,
    ApiJson(body): ApiJson<CheckBody>,
) -> Result<Json<CheckAnswer>, Problem> {
    if body.key.is_empty() || body.key.len() > MAX_KEY {
        return Err(Problem::bad_request(format!(
            "key must have 1 to {MAX_KEY} bytes (got {})",
            body.key.len()
        )));
    }
    if body.key.chars().any(char::is_control) {
        return Err(Problem::bad_request(
            "key must not contain control characters",
        ));
    }
    if body.rate == 0 {
        return Err(Problem::bad_request("rate must be at least 1"));
    }
    let per = body.per.map_or(Duration::from_secs(1), HumanDuration::get);
    if !(Duration::from_millis(1)..=Duration::from_secs(86_400)).contains(&per) {
        return Err(Problem::bad_request("per must be between 1ms and 1d"));
    }
    if body.burst == Some(0) {
        return Err(Problem::bad_request(
            "burst must be at least 1 (leave it out for `rate`)",
        ));
    }
    if body.cost == Some(0) {
        return Err(Problem::bad_request("cost must be at least 1"));
    }
    let quota = Quota {
        max: body.rate,
        per,
        burst: body.burst.unwrap_or(body.rate),
    };
    let limiter = state.limits.limiter(quota)?;
    let d = limiter.check(&body.key, body.cost.unwrap_or(1)).await;
    Ok(Json(CheckAnswer {
        allowed: d.allowed,
        limit: d.limit,
        remaining: d.remaining,
        retry_after_ms: ms(d.retry_after),
        reset_after_ms: ms(d.reset_after),
    }))
}
