//! The background maintenance round: stalled leases, job timeouts, schedules, pruning and
//! the overview snapshot.

use super::*;

impl Queues {
    /// Every `queue.stall_check_interval` until the returned task is aborted: recovers stalled
    /// jobs and fails attempts past their timeout (waking waiting workers when any went back to
    /// waiting), adds the jobs of schedules whose tick has come, and deletes finished jobs beyond
    /// each queue's retention, in bounded steps.
    pub fn spawn_maintenance(&self) -> tokio::task::JoinHandle<()> {
        let queues = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(queues.inner.config.stall_check_interval.get());
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tick.tick().await;
                queues.maintain().await;
            }
        })
    }

    /// One round of maintenance.
    pub async fn maintain(&self) {
        let store = &self.inner.store;
        match store.recover_stalled(self.inner.config.max_stalls).await {
            Ok(0) => {}
            Ok(n) => {
                self.inner
                    .stalled
                    .fetch_add(n as u64, std::sync::atomic::Ordering::Relaxed);
                tracing::info!(jobs = n, "recovered jobs whose lease expired");
                self.inner.bus.emit(|| {
                    [QueueEvent {
                        event: EventKind::Stalled,
                        queue: String::new(),
                        job: None,
                        data: Some(serde_json::json!({ "count": n })),
                    }]
                });
                for wake in lock(&self.inner.added).values() {
                    wake.notify_waiters();
                }
            }
            Err(e) => tracing::warn!(error = %e, "stalled-job recovery failed"),
        }
        match store.fire_schedules().await {
            Ok(queues) => {
                for queue in queues {
                    self.count(&queue, |e| e.added += 1);
                    self.inner.bus.emit(|| {
                        [QueueEvent {
                            event: EventKind::Added,
                            queue: queue.clone(),
                            job: None,
                            data: Some(serde_json::json!({ "by": "schedule" })),
                        }]
                    });
                    self.wake(&queue).notify_waiters();
                }
            }
            Err(e) => tracing::warn!(error = %e, "firing schedules failed"),
        }
        // Prune in short steps, each its own transaction, so other work interleaves; as many
        // steps as it takes (up to a bound) to keep up with any completion rate.
        let mut pruned = 0;
        for _ in 0..MAX_PRUNE_STEPS {
            match store.prune(self.retention(), PRUNE_BATCH).await {
                Ok(n) => {
                    pruned += n;
                    if n < PRUNE_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, "pruning finished jobs failed");
                    break;
                }
            }
        }
        if pruned > 0 {
            tracing::debug!(jobs = pruned, "pruned finished jobs");
        }
        match store.overview().await {
            Ok(overview) => *lock(&self.inner.snapshot) = overview,
            Err(e) => tracing::warn!(error = %e, "reading the queue overview failed"),
        }
    }
}
