//! In-process Rust workers: a handler runs for each job of a queue, at most `concurrency` at
//! a time, under the same leases as HTTP workers — renewed while the job runs, so a hung
//! handler is noticed only if keel itself stops, and dropped when the job is cancelled.
//!
//! ```no_run
//! # async fn example(queues: keel_queue::Queues) -> Result<(), keel_queue::QueueError> {
//! use keel_queue::Outcome;
//! use serde_json::json;
//!
//! let worker = queues.worker("emails").concurrency(8).run(|job| async move {
//!     match job.payload["to"].as_str() {
//!         Some(to) => Outcome::Done(json!({ "sent_to": to })),
//!         None => Outcome::fail("payload.to is missing"),
//!     }
//! })?;
//! // … on shutdown: stop taking jobs, let the running ones finish and be reported.
//! worker.shutdown().await;
//! # Ok(()) }
//! ```

use std::fmt::Display;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use serde_json::Value;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tokio::task::JoinHandle;

use crate::QueueError;
use crate::model::{Fetched, Job};
use crate::service::{FetchRequest, Queues};
use crate::store::Failure;

/// How long one fetch waits for a job before the worker looks at its stop signal again.
const POLL: Duration = Duration::from_secs(1);

/// How long the worker waits after the store refused a fetch before trying again.
const STORE_RETRY: Duration = Duration::from_secs(1);

/// What a handler says about its job.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done; the value is kept as the job's result.
    Done(Value),
    /// This attempt failed; retry (while attempts remain) after the job's backoff, or after
    /// `after` when given.
    Retry {
        /// Kept in the job's history.
        error: String,
        /// Overrides the backoff for this retry.
        after: Option<Duration>,
    },
    /// Failed for good: no further attempt, whatever attempts remain.
    Fail(String),
}

impl Outcome {
    /// Retry after the job's backoff.
    pub fn retry(error: impl Display) -> Self {
        Self::Retry {
            error: error.to_string(),
            after: None,
        }
    }

    /// Retry after `after` instead of the backoff (a rate-limited API said when, say).
    pub fn retry_after(error: impl Display, after: Duration) -> Self {
        Self::Retry {
            error: error.to_string(),
            after: Some(after),
        }
    }

    /// Fail without retrying.
    pub fn fail(error: impl Display) -> Self {
        Self::Fail(error.to_string())
    }
}

/// `Ok(result)` is done; `Err(e)` is retried after the backoff.
impl<E: Display> From<Result<Value, E>> for Outcome {
    fn from(result: Result<Value, E>) -> Self {
        match result {
            Ok(value) => Self::Done(value),
            Err(e) => Self::retry(e),
        }
    }
}

/// A handler that returns nothing is done (with no result).
impl From<()> for Outcome {
    fn from((): ()) -> Self {
        Self::Done(Value::Null)
    }
}

/// Holds a worker back: asked before each fetch how many jobs may start (a circuit breaker in
/// front of the service the handler calls, say).
pub trait Gate: Send + Sync + 'static {
    /// `Ok(n)`: up to `n` jobs may start now; `Err(wait)`: none, ask again after `wait`.
    fn admit(&self) -> Result<usize, Duration>;
}

/// How often a held-back worker asks its gate again: at most every 10 ms, at least every
/// 250 ms (so a gate on an injected clock is asked again soon after the clock moves).
const GATE_RECHECK: Duration = Duration::from_millis(250);
const GATE_MIN_WAIT: Duration = Duration::from_millis(10);

/// Sets up a worker; from [`Queues::worker`].
#[must_use = "a worker builder does nothing until `run`"]
pub struct WorkerBuilder {
    queues: Queues,
    queue: String,
    concurrency: usize,
    lease: Duration,
    id: String,
    gate: Option<Arc<dyn Gate>>,
}

impl WorkerBuilder {
    pub(crate) fn new(queues: Queues, queue: &str) -> Self {
        let lease = queues.config().default_lease.get();
        Self {
            queues,
            queue: queue.to_owned(),
            concurrency: 1,
            lease,
            id: format!("in-process:{queue}"),
            gate: None,
        }
    }

    /// Asks `gate` before each fetch how many jobs may start; none while it says wait.
    pub fn gate(mut self, gate: Arc<dyn Gate>) -> Self {
        self.gate = Some(gate);
        self
    }

    /// Jobs run at the same time (default 1; at least 1).
    pub fn concurrency(mut self, concurrency: usize) -> Self {
        self.concurrency = concurrency.max(1);
        self
    }

    /// How long each job is leased; renewed every third of it while the job runs (default
    /// `queue.default_lease`).
    pub fn lease(mut self, lease: Duration) -> Self {
        self.lease = lease;
        self
    }

    /// The worker id kept on its active jobs (default `in-process:<queue>`).
    pub fn id(mut self, id: impl Into<String>) -> Self {
        self.id = id.into();
        self
    }

    /// Starts taking jobs. Each runs `handler` in a task of its own: a panic fails the attempt
    /// (and is retried like an error).
    pub fn run<H, F, O>(self, handler: H) -> Result<Worker, QueueError>
    where
        H: Fn(Job) -> F + Send + Sync + 'static,
        F: Future<Output = O> + Send + 'static,
        O: Into<Outcome> + Send + 'static,
    {
        Queues::validate_queue(&self.queue)?;
        if self.lease.is_zero() {
            return Err(QueueError::invalid("lease", "must be longer than 0"));
        }
        let (stop, stopped) = watch::channel(false);
        let run = Run {
            queues: self.queues,
            queue: self.queue,
            id: self.id,
            lease: self.lease,
            slots: Arc::new(Semaphore::new(self.concurrency)),
            concurrency: self.concurrency,
            gate: self.gate,
        };
        let handler = Arc::new(move |job: Job| {
            let work = handler(job);
            async move { work.await.into() }
        });
        let task = tokio::spawn(run.take_jobs(handler, stopped));
        Ok(Worker { stop, task })
    }
}

/// A running worker.
pub struct Worker {
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Worker {
    /// Stops taking jobs and waits until the running ones have finished and been reported.
    /// A fetch already waiting for jobs ends first (within a second).
    pub async fn shutdown(self) {
        let _ = self.stop.send(true);
        if let Err(e) = self.task.await {
            tracing::error!(error = %e, "a queue worker ended abnormally");
        }
    }
}

/// A finished job on its way to the store.
struct Report {
    id: String,
    token: String,
    outcome: Outcome,
}

struct Run {
    queues: Queues,
    queue: String,
    id: String,
    lease: Duration,
    slots: Arc<Semaphore>,
    concurrency: usize,
    gate: Option<Arc<dyn Gate>>,
}

impl Run {
    async fn take_jobs<H, F>(self, handler: Arc<H>, mut stopped: watch::Receiver<bool>)
    where
        H: Fn(Job) -> F + Send + Sync + 'static,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let (reports, finished) = mpsc::unbounded_channel();
        let reporter = tokio::spawn(report(self.queues.clone(), finished));
        let this = Arc::new(self);
        // Fetch when a quarter of the slots are free (or all, when fewer are running): one
        // fetch then brings many jobs, rather than one fetch per finished job.
        let enough = (this.concurrency / 4).max(1);
        'taking: loop {
            let mut free = Vec::new();
            while free.is_empty() || free.len() + this.slots.available_permits() < enough {
                tokio::select! {
                    biased;
                    _ = stopped.wait_for(|stop| *stop) => break 'taking,
                    permit = this.slots.clone().acquire_owned() => match permit {
                        Ok(permit) => free.push(permit),
                        Err(_) => break 'taking,
                    },
                }
            }
            let mut max = free.len() + this.slots.available_permits();
            if let Some(gate) = &this.gate {
                match gate.admit() {
                    Ok(allowed) if allowed > 0 => max = max.min(allowed),
                    held => {
                        drop(free);
                        let wait = held
                            .err()
                            .unwrap_or(GATE_RECHECK)
                            .clamp(GATE_MIN_WAIT, GATE_RECHECK);
                        tokio::select! {
                            _ = stopped.wait_for(|stop| *stop) => break,
                            () = tokio::time::sleep(wait) => continue,
                        }
                    }
                }
            }
            let request = FetchRequest {
                worker: this.id.clone(),
                max,
                lease: Some(this.lease),
                wait: POLL,
            };
            // Not raced against the stop signal: a fetch dropped midway could have leased jobs.
            let jobs = match this.queues.fetch(&this.queue, &request).await {
                Ok(jobs) => jobs,
                Err(e) => {
                    tracing::warn!(queue = %this.queue, error = %e, "a queue worker could not fetch jobs");
                    drop(free);
                    tokio::select! {
                        _ = stopped.wait_for(|stop| *stop) => break,
                        () = tokio::time::sleep(STORE_RETRY) => continue,
                    }
                }
            };
            for job in jobs {
                let permit = match free.pop() {
                    Some(permit) => permit,
                    // Only this loop takes slots, so the free ones counted above are there.
                    None => match this.slots.clone().try_acquire_owned() {
                        Ok(permit) => permit,
                        Err(_) => break,
                    },
                };
                let (this, handler, reports) = (this.clone(), handler.clone(), reports.clone());
                tokio::spawn(async move { this.work(job, permit, handler, reports).await });
            }
        }
        // Every slot back means every running job has sent its report.
        let _ = this.slots.acquire_many(this.concurrency as u32).await;
        drop(reports);
        let _ = reporter.await;
    }

    /// Runs one job's handler, renewing its lease until it finishes or turns out cancelled.
    async fn work<H, F>(
        &self,
        fetched: Fetched,
        _slot: OwnedSemaphorePermit,
        handler: Arc<H>,
        reports: mpsc::UnboundedSender<Report>,
    ) where
        H: Fn(Job) -> F + Send + Sync + 'static,
        F: Future<Output = Outcome> + Send + 'static,
    {
        let Fetched { job, token, .. } = fetched;
        let id = job.id.clone();
        // Run in this task, a panic caught as a failed attempt; dropped (so stopped) when a
        // renewal finds the job is no longer ours.
        let mut running = CatchUnwind(Box::pin(handler(job)));
        let outcome = {
            let renewals = async {
                loop {
                    tokio::time::sleep(self.lease / 3).await;
                    match self.queues.extend(&id, &token, self.lease).await {
                        Ok(_) => {}
                        // Cancelled, or the lease is gone.
                        Err(QueueError::Conflict { reason, .. }) => return reason,
                        Err(e) => {
                            tracing::warn!(job = %id, error = %e, "could not renew a job's lease");
                        }
                    }
                }
            };
            tokio::pin!(renewals);
            tokio::select! {
                finished = &mut running => {
                    finished.unwrap_or_else(|()| Outcome::retry("the handler panicked"))
                }
                reason = &mut renewals => Outcome::fail(format!("stopped: {reason}")),
            }
        };
        drop(running);
        let _ = reports.send(Report { id, token, outcome });
    }
}

/// A handler's future, with a panic while polling it turned into `Err(())`.
struct CatchUnwind(Pin<Box<dyn Future<Output = Outcome> + Send>>);

impl Future for CatchUnwind {
    type Output = Result<Outcome, ()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let work = &mut self.0;
        match std::panic::catch_unwind(AssertUnwindSafe(|| work.as_mut().poll(cx))) {
            Ok(Poll::Ready(outcome)) => Poll::Ready(Ok(outcome)),
            Ok(Poll::Pending) => Poll::Pending,
            Err(_) => Poll::Ready(Err(())),
        }
    }
}

/// Hands finished jobs to the store: completions in batches (all that are waiting), failures
/// one by one.
async fn report(queues: Queues, mut finished: mpsc::UnboundedReceiver<Report>) {
    let mut batch = Vec::new();
    while finished.recv_many(&mut batch, 1_000).await > 0 {
        let mut done = Vec::new();
        for Report { id, token, outcome } in batch.drain(..) {
            let failure = match outcome {
                Outcome::Done(result) => {
                    done.push((id, token, result));
                    continue;
                }
                Outcome::Retry { error, after } => Failure {
                    error,
                    retry: true,
                    retry_after: after,
                },
                Outcome::Fail(error) => Failure::no_retry(error),
            };
            if let Err(e) = queues.fail(&id, &token, failure).await {
                tracing::warn!(job = %id, error = %e, "could not record a failed attempt");
            }
        }
        for outcome in queues.complete_many(done).await {
            if let Err(e) = outcome {
                tracing::warn!(error = %e, "could not complete a job");
            }
        }
    }
}
