//! `/api/v1/queues/…`: producers add jobs; people and tools look at queues and jobs, pause,
//! resume, retry, promote, cancel and clean. (What workers call is in [`super::work`].)
//!
//! Adding and acting on jobs need `worker`; reads need `viewer`; cleaning and deleting `admin`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keel_core::{HumanDuration, Problem};
use keel_queue::{
    Backoff, BackoffKind, JobFilter, JobOptions, JobState, NewJob, QueueError, QueueOverview,
    QueueSettings, Queues, RateLimit,
};
use serde::Deserialize;
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::auth::{Authorized, ViewerRole, WorkerRole};
use crate::json::ApiJson;

/// Most jobs in one add.
pub(crate) const MAX_BULK: usize = 10_000;
/// Most jobs in one fetch.
pub(crate) const MAX_FETCH: usize = 1_000;

pub(crate) fn problem_for(e: &QueueError) -> Problem {
    match e {
        QueueError::Invalid { .. } => Problem::bad_request(e.to_string()),
        QueueError::NoJob(_) => Problem::not_found(e.to_string()),
        QueueError::Conflict { .. } => {
            Problem::new(StatusCode::CONFLICT, "conflict", "Conflict").with_detail(e.to_string())
        }
        QueueError::Store(_) => {
            Problem::status(StatusCode::INTERNAL_SERVER_ERROR).with_detail(e.to_string())
        }
        QueueError::Unavailable(_) => {
            Problem::status(StatusCode::SERVICE_UNAVAILABLE).with_detail(e.to_string())
        }
    }
}

/// The wait between attempts, as the API takes it.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct BackoffRequest {
    /// `fixed` or `exponential`.
    #[serde(rename = "type")]
    #[schema(value_type = String)]
    kind: BackoffKind,
    /// The first wait, e.g. `"2s"`.
    #[schema(value_type = String)]
    delay: HumanDuration,
    /// The longest wait.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    max_delay: Option<HumanDuration>,
    /// Randomises each wait by up to this fraction either way (0–1).
    #[serde(default)]
    jitter: f64,
}

/// One job to add.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct JobRequest {
    /// What kind of work it is.
    name: String,
    /// Its input (any JSON).
    #[serde(default)]
    payload: Value,
    /// Lower runs first (default 0).
    #[serde(default)]
    priority: i32,
    /// Run no earlier than this from now, e.g. `"10m"`.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    delay: Option<HumanDuration>,
    /// Attempts before the job fails (default 3).
    #[serde(default)]
    attempts: Option<u32>,
    /// The wait between attempts (default exponential from 2 s).
    #[serde(default)]
    backoff: Option<BackoffRequest>,
    /// While a job with this key is waiting, delayed or active, adding another returns it.
    #[serde(default)]
    unique_key: Option<String>,
    /// A tenant or other group inside the queue.
    #[serde(default)]
    group: Option<String>,
    /// Longest an attempt may run, e.g. `"5m"`, however often its lease is renewed; then it
    /// fails and is retried while attempts remain.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    timeout: Option<HumanDuration>,
}

impl JobRequest {
    fn into_job(self, defaults: &JobOptions) -> NewJob {
        NewJob {
            name: self.name,
            payload: self.payload,
            options: JobOptions {
                priority: self.priority,
                delay_ms: self.delay.map_or(0, |d| ms(d.get())),
                attempts: self.attempts.unwrap_or(defaults.attempts),
                backoff: self.backoff.map_or(defaults.backoff, |b| Backoff {
                    kind: b.kind,
                    delay_ms: ms(b.delay.get()),
                    max_delay_ms: b.max_delay.map(|d| ms(d.get())),
                    jitter: b.jitter,
                }),
                unique_key: self.unique_key,
                group: self.group,
                timeout_ms: self.timeout.map(|t| ms(t.get())),
            },
        }
    }
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// One job, or `{"jobs": [...]}`.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(untagged)]
pub(crate) enum AddRequest {
    /// Many jobs, all or none.
    Bulk {
        /// The jobs.
        jobs: Vec<JobRequest>,
    },
    /// One job.
    One(Box<JobRequest>),
}

/// Adds one job (`201 {"id"}`) or many (`201 {"ids": [...]}`, up to 10,000, all or none). A
/// job whose `unique_key` matches a live job gets that job's id.
#[utoipa::path(post, path = "/queues/{queue}/jobs", tag = "queues", security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue")),
    request_body = AddRequest,
    responses((status = 201, description = "`{\"id\"}` or `{\"ids\": [...]}`", body = Object),
              (status = 400, body = Problem)))]
pub(crate) async fn add_jobs(
    _: Authorized<WorkerRole>,
    State(queues): State<Queues>,
    Path(queue): Path<String>,
    ApiJson(request): ApiJson<AddRequest>,
) -> Result<Response, Problem> {
    let (jobs, bulk) = match request {
        AddRequest::Bulk { jobs } => (jobs, true),
        AddRequest::One(job) => (vec![*job], false),
    };
    if jobs.len() > MAX_BULK {
        return Err(Problem::bad_request(format!(
            "jobs: {} jobs is over the limit of {MAX_BULK} per request",
            jobs.len()
        )));
    }
    let defaults = queues.job_defaults(&queue);
    let jobs = jobs.into_iter().map(|j| j.into_job(&defaults)).collect();
    let mut ids = queues
        .add(&queue, jobs)
        .await
        .map_err(|e| problem_for(&e))?;
    let body = if bulk {
        json!({ "ids": ids })
    } else {
        json!({ "id": ids.pop() })
    };
    Ok((StatusCode::CREATED, axum::Json(body)).into_response())
}

/// Every queue with its job counts by state and whether it is paused.
#[utoipa::path(get, path = "/queues", tag = "queues", security(("bearer" = [])),
    responses((status = 200, description = "`{\"queues\": [{name, paused, counts}]}`", body = Object)))]
pub(crate) async fn list_queues(
    _: Authorized<ViewerRole>,
    State(queues): State<Queues>,
) -> Result<Response, Problem> {
    let mut overview = queues.overview().await.map_err(|e| problem_for(&e))?;
    // Declared queues are listed even before their first job.
    for declared in queues.declared() {
        if !overview.iter().any(|q| q.name == declared.name) {
            overview.push(QueueOverview {
                name: declared.name,
                paused: false,
                counts: Default::default(),
            });
        }
    }
    overview.sort_by(|a, b| a.name.cmp(&b.name));
    let listed: Vec<Value> = overview
        .into_iter()
        .map(|q| {
            let settings = queues.settings(&q.name);
            json!({
                "name": q.name,
                "paused": q.paused,
                "counts": q.counts,
                "limits": limits_json(settings.as_ref()),
            })
        })
        .collect();
    Ok(axum::Json(json!({ "queues": listed })).into_response())
}

/// A queue's declared limits as the API shows them (`null` where none).
fn limits_json(settings: Option<&QueueSettings>) -> Value {
    let rate = |r: Option<RateLimit>| r.map(|r| json!({"max": r.max, "per": r.per.to_string()}));
    json!({
        "concurrency": settings.and_then(|s| s.concurrency),
        "rate_limit": rate(settings.and_then(|s| s.rate_limit)),
        "group_rate_limit": rate(settings.and_then(|s| s.group_rate_limit)),
    })
}

/// Checks that job `id` is in `queue`.
async fn in_queue(queues: &Queues, queue: &str, id: &str) -> Result<(), Problem> {
    match queues.get(id).await.map_err(|e| problem_for(&e))? {
        Some(job) if job.queue == queue => Ok(()),
        _ => Err(Problem::not_found(format!(
            "no job {id} in queue {queue:?}"
        ))),
    }
}

/// Runs a delayed job now. 409 when the job is not delayed.
#[utoipa::path(post, path = "/queues/{queue}/jobs/{id}/promote", tag = "queues", security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue"), ("id" = String, Path, description = "The job id")),
    responses((status = 200, description = "`{\"state\": \"waiting\"}`", body = Object), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn promote(
    _: Authorized<WorkerRole>,
    State(queues): State<Queues>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    in_queue(&queues, &queue, &id).await?;
    let state = queues.promote(&id).await.map_err(|e| problem_for(&e))?;
    Ok(axum::Json(json!({ "state": state })).into_response())
}

/// Puts a failed or cancelled job back to waiting with a fresh set of attempts; its error
/// history is kept. 409 for a job in another state.
#[utoipa::path(post, path = "/queues/{queue}/jobs/{id}/retry", tag = "queues", security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue"), ("id" = String, Path, description = "The job id")),
    responses((status = 200, description = "`{\"state\": \"waiting\"}`", body = Object), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn retry(
    _: Authorized<WorkerRole>,
    State(queues): State<Queues>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    in_queue(&queues, &queue, &id).await?;
    let state = queues.retry(&id).await.map_err(|e| problem_for(&e))?;
    Ok(axum::Json(json!({ "state": state })).into_response())
}

/// The queue's job counts by state, and whether it exists yet.
#[utoipa::path(get, path = "/queues/{queue}", tag = "queues", security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue")),
    responses((status = 200, description = "`{\"name\", \"counts\": {state: n}}`", body = Object), (status = 404, body = Problem)))]
pub(crate) async fn queue_info(
    _: Authorized<ViewerRole>,
    State(queues): State<Queues>,
    Path(queue): Path<String>,
) -> Result<Response, Problem> {
    known(&queues, &queue).await?;
    let counts = queues.counts(&queue).await.map_err(|e| problem_for(&e))?;
    let settings = queues.settings(&queue);
    let oldest = queues
        .oldest_waiting(&queue)
        .await
        .map_err(|e| problem_for(&e))?;
    let now = queues.now_ms();
    let body = json!({
        "name": queue,
        "counts": counts,
        "limits": limits_json(settings.as_ref()),
        "delivery": queues.deliveries().get(&queue),
        "last_1m": queues.activity(&queue, 60),
        "last_5m": queues.activity(&queue, 300),
        "oldest_waiting_ms": oldest.map(|ready| now.saturating_sub(ready)),
    });
    Ok(axum::Json(body).into_response())
}

/// What a listing asks for.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct ListQuery {
    /// Only jobs in this state.
    state: Option<String>,
    /// Only jobs with this name.
    name: Option<String>,
    /// Only jobs of this group.
    group: Option<String>,
    /// The job id, or text in the job's name or payload.
    search: Option<String>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
    /// Jobs per page (1–1,000; default 100).
    limit: Option<usize>,
}

/// Jobs of the queue, newest first, filtered by state, name and group, or searched by id, name
/// or payload text, a page at a time; continue with `next_cursor` until it is `null`.
#[utoipa::path(get, path = "/queues/{queue}/jobs", tag = "queues", security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue"), ListQuery),
    responses((status = 200, description = "`{\"jobs\": [...], \"next_cursor\"}`", body = Object), (status = 400, body = Problem)))]
pub(crate) async fn list_jobs(
    _: Authorized<ViewerRole>,
    State(queues): State<Queues>,
    Path(queue): Path<String>,
    axum::extract::Query(query): axum::extract::Query<ListQuery>,
) -> Result<Response, Problem> {
    let limit = query.limit.unwrap_or(100);
    if !(1..=MAX_FETCH).contains(&limit) {
        return Err(Problem::bad_request(format!(
            "limit: must be between 1 and {MAX_FETCH}"
        )));
    }
    let state = match query.state.as_deref() {
        None => None,
        Some(s) => Some(JobState::parse(s).ok_or_else(|| {
            Problem::bad_request(format!(
                "state: {s:?} is not one of waiting, delayed, active, completed, failed, cancelled"
            ))
        })?),
    };
    known(&queues, &queue).await?;
    let filter = JobFilter {
        state,
        name: query.name,
        group: query.group,
        search: query.search.filter(|s| !s.is_empty()),
    };
    let page = queues
        .list(&queue, filter, query.cursor.as_deref(), limit)
        .await
        .map_err(|e| problem_for(&e))?;
    Ok(axum::Json(json!({ "jobs": page.jobs, "next_cursor": page.next_cursor })).into_response())
}

/// What a clean removes.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct CleanQuery {
    /// `completed`, `failed` or `cancelled`.
    state: String,
    /// Only jobs finished longer ago than this, e.g. `24h` (default 0: all of them).
    #[param(value_type = Option<String>)]
    older_than: Option<HumanDuration>,
}

/// Deletes the queue's finished jobs of one state, optionally only those older than
/// `older_than`. Needs `admin`.
#[utoipa::path(delete, path = "/queues/{queue}/jobs", tag = "queues", security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue"), CleanQuery),
    responses((status = 200, description = "`{\"removed\": n}`", body = Object), (status = 400, body = Problem)))]
pub(crate) async fn clean(
    _: Authorized<crate::auth::AdminRole>,
    State(queues): State<Queues>,
    Path(queue): Path<String>,
    axum::extract::Query(query): axum::extract::Query<CleanQuery>,
) -> Result<Response, Problem> {
    let state = JobState::parse(&query.state).ok_or_else(|| {
        Problem::bad_request(format!(
            "state: {:?} is not one of completed, failed, cancelled",
            query.state
        ))
    })?;
    let older_than = query.older_than.map_or(Duration::ZERO, HumanDuration::get);
    let removed = queues
        .clean(&queue, state, older_than)
        .await
        .map_err(|e| problem_for(&e))?;
    Ok(axum::Json(json!({ "removed": removed })).into_response())
}

/// What a queue deletion asks for.
#[derive(Debug, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
pub(crate) struct DeleteQueueQuery {
    /// Must be `true`: the queue's jobs go, whatever their state.
    #[serde(default)]
    confirm: bool,
}

/// Drains and removes a queue: every job (active ones too: their workers' reports then get
/// 404), its schedules and pause flag. A queue declared in config keeps its declaration. Needs
/// `admin` and `confirm=true`.
#[utoipa::path(delete, path = "/queues/{queue}", tag = "queues", security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue"), DeleteQueueQuery),
    responses((status = 200, description = "`{\"removed\": n}` jobs", body = Object), (status = 400, body = Problem), (status = 404, body = Problem)))]
pub(crate) async fn delete_queue(
    _: Authorized<crate::auth::AdminRole>,
    State(queues): State<Queues>,
    Path(queue): Path<String>,
    axum::extract::Query(query): axum::extract::Query<DeleteQueueQuery>,
) -> Result<Response, Problem> {
    if !query.confirm {
        return Err(Problem::bad_request(
            "confirm: deleting a queue removes all its jobs; add ?confirm=true",
        ));
    }
    known(&queues, &queue).await?;
    let removed = queues
        .delete_queue(&queue)
        .await
        .map_err(|e| problem_for(&e))?;
    Ok(axum::Json(json!({ "removed": removed })).into_response())
}

/// 404 unless `queue` is known (declared, or it has jobs or schedules, or was paused).
pub(crate) async fn known(queues: &Queues, queue: &str) -> Result<(), Problem> {
    if queues.exists(queue).await.map_err(|e| problem_for(&e))? {
        Ok(())
    } else {
        Err(Problem::not_found(format!(
            "no queue {queue:?}: it has no jobs and is not declared"
        )))
    }
}

/// Puts every failed job of the queue back to waiting with fresh attempts.
#[utoipa::path(post, path = "/queues/{queue}/retry-failed", tag = "queues", security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue")),
    responses((status = 200, description = "`{\"retried\": n}`", body = Object), (status = 400, body = Problem)))]
pub(crate) async fn retry_failed(
    _: Authorized<WorkerRole>,
    State(queues): State<Queues>,
    Path(queue): Path<String>,
) -> Result<Response, Problem> {
    let retried = queues
        .retry_failed(&queue)
        .await
        .map_err(|e| problem_for(&e))?;
    Ok(axum::Json(json!({ "retried": retried })).into_response())
}

/// One job, with its attempts' errors.
#[utoipa::path(get, path = "/queues/{queue}/jobs/{id}", tag = "queues", security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue"), ("id" = String, Path, description = "The job id")),
    responses((status = 200, description = "The job", body = Object), (status = 404, body = Problem)))]
pub(crate) async fn get_job(
    _: Authorized<ViewerRole>,
    State(queues): State<Queues>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    match queues.get(&id).await.map_err(|e| problem_for(&e))? {
        Some(job) if job.queue == queue => Ok(axum::Json(job).into_response()),
        _ => Err(Problem::not_found(format!(
            "no job {id} in queue {queue:?}"
        ))),
    }
}

/// Cancels a job: at once when waiting or delayed; an active job is flagged, and its worker
/// learns it from a 409 on its next heartbeat. Answers the job's state after the call.
#[utoipa::path(delete, path = "/queues/{queue}/jobs/{id}", tag = "queues", security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue"), ("id" = String, Path, description = "The job id")),
    responses((status = 200, description = "`{\"state\"}`", body = Object), (status = 404, body = Problem)))]
pub(crate) async fn cancel_job(
    _: Authorized<WorkerRole>,
    State(queues): State<Queues>,
    Path((queue, id)): Path<(String, String)>,
) -> Result<Response, Problem> {
    match queues.get(&id).await.map_err(|e| problem_for(&e))? {
        Some(job) if job.queue == queue => {}
        _ => {
            return Err(Problem::not_found(format!(
                "no job {id} in queue {queue:?}"
            )));
        }
    }
    let state = queues.cancel(&id).await.map_err(|e| problem_for(&e))?;
    Ok(axum::Json(json!({ "state": state })).into_response())
}

/// Pauses a queue: it accepts jobs and hands out none until resumed.
#[utoipa::path(post, path = "/queues/{queue}/pause", tag = "queues", security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue")),
    responses((status = 204, description = "Paused"), (status = 400, body = Problem)))]
pub(crate) async fn pause(
    _: Authorized<WorkerRole>,
    State(queues): State<Queues>,
    Path(queue): Path<String>,
) -> Result<StatusCode, Problem> {
    queues
        .set_paused(&queue, true)
        .await
        .map_err(|e| problem_for(&e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// Resumes a paused queue.
#[utoipa::path(post, path = "/queues/{queue}/resume", tag = "queues", security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue")),
    responses((status = 204, description = "Resumed"), (status = 400, body = Problem)))]
pub(crate) async fn resume(
    _: Authorized<WorkerRole>,
    State(queues): State<Queues>,
    Path(queue): Path<String>,
) -> Result<StatusCode, Problem> {
    queues
        .set_paused(&queue, false)
        .await
        .map_err(|e| problem_for(&e))?;
    Ok(StatusCode::NO_CONTENT)
}
