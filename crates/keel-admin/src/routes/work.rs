//! `/api/v1/queues/{q}/fetch` and `/api/v1/jobs/…`: what workers call — fetch with a lease,
//! complete, fail, heartbeat, progress, one job at a time or in batches. All need `worker`.

use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use keel_core::{HumanDuration, Problem};
use keel_queue::{Failure, FetchRequest, Fetched, JobState, QueueError, Queues};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use utoipa::ToSchema;

use crate::auth::{Authorized, WorkerRole};
use crate::json::ApiJson;
use crate::routes::queues::{MAX_FETCH, problem_for};

/// What a pull worker asks for.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FetchBody {
    /// Most jobs to take (1–1,000; default 1).
    #[serde(default)]
    max: Option<usize>,
    /// How long the jobs are leased (default `queue.default_lease`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    lease: Option<HumanDuration>,
    /// How long to wait for a job when none is ready (default 0, at most
    /// `queue.max_fetch_wait`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    wait: Option<HumanDuration>,
    /// The worker's id, kept on its jobs while they are active.
    #[serde(default)]
    worker: Option<String>,
    /// Jobs this worker has finished, completed before the fetch (as `POST /jobs/complete`
    /// would): a worker reports its last batch and takes the next one in a single call. A
    /// call with completions answers at once even when no job is ready (`wait` is ignored).
    #[serde(default)]
    complete: Vec<CompleteItem>,
}

/// A leased job as a worker receives it.
#[derive(Debug, Serialize, ToSchema)]
pub(crate) struct LeasedJob {
    id: String,
    name: String,
    payload: Value,
    attempt: u32,
    max_attempts: u32,
    /// The lease token for complete, fail and heartbeat.
    token: String,
    /// When the lease runs out unless extended (Unix ms).
    lease_expires_at: u64,
}

impl From<Fetched> for LeasedJob {
    fn from(f: Fetched) -> Self {
        Self {
            id: f.job.id,
            name: f.job.name,
            payload: f.job.payload,
            attempt: f.job.attempts_made,
            max_attempts: f.job.max_attempts,
            token: f.token,
            lease_expires_at: f.lease_expires_at,
        }
    }
}

/// Leases ready jobs: highest priority first, oldest first within a priority. With `wait`,
/// holds the request until a job is added or the wait is over (then `{"jobs": []}`). With
/// `complete`, first completes the worker's finished jobs and answers their outcomes in
/// `completed` (as `POST /jobs/complete` does in `results`); such a call does not wait.
#[utoipa::path(post, path = "/queues/{queue}/fetch", tag = "queues", security(("bearer" = [])),
    params(("queue" = String, Path, description = "The queue")),
    request_body = FetchBody,
    responses((status = 200, description = "`{\"jobs\": [...]}`", body = Object), (status = 400, body = Problem)))]
pub(crate) async fn fetch_jobs(
    _: Authorized<WorkerRole>,
    State(queues): State<Queues>,
    Path(queue): Path<String>,
    ApiJson(body): ApiJson<FetchBody>,
) -> Result<Response, Problem> {
    let max = body.max.unwrap_or(1);
    if !(1..=MAX_FETCH).contains(&max) {
        return Err(Problem::bad_request(format!(
            "max: must be between 1 and {MAX_FETCH}"
        )));
    }
    if body.complete.len() > MAX_FETCH {
        return Err(too_many_completions("complete"));
    }
    let request = FetchRequest {
        worker: body.worker.unwrap_or_else(|| "anonymous".into()),
        max,
        lease: body.lease.map(HumanDuration::get),
        wait: body.wait.map_or(Duration::ZERO, HumanDuration::get),
    };
    if body.complete.is_empty() {
        let jobs = queues
            .fetch(&queue, &request)
            .await
            .map_err(|e| problem_for(&e))?;
        let jobs: Vec<LeasedJob> = jobs.into_iter().map(LeasedJob::from).collect();
        let reply = FetchReply {
            jobs,
            completed: None,
        };
        return Ok(reply.into_response());
    }
    // The completions are handed to the store first, so they usually share the fetch's commit.
    // Their outcomes are not held back by a long poll: with nothing ready the call answers at
    // once, and the worker's next call (without completions) waits.
    let request = FetchRequest {
        wait: Duration::ZERO,
        ..request
    };
    let (completed, jobs) = tokio::join!(
        complete_all(&queues, body.complete),
        queues.fetch(&queue, &request)
    );
    let jobs: Vec<LeasedJob> = jobs
        .map_err(|e| problem_for(&e))?
        .into_iter()
        .map(LeasedJob::from)
        .collect();
    let reply = FetchReply {
        jobs,
        completed: Some(completed),
    };
    Ok(reply.into_response())
}

/// A completion.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteBody {
    /// The lease token from the fetch.
    token: String,
    /// The job's result (any JSON), kept with the job.
    #[serde(default)]
    result: Value,
}

/// Completes an active job. 409 when the token is not the job's current lease (expired, or the
/// job was handed to another worker since); nothing changes then.
#[utoipa::path(post, path = "/jobs/{id}/complete", tag = "queues", security(("bearer" = [])),
    params(("id" = String, Path, description = "The job id")),
    request_body = CompleteBody,
    responses((status = 204, description = "Completed"), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn complete_job(
    _: Authorized<WorkerRole>,
    State(queues): State<Queues>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<CompleteBody>,
) -> Result<StatusCode, Problem> {
    queues
        .complete(&id, &body.token, body.result)
        .await
        .map_err(|e| problem_for(&e))?;
    Ok(StatusCode::NO_CONTENT)
}

/// One completion of a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteItem {
    /// The job id.
    id: String,
    /// The lease token from the fetch.
    token: String,
    /// The job's result.
    #[serde(default)]
    result: Value,
}

/// Many completions.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct CompleteManyBody {
    /// Up to 1,000 completions.
    jobs: Vec<CompleteItem>,
}

/// Completes many jobs in one call (they share one commit). Answers one outcome per job, in
/// order: `{"id", "ok": true}` or `{"id", "ok": false, "status", "detail"}` (409 for a lease
/// that is not current, 404 for an unknown job); the others still complete.
#[utoipa::path(post, path = "/jobs/complete", tag = "queues", security(("bearer" = [])),
    request_body = CompleteManyBody,
    responses((status = 200, description = "`{\"results\": [...]}`", body = Object), (status = 400, body = Problem)))]
pub(crate) async fn complete_many(
    _: Authorized<WorkerRole>,
    State(queues): State<Queues>,
    ApiJson(body): ApiJson<CompleteManyBody>,
) -> Result<Response, Problem> {
    if body.jobs.len() > MAX_FETCH {
        return Err(too_many_completions("jobs"));
    }
    #[derive(Serialize)]
    struct Results {
        results: Vec<Completion>,
    }
    let results = complete_all(&queues, body.jobs).await;
    Ok(axum::Json(Results { results }).into_response())
}

fn too_many_completions(field: &str) -> Problem {
    Problem::bad_request(format!("{field}: at most {MAX_FETCH} completions per call"))
}

/// One job's outcome in a batch.
#[derive(Debug, Serialize)]
struct Completion {
    id: String,
    ok: bool,
    /// A failure's new state (`delayed` for a retry).
    #[serde(skip_serializing_if = "Option::is_none")]
    state: Option<JobState>,
    #[serde(skip_serializing_if = "Option::is_none")]
    status: Option<u16>,
    #[serde(skip_serializing_if = "Option::is_none")]
    detail: Option<String>,
}

/// What a fetch answers (serialized straight from these types, not through a JSON tree).
#[derive(Debug, Serialize)]
struct FetchReply {
    jobs: Vec<LeasedJob>,
    #[serde(skip_serializing_if = "Option::is_none")]
    completed: Option<Vec<Completion>>,
}

impl IntoResponse for FetchReply {
    fn into_response(self) -> Response {
        // About what a job with a small payload takes, and its completion.
        let capacity =
            64 + 320 * self.jobs.len() + 64 * self.completed.as_ref().map_or(0, Vec::len);
        crate::json::sized_json(&self, capacity)
    }
}

/// Completes `jobs`; one outcome per job, in order: `{"id", "ok": true}` or
/// `{"id", "ok": false, "status", "detail"}`.
async fn complete_all(queues: &Queues, jobs: Vec<CompleteItem>) -> Vec<Completion> {
    let ids: Vec<String> = jobs.iter().map(|j| j.id.clone()).collect();
    let outcomes = queues
        .complete_many(
            jobs.into_iter()
                .map(|j| (j.id, j.token, j.result))
                .collect(),
        )
        .await;
    ids.into_iter()
        .zip(outcomes)
        .map(|(id, outcome)| match outcome {
            Ok(()) => Completion {
                id,
                ok: true,
                state: None,
                status: None,
                detail: None,
            },
            Err(e) => Completion::refused(id, &e, "complete this job"),
        })
        .collect()
}

/// A failed attempt.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailBody {
    /// The lease token from the fetch.
    token: String,
    /// What went wrong (kept in the job's history).
    error: String,
    /// Whether to retry if attempts remain (default true).
    #[serde(default = "yes")]
    retry: bool,
    /// Retry after this long instead of the job's backoff (`"90s"`), e.g. when the app was
    /// told by an API when to come back.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    retry_after: Option<HumanDuration>,
}

/// A failed attempt as a worker reports it.
fn failure(error: String, retry: bool, retry_after: Option<HumanDuration>) -> Failure {
    Failure {
        error,
        retry,
        retry_after: retry_after.map(HumanDuration::get),
    }
}

fn yes() -> bool {
    true
}

/// Records a failed attempt: the job is retried after its backoff (or `retry_after`) while
/// attempts remain (and `retry` is not false), otherwise it fails. Answers the job's new state.
#[utoipa::path(post, path = "/jobs/{id}/fail", tag = "queues", security(("bearer" = [])),
    params(("id" = String, Path, description = "The job id")),
    request_body = FailBody,
    responses((status = 200, description = "`{\"state\"}`", body = Object), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn fail_job(
    _: Authorized<WorkerRole>,
    State(queues): State<Queues>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<FailBody>,
) -> Result<Response, Problem> {
    let failure = failure(body.error, body.retry, body.retry_after);
    let state = queues
        .fail(&id, &body.token, failure)
        .await
        .map_err(|e| problem_for(&e))?;
    Ok(axum::Json(json!({ "state": state })).into_response())
}

/// One failure of a batch.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailItem {
    /// The job id.
    id: String,
    /// The lease token from the fetch.
    token: String,
    /// What went wrong.
    error: String,
    /// Whether to retry if attempts remain (default true).
    #[serde(default = "yes")]
    retry: bool,
    /// Retry after this long instead of the job's backoff.
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    retry_after: Option<HumanDuration>,
}

/// Many failures.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct FailManyBody {
    /// Up to 1,000 failures.
    jobs: Vec<FailItem>,
}

impl Completion {
    /// Job `id` refused with `e`; a store failure is logged and shown as "keel could not
    /// `what`" (its text may name files).
    fn refused(id: String, e: &QueueError, what: &str) -> Self {
        let status = problem_for(e).status_code();
        let detail = if status.is_server_error() {
            tracing::error!(job = %id, error = %e, "could not {what}");
            format!("keel could not {what}; the error is logged")
        } else {
            e.to_string()
        };
        Self {
            id,
            ok: false,
            state: None,
            status: Some(status.as_u16()),
            detail: Some(detail),
        }
    }
}

/// Records many failed attempts in one call (they share one commit). Answers one outcome per
/// job, in order: `{"id", "ok": true, "state"}` or `{"id", "ok": false, "status", "detail"}`.
#[utoipa::path(post, path = "/jobs/fail", tag = "queues", security(("bearer" = [])),
    request_body = FailManyBody,
    responses((status = 200, description = "`{\"results\": [...]}`", body = Object), (status = 400, body = Problem)))]
pub(crate) async fn fail_many(
    _: Authorized<WorkerRole>,
    State(queues): State<Queues>,
    ApiJson(body): ApiJson<FailManyBody>,
) -> Result<Response, Problem> {
    if body.jobs.len() > MAX_FETCH {
        return Err(Problem::bad_request(format!(
            "jobs: at most {MAX_FETCH} failures per call"
        )));
    }
    let failing = body.jobs.iter().map(|item| {
        let failure = failure(item.error.clone(), item.retry, item.retry_after);
        queues.fail(&item.id, &item.token, failure)
    });
    // Polled together, so they reach the store together and share a commit.
    let outcomes = futures_util::future::join_all(failing).await;
    let results: Vec<Completion> = body
        .jobs
        .iter()
        .zip(outcomes)
        .map(|(item, outcome)| match outcome {
            Ok(state) => Completion {
                id: item.id.clone(),
                ok: true,
                state: Some(state),
                status: None,
                detail: None,
            },
            Err(e) => Completion::refused(item.id.clone(), &e, "record this failure"),
        })
        .collect();
    #[derive(Serialize)]
    struct Results {
        results: Vec<Completion>,
    }
    Ok(axum::Json(Results { results }).into_response())
}

/// A lease extension.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct HeartbeatBody {
    /// The lease token from the fetch.
    token: String,
    /// The new lease, from now (default `queue.default_lease`).
    #[serde(default)]
    #[schema(value_type = Option<String>)]
    extend: Option<HumanDuration>,
}

/// Extends an active job's lease. 409 when the token is not current, or the job was cancelled
/// (the worker should stop).
#[utoipa::path(post, path = "/jobs/{id}/heartbeat", tag = "queues", security(("bearer" = [])),
    params(("id" = String, Path, description = "The job id")),
    request_body = HeartbeatBody,
    responses((status = 200, description = "`{\"lease_expires_at\"}`", body = Object), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn heartbeat(
    _: Authorized<WorkerRole>,
    State(queues): State<Queues>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<HeartbeatBody>,
) -> Result<Response, Problem> {
    let lease = body
        .extend
        .map_or(queues.config().default_lease.get(), HumanDuration::get);
    if lease.is_zero() {
        return Err(Problem::bad_request("extend: must be longer than 0"));
    }
    let expires = queues
        .extend(&id, &body.token, lease)
        .await
        .map_err(|e| problem_for(&e))?;
    Ok(axum::Json(json!({ "lease_expires_at": expires })).into_response())
}

/// A progress report.
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub(crate) struct ProgressBody {
    /// The lease token from the fetch.
    token: String,
    /// 0–100.
    progress: u8,
    /// Anything the worker wants to show (any JSON).
    #[serde(default)]
    data: Option<Value>,
}

/// Records an active job's progress. 409 when the token is not current or the job was cancelled
/// (the worker should stop).
#[utoipa::path(post, path = "/jobs/{id}/progress", tag = "queues", security(("bearer" = [])),
    params(("id" = String, Path, description = "The job id")),
    request_body = ProgressBody,
    responses((status = 204, description = "Recorded"), (status = 400, body = Problem), (status = 404, body = Problem), (status = 409, body = Problem)))]
pub(crate) async fn progress(
    _: Authorized<WorkerRole>,
    State(queues): State<Queues>,
    Path(id): Path<String>,
    ApiJson(body): ApiJson<ProgressBody>,
) -> Result<StatusCode, Problem> {
    if body.progress > 100 {
        return Err(Problem::bad_request("progress: must be between 0 and 100"));
    }
    queues
        .progress(&id, &body.token, body.progress, body.data)
        .await
        .map_err(|e| problem_for(&e))?;
    Ok(StatusCode::NO_CONTENT)
}
