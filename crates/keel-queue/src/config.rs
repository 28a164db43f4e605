//! The `[queue]` config section.

use keel_core::{ByteSize, HumanDuration};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::sqlite::Durability;
use crate::store::Retention;

/// What a commit of the job store waits for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DurabilityMode {
    /// Survives a crash of keel (`kill -9`); the last commits may be lost on power loss.
    #[default]
    Normal,
    /// Every commit reaches the disk before it is answered; survives power loss; slower.
    Full,
}

impl From<DurabilityMode> for Durability {
    fn from(mode: DurabilityMode) -> Self {
        match mode {
            DurabilityMode::Normal => Durability::Normal,
            DurabilityMode::Full => Durability::Full,
        }
    }
}

/// The job queue.
#[derive(Debug, Clone, Serialize, Deserialize, JsonSchema)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// `normal` (survives a keel crash) or `full` (also survives power loss, at an fsync per
    /// commit).
    pub durability: DurabilityMode,
    /// Largest job payload accepted (JSON text).
    pub max_payload: ByteSize,
    /// Lease of fetched jobs when the worker asks for none.
    pub default_lease: HumanDuration,
    /// Times a job's lease may expire (worker died or hung) before the job fails.
    pub max_stalls: u32,
    /// How often expired leases are looked for.
    pub stall_check_interval: HumanDuration,
    /// Longest a fetch may wait for jobs.
    pub max_fetch_wait: HumanDuration,
    /// Completed jobs kept per queue (the newest); older ones are deleted in the background.
    pub keep_completed: u64,
    /// Failed jobs kept per queue (and as many cancelled ones).
    pub keep_failed: u64,
    /// Finished jobs older than this are deleted whatever their number; "0" = no age limit.
    pub keep_for: HumanDuration,
    /// The `queue:depth` health check warns when a queue has more waiting jobs than this.
    pub depth_warn: u64,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            durability: DurabilityMode::Normal,
            max_payload: ByteSize::mib(1),
            default_lease: HumanDuration::from_secs(30),
            max_stalls: 1,
            stall_check_interval: HumanDuration::from_secs(1),
            max_fetch_wait: HumanDuration::from_secs(60),
            keep_completed: 1_000,
            keep_failed: 5_000,
            keep_for: HumanDuration::from_secs(0),
            depth_warn: 1_000,
        }
    }
}

/// A problem in the `[queue]` section.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {reason}")]
pub struct QueueConfigError {
    /// The key path, e.g. `queue.max_payload`.
    pub field: &'static str,
    /// What is wrong.
    pub reason: &'static str,
}

impl QueueConfig {
    /// What the background pruning keeps.
    pub fn retention(&self) -> Retention {
        Retention {
            completed: self.keep_completed,
            failed: self.keep_failed,
            max_age: Some(self.keep_for.get()).filter(|d| !d.is_zero()),
        }
    }

    /// Checks the values.
    pub fn validate(&self) -> Result<(), QueueConfigError> {
        let err = |field, reason| Err(QueueConfigError { field, reason });
        if self.max_payload.bytes() == 0 || self.max_payload.bytes() > 64 * 1024 * 1024 {
            return err("queue.max_payload", "must be between 1 byte and 64MiB");
        }
        if self.default_lease.get().is_zero() {
            return err("queue.default_lease", "must be longer than 0");
        }
        if self.stall_check_interval.get().is_zero() {
            return err("queue.stall_check_interval", "must be longer than 0");
        }
        Ok(())
    }
}
