//! Per-queue limits as the writer thread enforces them: a cap on active jobs, and sliding
//! windows of job starts for the queue and for each group in it.
//!
//! The start times live in memory (the writer is the only one fetching); when limits are set
//! they are seeded from the jobs' `started_at`, so a restart does not open a fresh window.

use std::collections::{HashMap, VecDeque};

use crate::model::{QueueLimits, RateLimit};

/// The limits of every queue that has any.
#[derive(Default)]
pub(super) struct Limiter {
    queues: HashMap<String, QueueLimiter>,
}

impl Limiter {
    /// Sets `queue`'s limits; `history` is `(started_at, group)` of its recent starts.
    pub(super) fn set(
        &mut self,
        queue: &str,
        limits: QueueLimits,
        history: impl IntoIterator<Item = (u64, Option<String>)>,
    ) {
        if limits == QueueLimits::default() {
            self.queues.remove(queue);
            return;
        }
        let mut limiter = QueueLimiter {
            limits,
            starts: Window::default(),
            group_starts: HashMap::new(),
        };
        let mut history: Vec<_> = history.into_iter().collect();
        history.sort_by_key(|(at, _)| *at);
        for (at, group) in history {
            limiter.started(at, group.as_deref());
        }
        self.queues.insert(queue.to_owned(), limiter);
    }

    /// `queue`'s limiter, if it has limits.
    pub(super) fn get(&mut self, queue: &str) -> Option<&mut QueueLimiter> {
        self.queues.get_mut(queue)
    }

    /// The longest window of any limit of `queue` (how far back its history must reach).
    pub(super) fn window_ms(limits: &QueueLimits) -> u64 {
        [limits.rate, limits.group_rate]
            .into_iter()
            .flatten()
            .map(ms)
            .max()
            .unwrap_or(0)
    }

    /// Drops groups whose windows hold no start any more.
    pub(super) fn forget_idle(&mut self, now: u64) {
        for limiter in self.queues.values_mut() {
            if let Some(rate) = limiter.limits.group_rate {
                let per = ms(rate);
                limiter.group_starts.retain(|_, w| {
                    w.expire(now, per);
                    !w.0.is_empty()
                });
            }
        }
    }
}

fn ms(rate: RateLimit) -> u64 {
    u64::try_from(rate.per.get().as_millis()).unwrap_or(u64::MAX)
}

/// Start times within the last window, oldest first.
#[derive(Default)]
struct Window(VecDeque<u64>);

impl Window {
    fn expire(&mut self, now: u64, per: u64) {
        while self
            .0
            .front()
            .is_some_and(|&at| at.saturating_add(per) <= now)
        {
            self.0.pop_front();
        }
    }

    /// How many more may start now under `rate`.
    fn room(&mut self, now: u64, rate: RateLimit) -> usize {
        self.expire(now, ms(rate));
        (rate.max as usize).saturating_sub(self.0.len())
    }
}

/// One queue's limits and recent starts.
pub(super) struct QueueLimiter {
    pub(super) limits: QueueLimits,
    starts: Window,
    group_starts: HashMap<String, Window>,
}

impl QueueLimiter {
    /// How many of `max` jobs may start now, given `active` jobs running.
    pub(super) fn budget(&mut self, now: u64, max: usize, active: u64) -> usize {
        let mut budget = max;
        if let Some(cap) = self.limits.concurrency {
            budget = budget.min(u64::from(cap).saturating_sub(active) as usize);
        }
        if let Some(rate) = self.limits.rate {
            budget = budget.min(self.starts.room(now, rate));
        }
        budget
    }

    /// Whether a job of `group` may start now (jobs without a group have no group limit).
    pub(super) fn admits(&mut self, now: u64, group: Option<&str>) -> bool {
        match (self.limits.group_rate, group) {
            (Some(rate), Some(group)) => self
                .group_starts
                .get_mut(group)
                .is_none_or(|w| w.room(now, rate) > 0),
            _ => true,
        }
    }

    /// Whether jobs are held back by a group limit (so a fetch should look further).
    pub(super) fn limits_groups(&self) -> bool {
        self.limits.group_rate.is_some()
    }

    /// Records a start.
    pub(super) fn started(&mut self, now: u64, group: Option<&str>) {
        if self.limits.rate.is_some() {
            self.starts.0.push_back(now);
        }
        if let (Some(_), Some(group)) = (self.limits.group_rate, group) {
            self.group_starts
                .entry(group.to_owned())
                .or_default()
                .0
                .push_back(now);
        }
    }
}

#[cfg(test)]
mod tests {
    use keel_core::HumanDuration;

    use super::*;

    fn rate(max: u32, per_ms: u64) -> Option<RateLimit> {
        Some(RateLimit {
            max,
            per: HumanDuration::from_millis(per_ms),
        })
    }

    #[test]
    fn a_sliding_window_admits_max_per_window() {
        let mut limiter = Limiter::default();
        let limits = QueueLimits {
            rate: rate(3, 1000),
            ..QueueLimits::default()
        };
        limiter.set("q", limits, [(100, None)]);
        let q = limiter.get("q").unwrap();
        assert_eq!(q.budget(500, 10, 0), 2, "one start is still in the window");
        q.started(500, None);
        q.started(500, None);
        assert_eq!(q.budget(999, 10, 0), 0);
        assert_eq!(q.budget(1100, 10, 0), 1, "the start at 100 left the window");
        assert_eq!(q.budget(1500, 10, 0), 3);
    }

    #[test]
    fn the_concurrency_cap_counts_active_jobs() {
        let mut limiter = Limiter::default();
        let limits = QueueLimits {
            concurrency: Some(4),
            ..QueueLimits::default()
        };
        limiter.set("q", limits, []);
        let q = limiter.get("q").unwrap();
        assert_eq!(q.budget(0, 10, 1), 3);
        assert_eq!(q.budget(0, 2, 1), 2);
        assert_eq!(q.budget(0, 10, 9), 0);
    }

    #[test]
    fn group_windows_are_separate_and_idle_groups_are_forgotten() {
        let mut limiter = Limiter::default();
        let limits = QueueLimits {
            group_rate: rate(1, 1000),
            ..QueueLimits::default()
        };
        limiter.set("q", limits, []);
        let q = limiter.get("q").unwrap();
        q.started(0, Some("a"));
        assert!(!q.admits(10, Some("a")));
        assert!(q.admits(10, Some("b")));
        assert!(q.admits(10, None), "no group, no group limit");
        assert!(q.admits(1000, Some("a")));
        limiter.forget_idle(1000);
        assert!(limiter.get("q").unwrap().group_starts.is_empty());
    }

    #[test]
    fn no_limits_means_no_limiter() {
        let mut limiter = Limiter::default();
        limiter.set("q", QueueLimits::default(), []);
        assert!(limiter.get("q").is_none());
    }
}
