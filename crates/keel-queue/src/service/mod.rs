//! [`Queues`]: the queue as the rest of keel uses it — a [`Store`] plus what a store cannot do
//! alone: waking long-polling workers the moment a job is added, recovering stalled jobs in
//! the background, and checking payload sizes.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

mod declared;
mod maintenance;

use keel_core::Clock;
use keel_core::sync::lock;
use serde_json::Value;
use tokio::sync::Notify;

use crate::QueueError;
use crate::activity::{Activity, ActivitySummary};
use crate::config::{QueueConfig, QueueSettings};
use crate::events::{EventBus, EventKind, QueueEvent};
use crate::model::{Fetched, Job, JobOptions, JobState, NewJob, QueueOverview};
use crate::push::{Delivery, DeliveryReport};
use crate::schedule::{NewSchedule, Schedule};
use crate::store::{Failure, JobFilter, JobPage, Moved, RetentionPolicy, Store};
use crate::worker::Worker;
use crate::worker::WorkerBuilder;

/// Most finished jobs deleted in one pruning step (a step is one transaction of the writer).
const PRUNE_BATCH: usize = 1_000;

/// Most pruning steps in one maintenance round (so at most 200,000 jobs a round).
const MAX_PRUNE_STEPS: usize = 200;

/// How often a waiting fetch looks again for delayed jobs that have come due (a job added
/// wakes it at once).
const DUE_RECHECK: Duration = Duration::from_millis(250);

/// The job queues. Cheap to clone.
#[derive(Clone)]
pub struct Queues {
    inner: Arc<Inner>,
}

struct Inner {
    store: Box<dyn Store>,
    config: QueueConfig,
    /// One wake-up per queue with fetches waiting.
    added: Mutex<HashMap<String, Arc<Notify>>>,
    /// What happened to jobs, per queue, since start.
    events: Mutex<BTreeMap<String, Events>>,
    /// Jobs whose lease expired, since start.
    stalled: std::sync::atomic::AtomicU64,
    /// The queues as the last maintenance round saw them (for metrics and health, which must
    /// not wait on the store).
    snapshot: Mutex<Vec<QueueOverview>>,
    /// The queues declared in config (`[[queues]]`), by name.
    declared: Mutex<BTreeMap<String, QueueSettings>>,
    /// Live events for subscribers.
    bus: EventBus,
    /// Webhook deliveries, by queue.
    deliveries: Mutex<BTreeMap<String, Arc<Delivery>>>,
    /// Each queue's last five minutes.
    activity: Mutex<HashMap<String, Activity>>,
    /// Told each job's wait and run time (for histograms).
    timings: std::sync::OnceLock<TimingObserver>,
    clock: Clock,
}

/// Which time a [`TimingObserver`] is told.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Timing {
    /// From ready (added, or its delay over) to started.
    Wait,
    /// From started to completed or failed.
    Processing,
}

/// Told `(queue, which, milliseconds)` for every job started and every attempt ended.
pub type TimingObserver = Arc<dyn Fn(&str, Timing, u64) + Send + Sync>;

/// What happened to a queue's jobs since keel started.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Events {
    /// Jobs added (a duplicate unique key counts too).
    pub added: u64,
    /// Jobs completed.
    pub completed: u64,
    /// Attempts that failed and will be retried.
    pub retried: u64,
    /// Jobs that failed for good.
    pub failed: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
}

/// Wakes the fetches waiting on a queue another process added jobs to, until the queues are
/// dropped or the store stops telling.
async fn wake_on_adds_elsewhere(
    queues: std::sync::Weak<Inner>,
    mut added: tokio::sync::broadcast::Receiver<String>,
) {
    use tokio::sync::broadcast::error::RecvError;
    loop {
        let queue = added.recv().await;
        let Some(inner) = queues.upgrade() else {
            return;
        };
        let waiting = lock(&inner.added);
        match queue {
            Ok(queue) => {
                if let Some(wake) = waiting.get(&queue) {
                    wake.notify_waiters();
                }
            }
            // Some were missed: wake every queue's fetches, they look for themselves.
            Err(RecvError::Lagged(_)) => waiting.values().for_each(|w| w.notify_waiters()),
            Err(RecvError::Closed) => return,
        }
    }
}

/// What a fetch asks for.
#[derive(Debug, Clone)]
pub struct FetchRequest {
    /// The worker's id (kept on the job while it is active).
    pub worker: String,
    /// Most jobs to return.
    pub max: usize,
    /// Lease length; `None` = `queue.default_lease`.
    pub lease: Option<Duration>,
    /// How long to wait for a job when none is ready (capped by `queue.max_fetch_wait`).
    pub wait: Duration,
}

impl Queues {
    /// Queues over `store`, on the system clock.
    pub fn new(store: impl Store + 'static, config: QueueConfig) -> Self {
        Self::with_clock(store, config, Clock::system())
    }

    /// Queues over `store`; `clock` times the activity windows (give the store the same).
    pub fn with_clock(store: impl Store + 'static, config: QueueConfig, clock: Clock) -> Self {
        let elsewhere = store.added_elsewhere();
        let queues = Self {
            inner: Arc::new(Inner {
                store: Box::new(store),
                config,
                added: Mutex::new(HashMap::new()),
                events: Mutex::new(BTreeMap::new()),
                stalled: std::sync::atomic::AtomicU64::new(0),
                snapshot: Mutex::new(Vec::new()),
                declared: Mutex::new(BTreeMap::new()),
                bus: EventBus::new(),
                deliveries: Mutex::new(BTreeMap::new()),
                activity: Mutex::new(HashMap::new()),
                timings: std::sync::OnceLock::new(),
                clock,
            }),
        };
        if let Some(added) = elsewhere {
            tokio::spawn(wake_on_adds_elsewhere(Arc::downgrade(&queues.inner), added));
        }
        queues
    }

    /// The configuration.
    pub fn config(&self) -> &QueueConfig {
        &self.inner.config
    }

    /// Sets the observer told every job's wait and run time (once; later calls are ignored).
    pub fn observe_timings(&self, observer: TimingObserver) {
        let _ = self.inner.timings.set(observer);
    }

    /// `queue`'s activity over the last `window` seconds (at most 300).
    pub fn activity(&self, queue: &str, window: u64) -> ActivitySummary {
        let now = self.inner.clock.unix_ms();
        lock(&self.inner.activity)
            .get(queue)
            .map(|a| a.summary(now, window))
            .unwrap_or_default()
    }

    /// The queues' clock, in Unix ms.
    pub fn now_ms(&self) -> u64 {
        self.inner.clock.unix_ms()
    }

    /// Since when `queue`'s longest-waiting job has been ready (Unix ms), if any is waiting.
    pub async fn oldest_waiting(&self, queue: &str) -> Result<Option<u64>, QueueError> {
        self.inner.store.oldest_waiting(queue).await
    }

    fn record(&self, queue: &str, update: impl FnOnce(&mut Activity, u64)) {
        let now = self.inner.clock.unix_ms();
        let mut all = lock(&self.inner.activity);
        let activity = match all.get_mut(queue) {
            Some(a) => a,
            None => all.entry(queue.to_owned()).or_insert_with(Activity::new),
        };
        update(activity, now);
    }

    /// Live events of every queue (filter by [`QueueEvent::queue`]).
    pub fn subscribe(&self) -> tokio::sync::broadcast::Receiver<QueueEvent> {
        self.inner.bus.subscribe()
    }

    fn count(&self, queue: &str, event: impl FnOnce(&mut Events)) {
        event(
            lock(&self.inner.events)
                .entry(queue.to_owned())
                .or_default(),
        );
    }

    /// What happened to each queue's jobs since start.
    pub fn events(&self) -> BTreeMap<String, Events> {
        lock(&self.inner.events).clone()
    }

    /// Jobs whose lease expired since start.
    pub fn stalled(&self) -> u64 {
        self.inner
            .stalled
            .load(std::sync::atomic::Ordering::Relaxed)
    }

    /// The queues as the last maintenance round saw them.
    pub fn snapshot(&self) -> Vec<QueueOverview> {
        lock(&self.inner.snapshot).clone()
    }

    /// Every queue with its job counts, read from the store now.
    pub async fn overview(&self) -> Result<Vec<QueueOverview>, QueueError> {
        self.inner.store.overview().await
    }

    fn wake(&self, queue: &str) -> Arc<Notify> {
        lock(&self.inner.added)
            .entry(queue.to_owned())
            .or_default()
            .clone()
    }

    /// Checks a queue name: 1–128 bytes of `A-Z a-z 0-9 - _ . :`.
    pub fn validate_queue(queue: &str) -> Result<(), QueueError> {
        let ok = (1..=128).contains(&queue.len())
            && queue
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'));
        if ok {
            Ok(())
        } else {
            Err(QueueError::invalid(
                "queue",
                "must be 1–128 characters of A-Z a-z 0-9 - _ . :",
            ))
        }
    }

    /// Adds jobs, all or none; wakes workers waiting on `queue`.
    pub async fn add(&self, queue: &str, jobs: Vec<NewJob>) -> Result<Vec<String>, QueueError> {
        Self::validate_queue(queue)?;
        let max = self.inner.config.max_payload.bytes();
        for (i, job) in jobs.iter().enumerate() {
            let size = job.payload.to_string().len() as u64;
            if size > max {
                return Err(QueueError::invalid(
                    format!("jobs[{i}].payload"),
                    format!("{size} bytes is over queue.max_payload ({max} bytes)"),
                ));
            }
        }
        let ids = self.inner.store.add(queue, jobs).await?;
        self.count(queue, |e| e.added += ids.len() as u64);
        self.inner.bus.emit(|| {
            ids.iter()
                .map(|id| QueueEvent::job(EventKind::Added, queue, id))
        });
        self.wake(queue).notify_waiters();
        Ok(ids)
    }

    /// Leases ready jobs; when none is ready, waits up to `request.wait` for one. Wakes as soon
    /// as a job is added to the queue; delayed jobs coming due are noticed within 250 ms.
    pub async fn fetch(
        &self,
        queue: &str,
        request: &FetchRequest,
    ) -> Result<Vec<Fetched>, QueueError> {
        Self::validate_queue(queue)?;
        let lease = request
            .lease
            .unwrap_or(self.inner.config.default_lease.get());
        if lease.is_zero() {
            return Err(QueueError::invalid("lease", "must be longer than 0"));
        }
        let wait = request.wait.min(self.inner.config.max_fetch_wait.get());
        let deadline = tokio::time::Instant::now() + wait;
        let wake = self.wake(queue);
        loop {
            // Register for the wake-up before looking, so an add in between is not missed.
            let added = wake.notified();
            tokio::pin!(added);
            added.as_mut().enable();
            let jobs = self
                .inner
                .store
                .fetch(queue, &request.worker, request.max, lease)
                .await?;
            let now = tokio::time::Instant::now();
            if !jobs.is_empty() || now >= deadline {
                self.started(queue, &jobs);
                self.inner.bus.emit(|| {
                    jobs.iter()
                        .map(|f| QueueEvent::job(EventKind::Active, queue, &f.job.id))
                });
                return Ok(jobs);
            }
            let recheck = (now + DUE_RECHECK).min(deadline);
            tokio::select! {
                () = added => {}
                () = tokio::time::sleep_until(recheck) => {}
            }
        }
    }

    /// Records the wait of jobs just started.
    fn started(&self, queue: &str, jobs: &[Fetched]) {
        if jobs.is_empty() {
            return;
        }
        let waits: Vec<u64> = jobs
            .iter()
            .map(|f| {
                let ready = f.job.created_at.max(f.job.run_at);
                f.job.started_at.unwrap_or(ready).saturating_sub(ready)
            })
            .collect();
        self.record(queue, |a, now| {
            for &wait in &waits {
                a.started(now, wait);
            }
        });
        if let Some(observe) = self.inner.timings.get() {
            for wait in waits {
                observe(queue, Timing::Wait, wait);
            }
        }
    }

    /// Completes an active job.
    pub async fn complete(&self, id: &str, token: &str, result: Value) -> Result<(), QueueError> {
        let moved = self.inner.store.complete(id, token, result).await?;
        self.counted(id, &moved);
        Ok(())
    }

    /// Counts job `id`'s move in its queue's events, and tells subscribers.
    fn counted(&self, id: &str, moved: &Moved) {
        if moved.state != JobState::Active {
            self.freed(&moved.queue);
        }
        if let Some(ran) = moved.ran_ms {
            let completed = moved.state == JobState::Completed;
            self.record(&moved.queue, |a, now| a.ended(now, completed, Some(ran)));
            if let Some(observe) = self.inner.timings.get() {
                observe(&moved.queue, Timing::Processing, ran);
            }
        }
        let kind = match moved.state {
            JobState::Completed => Some(EventKind::Completed),
            JobState::Failed => Some(EventKind::Failed),
            JobState::Delayed | JobState::Waiting => Some(EventKind::Retrying),
            JobState::Cancelled => Some(EventKind::Cancelled),
            JobState::Active => None,
        };
        if let Some(kind) = kind {
            self.inner
                .bus
                .emit(|| [QueueEvent::job(kind, &moved.queue, id)]);
        }
        self.count(&moved.queue, |e| match moved.state {
            JobState::Completed => e.completed += 1,
            JobState::Failed => e.failed += 1,
            JobState::Delayed => e.retried += 1,
            JobState::Cancelled => e.cancelled += 1,
            JobState::Waiting | JobState::Active => {}
        });
    }

    /// Completes many active jobs, `(id, token, result)` each; one outcome per job, in order.
    /// The completions are handed to the store together, so they share one commit.
    pub async fn complete_many(
        &self,
        jobs: Vec<(String, String, Value)>,
    ) -> Vec<Result<(), QueueError>> {
        let n = jobs.len();
        let ids: Vec<String> = jobs.iter().map(|(id, _, _)| id.clone()).collect();
        match self.inner.store.complete_many(jobs).await {
            Ok(outcomes) => outcomes
                .into_iter()
                .zip(&ids)
                .map(|(outcome, id)| outcome.map(|moved| self.counted(id, &moved)))
                .collect(),
            Err(e) => vec![Err(e); n],
        }
    }

    /// Records a failed attempt. Returns the job's new state.
    pub async fn fail(
        &self,
        id: &str,
        token: &str,
        failure: Failure,
    ) -> Result<JobState, QueueError> {
        let moved = self.inner.store.fail(id, token, failure).await?;
        self.counted(id, &moved);
        Ok(moved.state)
    }

    /// Extends an active job's lease. Returns the new expiry (Unix ms).
    pub async fn extend(&self, id: &str, token: &str, lease: Duration) -> Result<u64, QueueError> {
        self.inner.store.extend(id, token, lease).await
    }

    /// Records an active job's progress (0–100) with optional data.
    pub async fn progress(
        &self,
        id: &str,
        token: &str,
        progress: u8,
        data: Option<Value>,
    ) -> Result<(), QueueError> {
        let event_data = data.clone();
        let moved = self.inner.store.progress(id, token, progress, data).await?;
        self.inner.bus.emit(|| {
            let mut event = QueueEvent::job(EventKind::Progress, &moved.queue, id);
            event.data =
                Some(serde_json::json!({"progress": progress.min(100), "data": event_data}));
            [event]
        });
        Ok(())
    }

    /// Makes a delayed job ready now; wakes its queue's workers.
    pub async fn promote(&self, id: &str) -> Result<JobState, QueueError> {
        let moved = self.inner.store.promote(id).await?;
        self.wake(&moved.queue).notify_waiters();
        Ok(moved.state)
    }

    /// Puts a failed or cancelled job back to waiting with fresh attempts; wakes its queue.
    pub async fn retry(&self, id: &str) -> Result<JobState, QueueError> {
        let moved = self.inner.store.retry(id).await?;
        self.wake(&moved.queue).notify_waiters();
        Ok(moved.state)
    }

    /// Cancels a job. Returns its state after the call.
    pub async fn cancel(&self, id: &str) -> Result<JobState, QueueError> {
        let moved = self.inner.store.cancel(id).await?;
        if moved.state == JobState::Cancelled {
            self.counted(id, &moved);
        }
        Ok(moved.state)
    }

    /// Pauses or resumes a queue; resuming wakes its workers.
    pub async fn set_paused(&self, queue: &str, paused: bool) -> Result<(), QueueError> {
        Self::validate_queue(queue)?;
        self.inner.store.set_paused(queue, paused).await?;
        if !paused {
            self.wake(queue).notify_waiters();
        }
        let kind = if paused {
            EventKind::Paused
        } else {
            EventKind::Resumed
        };
        self.inner.bus.emit(|| {
            [QueueEvent {
                event: kind,
                queue: queue.to_owned(),
                job: None,
                data: None,
            }]
        });
        Ok(())
    }

    /// Deletes finished jobs of `queue` in `state` older than `older_than`.
    pub async fn clean(
        &self,
        queue: &str,
        state: JobState,
        older_than: Duration,
    ) -> Result<usize, QueueError> {
        Self::validate_queue(queue)?;
        self.inner.store.clean(queue, state, older_than).await
    }

    /// Puts every failed job of `queue` back to waiting; wakes its workers.
    pub async fn retry_failed(&self, queue: &str) -> Result<usize, QueueError> {
        Self::validate_queue(queue)?;
        let n = self.inner.store.retry_failed(queue).await?;
        if n > 0 {
            self.wake(queue).notify_waiters();
        }
        Ok(n)
    }

    /// Jobs of `queue`, newest first, a page at a time.
    pub async fn list(
        &self,
        queue: &str,
        filter: JobFilter,
        cursor: Option<&str>,
        limit: usize,
    ) -> Result<JobPage, QueueError> {
        Self::validate_queue(queue)?;
        self.inner.store.list(queue, filter, cursor, limit).await
    }

    /// A job.
    pub async fn get(&self, id: &str) -> Result<Option<Job>, QueueError> {
        self.inner.store.get(id).await
    }

    /// Whether `queue` is known: declared, or it has jobs or schedules, or was paused.
    pub async fn exists(&self, queue: &str) -> Result<bool, QueueError> {
        Self::validate_queue(queue)?;
        if lock(&self.inner.declared).contains_key(queue) {
            return Ok(true);
        }
        self.inner.store.queue_exists(queue).await
    }

    /// Drains and removes `queue`: every job (in batches, so other work goes on meanwhile),
    /// its schedules and its pause flag. A declared queue keeps its declaration. Returns the
    /// number of jobs deleted.
    pub async fn delete_queue(&self, queue: &str) -> Result<usize, QueueError> {
        Self::validate_queue(queue)?;
        let mut deleted = 0;
        loop {
            let n = self.inner.store.delete_queue(queue, PRUNE_BATCH).await?;
            deleted += n;
            if n < PRUNE_BATCH {
                break;
            }
        }
        lock(&self.inner.events).remove(queue);
        Ok(deleted)
    }

    /// Jobs of `queue` by state.
    pub async fn counts(&self, queue: &str) -> Result<BTreeMap<String, u64>, QueueError> {
        Self::validate_queue(queue)?;
        self.inner.store.counts(queue).await
    }
}
