//! Declared queues (`[[queues]]`: limits, job defaults, retention, webhook delivery),
//! schedules and in-process workers.

use super::*;

impl Queues {
    /// Declares queues (`[[queues]]`): their limits reach the store, their job defaults apply
    /// to jobs added from now on.
    pub async fn declare(&self, queues: &[QueueSettings]) -> Result<(), QueueError> {
        for settings in queues {
            self.inner
                .store
                .set_limits(&settings.name, settings.limits())
                .await?;
            lock(&self.inner.declared).insert(settings.name.clone(), settings.clone());
        }
        Ok(())
    }

    /// Starts webhook delivery for every declared queue with `deliver`; `clock` drives the
    /// breakers' cool-downs and the signatures' timestamps. Shut the returned workers down to
    /// stop delivering.
    pub fn start_deliveries(&self, clock: &keel_core::Clock) -> Result<Vec<Worker>, QueueError> {
        let mut workers = Vec::new();
        for settings in self.declared() {
            let Some(deliver) = &settings.deliver else {
                continue;
            };
            let (delivery, worker) = Delivery::start(self, &settings.name, deliver, clock.clone())?;
            lock(&self.inner.deliveries).insert(settings.name.clone(), delivery);
            workers.push(worker);
        }
        Ok(workers)
    }

    /// Each delivering queue's webhook delivery and breaker, by queue.
    pub fn deliveries(&self) -> BTreeMap<String, DeliveryReport> {
        lock(&self.inner.deliveries)
            .iter()
            .map(|(queue, d)| (queue.clone(), d.report()))
            .collect()
    }

    /// `queue`'s declaration, if it has one.
    pub fn settings(&self, queue: &str) -> Option<QueueSettings> {
        lock(&self.inner.declared).get(queue).cloned()
    }

    /// Every declared queue.
    pub fn declared(&self) -> Vec<QueueSettings> {
        lock(&self.inner.declared).values().cloned().collect()
    }

    /// The options a job of `queue` gets where it names none.
    pub fn job_defaults(&self, queue: &str) -> JobOptions {
        let mut options = JobOptions::default();
        if let Some(declared) = lock(&self.inner.declared).get(queue) {
            if let Some(attempts) = declared.attempts {
                options.attempts = attempts;
            }
            if let Some(backoff) = &declared.backoff {
                options.backoff = backoff.to_backoff();
            }
        }
        options
    }

    /// What pruning keeps: `[queue]`'s retention, and declared queues' own.
    pub fn retention(&self) -> RetentionPolicy {
        let default = self.inner.config.retention();
        let queues = lock(&self.inner.declared)
            .values()
            .filter_map(|q| q.retention(default).map(|r| (q.name.clone(), r)))
            .collect();
        RetentionPolicy { default, queues }
    }

    /// A job of `queue` left the active state: a fetch held back by its concurrency cap may
    /// now get one.
    pub(super) fn freed(&self, queue: &str) {
        let capped = lock(&self.inner.declared)
            .get(queue)
            .is_some_and(|q| q.concurrency.is_some());
        if capped {
            self.wake(queue).notify_waiters();
        }
    }

    /// Creates or replaces a schedule of `queue`.
    pub async fn put_schedule(
        &self,
        queue: &str,
        schedule: NewSchedule,
    ) -> Result<Schedule, QueueError> {
        Self::validate_queue(queue)?;
        self.inner.store.put_schedule(queue, schedule).await
    }

    /// `queue`'s schedules.
    pub async fn schedules(&self, queue: &str) -> Result<Vec<Schedule>, QueueError> {
        self.inner.store.schedules(queue).await
    }

    /// Deletes a schedule; whether it existed.
    pub async fn delete_schedule(&self, queue: &str, name: &str) -> Result<bool, QueueError> {
        self.inner.store.delete_schedule(queue, name).await
    }

    /// An in-process worker for `queue`: `queues.worker("q").concurrency(8).run(handler)`.
    pub fn worker(&self, queue: &str) -> WorkerBuilder {
        WorkerBuilder::new(self.clone(), queue)
    }
}
