//! The store behind the queue: where jobs live and how they move between states.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use serde_json::Value;

use crate::QueueError;
use crate::model::{Fetched, Job, JobState, NewJob, QueueLimits, QueueOverview};
use crate::schedule::{NewSchedule, Schedule};

/// What a store operation returns: a boxed future, so stores can be used as trait objects.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, QueueError>> + Send + 'a>>;

/// How an attempt failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// The error, kept in the job's history.
    pub error: String,
    /// Whether another attempt may follow (if any are left).
    pub retry: bool,
    /// When retrying, wait this long instead of the job's backoff.
    pub retry_after: Option<Duration>,
}

impl Failure {
    /// A failure that is retried after the job's backoff while attempts remain.
    pub fn retry(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            retry: true,
            retry_after: None,
        }
    }

    /// A failure that is not retried.
    pub fn no_retry(error: impl Into<String>) -> Self {
        Self {
            error: error.into(),
            retry: false,
            retry_after: None,
        }
    }
}

/// Which jobs a listing returns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JobFilter {
    /// Only jobs in this state.
    pub state: Option<JobState>,
    /// Only jobs with this name.
    pub name: Option<String>,
    /// Only jobs of this group.
    pub group: Option<String>,
    /// Jobs whose id is this, or whose name or payload text contains it.
    pub search: Option<String>,
}

/// One page of a listing.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    /// Newest first.
    pub jobs: Vec<Job>,
    /// Where the next page starts; `None` when there are no more.
    pub next_cursor: Option<String>,
}

/// Where a job ended up after an operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Moved {
    /// The job's queue.
    pub queue: String,
    /// Its state after the operation.
    pub state: JobState,
    /// How long the attempt that just ended ran (completions and failures).
    pub ran_ms: Option<u64>,
}

/// Which finished jobs to keep, per queue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// The newest completed jobs to keep.
    pub completed: u64,
    /// The newest failed jobs to keep (and as many cancelled ones).
    pub failed: u64,
    /// Finished jobs older than this are deleted whatever their number (`None`: no age limit).
    pub max_age: Option<Duration>,
}

/// What pruning keeps: a default, and queues with their own.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionPolicy {
    /// For queues without their own.
    pub default: Retention,
    /// Queues with their own retention.
    pub queues: BTreeMap<String, Retention>,
}

impl RetentionPolicy {
    /// `queue`'s retention.
    pub fn for_queue(&self, queue: &str) -> Retention {
        self.queues.get(queue).copied().unwrap_or(self.default)
    }
}

impl From<Retention> for RetentionPolicy {
    fn from(default: Retention) -> Self {
        Self {
            default,
            queues: BTreeMap::new(),
        }
    }
}

/// A job store. Every implementation passes [`crate::conformance`]. Operations that answer
/// success have reached the store's storage (durable as the store is). A store may submit an
/// operation when its method is called rather than when its future is first polled, so
/// operations started together share a commit (the SQLite store does); callers start together
/// what may go together, and await in the order they need.
pub trait Store: Send + Sync {
    /// Adds `jobs` to `queue`, all or none (each is validated first). Returns each job's id; a
    /// job whose `unique_key` matches a waiting, delayed or active job gets that job's id.
    fn add<'a>(&'a self, queue: &'a str, jobs: Vec<NewJob>) -> StoreFuture<'a, Vec<String>>;

    /// Leases up to `max` ready jobs of `queue` to `worker` for `lease`: highest priority
    /// first (lowest number); within a priority, groups take turns (a group that added many
    /// jobs does not hold back one that added a few later) and each group's jobs go oldest
    /// first — with no groups, plain FIFO. Delayed jobs whose time has come are ready. A paused
    /// queue hands out nothing; the queue's limits ([`Store::set_limits`]) hold.
    fn fetch<'a>(
        &'a self,
        queue: &'a str,
        worker: &'a str,
        max: usize,
        lease: Duration,
    ) -> StoreFuture<'a, Vec<Fetched>>;

    /// Sets what `queue` may hand out from now on: a cap on active jobs and rate limits for the
    /// queue and for each group in it. Fetches respect them; fetches answer fewer jobs (or
    /// none) rather than exceed one.
    fn set_limits<'a>(&'a self, queue: &'a str, limits: QueueLimits) -> StoreFuture<'a, ()>;

    /// Completes the active job `id` leased with `token`, keeping `result`.
    fn complete<'a>(&'a self, id: &'a str, token: &'a str, result: Value)
    -> StoreFuture<'a, Moved>;

    /// Completes many active jobs, `(id, token, result)` each; one outcome per job, in order.
    /// A store answers them together where it can (one commit, one round trip).
    fn complete_many(
        &self,
        jobs: Vec<(String, String, Value)>,
    ) -> StoreFuture<'_, Vec<Result<Moved, QueueError>>> {
        Box::pin(async move {
            // All are submitted before the first is awaited, so they can share a commit.
            let pending: Vec<_> = jobs
                .iter()
                .map(|(id, token, result)| self.complete(id, token, result.clone()))
                .collect();
            let mut outcomes = Vec::with_capacity(pending.len());
            for outcome in pending {
                outcomes.push(outcome.await);
            }
            Ok(outcomes)
        })
    }

    /// Records a failed attempt of the active job `id` leased with `token`. The job is retried
    /// after its backoff if `failure.retry` and attempts remain, otherwise it fails.
    fn fail<'a>(&'a self, id: &'a str, token: &'a str, failure: Failure) -> StoreFuture<'a, Moved>;

    /// Extends the lease of the active job `id` to `lease` from now. Returns the new expiry
    /// (Unix ms). Refused for a cancelled job, so its worker learns of the cancellation.
    fn extend<'a>(&'a self, id: &'a str, token: &'a str, lease: Duration) -> StoreFuture<'a, u64>;

    /// Records the progress (0–100, capped) of the active job `id` leased with `token`, with
    /// optional data. Refused for a cancelled job, so its worker learns of the cancellation.
    fn progress<'a>(
        &'a self,
        id: &'a str,
        token: &'a str,
        progress: u8,
        data: Option<Value>,
    ) -> StoreFuture<'a, Moved>;

    /// Makes the delayed job `id` ready now.
    fn promote<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Moved>;

    /// Puts the failed or cancelled job `id` back to waiting with a fresh set of attempts (its
    /// error history is kept).
    fn retry<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Moved>;

    /// Deletes the jobs of `queue` in the finished state `state` (completed, failed or
    /// cancelled) that finished more than `older_than` ago. Returns how many.
    fn clean<'a>(
        &'a self,
        queue: &'a str,
        state: JobState,
        older_than: Duration,
    ) -> StoreFuture<'a, usize>;

    /// Puts every failed job of `queue` back to waiting with fresh attempts. Returns how many.
    fn retry_failed<'a>(&'a self, queue: &'a str) -> StoreFuture<'a, usize>;

    /// Returns every active job whose lease has expired to waiting (the attempt counted), or
    /// fails it once it has stalled more than `max_stalls` times or has no attempts left.
    /// Returns how many it recovered or failed.
    fn recover_stalled(&self, max_stalls: u32) -> StoreFuture<'_, usize>;

    /// Cancels job `id`: at once if waiting or delayed; an active one is flagged, its lease can
    /// no longer be extended, and it ends cancelled when its worker reports.
    fn cancel<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Moved>;

    /// Deletes finished jobs beyond what each queue's retention in `policy` keeps, at most
    /// `limit` of them per call (callers repeat while it returns `limit`). Returns how many it
    /// deleted.
    fn prune(&self, policy: RetentionPolicy, limit: usize) -> StoreFuture<'_, usize>;

    /// Pauses or resumes `queue`.
    fn set_paused<'a>(&'a self, queue: &'a str, paused: bool) -> StoreFuture<'a, ()>;

    /// Job `id`, if it exists.
    fn get<'a>(&'a self, id: &'a str) -> StoreFuture<'a, Option<Job>>;

    /// Jobs of `queue` matching `filter`, newest first, `limit` at a time from `cursor` (a
    /// `next_cursor` of an earlier page). A search examines every job of the queue that the
    /// other filters leave.
    fn list<'a>(
        &'a self,
        queue: &'a str,
        filter: JobFilter,
        cursor: Option<&'a str>,
        limit: usize,
    ) -> StoreFuture<'a, JobPage>;

    /// Every queue that has jobs or was paused, with its job counts, by name.
    fn overview(&self) -> StoreFuture<'_, Vec<QueueOverview>>;

    /// How many jobs of `queue` are in each state (states without jobs are absent).
    fn counts<'a>(&'a self, queue: &'a str) -> StoreFuture<'a, BTreeMap<String, u64>>;

    /// Creates or replaces `queue`'s schedule `schedule.name` (validated first). Replacing it
    /// with the same timing keeps its next tick; new timing counts from now.
    fn put_schedule<'a>(
        &'a self,
        queue: &'a str,
        schedule: NewSchedule,
    ) -> StoreFuture<'a, Schedule>;

    /// `queue`'s schedules, by name.
    fn schedules<'a>(&'a self, queue: &'a str) -> StoreFuture<'a, Vec<Schedule>>;

    /// Deletes a schedule; whether it existed.
    fn delete_schedule<'a>(&'a self, queue: &'a str, name: &'a str) -> StoreFuture<'a, bool>;

    /// Adds one job for each schedule whose tick has come, and moves the schedule to its
    /// first tick after now — atomically, so a tick adds exactly one job however often this
    /// runs, and ticks missed while nothing ran add one job. Returns the queues that got jobs.
    fn fire_schedules(&self) -> StoreFuture<'_, Vec<String>>;

    /// Whether `queue` is known: it has jobs or schedules, or was paused or resumed.
    fn queue_exists<'a>(&'a self, queue: &'a str) -> StoreFuture<'a, bool>;

    /// Drains `queue`: deletes up to `limit` of its jobs (any state; their workers' reports
    /// then get "no job"); once none are left, also its schedules and its pause flag. Returns
    /// how many jobs were deleted — call again until it answers fewer than `limit`.
    fn delete_queue<'a>(&'a self, queue: &'a str, limit: usize) -> StoreFuture<'a, usize>;

    /// Since when `queue`'s longest-waiting ready job has been ready (Unix ms: the later of
    /// when it was added and when its delay ended), if any job is waiting.
    fn oldest_waiting<'a>(&'a self, queue: &'a str) -> StoreFuture<'a, Option<u64>>;

    /// The queues to which other processes sharing this store add jobs, as they add them, so
    /// [`Queues`](crate::Queues) can wake its waiting fetches at once. `None` (the default)
    /// for a store only this process writes. Called from within a Tokio runtime.
    fn added_elsewhere(&self) -> Option<tokio::sync::broadcast::Receiver<String>> {
        None
    }
}
