//! Jobs, their states and options.

use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::QueueError;

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    /// Ready to run, in priority then FIFO order.
    Waiting,
    /// Scheduled for later (a delay, or a retry's backoff).
    Delayed,
    /// Leased to a worker.
    Active,
    /// Done; its result is kept.
    Completed,
    /// Out of attempts, or failed without retry.
    Failed,
    /// Cancelled before it finished.
    Cancelled,
}

impl JobState {
    /// Every state.
    pub const ALL: [JobState; 6] = [
        Self::Waiting,
        Self::Delayed,
        Self::Active,
        Self::Completed,
        Self::Failed,
        Self::Cancelled,
    ];

    /// The state's name, as stored and in the API.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Waiting => "waiting",
            Self::Delayed => "delayed",
            Self::Active => "active",
            Self::Completed => "completed",
            Self::Failed => "failed",
            Self::Cancelled => "cancelled",
        }
    }

    /// Parses [`JobState::as_str`]'s output.
    pub fn parse(s: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|state| state.as_str() == s)
    }
}

/// How the wait between attempts grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackoffKind {
    /// The same delay every time.
    Fixed,
    /// `delay × 2^(attempt − 1)`.
    Exponential,
}

/// The wait before a retry.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Backoff {
    /// Fixed or exponential.
    #[serde(rename = "type")]
    pub kind: BackoffKind,
    /// The first wait, in milliseconds.
    pub delay_ms: u64,
    /// The longest wait, in milliseconds (none: unbounded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_delay_ms: Option<u64>,
    /// Randomises each wait by up to this fraction (0–1) either way, so retries of many jobs
    /// failed together spread out.
    #[serde(default)]
    pub jitter: f64,
}

impl Default for Backoff {
    /// Exponential from 2 s, as the seeds use.
    fn default() -> Self {
        Self {
            kind: BackoffKind::Exponential,
            delay_ms: 2_000,
            max_delay_ms: None,
            jitter: 0.0,
        }
    }
}

impl Backoff {
    /// The wait after failed attempt number `attempt` (1-based). `random` is a number in
    /// [0, 1) that drives the jitter (tests pass a fixed one).
    pub fn wait(&self, attempt: u32, random: f64) -> Duration {
        let base = match self.kind {
            BackoffKind::Fixed => self.delay_ms,
            BackoffKind::Exponential => {
                let factor = 1u64
                    .checked_shl(attempt.saturating_sub(1))
                    .unwrap_or(u64::MAX);
                self.delay_ms.saturating_mul(factor)
            }
        };
        let capped = self.max_delay_ms.map_or(base, |max| base.min(max));
        let spread = (capped as f64 * self.jitter * (2.0 * random - 1.0)) as i64;
        Duration::from_millis(capped.saturating_add_signed(spread))
    }

    pub(crate) fn validate(&self, field: &str) -> Result<(), QueueError> {
        if !(0.0..=1.0).contains(&self.jitter) {
            return Err(QueueError::invalid(
                format!("{field}.jitter"),
                "must be between 0 and 1",
            ));
        }
        Ok(())
    }
}

/// How a job runs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct JobOptions {
    /// Lower runs first; FIFO within a priority.
    pub priority: i32,
    /// Run no earlier than this many milliseconds after it is added.
    pub delay_ms: u64,
    /// Attempts before the job fails for good (at least 1).
    pub attempts: u32,
    /// The wait between attempts.
    pub backoff: Backoff,
    /// While a job with this key is waiting, delayed or active, adding another returns the
    /// existing job's id instead.
    pub unique_key: Option<String>,
    /// A tenant or other group inside the queue.
    pub group: Option<String>,
    /// Longest an attempt may run, however often its lease is renewed; then it fails (and is
    /// retried while attempts remain).
    pub timeout_ms: Option<u64>,
}

impl Default for JobOptions {
    fn default() -> Self {
        Self {
            priority: 0,
            delay_ms: 0,
            attempts: 3,
            backoff: Backoff::default(),
            unique_key: None,
            group: None,
            timeout_ms: None,
        }
    }
}

/// A job to add.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewJob {
    /// What kind of work it is (e.g. `send-email`).
    pub name: String,
    /// Its input.
    pub payload: Value,
    /// How it runs.
    #[serde(default)]
    pub options: JobOptions,
}

impl NewJob {
    /// A job with default options.
    pub fn new(name: impl Into<String>, payload: Value) -> Self {
        Self {
            name: name.into(),
            payload,
            options: JobOptions::default(),
        }
    }

    /// Checks the job; `field` prefixes the names in errors (e.g. `jobs[3]`).
    pub fn validate(&self, field: &str) -> Result<(), QueueError> {
        let at = |name: &str| {
            if field.is_empty() {
                name.to_owned()
            } else {
                format!("{field}.{name}")
            }
        };
        if self.name.is_empty() || self.name.len() > 256 {
            return Err(QueueError::invalid(at("name"), "must be 1–256 bytes"));
        }
        if self.options.attempts == 0 {
            return Err(QueueError::invalid(
                at("options.attempts"),
                "must be at least 1",
            ));
        }
        if self.options.timeout_ms == Some(0) {
            return Err(QueueError::invalid(
                at("options.timeout"),
                "must be longer than 0",
            ));
        }
        self.options.backoff.validate(&at("options.backoff"))
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Sortable unique id (UUIDv7).
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// What kind of work it is.
    pub name: String,
    /// Its input.
    pub payload: Value,
    /// Where it is in its life.
    pub state: JobState,
    /// Lower runs first.
    pub priority: i32,
    /// Attempts started so far.
    pub attempts_made: u32,
    /// Attempts allowed.
    pub max_attempts: u32,
    /// The wait between attempts.
    pub backoff: Backoff,
    /// Deduplication key, if any.
    pub unique_key: Option<String>,
    /// Group, if any.
    pub group: Option<String>,
    /// When it was added (Unix ms).
    pub created_at: u64,
    /// When it may run next (Unix ms).
    pub run_at: u64,
    /// When its current or last attempt started (Unix ms).
    pub started_at: Option<u64>,
    /// When it finished (Unix ms).
    pub finished_at: Option<u64>,
    /// 0–100.
    pub progress: u8,
    /// The result its worker reported.
    pub result: Option<Value>,
    /// Each failed attempt's error, oldest first.
    pub errors: Vec<String>,
    /// How often its lease expired.
    pub stalls: u32,
    /// The worker holding it, while active.
    pub worker: Option<String>,
    /// What its worker last reported with its progress.
    pub progress_data: Option<Value>,
    /// Longest an attempt may run.
    pub timeout_ms: Option<u64>,
}

/// A queue at a glance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueOverview {
    /// The queue's name.
    pub name: String,
    /// Whether it is paused.
    pub paused: bool,
    /// Jobs by state (states without jobs are absent).
    pub counts: std::collections::BTreeMap<String, u64>,
}

/// At most `max` jobs started in any window of `per` (a sliding window: never more, wherever
/// the window is placed).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, schemars::JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Jobs per window (at least 1).
    pub max: u32,
    /// The window, e.g. `"1s"` or `"5m"`.
    pub per: keel_core::HumanDuration,
}

/// What a queue may hand out, across all its workers (pull, push and in-process).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QueueLimits {
    /// Most jobs active at once.
    pub concurrency: Option<u32>,
    /// Jobs started per window.
    pub rate: Option<RateLimit>,
    /// Jobs of one group started per window (jobs without a group are not limited by it).
    pub group_rate: Option<RateLimit>,
}

/// A job handed to a worker, with the lease that proves it holds it.
#[derive(Debug, Clone, PartialEq)]
pub struct Fetched {
    /// The job (state `active`).
    pub job: Job,
    /// The lease token to complete, fail or extend it with.
    pub token: String,
    /// When the lease runs out unless extended (Unix ms).
    pub lease_expires_at: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_caps_and_jitters() {
        let exp = Backoff {
            kind: BackoffKind::Exponential,
            delay_ms: 1000,
            max_delay_ms: Some(5000),
            jitter: 0.0,
        };
        let waits: Vec<u64> = (1..=5)
            .map(|a| exp.wait(a, 0.5).as_millis() as u64)
            .collect();
        assert_eq!(waits, [1000, 2000, 4000, 5000, 5000]);
        let fixed = Backoff {
            kind: BackoffKind::Fixed,
            delay_ms: 300,
            max_delay_ms: None,
            jitter: 0.5,
        };
        assert_eq!(fixed.wait(7, 0.5).as_millis(), 300);
        assert_eq!(fixed.wait(1, 0.0).as_millis(), 150);
        assert_eq!(fixed.wait(1, 0.999_999).as_millis(), 449);
        assert_eq!(exp.wait(200, 0.5).as_millis(), 5000, "no overflow");
    }

    #[test]
    fn states_round_trip_and_bad_jobs_name_the_field() {
        for state in JobState::ALL {
            assert_eq!(JobState::parse(state.as_str()), Some(state));
        }
        let mut job = NewJob::new("x", Value::Null);
        job.options.attempts = 0;
        let err = job.validate("jobs[2]").unwrap_err();
        assert_eq!(
            err.to_string(),
            "jobs[2].options.attempts: must be at least 1"
        );
    }
}
