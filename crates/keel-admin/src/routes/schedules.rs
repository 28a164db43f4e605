//! `/api/v1/queues/{q}/schedules`: repeatable jobs, by cron expression or interval. Creating
//! and deleting need `worker`; listing needs `viewer`.

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keel_core::{HumanDuration, Problem};
use keel_queue::{NewSchedule, Queues, Repeat, Schedule};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::auth::{Authorized, ViewerRole, WorkerRole};
use crate::json::ApiJson;
use crate::routes::queues::problem_for;

/// A schedule to create or replace: exactly one of `cron` and `every`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ScheduleRequest {
    /// Unique in the queue; also the name of the jobs it adds.
    name: String,
    /// A cron expression: 5 fields (`*/5 * * * *`), or 6 with seconds first.
    #[serde(default)]
    cron: Option<String>,
    /// Or an interval, e.g. `"30s"` (at least 1 s), counted from the schedule's creation.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    every: Option<HumanDuration>,
    /// The IANA time zone the cron expression is read in (default `UTC`).
    #[serde(default)]
    timezone: Option<String>,
    /// Each job's payload.
    #[serde(default)]
    payload: Value,
    /// Attempts of each job (default: the queue's default).
    #[serde(default)]
    attempts: Option<u32>,
}

/// A schedule as the API shows it.
fn schedule_json(s: &Schedule) -> Value {
    let timing = match &s.repeat {
        Repeat::Cron { expr, timezone } => json!({"cron": expr, "timezone": timezone}),
        Repeat::Every { every_ms } => {
            json!({"every": HumanDuration::from_millis(*every_ms).to_string()})
        }
    };
    let mut out = json!({
        "name": s.name,
        "queue": s.queue,
        "payload": s.payload,
        "attempts": s.attempts,
        "created_at": s.created_at,
        "next_run_at": s.next_run_at,
        "last_run_at": s.last_run_at,
    });
    if let (Some(out), Value::Object(timing)) = (out.as_object_mut(), timing) {
        out.extend(timing);
    }
    out
}

/// Creates or replaces a schedule (`201` with it). Each tick adds one job named after the
/// schedule — also across restarts; ticks missed while keel was down add one job on start.
/// Replacing a schedule with the same timing keeps its next tick.
#[utoipa::path(post, path = "/queues/{queue}/schedules", tag = "queues", security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue")),
    request_body = ScheduleRequest,
    responses((status = 201, description = "The schedule", body = Object), (status = 400, body = Problem)))]
pub(crate) async fn put_schedule(
    _: Authorized<WorkerRole>,
    State(queues): State<Queues>,
    Path(queue): Path<String>,
    ApiJson(body): ApiJson<ScheduleRequest>,
) -> Result<Response, Problem> {
    let repeat = match (body.cron, body.every) {
        (Some(expr), None) => Repeat::Cron {
            expr,
            timezone: body.timezone.unwrap_or_else(|| "UTC".to_owned()),
        },
        (None, Some(every)) if body.timezone.is_none() => Repeat::Every {
            every_ms: u64::try_from(every.get().as_millis()).unwrap_or(u64::MAX),
        },
        (None, Some(_)) => {
            return Err(Problem::bad_request(
                "timezone: only applies to a cron schedule",
            ));
        }
        _ => {
            return Err(Problem::bad_request(
                "cron, every: give exactly one (\"cron\": \"*/5 * * * *\" or \"every\": \"30s\")",
            ));
        }
    };
    let schedule = NewSchedule {
        name: body.name,
        repeat,
        payload: body.payload,
        attempts: body
            .attempts
            .unwrap_or_else(|| queues.job_defaults(&queue).attempts),
    };
    let schedule = queues
        .put_schedule(&queue, schedule)
        .await
        .map_err(|e| problem_for(&e))?;
    Ok((StatusCode::CREATED, axum::Json(schedule_json(&schedule))).into_response())
}

/// The queue's schedules, by name, with their next and last ticks (Unix ms).
#[utoipa::path(get, path = "/queues/{queue}/schedules", tag = "queues", security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue")),
    responses((status = 200, description = "`{\"schedules\": [...]}`", body = Object)))]
pub(crate) async fn list_schedules(
    _: Authorized<ViewerRole>,
    State(queues): State<Queues>,
    Path(queue): Path<String>,
) -> Result<Response, Problem> {
    crate::routes::queues::known(&queues, &queue).await?;
    let schedules = queues
        .schedules(&queue)
        .await
        .map_err(|e| problem_for(&e))?;
    let listed: Vec<Value> = schedules.iter().map(schedule_json).collect();
    Ok(axum::Json(json!({ "schedules": listed })).into_response())
}

/// Deletes a schedule: no more jobs from it (jobs it added stay).
#[utoipa::path(delete, path = "/queues/{queue}/schedules/{name}", tag = "queues", security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue"), ("name" = String, Path, description = "The schedule")),
    responses((status = 204, description = "Deleted"), (status = 404, body = Problem)))]
pub(crate) async fn delete_schedule(
    _: Authorized<WorkerRole>,
    State(queues): State<Queues>,
    Path((queue, name)): Path<(String, String)>,
) -> Result<StatusCode, Problem> {
    let deleted = queues
        .delete_schedule(&queue, &name)
        .await
        .map_err(|e| problem_for(&e))?;
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(Problem::not_found(format!(
            "queue {queue:?} has no schedule {name:?}"
        )))
    }
}
