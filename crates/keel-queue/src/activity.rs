//! Each queue's recent activity, per second over the last five minutes: jobs finished, and
//! how long jobs waited to start and ran. Feeds `GET /api/v1/queues/{q}`.

use serde::Serialize;

/// Seconds kept.
const SECONDS: usize = 300;

#[derive(Debug, Default, Clone, Copy)]
struct Second {
    /// Which second (Unix) this slot holds; a slot of an older second is stale.
    at: u64,
    completed: u64,
    failed: u64,
    wait_ms: u64,
    waits: u64,
    run_ms: u64,
    runs: u64,
}

/// One queue's last five minutes.
pub(crate) struct Activity {
    seconds: Box<[Second; SECONDS]>,
}

/// A queue's activity over a window.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct ActivitySummary {
    /// Jobs completed.
    pub completed: u64,
    /// Attempts that failed (retried or not).
    pub failed: u64,
    /// Completed jobs per second over the window.
    pub per_second: f64,
    /// Mean time from ready to started of the jobs started (ms).
    pub avg_wait_ms: Option<f64>,
    /// Mean run time of the attempts that ended (ms).
    pub avg_processing_ms: Option<f64>,
}

impl Activity {
    pub(crate) fn new() -> Self {
        Self {
            seconds: Box::new([Second::default(); SECONDS]),
        }
    }

    fn second(&mut self, now_ms: u64) -> &mut Second {
        let at = now_ms / 1000;
        let slot = &mut self.seconds[(at % SECONDS as u64) as usize];
        if slot.at != at {
            *slot = Second {
                at,
                ..Second::default()
            };
        }
        slot
    }

    /// A job started after waiting `wait_ms`.
    pub(crate) fn started(&mut self, now_ms: u64, wait_ms: u64) {
        let s = self.second(now_ms);
        s.wait_ms += wait_ms;
        s.waits += 1;
    }

    /// An attempt ended, completed or not, after running `ran_ms`.
    pub(crate) fn ended(&mut self, now_ms: u64, completed: bool, ran_ms: Option<u64>) {
        let s = self.second(now_ms);
        if completed {
            s.completed += 1;
        } else {
            s.failed += 1;
        }
        if let Some(ran) = ran_ms {
            s.run_ms += ran;
            s.runs += 1;
        }
    }

    /// The last `window` seconds (at most five minutes) up to `now_ms`.
    pub(crate) fn summary(&self, now_ms: u64, window: u64) -> ActivitySummary {
        let now = now_ms / 1000;
        let window = window.clamp(1, SECONDS as u64);
        let mut total = Second::default();
        for s in self
            .seconds
            .iter()
            .filter(|s| s.at <= now && now - s.at < window)
        {
            total.completed += s.completed;
            total.failed += s.failed;
            total.wait_ms += s.wait_ms;
            total.waits += s.waits;
            total.run_ms += s.run_ms;
            total.runs += s.runs;
        }
        let mean = |sum: u64, n: u64| (n > 0).then(|| sum as f64 / n as f64);
        ActivitySummary {
            completed: total.completed,
            failed: total.failed,
            per_second: total.completed as f64 / window as f64,
            avg_wait_ms: mean(total.wait_ms, total.waits),
            avg_processing_ms: mean(total.run_ms, total.runs),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: u64 = 1_790_000_000_000;

    #[test]
    fn windows_sum_their_seconds_and_forget_older_ones() {
        let mut a = Activity::new();
        a.started(T, 100);
        a.started(T, 300);
        a.ended(T, true, Some(50));
        a.ended(T + 30_000, true, Some(150));
        a.ended(T + 30_000, false, None);
        let minute = a.summary(T + 59_999, 60);
        assert_eq!((minute.completed, minute.failed), (2, 1));
        assert_eq!(minute.per_second, 2.0 / 60.0);
        assert_eq!(minute.avg_wait_ms, Some(200.0));
        assert_eq!(minute.avg_processing_ms, Some(100.0));
        let later = a.summary(T + 60_000, 60);
        assert_eq!(
            (later.completed, later.avg_wait_ms),
            (1, None),
            "T's second left"
        );
        // Five minutes on, a slot is reused for a new second, not added to.
        a.ended(T + 300_000, true, None);
        assert_eq!(a.summary(T + 300_000, 300).completed, 2);
    }
}
